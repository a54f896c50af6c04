"""The Levenberg–Marquardt control loop, with the damping policy in one place.

The problem supplies three callables and keeps its own state type (parameters plus whatever it caches,
e.g. the residuals at those parameters):

- ``linearise(state) -> system``: the (damping-free) normal equations at ``state``, once per iteration;
- ``solve(system, mu) -> step``: the step of the system damped by ``mu`` (the damping *form*, e.g.
  ``H + mu·diag(H)``, is the problem's); raise :class:`SingularSystem` (or RuntimeError /
  ``numpy.linalg.LinAlgError``) when it cannot be solved: the trial then counts as failed;
- ``update(state, step) -> (new_state, new_cost)``: apply the step and evaluate the cost.

A step is accepted when the new cost is finite and lower. Damping policy (:class:`Damping`): start at
``initial``; divide by ``decrease`` (floored at ``floor``) after an accepted step; multiply by ``increase``
after a failed trial; give up the iteration after ``max_trials`` failed trials. The loop stops when an
iteration finds no better step, when the relative cost decrease falls below ``tolerance``, when the optional
``small_step(step)`` says an accepted step no longer moves what the problem cares about (e.g. no camera
moved, while weakly constrained points still creep), or after ``max_iters`` iterations.

An optional ``reweight(state) -> cost or None`` runs before each iteration: a problem whose objective
changes between iterations (robust-scale annealing) returns the cost of ``state`` under the new objective;
while it does, a failed iteration does not stop the loop and the tolerance test is skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

__all__ = ["Damping", "LMResult", "SingularSystem", "levenberg_marquardt"]

S = TypeVar("S")


class SingularSystem(RuntimeError):
    """The damped system could not be solved (the trial fails and the damping grows)."""


@dataclass(frozen=True, kw_only=True)
class Damping:
    initial: float = 1e-4
    decrease: float = 3.0  # divide after an accepted step
    increase: float = 10.0  # multiply after a failed trial
    floor: float = 1e-9
    max_trials: int = 8  # failed trials before the iteration gives up


@dataclass(frozen=True, eq=False)
class LMResult(Generic[S]):
    state: S  # the last accepted state
    cost_history: tuple[float, ...]  # initial cost, then the cost after each accepted iteration
    damping: float  # final damping


def levenberg_marquardt(
    state: S,
    cost: float,
    *,
    linearise: Callable[[S], Any],
    solve: Callable[[Any, float], Any],
    update: Callable[[S, Any], tuple[S, float]],
    max_iters: int,
    tolerance: float,
    damping: Damping = Damping(),
    reweight: Callable[[S], float | None] | None = None,
    small_step: Callable[[Any], bool] | None = None,
    on_iteration: Callable[[int, int, float], None] | None = None,
) -> LMResult[S]:
    """Minimise from ``state`` (whose cost is ``cost``); see the module docstring for the callables.

    ``on_iteration(iteration, max_iters, cost)`` is called before each iteration (progress display)."""
    history = [cost]
    f = cost
    mu = damping.initial
    for iteration in range(max_iters):
        if on_iteration is not None:
            on_iteration(iteration, max_iters, f)
        changed = reweight(state) if reweight is not None else None
        if changed is not None:
            f = changed
        system = linearise(state)
        accepted = None
        for _ in range(damping.max_trials):
            try:
                step = solve(system, mu)
            except (RuntimeError, np.linalg.LinAlgError):
                mu *= damping.increase
                continue
            new_state, fn = update(state, step)
            if np.isfinite(fn) and fn < f:
                accepted = new_state, fn, step
                mu = max(mu / damping.decrease, damping.floor)
                break
            mu *= damping.increase
        if accepted is None:
            if changed is not None:
                continue
            break
        state, fn, step = accepted
        rel = (f - fn) / max(f, 1e-300)
        f = fn
        history.append(f)
        if changed is None and (rel < tolerance or (small_step is not None and small_step(step))):
            break
    return LMResult(state=state, cost_history=tuple(history), damping=mu)
