"""The tampering suite: every edit of `tampering.EDITS` applied to a copy of a real run — record-
and user-level DP, made once for this module — must fail `fedrec audit` (or make it refuse the
run) when it contradicts another record of the run; an edit that rewrites every record
consistently passes, as documented (`detectable=False`). The unedited runs pass.
`benchmarks/tampering.py` prints the same edits as a table."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import tampering  # noqa: E402
from tampering import failures  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One finished run of each kind (about 20 s each on 2 cores)."""
    root = tmp_path_factory.mktemp("tampering")
    mp = pytest.MonkeyPatch()
    mp.setenv("FEDREC_HOME", str(root / "home"))
    try:
        tampering.make_dataset(root / "home")
        yield {kind: tampering.make_run(kind, root / kind) for kind in tampering.KINDS}
    finally:
        mp.undo()




def test_the_suite_is_many_distinct_edits_of_one_and_of_several_files():
    names = [e.name for e in tampering.EDITS]
    assert len(set(names)) == len(names) >= 30
    several = [e for e in tampering.EDITS if "+" in e.what]
    assert len(several) >= 8 and {e.run for e in tampering.EDITS} == set(tampering.KINDS)
    assert all(e.why_not for e in tampering.EDITS if not e.detectable)


@pytest.mark.parametrize("kind", tampering.KINDS)
def test_the_unedited_runs_pass(runs, kind):
    assert failures(runs[kind]) == []


@pytest.mark.parametrize("edit", tampering.EDITS, ids=[e.name for e in tampering.EDITS])
def test_an_edit_is_caught_unless_it_rewrites_every_record(runs, tmp_path, edit):
    run = tampering.copy_run(runs[edit.run], tmp_path / "run")
    edit.apply(run)
    found = failures(run)
    if edit.detectable:
        assert found, f"{edit.what}: not caught"
    else:
        assert found == [], f"{edit.what} is caught now: mark it detectable"
