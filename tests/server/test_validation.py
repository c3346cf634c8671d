import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedrec.server.validation import UpdateRejected, validate_update

CURRENT = [np.zeros((3, 2), np.float32), np.zeros(4, np.float32)]


def test_a_valid_update_passes_and_reports_its_norm():
    update = [np.full((3, 2), 1.0, np.float32), np.zeros(4, np.float32)]
    assert validate_update(update, CURRENT, 10.0) == pytest.approx(np.sqrt(6))


@pytest.mark.parametrize("update, reason", [
    ([np.zeros((3, 2), np.float32)], "expected 2 arrays"),
    ([np.zeros((2, 3), np.float32), np.zeros(4, np.float32)], "expected shape"),
    ([np.zeros((3, 2), np.float64), np.zeros(4, np.float32)], "float32"),
    ([np.full((3, 2), np.nan, np.float32), np.zeros(4, np.float32)], "NaN"),
    ([np.full((3, 2), np.inf, np.float32), np.zeros(4, np.float32)], "NaN or inf"),
    ([np.full((3, 2), 100.0, np.float32), np.zeros(4, np.float32)], "exceeds the bound"),
])
def test_bad_updates_are_rejected_with_the_reason(update, reason):
    with pytest.raises(UpdateRejected, match=reason):
        validate_update(update, CURRENT, 10.0)


@given(hnp.arrays(np.float32, st.sampled_from([(3, 2), (2, 3), (6,)]),
                  elements=st.floats(width=32, allow_nan=True, allow_infinity=True)))
def test_anything_that_passes_is_finite_correctly_shaped_and_bounded(first):
    update = [first, np.zeros(4, np.float32)]
    try:
        norm = validate_update(update, CURRENT, 10.0)
    except UpdateRejected:
        return
    assert first.shape == (3, 2) and np.isfinite(first).all() and norm <= 10.0
