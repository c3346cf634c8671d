import numpy as np
import pytest

from fedrec.server.optimizer import ADAM_TAU, ServerOptimizer


def test_fedavg_with_lr_1_moves_to_the_client_mean():
    w, delta = [np.array([1.0, 2.0])], [np.array([0.5, -1.0])]
    assert np.allclose(ServerOptimizer("fedavg", 1.0).step(w, delta)[0], [1.5, 1.0])


def test_fedavgm_accumulates_momentum_by_hand():
    opt = ServerOptimizer("fedavgm", lr=0.5, momentum=0.9)
    w = opt.step([np.array([0.0])], [np.array([1.0])])  # v = 1, w = 0.5
    assert np.allclose(w[0], [0.5])
    w = opt.step(w, [np.array([1.0])])  # v = 0.9 + 1 = 1.9, w = 0.5 + 0.95
    assert np.allclose(w[0], [1.45])


def test_fedadam_first_step_by_hand():
    opt = ServerOptimizer("fedadam", lr=0.1)
    w = opt.step([np.array([0.0])], [np.array([2.0])])
    m, v = 0.1 * 2.0, 0.99 * ADAM_TAU**2 + 0.01 * 4.0
    assert w[0][0] == pytest.approx(0.1 * m / (np.sqrt(v) + ADAM_TAU))


def test_state_round_trip_continues_identically():
    a = ServerOptimizer("fedadam", 0.1)
    w = a.step([np.ones(3)], [np.full(3, 0.5)])
    b = ServerOptimizer("fedadam", 0.1)
    b.load_state_arrays(a.state_arrays())
    delta = [np.array([0.1, -0.2, 0.3])]
    assert np.allclose(a.step(w, delta)[0], b.step(w, delta)[0])
