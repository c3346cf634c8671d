"""The distribution's layout: a regular (non-editable) wheel holds every subpackage under
`fedrec.` and nothing importable as a bare `common`, `client`, `server`, `simulation` or
`audit`."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_wheel_contains_the_fedrec_namespace_only(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )
    (wheel,) = tmp_path.glob("fedrec-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for module in ("fedrec/common/model.py", "fedrec/common/data/files.py",
                   "fedrec/client/app.py", "fedrec/server/strategy.py",
                   "fedrec/simulation/run.py", "fedrec/audit/run.py", "fedrec/cli/main.py"):
        assert module in names
    top_level = {n.split("/")[0] for n in names if not n.startswith("fedrec-")}
    assert top_level == {"fedrec"}
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "fedrec = fedrec.cli.main:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
