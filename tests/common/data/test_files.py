import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fedrec.common.data import files, synthetic
from fedrec.common.data.dataset import Dataset
from fedrec.common.errors import DataError, DatasetNotFound

ITEMS = "item,text,title\ni1,A tense detective mystery.,Clue\ni2,A love story.,Heart\n"
INTERACTIONS = "user,item,timestamp,rating\nu2,i1,10,4\nu1,i2,11,5\nu2,i2,12,3\n"


def write(directory: Path, **contents: str | bytes) -> Path:
    """Write `name_ext=content` files (e.g. items_csv=...) into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    for key, content in contents.items():
        path = directory / key.replace("_", ".", 1)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return directory


def assert_same(a: Dataset, b: Dataset) -> None:
    for name in ("item_ids", "user_ids", "users", "items", "timestamps", "ratings"):
        left, right = getattr(a, name), getattr(b, name)
        if left is None or right is None:
            assert left is right, name
        else:
            np.testing.assert_array_equal(left, right, err_msg=name)
    assert a.item_texts == b.item_texts and a.item_titles == b.item_titles
    if a.profiles is None:
        assert b.profiles is None
    else:
        pd.testing.assert_frame_equal(a.profiles, b.profiles)


def test_round_trip_synthetic(tmp_path, csv_reader):
    dataset = synthetic.generate(num_users=200, num_items=300, seed=3, name="small")
    files.save_dir(dataset, tmp_path / "small")
    loaded = files.load_dir(tmp_path / "small")
    assert loaded.name == "small"
    assert_same(dataset, loaded)
    assert loaded.profiles["age"].dtype == np.int64
    meta = json.loads((tmp_path / "small" / "meta.json").read_text())
    assert meta["num_interactions"] == dataset.num_interactions
    assert set(meta["sha256"]) == {"interactions.csv", "items.csv", "users.csv"}


def test_round_trip_without_ratings_or_profiles_replaces_old_files(tmp_path, csv_reader):
    files.save_dir(synthetic.generate(num_users=100, num_items=50), tmp_path)
    bare = Dataset(
        name="bare",
        item_ids=np.array(["a", "b, with comma"]),
        item_texts=['text "quoted"', "two\nlines"],
        user_ids=np.array(["x"]),
        users=np.array([0, 0]),
        items=np.array([1, 0]),
        timestamps=np.array([2, 1]),
    )
    files.save_dir(bare, tmp_path)
    assert not (tmp_path / "users.csv").exists()
    assert_same(bare, files.load_dir(tmp_path))


def test_user_data_without_meta(tmp_path, csv_reader):
    write(tmp_path / "mine", items_csv=ITEMS, interactions_csv=INTERACTIONS)
    dataset = files.load_dir(tmp_path / "mine")
    assert dataset.name == "mine"
    assert list(dataset.user_ids) == ["u2", "u1"]  # order of first appearance
    assert list(dataset.users) == [0, 1, 0] and list(dataset.items) == [0, 1, 1]
    assert list(dataset.timestamps) == [10, 11, 12] and dataset.ratings.dtype == np.float32
    assert dataset.item_titles == ["Clue", "Heart"] and dataset.profiles is None


def test_users_csv_reordered_and_extra_users_dropped(tmp_path):
    users = "user,zip,age\nu0,02139,50\nu1,10001,30\nu2,94110,40\n"
    write(tmp_path, items_csv=ITEMS, interactions_csv=INTERACTIONS, users_csv=users)
    profiles = files.load_dir(tmp_path).profiles
    assert profiles.to_dict("list") == {"zip": ["94110", "10001"], "age": ["40", "30"]}


def test_flexible_values(tmp_path, csv_reader):
    interactions = (
        " User ,ITEM,Timestamp\n"
        "u1, i1 ,2021-03-04T05:06:07Z\n"
        "u1,i2,2021-03-04\n"
        "u2,i1,5.7\n"
        "u2,i2,2021-03-04 07:06:07+02:00\n"
    )
    write(tmp_path, items_csv="item,text\ni1,One.\ni2,Two.\n", interactions_csv=interactions)
    dataset = files.load_dir(tmp_path)
    assert list(dataset.timestamps) == [1614834367, 1614816000, 5, 1614834367]
    assert dataset.ratings is None and dataset.item_titles == ["One.", "Two."]


MALFORMED = [
    # (file, content, line, column, words the message must contain)
    ("interactions.csv", "user,item\nu1,i1\n", 1, None, ["timestamp", "found user, item"]),
    ("interactions.csv", "user,item,timestamp\n", None, None, ["no rows"]),
    ("interactions.csv", "", None, None, ["empty"]),
    ("interactions.csv", "user,item,timestamp\nu1,i1,5\nu1,i2,yesterday\n", 3, "timestamp", []),
    ("interactions.csv", "user,item,timestamp\nu1,i1,now\n", 2, "timestamp", ["ISO 8601"]),
    ("interactions.csv", "user,item,timestamp\nu1,i1,inf\n", 2, "timestamp", []),
    ("interactions.csv", "user,item,timestamp,rating\nu1,i1,5,good\n", 2, "rating", ["number"]),
    ("interactions.csv", "user,item,timestamp,rating\nu1,i1,5,\n", 2, "rating", ["missing"]),
    ("interactions.csv", "user,item,timestamp\nu1,i1,5\n\n ,i2,6\n", 4, "user", ["missing"]),
    ("interactions.csv", "user,item,timestamp\nu1,i1,5\nu1,i9,6\n", 3, "item", ["'i9'"]),
    ("interactions.csv", "user,item,timestamp\nu1,i1,5,x\n", 2, None, ["more fields"]),
    ("interactions.csv", "user,item,timestamp\nu1,i1,5\nu1,i2,6,x\n", 3, None, ["fields"]),
    ("interactions.csv", "user,item,user\nu1,i1,5\n", 1, None, ["repeated", "user"]),
    ("items.csv", "item,text\ni1,One.\ni2,Two.\ni1,Again.\n", 4, "item", ["lines 2 and 4"]),
    ("items.csv", 'item,text\ni1,"Two\nlines."\ni2,  \n', 4, "text", ["missing"]),
    ("items.csv", "item,title\ni1,One\n", 1, None, ["text", "expected item, text[, title]"]),
    ("items.csv", 'item,text\ni1,"never closed\n', None, None, ["CSV"]),
    ("users.csv", "user,age\nu1,3\nu2,4\nu1,5\n", 4, "user", ["lines 2 and 4"]),
    ("users.csv", "user,age\nu1,3\n", 3, "user", ["'u2'", "users.csv"]),
    ("users.csv", "age\n3\n", 1, None, ["user"]),
]


@pytest.fixture(params=["c", "pyarrow"])
def csv_reader(request, monkeypatch):
    """Run a test with pandas' C reader and with the pyarrow reader used for large files."""
    if request.param == "pyarrow":
        pytest.importorskip("pyarrow")
        monkeypatch.setattr(files, "_PYARROW_MIN_BYTES", -1)
    return request.param


@pytest.mark.parametrize(("file_name", "content", "line", "column", "words"), MALFORMED)
def test_malformed_files_name_file_line_and_column(
    tmp_path, csv_reader, file_name, content, line, column, words
):
    contents = {
        "items.csv": "item,text\ni1,One.\ni2,Two.\n",
        "interactions.csv": "user,item,timestamp\nu1,i1,5\nu2,i2,6\n",
        file_name: content,
    }
    write(tmp_path, **{name.replace(".", "_"): text for name, text in contents.items()})
    with pytest.raises(DataError) as caught:
        files.load_dir(tmp_path)
    message = str(caught.value)
    where = "interactions.csv" if file_name == "users.csv" and line == 3 else file_name
    assert where in message
    assert caught.value.line == line
    if line is not None:
        assert f"line {line}" in message
    if column is not None:
        assert caught.value.column == column and f"column '{column}'" in message
    for word in words:
        assert word in message


def test_not_utf8(tmp_path):
    write(tmp_path, items_csv=b"item,text\ni1,caf\xe9\n", interactions_csv=INTERACTIONS)
    with pytest.raises(DataError, match="items.csv.*UTF-8"):
        files.load_dir(tmp_path)


def test_changed_file_is_detected_by_meta(tmp_path):
    files.save_dir(synthetic.generate(num_users=100, num_items=50), tmp_path)
    with open(tmp_path / "items.csv", "a") as fh:
        fh.write("extra,An extra item.,Extra\n")
    with pytest.raises(DataError, match="items.csv.*meta.json"):
        files.load_dir(tmp_path)
    (tmp_path / "meta.json").unlink()
    assert files.load_dir(tmp_path).num_items == 51


def test_missing_directory_and_files(tmp_path):
    with pytest.raises(DatasetNotFound):
        files.load_dir(tmp_path / "nope")
    with pytest.raises(DataError, match="no interactions.csv or interactions.parquet"):
        files.load_dir(write(tmp_path / "a", items_csv=ITEMS))
    with pytest.raises(DataError, match="items.csv.*not found"):
        files.load_dir(write(tmp_path / "b", interactions_csv=INTERACTIONS))


def test_parquet_interactions(tmp_path):
    frame = pd.DataFrame(
        {
            "user": [7, 8, 7],
            "item": ["i1", "i2", "i2"],
            "timestamp": pd.to_datetime(
                ["2021-03-04 05:06:07", "2021-03-05", "2021-03-06"], format="ISO8601"
            ),
            "rating": [4.0, 5.0, 3.5],
        }
    )
    frame.to_parquet(write(tmp_path, items_csv=ITEMS) / "interactions.parquet")
    dataset = files.load_dir(tmp_path)
    assert list(dataset.user_ids) == ["7", "8"]
    assert list(dataset.timestamps) == [1614834367, 1614902400, 1614988800]
    np.testing.assert_array_equal(dataset.ratings, np.float32([4.0, 5.0, 3.5]))


def test_parquet_errors_name_the_row(tmp_path):
    frame = pd.DataFrame({"user": ["a", "b", "c"], "item": ["i1", "i1", "i1"]})
    frame["timestamp"] = ["1", "2", "soon"]
    frame.to_parquet(write(tmp_path, items_csv=ITEMS) / "interactions.parquet")
    with pytest.raises(DataError) as caught:
        files.load_dir(tmp_path)
    assert caught.value.line == 3 and caught.value.column == "timestamp"
    assert "interactions.parquet" in str(caught.value) and "row 3" in str(caught.value)


def test_parquet_without_pyarrow(tmp_path, monkeypatch):
    write(tmp_path, items_csv=ITEMS, interactions_parquet=b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(DataError, match="pip install pyarrow"):
        files.load_dir(tmp_path)


def test_both_interaction_files(tmp_path):
    write(tmp_path, items_csv=ITEMS, interactions_csv=INTERACTIONS, interactions_parquet=b"")
    with pytest.raises(DataError, match="keep one"):
        files.load_dir(tmp_path)


CSV_TOKENS = list("ui0123456789,,,\n\n\"' \t.-:TZe+x\r\x00é") + ["i1", "u1", "i2", "2021-03-04"]
CSV_TEXT = st.lists(st.sampled_from(CSV_TOKENS), max_size=60).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    which=st.sampled_from(["interactions.csv", "items.csv", "users.csv"]),
    header=st.sampled_from(["", "user,item,timestamp,rating\n", "item,text,title\n", "user,age\n"]),
    body=st.one_of(CSV_TEXT, st.text(max_size=40), st.binary(max_size=40)),
)
@example(which="interactions.csv", header="", body="\r,u")  # header read as 2 fields, rows as 1
def test_garbage_never_crashes_with_anything_but_data_error(which, header, body):
    contents = {
        "items.csv": "item,text\ni1,One.\ni2,Two.\n",
        "interactions.csv": "user,item,timestamp\nu1,i1,5\nu2,i2,6\n",
    }
    raw = body if isinstance(body, bytes) else body.encode("utf-8")
    with tempfile.TemporaryDirectory() as directory:
        for name, text in contents.items():
            (Path(directory) / name).write_text(text)
        (Path(directory) / which).write_bytes(header.encode() + raw)
        try:
            dataset = files.load_dir(directory)
        except DataError as exc:
            assert which in str(exc) or "interactions.csv" in str(exc)
        else:
            assert dataset.num_interactions > 0 and dataset.num_items > 0
