"""Central training end to end: data set -> split -> frozen embeddings -> fit -> evaluate ->
run directory. The CLI's `train` and the benchmarks call `run_central`."""

from __future__ import annotations

import json
import platform
import resource
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from fedrec.common import atomic, config
from fedrec.common.data.dataset import Dataset
from fedrec.common.data.registry import load_dataset
from fedrec.common.embeddings import encode_catalog
from fedrec.common.evaluate import evaluate_all
from fedrec.common.recommenders import BPRMF, FedRecCentral, Popular, Recommender
from fedrec.common.split import Split, leave_one_out

HEADLINE = ["hr@10", "ndcg@10", "recall@20", "mrr@10", "coverage@10", "diversity@10"]


@dataclass
class Prepared:
    dataset: Dataset
    split: Split
    item_embeddings: np.ndarray  # (n_items, d) float32, frozen, public


def prepare(cfg: config.RunConfig, progress: bool = True) -> Prepared:
    """Load the data set, split it by the protocol, and embed (or load cached) the catalog."""
    dataset = load_dataset(cfg.dataset)
    split = leave_one_out(dataset, cfg.cold_fraction, cfg.seed)
    embeddings = encode_catalog(dataset.item_texts, cfg.encoder, progress=progress)
    return Prepared(dataset, split, embeddings)


def build(cfg: config.RunConfig) -> Recommender:
    """An untrained recommender of kind `cfg.model`, seeded by `cfg.seed`."""
    if cfg.model == "popular":
        return Popular()
    if cfg.model == "bpr":
        return BPRMF(replace(cfg.bpr, seed=cfg.seed))
    return FedRecCentral(replace(cfg.fedrec), replace(cfg.train, seed=cfg.seed))


def peak_rss_mb() -> float:
    """Peak resident memory of this process, MiB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024 / (1024 if sys.platform == "darwin" else 1)


def run_central(
    cfg: config.RunConfig, out: Path | None, progress=None, prepared: Prepared | None = None
) -> tuple[Recommender, dict]:
    """Train `cfg.model` on all training data and evaluate it; write the run into `out`.

    Returns the fitted model and the metrics dict (keys: HEADLINE, cold_*, valid_ndcg@10,
    train_seconds, peak_rss_mb).
    """
    cfg.validate()
    torch.manual_seed(cfg.seed)
    prepared = prepared or prepare(cfg)
    model = build(cfg)
    start = time.perf_counter()
    model.fit(prepared.split, prepared.item_embeddings, progress=progress)
    train_seconds = time.perf_counter() - start
    metrics = evaluate_all(model, prepared.split, prepared.item_embeddings)
    metrics.update(train_seconds=round(train_seconds, 2), peak_rss_mb=round(peak_rss_mb(), 1))
    if out is not None:
        write_run(Path(out), cfg, model, metrics, prepared.dataset)
    return model, metrics


def write_run(out: Path, cfg, model: Recommender, metrics: dict, dataset: Dataset) -> None:
    out.mkdir(parents=True, exist_ok=True)
    config.save(cfg, out / "config.toml")
    model.save(out)
    info = {
        "dataset": dataset.summary(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic.write_text(out / "run.json", json.dumps(info, indent=2))
    atomic.write_text(out / "metrics.json", json.dumps(metrics, indent=2))
