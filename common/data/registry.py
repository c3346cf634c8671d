"""Resolve a data-set name or path to a `Dataset`.

Order: the built-in names ("synthetic", "ml-100k"), then an existing directory path, then a
directory under `datasets_dir()` (as saved by `fedrec data synth --name NAME`).
"""

from __future__ import annotations

from pathlib import Path

from fedrec.common.data import files, movielens, synthetic
from fedrec.common.data.dataset import Dataset
from fedrec.common.errors import DatasetNotFound
from fedrec.common.paths import datasets_dir

BUILT_IN = ("synthetic", movielens.NAME)


def load_dataset(name_or_path: str) -> Dataset:
    """The data set called `name_or_path`, or stored in that directory."""
    if name_or_path == "synthetic":
        return synthetic.default()
    if name_or_path == movielens.NAME:
        return movielens.load()
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return files.load_dir(path)
    saved = datasets_dir() / name_or_path
    if path.name == name_or_path and saved.is_dir():
        return files.load_dir(saved)
    raise DatasetNotFound(
        f"no data set '{name_or_path}': not a built-in name, an existing directory, or a data"
        f" set saved in {datasets_dir()}. Available: {', '.join(available())}"
    )


def available() -> list[str]:
    """Built-in names, then the names of data sets saved under `datasets_dir()`."""
    root = datasets_dir()
    saved = root.iterdir() if root.is_dir() else []
    return [*BUILT_IN, *sorted(p.name for p in saved if _is_saved_dataset(p))]


def _is_saved_dataset(path: Path) -> bool:
    markers = (files.META_JSON, files.INTERACTIONS_CSV, files.INTERACTIONS_PARQUET)
    return (
        path.is_dir()
        and path.name not in BUILT_IN
        and not path.name.startswith(".")
        and any((path / marker).exists() for marker in markers)
    )
