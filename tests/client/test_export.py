"""The exported ONNX graph ranks as the torch path does, for several users."""

import numpy as np
import onnx
import pytest
import torch

from fedrec.client.export import INPUTS, OUTPUTS, export_onnx
from fedrec.client.ranking import OnnxRanker
from fedrec.client.sdk import FedrecClient
from fedrec.common.hparams import ModelConfig
from fedrec.common.model import FedRecModel

MODEL = ModelConfig(input_dim=32, dim=16, num_experts=2, max_history=8, num_layers=2,
                    num_heads=2)
CATALOG = np.random.default_rng(0).normal(size=(300, 32)).astype(np.float32)
HISTORIES = {"none": [], "one": [7], "short": [3, 9, 200, 41],
             "long": [int(i) for i in np.random.default_rng(1).choice(300, 25, replace=False)]}


def head(seed=0):
    torch.manual_seed(seed)
    return FedRecModel(MODEL, 1).shared_arrays()


@pytest.fixture(scope="module")
def devices(tmp_path_factory):
    root = tmp_path_factory.mktemp("devices")
    clients = {}
    for name, history in HISTORIES.items():
        c = FedrecClient(root / f"{name}.sqlite", fsync=False)
        c.install(CATALOG, head(), MODEL)
        for t, item in enumerate(history):
            c.add_interaction(item, float(t))
        clients[name] = c
    graph = export_onnx(clients["long"].recommender, root / "ranking.onnx")
    yield clients, graph
    for c in clients.values():
        c.close()


@pytest.mark.parametrize("user", sorted(HISTORIES))
def test_the_graph_ranks_as_the_torch_path(devices, user):
    clients, graph = devices
    client = clients[user]
    torch_top = client.recommender.recommend(k=10, explain=False)
    onnx_top, onnx_scores = OnnxRanker(graph).recommend_from(client.store, k=10)
    assert onnx_top.tolist() == torch_top.items.tolist()
    assert np.allclose(onnx_scores, torch_top.scores, atol=1e-4)
    personal, user_vector = client.recommender.user_vector()
    scores, graph_user = OnnxRanker(graph).scores(client.store.interactions()[0], personal)
    assert np.allclose(scores, client.recommender.scores(), atol=1e-4)  # whole catalog
    assert np.allclose(graph_user, user_vector, atol=1e-5)


def test_the_graph_is_self_contained_and_says_what_it_is_for(devices):
    clients, graph = devices
    model = onnx.load(str(graph))
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == list(INPUTS)
    assert [o.name for o in model.graph.output] == list(OUTPUTS)
    assert not list(graph.parent.glob("*.data"))  # weights inside the one file
    ranker = OnnxRanker(graph.read_bytes())
    store = clients["short"].store
    assert (ranker.num_items, ranker.max_history) == (300, 8)
    assert (ranker.head_digest, ranker.catalog_digest) == (store.head_digest, store.catalog_digest)
    assert ranker.recipe == clients["short"].recommender.recipe


def test_a_graph_for_another_head_is_refused(devices, tmp_path):
    _, graph = devices
    with FedrecClient(tmp_path / "other.sqlite", fsync=False) as other:
        other.install(CATALOG, head(seed=5), MODEL)
        with pytest.raises(ValueError, match="export it again"):
            OnnxRanker(graph).recommend_from(other.store)
