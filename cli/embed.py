"""`fedrec embed`: encode the catalog with a frozen sentence encoder, cached on disk."""

from __future__ import annotations

import time

import typer

from fedrec.cli.options import Dataset, Encoder


def embed(dataset: Dataset = "synthetic", encoder: Encoder = "all-MiniLM-L6-v2") -> None:
    """Compute (or load cached) frozen text embeddings of a data set's items."""
    from fedrec.common.data.registry import load_dataset
    from fedrec.common.embeddings import cache_path, encode_catalog, resolve_encoder

    data = load_dataset(dataset)
    path = cache_path(resolve_encoder(encoder)[0], data.item_texts)
    hit = path.exists()
    start = time.perf_counter()
    vectors = encode_catalog(data.item_texts, encoder)
    seconds = time.perf_counter() - start
    rate = f", {len(vectors) / seconds:.0f} items/s" if not hit else ""
    typer.echo(
        f"{'cache hit' if hit else 'encoded'}: {vectors.shape[0]} items x {vectors.shape[1]} dims "
        f"in {seconds:.2f} s{rate}\n{path}"
    )
