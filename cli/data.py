"""`fedrec data fetch|synth|info`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from fedrec.cli.options import Dataset, Seed

app = typer.Typer(help="Fetch, generate and inspect data sets.", no_args_is_help=True)


@app.command("fetch")
def fetch(
    name: Annotated[str, typer.Argument(help="Data set to fetch: ml-100k.")],
    source: Annotated[
        Path | None, typer.Option(help="Use a local ml-100k.zip or directory instead of fetching.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Fetch again even if cached.")] = False,
) -> None:
    """Download a public data set into $FEDREC_HOME, verified by sha256."""
    from fedrec.common.errors import FedrecError

    if name != "ml-100k":
        raise FedrecError(f"unknown data set '{name}' to fetch; expected 'ml-100k'")
    from fedrec.common.data import movielens

    path = movielens.fetch(force=force, source=source)
    typer.echo(f"ml-100k ready in {path}")


@app.command("synth")
def synth(
    name: Annotated[str, typer.Option(help="Name to save it under (use as --dataset NAME).")],
    users: Annotated[int, typer.Option(help="Number of users (100 to 100000).")] = 1000,
    items: Annotated[int, typer.Option(help="Number of items.")] = 1000,
    seed: Seed = 0,
) -> None:
    """Generate a synthetic data set and save it under $FEDREC_HOME/datasets/NAME."""
    from fedrec.common.data import files, synthetic
    from fedrec.common.errors import ConfigError
    from fedrec.common.paths import datasets_dir

    if not 100 <= users <= 100_000:
        raise ConfigError(f"--users {users}: expected 100 to 100000")
    if items < 20:
        raise ConfigError(f"--items {items}: expected at least 20")
    if name in ("synthetic", "ml-100k") or "/" in name:
        raise ConfigError(f"--name '{name}' is reserved or not a plain name")
    dataset = synthetic.generate(num_users=users, num_items=items, seed=seed, name=name)
    files.save_dir(dataset, datasets_dir() / name)
    typer.echo(json.dumps(dataset.summary(), indent=2))


@app.command("info")
def info(dataset: Dataset = "synthetic") -> None:
    """Print counts and density of a data set."""
    from fedrec.common.data.registry import load_dataset

    typer.echo(json.dumps(load_dataset(dataset).summary(), indent=2))
