"""Focal self-calibration from fundamental matrices (Mendonça & Cipolla 1999), for images without EXIF.

Cameras of one group (same image size, same unknown focal f, square pixels, no skew, principal point at
the image centre (W/2, H/2) in COLMAP's pixel convention) give, for every fundamental matrix F_k between
two of them, the essential matrix ``E_k(f) = K(f)^T F_k K(f)`` with ``K(f) = [[f, 0, cx], [0, f, cy],
[0, 0, 1]]``. A true essential matrix has two equal non-zero singular values, so with ``s1 >= s2`` the
singular values of E_k(f) the cost::

    c_k(f) = (s1 - s2) / (s1 + s2)          in [0, 1], 0 for a valid essential matrix

vanishes at the true focal. :func:`estimate_focal` minimises a robust aggregate of c_k over a log-spaced
grid of focals (``min_factor`` to ``max_factor`` times max(W, H)), then refines the best grid cell with a
bounded 1-D search. The aggregate at each f is the weighted mean of the ``1 - trim`` fraction of pairs
with the lowest cost there (weights: the pairs' inlier counts), so outlier pairs (a wrong F) do not pull
the minimum.

A pure rotation (no baseline) is no problem: RANSAC then returns some F = [e']x H with H = K R K^-1, and
K^T F K is a valid essential matrix at the true focal for any e'.

When the data do not determine the focal the cost curve is flat (a planar scene: F is a 2-D family; too few or too noisy pairs; Sturm's critical motions, e.g. optical axes
meeting at a point equidistant from both centres; near such motions, e.g. cameras all aimed at one
point, it is shallow and noise moves the minimum more) or its minimum sits at the edge of the grid. Then the
estimate is refused (``focal_px = None``, with the reason) and the caller keeps its default prior.

:func:`bougnoux_focals` is Bougnoux's closed form (1998) for the two focals of one F, used as a
cross-check in the tests.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar

logger = logging.getLogger(__name__)

__all__ = ["FocalEstimate", "SelfCalibConf", "bougnoux_focals", "estimate_focal", "essential_costs"]


@dataclass(frozen=True, kw_only=True)
class SelfCalibConf:
    """Search range and acceptance thresholds of :func:`estimate_focal`."""

    min_factor: float = 0.3  # smallest focal searched, times max(W, H) (~118 deg field of view)
    max_factor: float = 5.0  # largest focal searched, times max(W, H) (~11 deg field of view)
    num_steps: int = 200  # log-spaced grid points
    trim: float = 0.25  # fraction of the pairs (highest cost at each focal) left out of the aggregate
    min_pairs: int = 3  # fewer usable fundamental matrices -> no estimate
    # Accept only when the aggregate cost at the minimum is below this fraction of the median aggregate
    # over the grid (a flat curve has a ratio near 1; measured on synthetic noisy data: ~0.05-0.15).
    max_flatness: float = 0.4
    # ... and only when the median aggregate exceeds the minimum by this much: on a critical motion every
    # pair is near-valid at every focal (templeRing, a turntable aimed at its centre: min 0.0005, median
    # 0.0012; fountain/herzjesu: min 0.002-0.003, median ~0.04).
    min_contrast: float = 0.01
    edge_steps: int = 2  # a minimum within this many grid steps of either end -> no estimate

    def __post_init__(self) -> None:
        if not 0 < self.min_factor < self.max_factor or self.num_steps < 10:
            raise ValueError(f"invalid focal search range in {self}")
        if not 0 <= self.trim < 1 or self.min_pairs < 1 or not 0 < self.max_flatness <= 1:
            raise ValueError(f"invalid thresholds in {self}")


@dataclass(frozen=True, eq=False)
class FocalEstimate:
    """Result of :func:`estimate_focal`. ``focal_px`` is None when the data do not determine the focal."""

    focal_px: float | None  # the estimate in pixels, or None (then see `reason`)
    best_focal_px: float  # minimiser of the aggregate cost, reliable or not
    focals: np.ndarray  # (S,) the grid of focals searched, pixels
    costs: np.ndarray  # (S,) aggregate cost at each grid focal
    min_cost: float  # aggregate cost at best_focal_px
    flatness: float  # min_cost / median(costs): ~0 sharp minimum, ~1 flat curve
    contrast: float  # median(costs) - min_cost: ~0 when every focal fits (critical motion)
    num_pairs: int  # usable fundamental matrices
    reason: str  # "ok" or why the estimate was refused


def essential_costs(
    fundamentals: np.ndarray,  # (P, 3, 3) fundamental matrices, pixels (x_j^T F x_i = 0)
    focal: float,  # candidate focal, pixels
    cx: float,
    cy: float,
) -> np.ndarray:
    """(P,) Mendonça-Cipolla cost (s1 - s2) / (s1 + s2) of E = K^T F K for one candidate focal."""
    K = np.array([[focal, 0.0, cx], [0.0, focal, cy], [0.0, 0.0, 1.0]])
    E = K.T[None] @ fundamentals @ K[None]
    s = np.linalg.svd(E, compute_uv=False)  # (P, 3) descending
    return (s[:, 0] - s[:, 1]) / np.maximum(s[:, 0] + s[:, 1], 1e-300)


def _aggregate(costs: np.ndarray, weights: np.ndarray, keep: int) -> float:
    """Weighted mean of the `keep` lowest of (P,) costs."""
    order = np.argsort(costs, kind="stable")[:keep]
    return float(np.sum(costs[order] * weights[order]) / np.sum(weights[order]))


def estimate_focal(
    fundamentals: Sequence[np.ndarray] | np.ndarray,  # P x (3, 3), between images of one camera group
    width: int,
    height: int,
    weights: Sequence[float] | np.ndarray | None = None,  # (P,) e.g. inlier counts; None: all equal
    conf: SelfCalibConf = SelfCalibConf(),
) -> FocalEstimate:
    """One focal (pixels) shared by the images of a group, from the fundamental matrices between them.

    The principal point is taken at (width / 2, height / 2). Non-finite or rank-deficient (all-zero)
    matrices are ignored. See the module doc for the cost and when the estimate is refused.
    """
    F = np.asarray(fundamentals, np.float64).reshape(-1, 3, 3)
    w = np.ones(len(F)) if weights is None else np.asarray(weights, np.float64).ravel()
    if len(w) != len(F):
        raise ValueError(f"{len(F)} fundamental matrices but {len(w)} weights")
    norms = np.linalg.norm(F.reshape(len(F), 9), axis=1)
    usable = np.isfinite(F).all(axis=(1, 2)) & (norms > 0) & np.isfinite(w) & (w > 0)
    F = F[usable] / norms[usable, None, None]
    w = w[usable]
    size = max(width, height)
    cx, cy = width / 2, height / 2
    focals = size * np.geomspace(conf.min_factor, conf.max_factor, conf.num_steps)
    if len(F) < conf.min_pairs:
        empty = np.full(conf.num_steps, np.nan)
        reason = f"{len(F)} usable pairs, need {conf.min_pairs}"
        return FocalEstimate(None, float("nan"), focals, empty, float("nan"), 1.0, 0.0, len(F), reason)
    keep = max(1, int(np.ceil((1 - conf.trim) * len(F))))

    def cost(f: float) -> float:
        return _aggregate(essential_costs(F, f, cx, cy), w, keep)

    costs = np.array([cost(f) for f in focals])
    best = int(np.argmin(costs))
    lo = focals[max(best - 1, 0)]
    hi = focals[min(best + 1, len(focals) - 1)]
    refined = minimize_scalar(
        lambda log_f: cost(np.exp(log_f)), bounds=(np.log(lo), np.log(hi)), method="bounded",
        options={"xatol": 1e-5},
    )  # fmt: skip
    best_f, min_cost = (float(np.exp(refined.x)), float(refined.fun))
    if not min_cost <= costs[best]:
        best_f, min_cost = float(focals[best]), float(costs[best])
    median = float(np.median(costs))
    flatness = min_cost / median if median > 0 else 1.0
    if median - min_cost < conf.min_contrast:
        reason = (
            f"every focal fits about as well (median - min cost {median - min_cost:.4f} < {conf.min_contrast}): "
            "a critical motion, e.g. cameras on a circle all aimed at its centre"
        )
    elif best < conf.edge_steps or best >= conf.num_steps - conf.edge_steps:
        reason = f"the cost is lowest at the edge of the searched range ({best_f:.0f} px)"
    elif flatness > conf.max_flatness:
        reason = f"the cost curve is flat (min/median {flatness:.2f} > {conf.max_flatness})"
    else:
        reason = "ok"
    focal = best_f if reason == "ok" else None
    return FocalEstimate(focal, best_f, focals, costs, min_cost, flatness, median - min_cost, len(F), reason)


def bougnoux_focals(
    F: np.ndarray,  # (3, 3) fundamental matrix, pixels, x_j^T F x_i = 0
    pp_i: tuple[float, float],  # principal point of image i, pixels
    pp_j: tuple[float, float],
) -> tuple[float, float]:
    """Bougnoux's closed-form focals (f_i, f_j) of one F with known principal points; NaN where the
    squared focal comes out non-positive (noise, or a degenerate configuration such as intersecting
    optical axes, where the formula divides by ~0)."""
    F = np.asarray(F, np.float64)
    F = F / np.linalg.norm(F)
    p_i = np.array([pp_i[0], pp_i[1], 1.0])
    p_j = np.array([pp_j[0], pp_j[1], 1.0])
    e_i = np.linalg.svd(F)[2][-1]  # right null vector: epipole in image i (F e_i = 0)
    e_j = np.linalg.svd(F.T)[2][-1]  # epipole in image j (F^T e_j = 0)
    I3 = np.diag([1.0, 1.0, 0.0])

    def cross(v: np.ndarray) -> np.ndarray:
        return np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])

    # f_j^2 = -(p_j^T [e_j]x I3 F p_i)(p_i^T F^T p_j) / (p_j^T [e_j]x I3 F I3 F^T p_j), and symmetrically.
    num_j = -(p_j @ cross(e_j) @ I3 @ F @ p_i) * (p_i @ F.T @ p_j)
    den_j = p_j @ cross(e_j) @ I3 @ F @ I3 @ F.T @ p_j
    num_i = -(p_i @ cross(e_i) @ I3 @ F.T @ p_j) * (p_j @ F @ p_i)
    den_i = p_i @ cross(e_i) @ I3 @ F.T @ I3 @ F @ p_i
    f2_i, f2_j = num_i / den_i, num_j / den_j
    return (float(np.sqrt(f2_i)) if f2_i > 0 else float("nan"), float(np.sqrt(f2_j)) if f2_j > 0 else float("nan"))
