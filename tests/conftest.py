"""Shared fixtures."""

from contextlib import contextmanager

import pytest
from hypothesis import settings

# property tests assert behaviour, not speed: no per-example deadline (a loaded CI machine
# made a 200 ms deadline fail a correct example)
settings.register_profile("fedrec", deadline=None)
settings.load_profile("fedrec")


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


@pytest.fixture
def html_outline():
    """A function: an HTML page -> (its start tags, the `src` of its images)."""
    from html.parser import HTMLParser

    class Outline(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tags, self.images = [], []

        def handle_starttag(self, tag, attrs):
            self.tags.append(tag)
            if tag == "img":
                self.images.append(dict(attrs)["src"])

    def outline(page: str) -> tuple[list[str], list[str]]:
        parser = Outline()
        parser.feed(page)
        return parser.tags, parser.images

    return outline


@pytest.fixture
def fedrec_cli(capsys):
    """A function: run `fedrec ARGV...` in this process -> (exit code, stdout, stderr)."""
    from fedrec.cli.main import main

    def run(*argv) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exit_info:
            main(list(argv))
            raise SystemExit(0)
        out = capsys.readouterr()
        return exit_info.value.code, out.out, out.err

    return run
