"""`fedrec train`: central training and evaluation of one model, into a run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fedrec.cli.options import Dataset, Encoder, Seed


def train(
    dataset: Dataset = "synthetic",
    model: Annotated[str, typer.Option(help="popular, bpr or fedrec.")] = "fedrec",
    out: Annotated[Path | None, typer.Option(help="Run directory to write.")] = None,
    config: Annotated[Path | None, typer.Option(help="A config.toml to start from.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Max training epochs.")] = None,
    seed: Seed = 0,
    encoder: Encoder = "all-MiniLM-L6-v2",
    cold_fraction: Annotated[float, typer.Option(help="Share of items held out as cold.")] = 0.1,
    compare: Annotated[bool, typer.Option(help="Also train the baselines; print all.")] = False,
) -> None:
    """Train on every user's training data and report the evaluation protocol's metrics."""
    from dataclasses import replace

    from fedrec.cli.output import epoch_reporter, format_table, progress_bar
    from fedrec.common import config as cfgmod
    from fedrec.common.experiment import HEADLINE, prepare, run_central

    cfg = cfgmod.load(config) if config else cfgmod.RunConfig()
    cfg = replace(cfg, dataset=dataset, model=model, seed=seed, encoder=encoder,
                  cold_fraction=cold_fraction)
    if epochs is not None:
        cfg.train.epochs = cfg.bpr.epochs = epochs
    cfg.validate()
    prepared = prepare(cfg)
    kinds = ["popular", "bpr", "fedrec"] if compare else [model]
    rows = []
    for kind in kinds:
        run_cfg = replace(cfg, model=kind)
        total = {"popular": 1, "bpr": run_cfg.bpr.epochs, "fedrec": run_cfg.train.epochs}[kind]
        target = None if out is None else (out if len(kinds) == 1 else out / kind)
        with progress_bar(total, f"train {kind}") as bar:
            _, metrics = run_central(run_cfg, target, epoch_reporter(bar), prepared)
            bar.n = bar.total  # early stopping may end before the last epoch
        rows.append({"model": kind, **metrics})
    columns = HEADLINE + ["cold_hr@10", "cold_random_hr@10", "train_seconds"]
    typer.echo(format_table(rows, columns))
    if out is not None:
        typer.echo(f"run written to {out}")
