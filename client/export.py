"""ONNX export of the on-device ranking head, for runtimes without Python (onnxruntime on a
phone, in a browser, on an edge box). Needs the `export` extra (onnx, onnxscript).

One graph per (head, catalog), all it takes to rank:

    inputs   history          int64 [L]        newest L = max_history item ids, oldest
                                               first, left-padded (any id where not valid)
             valid            bool  [L]        False at padding
             personal_vector  float32 [dim]    p_u
    outputs  scores           float32 [n_items] <u, v_i> / temperature, the whole catalog
             user_vector      float32 [dim]    u = normalize(s_φ(history) + p_u)
    metadata max_history, num_items, dim, head_digest, catalog_digest, recipe

The item vectors (n_items × dim) are baked in: the adapter's pass over the catalog's frozen
embeddings is done once here, not per request, and the embeddings (n_items × 384) need not
ship. Per request the graph runs the sequence encoder over L positions and one
(n_items × dim) product. Left out, on purpose:
- the personal vector's reconstruction, an optimization loop that belongs with training
  (torch, `fedrec.client.personal`); the graph takes p_u as an input, and `recipe` says how
  the p_u it expects was reconstructed (`OnnxRanker.recommend_from` reads it from the store);
- excluding consumed items and top-k: the graph sees the newest L items only, the caller
  knows them all (`fedrec.client.ranking.top_k`).
A new head means a new graph (its item vectors change); export again when one arrives.

The graph is traced by the same functions the torch path runs (`inference.user_vectors`,
`FedRecModel.logits`), with torch's dynamo exporter (opset 18).
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from fedrec.client.inference import OnDeviceRecommender, user_vectors
from fedrec.common.atomic import atomic_path
from fedrec.common.model import FedRecModel

OPSET = 18
INPUTS = ("history", "valid", "personal_vector")
OUTPUTS = ("scores", "user_vector")


class RankingGraph(nn.Module):
    """What the exported graph computes: a head's model with its item vectors as a buffer."""

    def __init__(self, model: FedRecModel, item_vectors: torch.Tensor):
        super().__init__()
        self.model = model.eval()
        self.register_buffer("item_vectors", item_vectors)

    def forward(self, history: torch.Tensor, valid: torch.Tensor, personal_vector: torch.Tensor):
        user = user_vectors(self.model, self.item_vectors, history.unsqueeze(0), valid.unsqueeze(0),
                            personal_vector.unsqueeze(0))
        return self.model.logits(user, self.item_vectors)[0], user[0]


def export_onnx(recommender: OnDeviceRecommender, path: str | Path) -> Path:
    """Write the ranking graph of `recommender`'s current head and catalog to `path` (one
    self-contained .onnx file, written atomically). Returns the path."""
    head, model = recommender.model()
    head_digest, catalog_digest = recommender.digests()
    items = torch.from_numpy(np.array(recommender.item_vectors()))
    graph = RankingGraph(model, items)
    length, dim = model.cfg.max_history, model.cfg.dim
    example = (torch.zeros(length, dtype=torch.long), torch.ones(length, dtype=torch.bool),
               torch.zeros(dim))
    quiet = logging.getLogger("torch.onnx")  # notes on its own internals (torchvision ops)
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(graph, example, dynamo=True, opset_version=OPSET,
                                        input_names=list(INPUTS), output_names=list(OUTPUTS),
                                        external_data=False, verbose=False)
    finally:
        quiet.setLevel(level)
    proto = program.model_proto
    meta = {"max_history": length, "num_items": len(items), "dim": dim, "round": head.round,
            "head_digest": head_digest, "catalog_digest": catalog_digest,
            "recipe": json.dumps(recommender.recipe, sort_keys=True)}
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=str(value))
    with atomic_path(path, suffix=".onnx") as tmp:
        onnx.save_model(proto, str(tmp))
    return Path(path)
