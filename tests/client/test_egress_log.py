"""The egress log: one line per message that leaves, failures included, wherever configured."""

import json

import pytest
from flwr.app import ConfigRecord, Context, Message, Metadata, RecordDict

from fedrec.client.egress_log import egress_log_mod


def instruction() -> Message:
    return Message(content=RecordDict(), metadata=Metadata(
        run_id=1, message_id="m1", src_node_id=0, dst_node_id=1, reply_to_message_id="",
        group_id="", created_at=0.0, ttl=3600.0, message_type="train"))


def context(node_config) -> Context:
    return Context(run_id=1, node_id=1, node_config=node_config, state=RecordDict(),
                   run_config={})


def reply(msg, ctx):
    return Message(RecordDict({"fitres.status": ConfigRecord({"code": 0, "message": "Success"}),
                               "blob": ConfigRecord({"b": b"\x00" * 7})}), reply_to=msg)


def test_a_real_node_logs_where_its_node_config_says(tmp_path):
    path = tmp_path / "logs" / "egress.jsonl"
    egress_log_mod()(instruction(), context({"egress-log": str(path)}), reply)
    entry = json.loads(path.read_text())
    assert entry["message_type"] == "train" and entry["error"] is None
    assert entry["records"]["fitres.status"]["entries"] == {"code": 0, "message": "Success"}
    assert entry["records"]["blob"]["entries"] == {"b": {"bytes": 7}}  # bytes by length only


def test_without_a_path_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert egress_log_mod()(instruction(), context({}), reply).content
    assert list(tmp_path.rglob("*")) == []


def test_an_unwritable_log_stops_the_reply_without_quoting_its_path(tmp_path):
    from fedrec.client.egress_log import EgressLogFailed

    (tmp_path / "afile").write_text("")
    path = tmp_path / "afile" / "home-ada.lovelace" / "egress.jsonl"
    with pytest.raises(EgressLogFailed) as failed:
        egress_log_mod(path)(instruction(), context({}), reply)
    assert str(failed.value) == "the egress log could not be written"
    assert failed.value.__cause__ is None and failed.value.__suppress_context__


def test_a_failure_is_logged_with_the_text_flower_sends(tmp_path):
    # flwr.supernode.runtime.run_clientapp: reason = str(type(ex)) + ":<'" + str(ex) + "'>"
    path = tmp_path / "egress.jsonl"

    def failing(msg, ctx):
        raise RuntimeError("blocked by the egress guard: unexpected-key")

    with pytest.raises(RuntimeError):
        egress_log_mod(path)(instruction(), context({}), failing)
    entry = json.loads(path.read_text())
    assert entry["error"] == ("<class 'RuntimeError'>:<'blocked by the egress guard: "
                              "unexpected-key'>") and entry["records"] == {}
