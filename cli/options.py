"""Option declarations reused across commands (one definition each)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Dataset = Annotated[
    str,
    typer.Option(
        "--dataset", "-d",
        help="'synthetic' (built in), 'ml-100k' (after `fedrec data fetch ml-100k`), a name made "
        "by `fedrec data synth`, or a directory with interactions.csv|parquet and items.csv.",
    ),
]
Encoder = Annotated[
    str,
    typer.Option("--encoder", help="Sentence encoder: name in the local HF cache or a path."),
]
Seed = Annotated[int, typer.Option("--seed", help="Seed for split, init and sampling.")]
RunDir = Annotated[Path, typer.Option(
    "--run", help="A run directory written by `fedrec train` or `fedrec simulate` (its served "
    "round, each simulated user with the personal state on its device).")]
