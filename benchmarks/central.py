"""Benchmark: central training of popular / BPR-MF / fedrec on one data set, by the protocol.

Each model runs in its own subprocess so that peak memory is per model. Also times the catalog
embedding (cold cache vs cache hit). Writes benchmarks/results/central-<dataset>.json and a bar
chart PNG beside it, and prints a markdown table for docs/results.md.

    python benchmarks/central.py --dataset ml-100k [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
KEYS = ["hr@10", "ndcg@10", "recall@20", "mrr@10", "coverage@10", "diversity@10",
        "cold_hr@10", "cold_random_hr@10", "train_seconds", "peak_rss_mb"]


def one_model(dataset: str, model: str, seed: int) -> dict:
    code = (
        "import json, torch; torch.set_num_threads(2)\n"
        "from fedrec.common.config import RunConfig\n"
        "from fedrec.common.experiment import run_central\n"
        f"_, m = run_central(RunConfig(dataset={dataset!r}, model={model!r}, seed={seed}), None)\n"
        "print('RESULT', json.dumps(m))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def embedding_speed(dataset: str) -> dict:
    """Items/s with an empty cache, and the time of a cache hit, in a fresh FEDREC_HOME-like dir."""
    code = (
        "import os, sys, time, json, tempfile\n"
        "from fedrec.common.data.registry import load_dataset\n"
        f"d = load_dataset({dataset!r})\n"
        "os.environ['FEDREC_HOME'] = tempfile.mkdtemp()\n"
        "from fedrec.common.embeddings import encode_catalog, load_encoder\n"
        "t = time.perf_counter(); model = load_encoder(); load_s = time.perf_counter() - t\n"
        "t = time.perf_counter(); model.encode(d.item_texts, batch_size=128); enc = time.perf_counter() - t\n"
        "t = time.perf_counter(); encode_catalog(d.item_texts, progress=False); miss = time.perf_counter() - t\n"
        "t = time.perf_counter(); encode_catalog(d.item_texts, progress=False); hit = time.perf_counter() - t\n"
        "print('RESULT', json.dumps({'items': len(d.item_texts), 'encoder_load_s': load_s,"
        " 'miss_s': miss, 'items_per_s': len(d.item_texts) / enc, 'hit_s': hit}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--models", nargs="+", default=["popular", "bpr", "fedrec"])
    args = parser.parse_args()

    results = {"dataset": args.dataset, "seeds": args.seeds, "models": {}}
    results["embedding"] = embedding_speed(args.dataset)
    for model in args.models:
        runs = []
        for seed in args.seeds:
            start = time.perf_counter()
            runs.append(one_model(args.dataset, model, seed))
            print(f"{model} seed {seed}: ndcg@10 {runs[-1]['ndcg@10']:.4f} "
                  f"({time.perf_counter() - start:.0f} s)", file=sys.stderr)
        results["models"][model] = runs

    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    stem = out_dir / f"central-{args.dataset}"
    with tempfile.NamedTemporaryFile("w", dir=out_dir, delete=False) as tmp:
        json.dump(results, tmp, indent=2)
    Path(tmp.name).replace(stem.with_suffix(".json"))
    plot(results, stem.with_suffix(".png"))
    print(markdown(results))


def mean_std(values):
    import numpy as np

    arr = np.asarray(values, dtype=float)
    return arr.mean(), (arr.std(ddof=1) if len(arr) > 1 else 0.0)


def markdown(results: dict) -> str:
    lines = ["| model | " + " | ".join(KEYS) + " |", "|---" * (len(KEYS) + 1) + "|"]
    for model, runs in results["models"].items():
        cells = []
        for key in KEYS:
            m, s = mean_std([r[key] for r in runs])
            cells.append(f"{m:.4f}" + (f" ± {s:.4f}" if s else "") if key not in (
                "train_seconds", "peak_rss_mb") else f"{m:.0f}")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    e = results["embedding"]
    lines.append(
        f"\nEmbedding {e['items']} items: encoder load {e['encoder_load_s']:.1f} s, "
        f"{e['items_per_s']:.0f} items/s, first call (load + encode + cache write) "
        f"{e['miss_s']:.1f} s, cache hit {e['hit_s'] * 1000:.1f} ms."
    )
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    from fedrec.common.plots import pyplot, save_png

    plt = pyplot()

    keys = ["hr@10", "ndcg@10", "recall@20", "mrr@10"]
    models = list(results["models"])
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / len(models)
    for j, model in enumerate(models):
        stats = [mean_std([r[k] for r in results["models"][model]]) for k in keys]
        ax.bar([i + j * width for i in range(len(keys))], [m for m, _ in stats], width,
               yerr=[s for _, s in stats], label=model)
    ax.set_xticks([i + width * (len(models) - 1) / 2 for i in range(len(keys))], keys)
    ax.set_ylabel("full-ranking metric (test)")
    ax.set_title(f"Central training on {results['dataset']} (seeds {results['seeds']})")
    ax.legend()
    fig.tight_layout()
    save_png(fig, path, dpi=120)


if __name__ == "__main__":
    main()
