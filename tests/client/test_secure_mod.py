"""The client's SecAgg+ switch: masked when asked, and never a plain update when required."""

from types import SimpleNamespace

import pytest
from flwr.app import ConfigRecord
from flwr.app.message_type import MessageType

from fedrec.client.app import PlainUpdateRefused, secure_aggregation_mod


def message(kind, records=None):
    """What the mod reads of a Flower message: its type and its config records."""
    return SimpleNamespace(metadata=SimpleNamespace(message_type=kind),
                           content=SimpleNamespace(config_records=records or {}))


def test_a_client_that_requires_secagg_refuses_a_plain_training_request():
    calls = []
    mod = secure_aggregation_mod(required=True)
    with pytest.raises(PlainUpdateRefused):
        mod(message(MessageType.TRAIN, {"fitins.config": ConfigRecord({})}), None,
            lambda m, c: calls.append(m))
    assert calls == []  # the training code never ran
    mod(message(MessageType.EVALUATE), None, lambda m, c: calls.append(m))
    assert len(calls) == 1  # other messages pass


def test_without_the_requirement_plain_training_passes_through():
    calls = []
    secure_aggregation_mod(required=False)(
        message(MessageType.TRAIN, {"fitins.config": ConfigRecord({})}), None,
        lambda m, c: calls.append(m))
    assert len(calls) == 1
