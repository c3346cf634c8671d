import numpy as np
import pytest

from fedrec.common.data import files, synthetic
from fedrec.common.data.registry import available, load_dataset
from fedrec.common.errors import DatasetNotFound
from fedrec.common.paths import datasets_dir


@pytest.fixture(autouse=True)
def home(monkeypatch, tmp_path):
    monkeypatch.setenv("FEDREC_HOME", str(tmp_path / "home"))


def test_synthetic_is_built_in():
    dataset = load_dataset("synthetic")
    np.testing.assert_array_equal(dataset.items, synthetic.default().items)


def test_ml_100k_not_fetched_says_how():
    with pytest.raises(DatasetNotFound, match="fedrec data fetch ml-100k"):
        load_dataset("ml-100k")


def test_directory_path_and_saved_name(tmp_path):
    small = synthetic.generate(num_users=100, num_items=50, name="small")
    files.save_dir(small, tmp_path / "elsewhere")
    assert load_dataset(str(tmp_path / "elsewhere")).num_users == 100
    files.save_dir(small, datasets_dir() / "small")
    assert load_dataset("small").name == "small"
    assert available() == ["synthetic", "ml-100k", "small"]


def test_unknown_name_lists_what_exists():
    files.save_dir(synthetic.generate(num_users=100, num_items=50), datasets_dir() / "mine")
    with pytest.raises(DatasetNotFound, match="'nope'.*synthetic, ml-100k, mine"):
        load_dataset("nope")
