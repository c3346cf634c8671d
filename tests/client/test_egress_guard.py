"""The egress guard on real Flower messages: fuzzed replies with injected identifiers,
strings, NaN/inf, wrong shapes, huge norms and extra keys never get through."""

import logging

import numpy as np
import pytest
from flwr.app import Array, ConfigRecord, Context, Message, Metadata, MetricRecord, RecordDict
from flwr.common import Code, FitIns, FitRes, GetPropertiesRes, Status, ndarrays_to_parameters
from flwr.compat.common import recorddict_compat as compat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedrec.client.egress_guard import ClientFailed, EgressBlocked, egress_guard_mod
from fedrec.common.wire import WireSchema

SHAPES = ((8, 4), (4,), (2, 4))
SCHEMA = WireSchema(SHAPES, max_update_norm=5.0)
GLOBAL = [np.zeros(s, np.float32) for s in SHAPES]
IDENTIFIERS = ["u000017", "Ada Lovelace", "ada.lovelace@example.com", "94110",
               "+1 415 555 0132", "device-7f3a"]


def instruction(message_type="train") -> Message:
    content = RecordDict() if message_type != "train" else compat.fitins_to_recorddict(
        FitIns(ndarrays_to_parameters(GLOBAL), {"server_round": 1}), keep_input=True)
    return Message(content=content, metadata=Metadata(
        run_id=1, message_id="m1", src_node_id=0, dst_node_id=1, reply_to_message_id="",
        group_id="", created_at=0.0, ttl=3600.0, message_type=message_type))


def context(node_config=None) -> Context:
    return Context(run_id=1, node_id=1, node_config=node_config or {}, state=RecordDict(),
                   run_config={})


def fit_reply(arrays, count=16, metrics=None) -> RecordDict:
    return compat.fitres_to_recorddict(FitRes(
        Status(Code.OK, "Success"), ndarrays_to_parameters(arrays), count,
        {"loss": 3.2} if metrics is None else metrics), keep_input=True)


def send(content_or_exception, node_config=None):
    """What the guard does with a client's reply: returns it or raises."""
    msg = instruction()

    def client(message, ctx):
        if isinstance(content_or_exception, Exception):
            raise content_or_exception
        return Message(content_or_exception, reply_to=message)

    return egress_guard_mod(SCHEMA)(msg, context(node_config), client)


updates = st.lists(st.floats(-0.5, 0.5, width=32), min_size=44, max_size=44)  # ‖Δ‖ ≤ 3.4


def arrays_from(values) -> list[np.ndarray]:
    flat = np.asarray(values, np.float32)
    out, at = [], 0
    for shape in SHAPES:
        size = int(np.prod(shape))
        out.append(flat[at:at + size].reshape(shape))
        at += size
    return out


@given(updates, st.sampled_from([0, 1, 2, 4, 64, 1024]), st.floats(0, 100))
def test_well_formed_replies_pass_unchanged(values, count, loss):
    content = fit_reply(arrays_from(values), count, {"loss": loss})
    sent = {name: dict(record) for name, record in content.items()}
    reply = send(content)
    assert {name: dict(record) for name, record in reply.content.items()} == sent


def inject(kind: str, data) -> RecordDict:
    """A reply with one kind of forbidden content; `data` draws the injected values."""
    arrays = arrays_from(data.draw(updates))
    pii = data.draw(st.sampled_from(IDENTIFIERS) | st.emails() | st.text(min_size=1))
    bad_float = data.draw(st.sampled_from([np.nan, np.inf, -np.inf, -1.0, 1e6]))
    if kind == "metric-string":
        return fit_reply(arrays, metrics={"loss": 3.2, "note": pii})
    if kind == "metric-key":
        return fit_reply(arrays, metrics={"loss": 3.2, pii: 1.0})
    if kind == "loss-value":
        return fit_reply(arrays, metrics={"loss": bad_float})
    if kind == "count":
        return fit_reply(arrays, count=data.draw(st.integers(3, 10**6).filter(
            lambda n: n & (n - 1) != 0)))
    if kind == "array-values":
        arrays[data.draw(st.integers(0, 2))].flat[0] = data.draw(st.sampled_from(
            [np.nan, np.inf, -np.inf, 3e4]))
        return fit_reply(arrays)
    if kind == "norm":
        return fit_reply([a + data.draw(st.floats(2.0, 1e3)) for a in arrays])
    if kind == "shape":
        arrays[0] = arrays[0].reshape(4, 8)
        return fit_reply(arrays)
    if kind == "dtype":
        i = data.draw(st.integers(0, 2))
        arrays[i] = arrays[i].astype(data.draw(st.sampled_from(
            [np.float16, np.float64, np.int32, np.uint8])))
        return fit_reply(arrays)
    if kind == "extra-array":
        return fit_reply([*arrays, np.frombuffer(pii.encode()[:4].ljust(4), np.uint8)
                          .astype(np.float32)])
    if kind == "missing-array":
        return fit_reply(arrays[:-1])
    if kind == "extra-record":
        content = fit_reply(arrays)
        content[data.draw(st.sampled_from(["profile", "fitres.extra", pii]))] = ConfigRecord(
            {"value": pii})
        return content
    if kind == "bytes":
        content = fit_reply(arrays)
        content["fitres.metrics"]["blob"] = pii.encode()
        return content
    if kind == "status":
        content = fit_reply(arrays)
        content["fitres.status"]["message"] = f"Success ({pii})"
        return content
    if kind == "raw-array":
        content = fit_reply(arrays)
        content["fitres.parameters"]["0"] = Array(data=pii.encode(), dtype="", stype="numpy.ndarray",
                                                  shape=())
        return content
    if kind == "metric-record":
        content = fit_reply(arrays)
        del content["fitres.metrics"]
        content["fitres.metrics"] = MetricRecord({"loss": 3.2})  # right name, wrong kind
        return content
    if kind in ("declared-fields", "trailing-bytes", "zip-payload", "huge-header"):
        content = fit_reply(arrays)
        payload = content["fitres.parameters"]["0"].data
        if kind == "declared-fields":  # text in the fields an Array declares beside its data
            array = Array(data=payload, stype="numpy.ndarray", **data.draw(st.sampled_from([
                {"dtype": pii, "shape": ()}, {"dtype": "", "shape": (94110, 415, 5550132)}])))
        elif kind == "trailing-bytes":
            array = Array(data=payload + pii.encode(), dtype="", stype="numpy.ndarray", shape=())
        elif kind == "zip-payload":
            array = Array(data=b"PK\x03\x04" + pii.encode(), dtype="", stype="numpy.ndarray",
                          shape=())
        else:  # a header declaring 10^11 floats: nothing may be allocated for it
            header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (100000000000,), }"
            header = header + b" " * (117 - len(header)) + b"\n"
            array = Array(data=b"\x93NUMPY\x01\x00v\x00" + header + b"\x00" * 16, dtype="",
                          stype="numpy.ndarray", shape=())
        content["fitres.parameters"]["0"] = array
        return content
    if kind == "huge-number":
        return fit_reply(arrays, metrics={"loss": data.draw(st.sampled_from([10**400, -10**400]))})
    raise AssertionError(kind)


KINDS = ["metric-string", "metric-key", "loss-value", "count", "array-values", "norm", "shape",
         "dtype", "extra-array", "missing-array", "extra-record", "bytes", "status",
         "raw-array", "metric-record", "declared-fields", "trailing-bytes", "zip-payload",
         "huge-header", "huge-number"]


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(KINDS), st.data())
def test_fuzzed_replies_with_forbidden_content_never_leave(kind, data):
    content = inject(kind, data)
    with pytest.raises(EgressBlocked) as blocked:
        send(content)
    reason = str(blocked.value)
    assert reason.startswith("blocked by the egress guard: ")
    for identifier in IDENTIFIERS:  # what does leave (the error text) quotes nothing
        assert identifier not in reason


def test_a_secagg_run_never_answers_a_plain_training_request():
    secure = WireSchema(SHAPES, "float64", max_update_norm=5.0, send_loss=False, secagg=True)
    msg = instruction()  # no SecAgg+ configs: a server asking for the plain update
    with pytest.raises(EgressBlocked, match="plain-update"):
        egress_guard_mod(secure)(msg, context(), lambda m, c: Message(fit_reply(
            [a.astype(np.float64) for a in GLOBAL], 16, {}), reply_to=m))


def test_a_failing_client_sends_only_the_exception_class(caplog):
    with caplog.at_level(logging.ERROR, logger="fedrec.egress"):
        with pytest.raises(ClientFailed) as failed:
            send(ValueError("user u000017 at /data/clients/000017 has no items"))
    assert str(failed.value) == "client failed (ValueError)"
    assert failed.value.__cause__ is None and failed.value.__suppress_context__
    assert "u000017" in caplog.text  # the device's own log keeps the detail


def test_a_blocked_reply_is_logged_on_the_device(caplog):
    with caplog.at_level(logging.ERROR, logger="fedrec.egress"):
        with pytest.raises(EgressBlocked, match="unexpected-key"):
            send(fit_reply(GLOBAL, metrics={"loss": 3.2, "email": 1.0}))
    assert "fit metrics ['email'] not allowed" in caplog.text


def test_the_simulations_partition_id_may_be_echoed_but_nothing_else():
    def properties(props):
        return compat.getpropertiesres_to_recorddict(
            GetPropertiesRes(Status(Code.OK, "Success"), props))

    def ask(props, node_config):
        msg = instruction("get_properties")
        return egress_guard_mod(SCHEMA)(msg, context(node_config),
                                        lambda m, c: Message(properties(props), reply_to=m))

    simulated = {"partition-id": 3, "num-partitions": 10}
    assert ask({"partition-id": 3}, simulated).content
    with pytest.raises(EgressBlocked):
        ask({"partition-id": 3}, {})  # a real device has no partition to report
    with pytest.raises(EgressBlocked):
        ask({"partition-id": 3, "user": "u000017"}, simulated)


@given(hnp.arrays(st.sampled_from([np.float32, np.float64, np.float16, np.int32, np.uint8,
                                   np.bool_, ">f4"]),
                  hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)),
       st.booleans())
def test_arrays_are_read_exactly_as_numpy_reads_them(array, fortran):
    import io

    from fedrec.client.egress_guard import _numpy

    buffer = io.BytesIO()
    np.save(buffer, np.asfortranarray(array) if fortran and array.ndim else array,
            allow_pickle=False)
    read = _numpy(Array(data=buffer.getvalue(), dtype="", stype="numpy.ndarray", shape=()))
    assert read.dtype == array.dtype and read.shape == array.shape
    np.testing.assert_array_equal(read, array)
    truncated = Array(data=buffer.getvalue()[:-1], dtype="", stype="numpy.ndarray", shape=())
    if array.size:
        assert not isinstance(_numpy(truncated), np.ndarray)
