"""The wire schema on hand-built views: what may leave a client and what may not."""

import math

import numpy as np
import pytest

from fedrec.common import wire
from fedrec.common.wire import WireSchema

SHAPES = ((4, 3), (3,))
SCHEMA = WireSchema(SHAPES, max_update_norm=1.0)
RECEIVED = [np.zeros(s, np.float32) for s in SHAPES]


def fit_view(arrays=None, count=8, metrics=None, status=None):
    arrays = arrays if arrays is not None else [np.full(s, 0.01, np.float32) for s in SHAPES]
    return {
        "fitres.parameters": ("array", {str(i): a for i, a in enumerate(arrays)}),
        "fitres.metrics": ("config", {"loss": 2.5} if metrics is None else metrics),
        "fitres.num_examples": ("metric", {"num_examples": count}),
        "fitres.status": ("config", status or {"code": 0, "message": "Success"}),
    }


def codes(view, schema=SCHEMA, message_type="train"):
    return {v.code for v in wire.check_reply(schema, message_type, view, RECEIVED)}


@pytest.mark.parametrize(("n", "bucket"), [(0, 0), (1, 1), (2, 2), (3, 4), (5, 4), (6, 8),
                                           (11, 8), (12, 16), (700, 512), (5000, 4096)])
def test_counts_are_bucketed_to_the_nearest_power_of_two(n, bucket):
    assert wire.bucket_count(n) == bucket
    assert wire.is_bucketed(bucket)


def test_bucket_cap_is_the_largest_power_of_two_under_the_cap():
    assert wire.bucket_count(5000, 1000) == 512 and wire.bucket_count(3, 1000) == 4
    assert not wire.is_bucketed(1024, 1000) and not wire.is_bucketed(3) and not wire.is_bucketed(True)


def test_a_well_formed_reply_passes():
    assert codes(fit_view()) == set()
    assert codes(fit_view(count=0, metrics={})) == set()


@pytest.mark.parametrize(("view", "code"), [
    (fit_view(metrics={"loss": 2.5, "user": 17}), "unexpected-key"),
    (fit_view(metrics={"loss": "ada@example.com"}), "value-range"),
    (fit_view(metrics={"loss": math.nan}), "value-range"),
    (fit_view(count=17), "count-not-bucketed"),
    (fit_view(count=8.0), "count-not-bucketed"),
    (fit_view(status={"code": 0, "message": "Success for u000017"}), "status"),
    (fit_view(arrays=[np.zeros((4, 3), np.float32)]), "array-count"),
    (fit_view(arrays=[np.zeros((3, 4), np.float32), np.zeros(3, np.float32)]), "array-shape"),
    (fit_view(arrays=[np.zeros((4, 3), np.float64), np.zeros(3, np.float32)]), "array-dtype"),
    (fit_view(arrays=[np.full((4, 3), np.inf, np.float32), np.zeros(3, np.float32)]),
     "non-finite"),
    (fit_view(arrays=[np.full((4, 3), 0.5, np.float32), np.zeros(3, np.float32)]),
     "update-norm"),  # ‖Δ‖ = 0.5·√12 ≈ 1.7 > 1
    (fit_view(arrays=[np.full((4, 3), 2e4, np.float32), np.zeros(3, np.float32)]),
     "value-range"),
    ({**fit_view(), "email": ("config", {"a": "ada@example.com"})}, "unexpected-record"),
    ({**fit_view(), "fitres.metrics": ("array", {})}, "record-kind"),
])
def test_violations_are_caught_with_their_code(view, code):
    assert code in codes(view)


def test_dp_replies_carry_no_loss_and_counts_of_at_most_one():
    private = WireSchema(SHAPES, private=True, send_loss=False)
    assert codes(fit_view(count=1, metrics={}), private) == set()
    assert codes(fit_view(count=0, metrics={"declined": 1}), private) == set()
    assert codes(fit_view(count=2, metrics={}), private) == {"count-not-bucketed"}
    assert codes(fit_view(count=1), private) == {"unexpected-key"}  # the loss
    assert codes(fit_view(count=0, metrics={"declined": 2}), private) == {"value-range"}


def evaluate_view(metrics, loss=0.5, count=1):
    return {"evaluateres.loss": ("metric", {"loss": loss}),
            "evaluateres.num_examples": ("metric", {"num_examples": count}),
            "evaluateres.metrics": ("config", metrics),
            "evaluateres.status": ("config", {"code": 0, "message": "Success"})}


def test_evaluation_replies_carry_only_the_ranking_metrics_in_unit_range():
    good = {"hr@10": 1.0, "ndcg@10": 0.5, "recall@20": 1.0, "mrr@10": 1 / 3}
    assert codes(evaluate_view(good), message_type="evaluate") == set()
    assert codes(evaluate_view({}, 0.0, 0), message_type="evaluate") == set()
    assert codes(evaluate_view({**good, "age": 36.0}), message_type="evaluate") == {
        "unexpected-key"}
    assert codes(evaluate_view({"hr@10": 3.0}), message_type="evaluate") == {"value-range"}
    assert codes(evaluate_view(good, count=5), message_type="evaluate") == {"count-not-bucketed"}


def test_properties_may_echo_only_the_simulations_partition_id():
    view = {"getpropertiesres.properties": ("config", {"partition-id": 3}),
            "getpropertiesres.status": ("config", {"code": 0, "message": "Success"})}
    assert codes(view, message_type="get_properties") == {"unexpected-key"}  # a real device
    simulated = WireSchema(SHAPES, partition_id=3)
    assert codes(view, simulated, "get_properties") == set()
    assert codes(view, WireSchema(SHAPES, partition_id=4), "get_properties") == {"value-range"}
    assert codes({}, SCHEMA, "query") == {"message-type"}


def logged_array(shape, dtype="float32", extra=0, **declared):
    """An egress-log summary of an array as Flower's legacy converter sends it."""
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return {"bytes": 128 + size + extra, "stype": "numpy.ndarray", "declared_dtype": "",
            "declared_shape": [], "shape": list(shape), "dtype": dtype, **declared}


def train_entry(arrays=None, metrics=None):
    return {"message_type": "train", "error": None, "records": {
        "fitres.parameters": {"kind": "ArrayRecord", "entries": {
            str(i): a for i, a in enumerate(arrays or [logged_array(s) for s in SHAPES])}},
        "fitres.metrics": {"kind": "ConfigRecord",
                           "entries": {"loss": 2.0} if metrics is None else metrics},
        "fitres.num_examples": {"kind": "MetricRecord", "entries": {"num_examples": 4}},
        "fitres.status": {"kind": "ConfigRecord", "entries": {"code": 0, "message": "Success"}}}}


def log_codes(entry, schema=SCHEMA):
    return {v.code for v in wire.check_log_entry(schema, entry)}


def test_log_entries_are_checked_by_shape_dtype_size_and_declared_fields():
    assert log_codes(train_entry()) == set()
    assert log_codes(train_entry([logged_array((4, 3)), logged_array((30,))])) == {"array-shape"}
    # bytes beyond header and data, or text in the fields an Array declares, travel with it
    assert log_codes(train_entry([logged_array((4, 3), extra=500), logged_array((3,))])) == {
        "array-dtype"}
    assert log_codes(train_entry([logged_array((4, 3), declared_dtype="ada@example.com"),
                                  logged_array((3,))])) == {"array-dtype"}


def test_under_secagg_only_the_protocol_carries_the_update():
    secure = WireSchema(SHAPES, "float64", send_loss=False, secagg=True)
    masked = train_entry(metrics={})
    masked["records"]["fitres.parameters"]["entries"] = {}
    masked["records"]["secaggplus_configs"] = {
        "kind": "ConfigRecord", "entries": {"masked_params": [{"bytes": 100}, {"bytes": 40}]}}
    assert log_codes(masked, secure) == set()
    leaky = train_entry([logged_array((4, 3), "float64"), logged_array((3,), "float64")], {})
    leaky["records"]["secaggplus_configs"] = masked["records"]["secaggplus_configs"]
    assert log_codes(leaky, secure) == {"unmasked-update"}
    plain = train_entry([logged_array((4, 3), "float64"), logged_array((3,), "float64")], {})
    assert log_codes(plain, secure) == {"plain-update"}
    keys = {"message_type": "train", "error": None, "records": {
        "secaggplus_configs": {"kind": "ConfigRecord",
                               "entries": {"pk1": {"bytes": 32}, "pk2": {"bytes": 32}}}}}
    assert log_codes(keys, secure) == set()
    keys["records"]["secaggplus_configs"]["entries"]["note"] = "ada@example.com"
    assert log_codes(keys, secure) == {"unexpected-key"}


@pytest.mark.parametrize(("text", "allowed"), [
    ("<class 'fedrec.client.egress_guard.ClientFailed'>:<'client failed (ValueError)'>", True),
    ("<class 'fedrec.client.egress_guard.EgressBlocked'>:<'blocked by the egress guard: "
     "non-finite, update-norm'>", True),
    ("<class 'fedrec.client.egress_guard.EgressBlocked'>:<'user u000017 ada@example.com'>",
     False),
    ("<class 'fedrec.client.egress_guard.ClientFailed'>:<'client failed (ada@example.com)'>",
     False),
    ("<class 'ValueError'>:<'bad user u000017'>", False),
])
def test_only_fixed_error_texts_may_leave(text, allowed):
    entry = {"message_type": "train", "records": {}, "error": text}
    assert (log_codes(entry) == set()) is allowed


def test_values_too_large_for_a_float_are_violations_not_crashes():
    assert codes(fit_view(metrics={"loss": 10**400})) == {"value-range"}
    assert codes(fit_view(count=0, metrics={"declined": 10**5000}),
                 WireSchema(SHAPES, private=True)) == {"value-range"}


def test_an_update_clipped_to_the_bound_passes_despite_rounding():
    bound = 1.0
    rng = np.random.default_rng(0)
    for _ in range(50):
        delta = [rng.normal(size=s) for s in SHAPES]
        norm = np.sqrt(sum(float(np.sum(d * d)) for d in delta))
        arrays = [(r.astype(np.float64) + d * bound / norm) for r, d in zip(RECEIVED, delta)]
        secure = WireSchema(SHAPES, "float64", max_update_norm=bound)
        assert wire.check_reply(secure, "train", fit_view(arrays), RECEIVED) == []
