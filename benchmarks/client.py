"""Benchmark: the device side — cold start to the first recommendation, top-10 latency, and the
install size of `fedrec[client]`.

For each catalog size (ML-100K's 1,682 items and 100,000) a synthetic random catalog (unit
384-d embeddings) and a randomly initialized head of the default model, installed in a fresh
device store with 60 interactions:
- warm top-10 latency (wall and CPU time per call), one core (`torch.set_num_threads(1)`, onnxruntime with one thread):
  the torch path (`FedrecClient.recommend`, with and without explanations) and the ONNX path
  (`OnnxRanker.recommend_from` on the exported graph; and the graph alone: run + top-k);
- cold start in a new process (`OMP_NUM_THREADS=1`): import + open the store + first
  recommendation, from an installed head whose caches are in the store; for the torch path
  also after a new interaction (the personal vector is reconstructed first);
- the install size: a fresh venv with `pip install -c constraints.txt "/work/main[client]"`,
  and one with only the device's proposed dependencies (see the report) plus fedrec itself.
Writes benchmarks/results/client.json and client.png.

    python benchmarks/client.py [--repeats 1000] [--skip-install]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
SIZES = (1682, 100_000)
HISTORY = 60
GOAL_MS = 5.0
# the device's own third-party needs (what `fedrec.client` imports once the research-only
# imports are made lazy); compared with today's `[client]`
PROPOSED = ["numpy>=1.26", "scipy>=1.11", "torch>=2.2", "safetensors>=0.4", "platformdirs>=3",
            "opacus==1.6.0", "typer>=0.12", "tomli-w>=1.0", "flwr==1.41.0"]

COLD_TORCH = """
import time; t0 = time.perf_counter()
from fedrec.client import FedrecClient
c = FedrecClient({store!r}); t1 = time.perf_counter()
{before}
recs = c.recommend(k=10); t2 = time.perf_counter()
import json; print(json.dumps({{"open": t1 - t0, "recommend": t2 - t1, "total": t2 - t0,
                               "items": [r.item for r in recs]}}))
"""
COLD_ONNX = """
import time; t0 = time.perf_counter()
from fedrec.client.ranking import OnnxRanker
from fedrec.client.store import DeviceStore
store = DeviceStore({store!r}); ranker = OnnxRanker({graph!r}); t1 = time.perf_counter()
items, _ = ranker.recommend_from(store, k=10); t2 = time.perf_counter()
import json, sys; print(json.dumps({{"open": t1 - t0, "recommend": t2 - t1, "total": t2 - t0,
                                    "items": items.tolist(), "torch": "torch" in sys.modules}}))
"""


def timed(fn, repeats: int) -> dict:
    """Wall time per call (p50, p99, mean), and the calling thread's CPU time per call: on a
    shared machine the wall p99 includes time other processes held the core."""
    fn()  # warm
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.thread_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.thread_time() - c)
    wall, cpu = np.array(wall) * 1e3, np.array(cpu) * 1e3
    return {"p50_ms": float(np.percentile(wall, 50)), "p99_ms": float(np.percentile(wall, 99)),
            "mean_ms": float(wall.mean()), "cpu_p50_ms": float(np.percentile(cpu, 50)),
            "cpu_p99_ms": float(np.percentile(cpu, 99)), "calls": len(wall)}


def device(root: Path, num_items: int, seed: int = 0):
    """A store with a random catalog, an installed default head and `HISTORY` interactions."""
    import torch

    from fedrec.client import FedrecClient
    from fedrec.common.hparams import ModelConfig
    from fedrec.common.model import FedRecModel

    rng = np.random.default_rng(seed)
    catalog = rng.normal(size=(num_items, 384)).astype(np.float32)
    catalog /= np.linalg.norm(catalog, axis=1, keepdims=True)
    torch.manual_seed(seed)
    cfg = ModelConfig()
    client = FedrecClient(root / f"device-{num_items}.sqlite")
    t = time.perf_counter()
    client.install(catalog, FedRecModel(cfg, 1).shared_arrays(), cfg, catalog_name="random")
    install_s = time.perf_counter() - t
    items = rng.choice(num_items, HISTORY, replace=False)
    for i, item in enumerate(items):
        client.add_interaction(int(item), float(i))
    return client, install_s


def cold(code: str, repeats: int = 3) -> dict:
    """Median over `repeats` new processes: in-process phases and the process' wall time."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                             text=True, env=env, timeout=600)
        run = json.loads(out.stdout.strip().splitlines()[-1])
        run["process_wall"] = time.perf_counter() - t
        runs.append(run)
    keys = ("open", "recommend", "total", "process_wall")
    result = {f"{k}_s": float(np.median([r[k] for r in runs])) for k in keys}
    result["items"] = runs[0]["items"]
    if "torch" in runs[0]:
        result["imports_torch"] = runs[0]["torch"]
    return result


def catalog_run(num_items: int, root: Path, repeats: int) -> dict:
    import torch

    from fedrec.client.export import export_onnx
    from fedrec.client.ranking import OnnxRanker, top_k

    torch.set_num_threads(1)
    client, install_s = device(root, num_items)
    t = time.perf_counter()
    client.recommend(k=10)  # the personal vector: reconstructed and cached in the store
    first_s = time.perf_counter() - t
    result = {"items": num_items, "history": HISTORY, "install_s": install_s,
              "first_recommend_in_process_s": first_s}
    result["torch"] = timed(lambda: client.recommend(k=10, explain=False), repeats)
    result["torch_explain"] = timed(lambda: client.recommend(k=10, explain=True), repeats)
    t = time.perf_counter()
    graph = export_onnx(client.recommender, root / f"ranking-{num_items}.onnx")
    result["onnx_export_s"] = time.perf_counter() - t
    result["onnx_file_mb"] = graph.stat().st_size / 2**20
    ranker = OnnxRanker(graph, threads=1)
    result["onnx"] = timed(lambda: ranker.recommend_from(client.store, k=10), repeats)
    history, _ = client.store.interactions()
    personal, _ = client.recommender.user_vector()
    result["onnx_graph_only"] = timed(
        lambda: top_k(ranker.scores(history, personal)[0], history, 10), repeats)
    torch_top = client.recommend(k=10, explain=False)
    onnx_top, _ = ranker.recommend_from(client.store, k=10)
    result["same_top10"] = [r.item for r in torch_top] == onnx_top.tolist()
    store = str(client.store.path)
    client.close()
    result["cold_torch"] = cold(COLD_TORCH.format(store=store, before=""))
    result["cold_onnx"] = cold(COLD_ONNX.format(store=store, graph=str(graph)))
    new_item = f"c.add_interaction({num_items - 1 if num_items - 1 not in history else 0})"
    result["cold_torch_after_new_interaction"] = cold(
        COLD_TORCH.format(store=store, before=new_item), repeats=1)
    return result


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def install_size(name: str, *steps: list[str]) -> dict:
    """Sizes of a fresh venv's site-packages after `pip install -c constraints.txt` of each
    argument list in `steps`, in order."""
    venv = Path(tempfile.gettempdir()) / f"fedrec-{name}-venv"
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-c",
           str(ROOT / "constraints.txt")]
    result = {"pip_install": [" ".join(step) for step in steps]}
    t = time.perf_counter()
    for step in steps:
        done = subprocess.run(pip + step, capture_output=True, text=True, timeout=3600)
        if done.returncode:
            result["error"] = (done.stderr or done.stdout).strip().splitlines()[-20:]
            return result
    result["install_s"] = time.perf_counter() - t
    (site,) = (venv / "lib").glob("python*/site-packages")
    sizes = {p.name: du(p) if p.is_dir() else p.stat().st_size for p in site.iterdir()}
    result["site_packages_mb"] = sum(sizes.values()) / 2**20
    result["du_sh"] = subprocess.run(["du", "-sh", str(site)], capture_output=True,
                                     text=True).stdout.split()[0]
    result["largest_mb"] = {k: round(v / 2**20, 1) for k, v in
                            sorted(sizes.items(), key=lambda kv: -kv[1])[:12]}
    result["has_ray"] = (site / "ray").exists()
    probe = ("import importlib, json\nout = {}\n"
             "for m in ['fedrec.client.store', 'fedrec.client.sdk', 'fedrec.client.app']:\n"
             "    try:\n        importlib.import_module(m); out[m] = 'ok'\n"
             "    except Exception as e:\n        out[m] = f'{type(e).__name__}: {e}'\n"
             "print(json.dumps(out))")
    imports = subprocess.run([str(venv / "bin" / "python"), "-c", probe], capture_output=True,
                             text=True, cwd=tempfile.gettempdir(), timeout=600)
    result["imports"] = json.loads(imports.stdout) if imports.returncode == 0 else imports.stderr
    shutil.rmtree(venv, ignore_errors=True)
    return result


def plot(results: dict, path: Path) -> None:
    from fedrec.common.plots import pyplot, save_png

    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    paths = [("torch", "torch"), ("torch_explain", "torch + explain"), ("onnx", "ONNX"),
             ("onnx_graph_only", "ONNX graph + top-k")]
    sizes = list(results["catalogs"])
    width = 0.8 / len(paths)
    for j, (key, label) in enumerate(paths):
        x = np.arange(len(sizes)) + j * width
        p50 = [results["catalogs"][s][key]["p50_ms"] for s in sizes]
        p99 = [results["catalogs"][s][key]["p99_ms"] for s in sizes]
        cpu_p99 = [results["catalogs"][s][key]["cpu_p99_ms"] for s in sizes]
        left.bar(x, p99, width, alpha=0.35, color=f"C{j}")
        left.bar(x, p50, width, label=label, color=f"C{j}")
        left.scatter(x, cpu_p99, marker="_", s=300, color="k", zorder=3,
                     label="CPU-time p99" if j == 0 else None)
    left.axhline(GOAL_MS, color="k", ls="--", lw=1, label=f"goal p99 {GOAL_MS:g} ms")
    left.set_xticks(np.arange(len(sizes)) + 0.4 - width / 2, [f"{int(s):,} items" for s in sizes])
    left.set_ylabel("top-10 latency, ms (solid p50, light p99)")
    left.set_title("warm caches, one core")
    left.legend(fontsize=8)
    kinds = [("cold_torch", "torch"), ("cold_onnx", "ONNX"),
             ("cold_torch_after_new_interaction", "torch, new interaction")]
    for j, (key, label) in enumerate(kinds):
        x = np.arange(len(sizes)) + j * 0.27
        right.bar(x, [results["catalogs"][s][key]["process_wall_s"] for s in sizes], 0.27,
                  label=label, color=f"C{j}")
    right.set_xticks(np.arange(len(sizes)) + 0.27, [f"{int(s):,} items" for s in sizes])
    right.set_ylabel("new process to first top-10, s")
    right.set_title("cold start (process wall time)")
    right.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1000)
    parser.add_argument("--skip-install", action="store_true")
    args = parser.parse_args()
    import onnxruntime
    import torch

    results = {"machine": {"python": platform.python_version(), "torch": torch.__version__,
                           "onnxruntime": onnxruntime.__version__, "cpus": os.cpu_count(),
                           "load_average_before": os.getloadavg()},
               "goal_p99_ms": GOAL_MS, "catalogs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for n in SIZES:
            results["catalogs"][str(n)] = catalog_run(n, Path(tmp), args.repeats)
            print(json.dumps({n: {k: v for k, v in results["catalogs"][str(n)].items()
                                  if isinstance(v, dict)}}, indent=1), flush=True)
    results["machine"]["load_average_after"] = os.getloadavg()
    if not args.skip_install:
        results["install_size"] = {
            "client_extra": install_size("client", [f"{ROOT}[client]"]),
            "proposed_client": install_size("minimal", PROPOSED, ["--no-deps", str(ROOT)]),
        }
    elif (RESULTS / "client.json").exists():  # keep the last measured install sizes
        previous = json.loads((RESULTS / "client.json").read_text())
        if "install_size" in previous:
            results["install_size"] = previous["install_size"]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "client.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(results, RESULTS / "client.png")
    print(json.dumps(results.get("install_size", {}), indent=1))


if __name__ == "__main__":
    main()
