"""Where fedrec keeps data sets and caches: `$FEDREC_HOME`, else the user cache dir."""

from __future__ import annotations

import os
from pathlib import Path


def fedrec_home() -> Path:
    """Root of fedrec's on-disk state (data sets, embedding caches). Created on demand."""
    env = os.environ.get("FEDREC_HOME")
    if env:
        root = Path(env).expanduser()
    else:
        import platformdirs

        root = Path(platformdirs.user_cache_dir("fedrec"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def datasets_dir() -> Path:
    return fedrec_home() / "datasets"


def embeddings_dir() -> Path:
    return fedrec_home() / "embeddings"
