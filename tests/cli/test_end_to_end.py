"""A user's path through the CLI on a small synthetic set, with the real encoder."""

import json

import pytest

from fedrec.cli.main import main

METRIC_KEYS = {"hr@10", "ndcg@10", "recall@20", "mrr@10", "coverage@10"}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    root = tmp_path_factory.mktemp("fedrec-home")
    mp = pytest.MonkeyPatch()
    mp.setenv("FEDREC_HOME", str(root))
    main(["data", "synth", "--name", "tiny", "--users", "150", "--items", "80", "--seed", "1"])
    yield root
    mp.undo()


def train(out, model, seed=0, epochs=3):
    main(["train", "--dataset", "tiny", "--model", model, "--epochs", str(epochs),
          "--seed", str(seed), "--out", str(out)])
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.slow
def test_train_writes_a_complete_run_directory(home, tmp_path, capsys):
    metrics = train(tmp_path / "run", "fedrec")
    assert METRIC_KEYS <= set(metrics)
    assert all(0.0 <= metrics[k] <= 1.0 for k in METRIC_KEYS)
    for name in ("config.toml", "metrics.json", "model.safetensors", "model.json", "run.json"):
        assert (tmp_path / "run" / name).is_file()
    table = capsys.readouterr().out
    assert "ndcg@10" in table and "fedrec" in table
    # the config in the run directory reproduces the run
    assert 'dataset = "tiny"' in (tmp_path / "run" / "config.toml").read_text()


@pytest.mark.slow
def test_same_seed_same_metrics(home, tmp_path):
    a = train(tmp_path / "a", "bpr", seed=3, epochs=5)
    b = train(tmp_path / "b", "bpr", seed=3, epochs=5)
    c = train(tmp_path / "c", "bpr", seed=4, epochs=5)
    drop = ("train_seconds", "peak_rss_mb")
    strip = lambda m: {k: v for k, v in m.items() if k not in drop}  # noqa: E731
    assert strip(a) == strip(b)
    assert strip(a) != strip(c)


@pytest.mark.slow
def test_evaluate_and_recommend_from_a_run(home, tmp_path, capsys):
    metrics = train(tmp_path / "run", "fedrec")
    capsys.readouterr()
    main(["evaluate", "--run", str(tmp_path / "run")])
    table = capsys.readouterr().out
    assert f"{metrics['ndcg@10']:.4f}" in table
    main(["recommend", "--run", str(tmp_path / "run"), "--user", "u000001", "--k", "5",
          "--explain"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("user u000001")
    assert sum(line.lstrip()[:2].rstrip(".").isdigit() for line in lines) == 5
    assert any("because you liked" in line for line in lines)


@pytest.mark.slow
def test_embed_second_call_is_a_cache_hit(home, capsys):
    main(["embed", "--dataset", "tiny"])
    capsys.readouterr()
    main(["embed", "--dataset", "tiny"])
    assert capsys.readouterr().out.startswith("cache hit: 80 items x 384 dims")
