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
    from fedrec.common.text import printable

    path = movielens.fetch(force=force, source=source)
    typer.echo(f"ml-100k ready in {printable(path)}")


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
    """Print counts and density of a data set, its reconsumption rule, and how many duplicate
    interactions loading dropped and item texts it truncated (docs/data.md, "Rules")."""
    from fedrec.common.data.registry import load_dataset

    # JSON escapes every control character (and, ASCII-only, every bidi override) in names
    typer.echo(json.dumps(load_dataset(dataset).summary(), indent=2))


@app.command("privacy-report")
def privacy_report(
    dataset: Dataset = "synthetic",
    k: Annotated[int, typer.Option(help="The k-anonymity target.")] = 5,
    out: Annotated[Path | None, typer.Option(help="Also write the report as JSON here, and a "
                                                  "PNG of the class sizes beside it.")] = None,
) -> None:
    """How identifying the profile fields are: users unique before and after generalization
    (k-anonymity), and the ℓ-diversity of occupation."""
    from fedrec.cli.output import format_table
    from fedrec.common import anonymity, atomic
    from fedrec.common.data.registry import load_dataset
    from fedrec.common.errors import FedrecError
    from fedrec.common.text import printable

    data = load_dataset(dataset)
    if data.profiles is None or data.profiles.empty:
        raise FedrecError(f"data set '{printable(dataset)}' has no user profiles to report on")
    result = {"dataset": dataset, **anonymity.report(data.profiles, k)}
    identifiers = ", ".join(printable(c) for c in ["user id", *result["direct_identifiers"]])
    others = ", ".join(printable(c) for c in result["dropped"]) or "none"
    typer.echo(f"{printable(dataset)}: {len(data.profiles)} users; dropped as direct identifiers:"
               f" {identifiers}; other fields dropped: {others}")
    columns = ["users", "unique", "below_5", "classes", "k", "l_diversity", "generalization"]
    typer.echo(format_table(result["rows"], columns, first="name"))
    if out is not None:
        atomic.write_text(out, json.dumps(result, indent=2))
        _plot_class_sizes(data.profiles, result, out.with_suffix(".png"))
        typer.echo(f"wrote {printable(out)} and {printable(out.with_suffix('.png'))}")


def _plot_class_sizes(profiles, result: dict, path: Path) -> None:
    """Users by the size of their equivalence class, one bar group per report row."""
    from fedrec.common.plots import pyplot, save_png

    plt = pyplot()
    import numpy as np

    from fedrec.common import anonymity

    edges = [1, 2, 5, 10, 20, 50, 100, np.inf]
    labels = ["1", "2-4", "5-9", "10-19", "20-49", "50-99", "100+"]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / len(result["rows"])
    for i, row in enumerate(result["rows"]):
        sizes = anonymity.class_sizes(profiles, anonymity.Levels(**row["levels"]))
        counts = np.histogram(sizes, bins=edges)[0]
        ax.bar(np.arange(len(labels)) + i * width, counts, width, label=row["name"])
    ax.set_xticks(np.arange(len(labels)) + 0.4 - width / 2, labels)
    ax.set_xlabel("size of the user's group (users sharing every generalized profile field)")
    ax.set_ylabel("users")
    ax.set_title(f"{result['dataset']}: re-identification risk (k target {result['k_target']})")
    ax.legend()
    fig.tight_layout()
    save_png(fig, path, dpi=120)
