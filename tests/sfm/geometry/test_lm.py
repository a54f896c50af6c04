"""geometry.lm: the Levenberg–Marquardt control loop and its damping policy, on small known problems."""

from __future__ import annotations

import numpy as np
import pytest

from sfm3r.sfm.geometry.lm import Damping, SingularSystem, levenberg_marquardt


def _rosenbrock():
    """Residuals r = (10 (y − x²), 1 − x): minimum 0 at (1, 1)."""

    def res(x):
        return np.array([10 * (x[1] - x[0] ** 2), 1 - x[0]])

    def jac(x):
        return np.array([[-20 * x[0], 10.0], [-1.0, 0.0]])

    def linearise(x):
        J, r = jac(x), res(x)
        return J.T @ J, J.T @ r

    def solve(system, mu):
        H, g = system
        return np.linalg.solve(H + mu * np.diag(np.diag(H)), -g)

    def update(x, step):
        xn = x + step
        return xn, float(res(xn) @ res(xn))

    return res, linearise, solve, update


def test_converges_to_the_minimum_of_a_curved_valley():
    res, linearise, solve, update = _rosenbrock()
    x0 = np.array([-1.2, 1.0])
    out = levenberg_marquardt(x0, float(res(x0) @ res(x0)), linearise=linearise, solve=solve, update=update,
                              max_iters=100, tolerance=1e-12)
    np.testing.assert_allclose(out.state, [1.0, 1.0], atol=1e-6)
    assert all(b < a for a, b in zip(out.cost_history, out.cost_history[1:]))  # accepted steps only


def test_damping_policy_grows_on_failure_and_shrinks_on_success():
    seen = []

    def solve(system, mu):
        seen.append(mu)
        if len(seen) == 1:
            raise SingularSystem("first trial fails")
        return -1.0

    def update(x, step):
        xn = x + step
        return xn, float(xn * xn) if len(seen) > 2 else 1e9  # second trial: worse cost

    out = levenberg_marquardt(3.0, 9.0, linearise=lambda x: None, solve=solve, update=update, max_iters=1,
                              tolerance=0.0, damping=Damping(initial=1.0, increase=10.0, decrease=4.0))
    assert seen == [1.0, 10.0, 100.0]
    assert out.state == 2.0 and out.cost_history == (9.0, 4.0) and out.damping == 25.0


def test_stops_when_no_trial_improves_and_keeps_the_last_state():
    out = levenberg_marquardt(0.0, 0.0, linearise=lambda x: None, solve=lambda s, mu: 1.0,
                              update=lambda x, d: (x + d, 1.0), max_iters=50, tolerance=0.0,
                              damping=Damping(max_trials=3, initial=1.0))
    assert out.state == 0.0 and out.cost_history == (0.0,) and out.damping == pytest.approx(1e3)


def test_reweighting_keeps_iterating_while_the_objective_changes():
    scales = [4.0, 2.0, 1.0]
    calls = []

    def reweight(x):
        calls.append(x)
        return 100.0 if len(calls) <= len(scales) else None  # three changes, then the final objective

    out = levenberg_marquardt(0.0, 100.0, linearise=lambda x: None, solve=lambda s, mu: 1.0,
                              update=lambda x, d: (x + d, 50.0), max_iters=10, tolerance=1.0, reweight=reweight)
    # during the three changes the tolerance test is skipped; afterwards 50 is no better than 50: stop
    assert out.state == 3.0 and out.cost_history == (100.0, 50.0, 50.0, 50.0)


def test_a_small_step_stops_the_loop_before_the_cost_tolerance_would():
    """Each step halves x and lowers the cost by 10 %: the cost tolerance never fires, the step size does."""
    xs = []

    def update(x, d):
        xs.append(x + d)
        return x + d, 100.0 * 0.9 ** len(xs)

    out = levenberg_marquardt(1.0, 100.0, linearise=lambda x: x, solve=lambda x, mu: -x / 2, update=update,
                              max_iters=50, tolerance=1e-6, small_step=lambda d: abs(d) < 0.1)
    assert out.state == pytest.approx(1 / 16) and len(out.cost_history) == 5  # steps 0.5, 0.25, 0.125, 0.0625
    out = levenberg_marquardt(1.0, 100.0, linearise=lambda x: x, solve=lambda x, mu: -x / 2, update=update,
                              max_iters=50, tolerance=1e-6)
    assert len(out.cost_history) == 51  # without it: every iteration
