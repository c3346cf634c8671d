"""Shared fixtures."""

from contextlib import contextmanager

import pytest


@pytest.fixture(scope="session")
def synthetic_home():
    """A factory: `with synthetic_home(root, name, **size) as root:` sets FEDREC_HOME to
    `root`, saves `synthetic.generate(name=name, **size)` there, and restores the env after."""
    from fedrec.common.data import files, synthetic

    @contextmanager
    def make(root, name: str, **size):
        mp = pytest.MonkeyPatch()
        mp.setenv("FEDREC_HOME", str(root))
        files.save_dir(synthetic.generate(name=name, **size), root / "datasets" / name)
        try:
            yield root
        finally:
            mp.undo()

    return make
