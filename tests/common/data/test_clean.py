import json
import re
import unicodedata

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedrec.common.data import clean, files, synthetic
from fedrec.common.data.dataset import Dataset
from fedrec.common.errors import DataError

ITEMS = "item,text,title\ni1,A tense detective mystery.,Clue\ni2,A love story.,Heart\ni3,Rain.,\n"
# u2 re-watches i1 (at 30, after 10); u1's row at 11 is there twice
INTERACTIONS = (
    "user,item,timestamp,rating\n"
    "u2,i1,10,4\nu1,i2,11,5\nu1,i2,11,1\nu2,i2,12,3\nu1,i3,13,2\nu2,i1,30,5\nu2,i3,31,1\n"
)


def write(directory, **contents: str) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    for key, content in contents.items():
        (directory / key.replace("_", ".", 1)).write_text(content, encoding="utf-8")
    return directory


# --- interactions: exact duplicates and re-consumptions ---------------------------------------


def test_repeated_rows_by_time_then_file_order():
    users = np.array([0, 0, 0, 0, 0, 1, 0])
    items = np.array([5, 5, 5, 5, 6, 5, 5])
    times = np.array([20, 10, 20, 10, 10, 10, 30])
    exact, later = clean.repeated_rows(users, items, times)
    # (0, 5): first consumed at 10 (row 1); row 3 repeats it exactly; rows 0 and 6 are re-watches
    # at 20 and 30, and row 2 repeats row 0 exactly. User 1 and item 6 are first consumptions.
    assert exact.tolist() == [False, False, True, True, False, False, False]
    assert later.tolist() == [True, False, False, False, False, False, True]


def test_rows_to_keep_counts_what_each_rule_drops():
    users, items, times = np.array([0, 0, 0, 0]), np.array([1, 1, 1, 2]), np.array([1, 1, 2, 3])
    keep, dropped = clean.rows_to_keep(users, items, times, "first")
    assert keep.tolist() == [True, False, False, True]
    assert (dropped.exact_duplicates, dropped.reconsumptions) == (1, 1)
    keep, dropped = clean.rows_to_keep(users, items, times, "keep")
    assert keep.tolist() == [True, False, True, True]
    assert (dropped.exact_duplicates, dropped.reconsumptions) == (1, 0)
    with pytest.raises(ValueError, match="'first' or 'keep'"):
        clean.rows_to_keep(users, items, times, "sometimes")


def test_loader_drops_exact_duplicates_and_rewatches_by_default(tmp_path):
    dataset = files.load_dir(write(tmp_path, items_csv=ITEMS, interactions_csv=INTERACTIONS))
    assert list(dataset.user_ids) == ["u2", "u1"]
    assert dataset.items.tolist() == [0, 1, 1, 2, 2]  # rows 1, 2, 4, 5, 7 of the file
    assert dataset.timestamps.tolist() == [10, 11, 12, 13, 31]
    assert dataset.ratings.tolist() == [4, 5, 3, 2, 1]  # an exact duplicate keeps its first row
    assert dataset.reconsumption == "first"
    summary = dataset.summary()
    assert summary["dropped_exact_duplicates"] == 1 and summary["dropped_reconsumptions"] == 1


def test_meta_json_keep_rule_keeps_rewatches_and_round_trips(tmp_path):
    write(tmp_path / "mine", items_csv=ITEMS, interactions_csv=INTERACTIONS,
          meta_json='{"reconsumption": "keep"}')
    dataset = files.load_dir(tmp_path / "mine")  # a hand-written meta.json: settings, no sha256
    assert dataset.reconsumption == "keep" and dataset.allows_reconsumption
    assert dataset.timestamps.tolist() == [10, 11, 12, 13, 30, 31]
    assert dataset.summary()["dropped_reconsumptions"] == 0
    files.save_dir(dataset, tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "meta.json").read_text())["reconsumption"] == "keep"
    again = files.load_dir(tmp_path / "saved")
    assert again.reconsumption == "keep" and again.timestamps.tolist() == [10, 11, 12, 13, 30, 31]


@pytest.mark.parametrize("meta", ['{"reconsumption": "sometimes"}', '{"reconsumption": 1}', "[]"])
def test_bad_meta_json_settings(tmp_path, meta):
    write(tmp_path, items_csv=ITEMS, interactions_csv=INTERACTIONS, meta_json=meta)
    with pytest.raises(DataError, match="meta.json"):
        files.load_dir(tmp_path)


def test_doubled_rows_load_as_the_original(tmp_path):
    """Issue 15: with every row doubled, validation item = test item for every user."""
    original = synthetic.generate(num_users=100, num_items=60, seed=1, name="small")
    files.save_dir(original, tmp_path / "small")
    frame = pd.read_csv(tmp_path / "small" / "interactions.csv", dtype=str)
    doubled = write(tmp_path / "doubled", items_csv=(tmp_path / "small" / "items.csv").read_text())
    pd.concat([frame, frame]).sort_index(kind="stable").to_csv(
        doubled / "interactions.csv", index=False
    )
    loaded = files.load_dir(doubled)
    assert loaded.summary()["dropped_exact_duplicates"] == original.num_interactions
    for name in ("user_ids", "users", "items", "timestamps", "ratings"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(original, name), name)


def test_data_info_reports_the_counts(tmp_path, fedrec_cli):
    long_text = "x" * (clean.MAX_TEXT_CHARS + 1)
    items = ITEMS.replace("Rain.", long_text)
    write(tmp_path, items_csv=items, interactions_csv=INTERACTIONS)
    code, out, _ = fedrec_cli("data", "info", "--dataset", str(tmp_path))
    assert code == 0
    summary = json.loads(out)
    assert summary["interactions"] == 5 and summary["reconsumption"] == "first"
    assert summary["dropped_exact_duplicates"] == 1 and summary["dropped_reconsumptions"] == 1
    assert summary["truncated_texts"] == 1 and summary["truncated_titles"] == 0


# --- item texts ------------------------------------------------------------------------------


def test_texts_and_titles_are_capped_with_counts(tmp_path):
    n = clean.MAX_TEXT_CHARS
    items = f"item,text,title\ni1,{'a' * (n + 5)},{'T' * (n + 1)}\ni2,{'b' * n},\ni3,{'c' * 3 * n},\n"
    dataset = files.load_dir(write(tmp_path, items_csv=items, interactions_csv=INTERACTIONS))
    assert dataset.item_texts == ["a" * n, "b" * n, "c" * n]
    assert dataset.item_titles == ["T" * n, "b" * n, "c" * n]  # no title: the (capped) text
    assert (dataset.cleaning.truncated_texts, dataset.cleaning.truncated_titles) == (2, 1)


def test_cap_texts():
    assert clean.cap_texts(["ab", "é" * (clean.MAX_TEXT_CHARS + 1)]) == (
        ["ab", "é" * clean.MAX_TEXT_CHARS],
        1,
    )


# --- ids -------------------------------------------------------------------------------------

ACCEPTED = ["u1", "5", "-5", "-3.25", "0042", "ü-1", "a b", "a=b", "x-1", "item:7", "名前", "٣"]
REFUSED = {
    "=1+1": "formula",
    "+44 20 7946": "formula",
    "@SUM(A1)": "formula",
    "-1+2": "formula",
    "-x": "formula",
    "-": "formula",
    "-٣": "formula",
    "u\x001": "\\x00",
    "a\tb": "\\x09",
    "a\x1b[2Jb": "\\x1b",
    "\u202eevil": "\\u202e",
    "z\u200bw": "\\u200b",
    "a\x85": "\\x85",
}


@pytest.mark.parametrize("value", ACCEPTED)
def test_ids_accepted(value):
    assert clean.id_problem(value) is None


@pytest.mark.parametrize(("value", "word"), REFUSED.items())
def test_ids_refused(value, word):
    problem = clean.id_problem(value)
    assert problem is not None and word in problem
    assert all(unicodedata.category(ch)[0] != "C" for ch in problem)  # the message is printable


@given(st.text(min_size=1, max_size=12) | st.from_regex(r"-[0-9.]{1,5}", fullmatch=True))
def test_id_rule_property(value):
    problem = clean.id_problem(value)
    unsafe = any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp") for ch in value)
    plain_number = re.fullmatch(r"-[0-9]+(\.[0-9]+)?", value) is not None
    formula = value[0] in "=+@" or (value[0] == "-" and not plain_number)
    assert (problem is not None) == (unsafe or formula)


BAD_ID_FILES = [
    # (file, content, line, column, the value as the message shows it)
    ("interactions.csv", "user,item,timestamp\nu1,i1,5\n=HYPERLINK(1),i2,6\n", 3, "user",
     "=HYPERLINK(1)"),
    ("interactions.csv", "user,item,timestamp\nu1,i1,5\nu\x002,i2,6\n", 3, "user", "u\\x002"),
    ("interactions.csv", "user,item,timestamp\n-u1,i1,5\n", 2, "user", "-u1"),
    ("items.csv", "item,text\ni1,One.\n+i2,Two.\n", 3, "item", "+i2"),
    ("items.csv", "item,text\ni1,One.\n\"i\x1b[31m2\",Two.\n", 3, "item", "i\\x1b[31m2"),
    ("users.csv", "user,age\n@u0,3\nu1,3\nu2,4\n", 2, "user", "@u0"),
]


@pytest.mark.parametrize(("file_name", "content", "line", "column", "shown"), BAD_ID_FILES)
def test_bad_ids_name_file_line_column_and_value(tmp_path, file_name, content, line, column, shown):
    contents = {
        "items_csv": "item,text\ni1,One.\ni2,Two.\n",
        "interactions_csv": "user,item,timestamp\nu1,i1,5\nu2,i2,6\n",
        file_name.replace(".", "_"): content,
    }
    if file_name == "items.csv":
        contents["interactions_csv"] = "user,item,timestamp\nu1,i1,5\n"
    with pytest.raises(DataError) as caught:
        files.load_dir(write(tmp_path, **contents))
    message = str(caught.value)
    assert file_name in message and caught.value.line == line and caught.value.column == column
    assert f"'{shown}'" in message
    assert all(unicodedata.category(ch)[0] != "C" for ch in message)


def test_parquet_ids(tmp_path):
    pytest.importorskip("pyarrow")
    write(tmp_path, items_csv="item,text\ni1,One.\ni2,Two.\n")
    pd.DataFrame({"user": [-5, 7, -5], "item": ["i1", "i2", "i2"], "timestamp": [1, 2, 3]}).to_parquet(
        tmp_path / "interactions.parquet"
    )
    assert list(files.load_dir(tmp_path).user_ids) == ["-5", "7"]  # a negative number is an id
    pd.DataFrame({"user": ["a", "@b"], "item": ["i1", "i2"], "timestamp": [1, 2]}).to_parquet(
        tmp_path / "interactions.parquet"
    )
    with pytest.raises(DataError, match="interactions.parquet.*'@b'.*row 2") as caught:
        files.load_dir(tmp_path)
    assert caught.value.line == 2 and caught.value.column == "user"


def test_save_refuses_ids_it_could_not_read_back(tmp_path):
    bad = Dataset(
        name="bad",
        item_ids=np.array(["i1", "=cmd()"]),
        item_texts=["one", "two"],
        user_ids=np.array(["u1"]),
        users=np.array([0]),
        items=np.array([1]),
        timestamps=np.array([1]),
    )
    with pytest.raises(DataError, match="item 2.*=cmd"):
        files.save_dir(bad, tmp_path)
    assert not (tmp_path / "items.csv").exists()


def test_dataset_rule_is_checked():
    with pytest.raises(ValueError, match="reconsumption 'always'"):
        Dataset("x", np.array(["i"]), ["t"], np.array(["u"]), np.array([0]), np.array([0]),
                np.array([1]), reconsumption="always")
