"""`fedrec recommend` says how many items it really lists, what user ids look like, and never
prints a data set's control characters."""

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedrec.cli.recommend import closest_id

IDS = np.array([f"u{i:06d}" for i in range(1, 201)])


@given(st.integers(1, 200))
def test_a_bare_number_means_the_id_with_that_number(number):
    assert closest_id(str(number), IDS) == f"u{number:06d}"


def test_a_misspelled_id_means_the_same_number_or_the_nearest_spelling_else_none():
    assert closest_id("u00005", IDS) == closest_id("U5", IDS) == "u000005"
    assert closest_id("u0000123", IDS) == "u000123"
    assert closest_id("v000123", IDS) == "u000123"  # another prefix: the nearest spelling
    assert closest_id("zzzzzzzzzz", IDS) is None and closest_id("999", IDS) is None
    assert closest_id("19", np.array(["196", "22"])) == "196"


@pytest.fixture(scope="module")
def run(tmp_path_factory, synthetic_home):
    """A most-popular run on a data set whose titles carry terminal escapes."""
    from fedrec.cli.main import main
    from fedrec.common.data import files, synthetic

    root = tmp_path_factory.mktemp("recommend")
    with synthetic_home(root, "plain", num_users=50, num_items=30, interactions_per_user=8):
        data = synthetic.generate(num_users=50, num_items=30, interactions_per_user=8,
                                  name="evil")
        titles = [f"\x1b[2J{t}\u202e" for t in data.item_titles]
        files.save_dir(replace(data, item_titles=titles), root / "datasets" / "evil")
        with pytest.raises(SystemExit) as exit_info:
            main(["train", "--dataset", "evil", "--model", "popular", "--out", str(root / "run")])
            raise SystemExit(0)
        assert exit_info.value.code == 0
        yield root / "run"


@pytest.mark.slow
def test_k_beyond_the_catalog_says_how_many_items_are_listed(run, fedrec_cli):
    code, out, _ = fedrec_cli("recommend", "--run", str(run), "--user", "u000001", "--k", "100000")
    assert code == 0
    header, *items = out.splitlines()
    history = int(header.split(": ")[1].split()[0])
    # synthetic users never repeat an item: every history item is distinct
    assert header.endswith(f"top {30 - history} (all unseen items; --k 100000 asked):")
    assert len(items) == 30 - history


@pytest.mark.slow
def test_item_texts_are_printed_with_control_characters_escaped(run, fedrec_cli):
    code, out, _ = fedrec_cli("recommend", "--run", str(run), "--user", "u000002", "--k", "3",
                              "--explain")
    assert code == 0
    assert "\x1b" not in out and "\u202e" not in out
    assert out.count("\\x1b[2J") >= 3 and "\\u202e" in out


@pytest.mark.slow
@pytest.mark.parametrize("user, hint", [("5", "did you mean 'u000005'?"), ("alice", "")])
def test_an_unknown_user_shows_what_ids_look_like(run, fedrec_cli, user, hint):
    code, _, err = fedrec_cli("recommend", "--run", str(run), "--user", user)
    assert code == 2
    assert err.strip() == (f"error: user '{user}' is not in data set 'evil' (50 users; ids look "
                           f"like u000001, u000002, u000003){'; ' + hint if hint else ''}")
