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

:func:`estimate_camera_focals` does the same for cameras of different, unknown focals (internet photos:
every image its own camera, often no two of one size). A fundamental matrix F_k between cameras a and b gives
``E_k = K(f_b)^T F_k K(f_a)``, whose cost c_k(f_a, f_b) vanishes at the two true focals (the equal singular
value condition is two equations, so one F generically fixes both focals: Bougnoux's formula). Cameras with a
known focal stay fixed. The unknown log focals start at the medians of Bougnoux's per-pair focals, then a few
sweeps of cyclic coordinate descent on the per-camera trimmed aggregate (each step a global grid search over
one camera's focal with the others fixed, then a bounded 1-D refinement) find the basin, and a joint
least-squares over all pair costs with a Cauchy loss polishes it (coordinate descent alone crawls along the
curved valleys of the two-focal costs). Each camera is then accepted or refused by the tests of
:func:`estimate_focal` on its cost curve at the others' final focals, plus a cross-check: at least two of its
pairs must agree with the estimate: each alone puts its focal near it (one F fixes a focal when the other is
known), or fits it as well as a true F and about as well as its own minimum (a shallow pair of a narrow view),
at least one of them pinning it; or, for a camera with a single usable pair, that pair must be strong
(``min_single_pair_weight`` inliers) and reach a camera whose focal is known or accepted. On Sacre-Coeur
(10 photos, 10 cameras, focals 800-2840 px) 9 of 10 focals are found, median error 3 %; on its 5-photo
subset 4 of 5.

:func:`bougnoux_focals` is Bougnoux's closed form (1998) for the two focals of one F; it starts
:func:`estimate_camera_focals` and cross-checks the tests.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

from sfm3r.sfm.geometry.camera_model import DEFAULT_FOCAL_FACTOR as DEFAULT_FACTOR  # noqa: E402 (Bougnoux fails)

__all__ = [
    "choose_per_image_pairs",
    "CameraFocals",
    "FocalEstimate",
    "SelfCalibConf",
    "bougnoux_focals",
    "estimate_camera_focals",
    "estimate_focal",
    "essential_costs",
    "load_solvers",
    "pair_essential_costs",
]


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
    # estimate_camera_focals (one focal per camera) replaces `min_pairs` by: at least this many of a camera's
    # pairs, each alone (the other camera at its estimate), must put its focal within `agreement` (relative)
    # of the joint estimate. One F already fixes a focal when the other is known (two equations), so two
    # agreeing pairs cross-check each other; a wrong F puts its minimum anywhere in the range.
    min_agreeing_pairs: int = 2
    agreement: float = 0.1
    # A pair also agrees when it does not pin the focal but fits it: its cost at the joint estimate is that of
    # a true F (at most `max_consistent_cost`) and within `consistency_slack` of its own minimum. A narrow view
    # (Sacre-Coeur's 2,700-2,800 px photos, ~14 deg) leaves a true pair's own minimum 10-80 % off with a cost
    # only 0.0005-0.0013 lower; a wrong F costs 0.05-0.6 at every focal (0.2 at the estimate there), so it
    # never agrees. At least one pair must still pin the focal within `agreement`.
    max_consistent_cost: float = 0.02
    consistency_slack: float = 0.002
    # ... except a camera with a single usable pair, accepted from it alone when that pair is strong (its
    # weight, the F-RANSAC inlier count, at least this) and the camera at its other end has a known or
    # accepted focal: the F's two equations then fix the one unknown focal and still cross-check it (the
    # curve tests below). Without it an internet photo linked to the others by one good pair keeps the
    # 1.2 * max(W, H) default, and that wrong focal makes the calibrated two-view check reject the pair's
    # true matches (Sacre-Coeur sparse: 24 of 223 F inliers at the default focal 1280 px, 209 at the
    # pseudo-GT 858 px). Its pairs without true matches had 15-17 F inliers (3 px).
    min_single_pair_weight: float = 100.0
    # Cauchy loss scale of estimate_camera_focals' joint polish: ~ the cost of a true F from noisy matches
    # (Sacre-Coeur at its pseudo-GT focals: 0.0003-0.008), so a wrong F (cost 0.05-0.6) barely pulls.
    # Sacre-Coeur median focal error 0.033 / 0.042 / 0.064 at 0.005 / 0.01 / 0.02; synthetic noisy F as good.
    polish_scale: float = 0.005

    def __post_init__(self) -> None:
        if not 0 < self.min_factor < self.max_factor or self.num_steps < 10:
            raise ValueError(f"invalid focal search range in {self}")
        if not 0 <= self.trim < 1 or min(self.min_pairs, self.min_agreeing_pairs) < 1 or not 0 < self.max_flatness <= 1:
            raise ValueError(f"invalid thresholds in {self}")
        if not (self.agreement > 0 and self.polish_scale > 0 and self.min_single_pair_weight > 0):
            raise ValueError(f"agreement, polish_scale and min_single_pair_weight must be positive in {self}")
        if self.max_consistent_cost < 0 or self.consistency_slack < 0:
            raise ValueError(f"max_consistent_cost and consistency_slack must be >= 0 in {self}")


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


def load_solvers() -> None:
    """Import scipy's optimisers now (~0.12 s of CPU beyond scipy.sparse): a pipeline may call this in a
    background thread during the feature extraction, so that the self-calibration does not wait for them."""
    importlib.import_module("scipy.optimize")


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
    from scipy.optimize import minimize_scalar  # here, not at import: a cached rerun never loads scipy.optimize
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


def pair_essential_costs(
    fundamentals: np.ndarray,  # (P, 3, 3) fundamental matrices, pixels: x_b^T F x_a = 0
    focal_a: np.ndarray,  # (P,) focal of camera a of each pair, pixels
    focal_b: np.ndarray,  # (P,) focal of camera b
    pp_a: np.ndarray,  # (P, 2) principal point of camera a, pixels
    pp_b: np.ndarray,  # (P, 2)
) -> np.ndarray:
    """(P,) Mendonça-Cipolla cost (s1 - s2) / (s1 + s2) of E = K_b^T F K_a, two cameras per pair."""
    P = len(fundamentals)
    K_a = np.zeros((P, 3, 3))
    K_a[:, 0, 0] = K_a[:, 1, 1] = focal_a
    K_a[:, :2, 2] = pp_a
    K_a[:, 2, 2] = 1.0
    K_b = np.zeros((P, 3, 3))
    K_b[:, 0, 0] = K_b[:, 1, 1] = focal_b
    K_b[:, :2, 2] = pp_b
    K_b[:, 2, 2] = 1.0
    s = np.linalg.svd(K_b.transpose(0, 2, 1) @ fundamentals @ K_a, compute_uv=False)  # (P, 3) descending
    return (s[:, 0] - s[:, 1]) / np.maximum(s[:, 0] + s[:, 1], 1e-300)


@dataclass(frozen=True, eq=False)
class CameraFocals:
    """Result of :func:`estimate_camera_focals`, one entry per camera (C cameras).

    ``focal_px`` is the known focal for fixed cameras, the estimate for accepted ones and NaN for refused
    ones (then see ``reasons``); ``best_focal_px`` holds the minimiser whether accepted or not.
    """

    focal_px: np.ndarray  # (C,) pixels; NaN where refused
    best_focal_px: np.ndarray  # (C,) final coordinate-descent value (known focal for fixed cameras)
    flatness: np.ndarray  # (C,) min / median of the camera's cost curve (NaN for fixed cameras)
    contrast: np.ndarray  # (C,) median - min of the cost curve (NaN for fixed cameras)
    num_pairs: np.ndarray  # (C,) int, usable fundamental matrices involving the camera
    reasons: tuple[str, ...]  # (C,) "known", "ok" or why the estimate was refused
    num_sweeps: int  # coordinate-descent sweeps run


def estimate_camera_focals(
    fundamentals: Sequence[np.ndarray] | np.ndarray,  # P x (3, 3), pixels: x_b^T F x_a = 0
    pair_cameras: np.ndarray,  # (P, 2) int: cameras (a, b) of each F, indices into `sizes`; a == b allowed
    sizes: np.ndarray,  # (C, 2) image (width, height) of each camera, pixels
    known_focals: np.ndarray,  # (C,) focal of each camera with a known one, NaN for the unknown ones
    weights: Sequence[float] | np.ndarray | None = None,  # (P,) e.g. F-RANSAC inlier counts; None: all 1
    conf: SelfCalibConf = SelfCalibConf(),
    max_sweeps: int = 30,  # coordinate-descent sweeps at most (before the joint polish)
) -> CameraFocals:
    """Focals (pixels) of the cameras with unknown focals, from fundamental matrices between any cameras.

    Principal points at the image centres (W/2, H/2), square pixels, no skew. Each camera's aggregate cost
    is the weighted mean of the ``1 - trim`` fraction of its pairs with the lowest cost (as
    :func:`estimate_focal`); cameras of unknown focal are solved by coordinate descent on it (see the
    module doc, then a joint robust least-squares polish), searched over ``conf.min_factor``..``conf.max_factor``
    times the camera's max(W, H). A camera is refused (NaN) when fewer than ``conf.min_agreeing_pairs`` of its
    pairs agree with the estimate: alone give its focal within ``conf.agreement``, or fit it about as well as
    their own minimum (``conf.max_consistent_cost``, ``conf.consistency_slack``; one must pin it) (a camera
    with one usable pair: unless that pair has ``conf.min_single_pair_weight`` and its other camera a known
    or accepted focal; such cameras are decided last), or its cost curve (the others
    at their estimates) is flat (``conf.max_flatness``, ``conf.min_contrast``) or lowest at the edge of the
    range. Refused cameras still take part (as free unknowns) in the estimates of the others. Pairs between
    two known cameras and non-finite or all-zero matrices are ignored.
    """
    from scipy.optimize import least_squares, minimize_scalar  # here: see estimate_focal
    F = np.asarray(fundamentals, np.float64).reshape(-1, 3, 3)
    cams = np.asarray(pair_cameras, np.int64).reshape(-1, 2)
    sizes = np.asarray(sizes, np.float64).reshape(-1, 2)
    known = np.asarray(known_focals, np.float64).ravel()
    C = len(sizes)
    w = np.ones(len(F)) if weights is None else np.asarray(weights, np.float64).ravel()
    if not len(F) == len(cams) == len(w):
        raise ValueError(f"{len(F)} fundamental matrices, {len(cams)} camera pairs and {len(w)} weights")
    if len(known) != C:
        raise ValueError(f"{C} cameras (sizes) but {len(known)} known focals")
    if cams.size and (cams.min() < 0 or cams.max() >= C):
        raise ValueError(f"{C} cameras (sizes) but camera indices {cams.min()}..{cams.max()} in pair_cameras")
    unknown = ~np.isfinite(known)
    norms = np.linalg.norm(F.reshape(len(F), 9), axis=1)
    usable = np.isfinite(F).all(axis=(1, 2)) & (norms > 0) & np.isfinite(w) & (w > 0)
    if len(cams):
        usable &= unknown[cams].any(axis=1)
    F, cams, w = F[usable] / norms[usable, None, None], cams[usable], w[usable]
    pp = sizes / 2
    size = sizes.max(axis=1)
    focal = np.where(unknown, DEFAULT_FACTOR * size, known)
    pairs_of = [np.flatnonzero((cams == c).any(axis=1)) for c in range(C)]
    num_pairs = np.array([len(p) for p in pairs_of])

    # Start: median of Bougnoux's focal for the camera over its pairs, within the searched range.
    for c in np.flatnonzero(unknown):
        lo, hi = conf.min_factor * size[c], conf.max_factor * size[c]
        found = []
        for k in pairs_of[c]:
            a, b = cams[k]
            f_a, f_b = bougnoux_focals(F[k], tuple(pp[a]), tuple(pp[b]))
            found += [f for f, cam in ((f_a, a), (f_b, b)) if cam == c and lo < f < hi]
        if found:
            focal[c] = float(np.median(found))

    def pair_curves(c: int, candidates: np.ndarray) -> np.ndarray:
        """(S, Pc) cost of each pair of camera c at each candidate focal of c, the other cameras at `focal`."""
        ks = pairs_of[c]
        a, b = cams[ks, 0], cams[ks, 1]
        S, Pc = len(candidates), len(ks)
        f_a = np.where(a[None] == c, candidates[:, None], focal[a][None])  # (S, Pc)
        f_b = np.where(b[None] == c, candidates[:, None], focal[b][None])
        return pair_essential_costs(
            np.broadcast_to(F[ks][None], (S, Pc, 3, 3)).reshape(-1, 3, 3), f_a.ravel(), f_b.ravel(),
            np.broadcast_to(pp[a][None], (S, Pc, 2)).reshape(-1, 2),
            np.broadcast_to(pp[b][None], (S, Pc, 2)).reshape(-1, 2),
        ).reshape(S, Pc)  # fmt: skip

    def aggregate(c: int, costs: np.ndarray) -> np.ndarray:
        """(S,) camera c's aggregate of its (S, Pc) pair costs: the weighted mean of the lowest 1 - trim."""
        keep = max(1, int(np.ceil((1 - conf.trim) * costs.shape[1])))
        order = np.argsort(costs, axis=1, kind="stable")[:, :keep]
        kept_w = w[pairs_of[c]][order]
        return np.sum(np.take_along_axis(costs, order, axis=1) * kept_w, axis=1) / np.sum(kept_w, axis=1)

    def curve(c: int, candidates: np.ndarray) -> np.ndarray:
        """(S,) aggregate cost of camera c at each candidate focal, the others at `focal`."""
        return aggregate(c, pair_curves(c, candidates))

    grid = np.geomspace(conf.min_factor, conf.max_factor, conf.num_steps)  # (S,) factors of max(W, H)
    solve = [c for c in np.argsort(-num_pairs, kind="stable") if unknown[c] and num_pairs[c] > 0]

    def step(c: int) -> tuple[float, np.ndarray, int]:
        """Best focal of camera c with the others fixed: grid, then bounded refinement. -> (focal, curve, cell)"""
        focals = size[c] * grid
        costs = curve(c, focals)
        best = int(np.argmin(costs))
        lo, hi = focals[max(best - 1, 0)], focals[min(best + 1, len(focals) - 1)]
        refined = minimize_scalar(
            lambda log_f: curve(c, np.array([np.exp(log_f)]))[0], bounds=(np.log(lo), np.log(hi)),
            method="bounded", options={"xatol": 1e-5},
        )  # fmt: skip
        f = float(np.exp(refined.x)) if refined.fun <= costs[best] else float(focals[best])
        return f, costs, best

    sweeps = 0
    for sweeps in range(1, max_sweeps + 1):
        change = 0.0
        for c in solve:
            f, _, _ = step(c)
            change = max(change, abs(np.log(f / focal[c])))
            focal[c] = f
        if change < 1e-3:
            break
    if solve:  # joint polish: coordinate descent crawls along the curved valleys of the two-focal costs
        free = np.array(solve)
        w_norm = np.sqrt(w / w.mean())

        def residuals(log_f: np.ndarray) -> np.ndarray:
            f = focal.copy()
            f[free] = np.exp(log_f)
            return w_norm * pair_essential_costs(F, f[cams[:, 0]], f[cams[:, 1]], pp[cams[:, 0]], pp[cams[:, 1]])

        bounds = (np.log(conf.min_factor * size[free]), np.log(conf.max_factor * size[free]))
        x0 = np.clip(np.log(focal[free]), bounds[0] + 1e-9, bounds[1] - 1e-9)
        polished = least_squares(residuals, x0, bounds=bounds, loss="cauchy", f_scale=conf.polish_scale)
        if np.isfinite(polished.x).all():
            focal[free] = np.exp(polished.x)

    flatness = np.full(C, np.nan)
    contrast = np.full(C, np.nan)
    reasons = ["known" if not unknown[c] else "" for c in range(C)]
    estimate = np.where(unknown, np.nan, known)
    single = [c for c in np.flatnonzero(unknown) if num_pairs[c] == 1 and conf.min_agreeing_pairs > 1]
    for c in [c for c in np.flatnonzero(unknown) if c not in single] + single:  # single-pair cameras last
        needed = conf.min_agreeing_pairs
        if c in single:
            k = pairs_of[c][0]
            other = int(cams[k, 1] if cams[k, 0] == c else cams[k, 0])
            if w[k] < conf.min_single_pair_weight or not np.isfinite(estimate[other]):
                reasons[c] = (
                    f"1 usable pairs, need {conf.min_agreeing_pairs} (or one of >= {conf.min_single_pair_weight:.0f} "
                    f"inliers to a camera of known or accepted focal: {w[k]:.0f} inliers, the other camera's focal "
                    f"{'known or accepted' if np.isfinite(estimate[other]) else 'not accepted'})"
                )  # fmt: skip
                continue
            needed = 1
        elif num_pairs[c] < conf.min_agreeing_pairs:
            reasons[c] = f"{num_pairs[c]} usable pairs, need {conf.min_agreeing_pairs}"
            continue
        own_curves = pair_curves(c, size[c] * grid)  # (S, Pc): each pair alone, the other cameras at `focal`
        alone = size[c] * grid[np.argmin(own_curves, axis=0)]  # (Pc,) each pair's own minimum
        pins = np.abs(np.log(alone / focal[c])) <= np.log1p(conf.agreement)
        at_estimate = pair_curves(c, np.array([focal[c]]))[0]  # (Pc,)
        slack = at_estimate - own_curves.min(axis=0)  # (Pc,) how much worse the estimate fits than the pair's best
        fits = (at_estimate <= conf.max_consistent_cost) & (slack <= conf.consistency_slack)
        agreeing = int(np.sum(pins | fits)) if pins.any() else 0
        costs = aggregate(c, own_curves)  # (S,) the same grid: the pair curves are not computed again
        min_cost = float(aggregate(c, at_estimate[None])[0])
        best = int(np.argmin(np.abs(grid - focal[c] / size[c])))
        median = float(np.median(costs))
        flatness[c] = min_cost / median if median > 0 else 1.0
        contrast[c] = median - min_cost
        if contrast[c] < conf.min_contrast:
            reasons[c] = f"every focal fits about as well (median - min cost {contrast[c]:.4f} < {conf.min_contrast})"
        elif best < conf.edge_steps or best >= conf.num_steps - conf.edge_steps:
            reasons[c] = f"the cost is lowest at the edge of the searched range ({focal[c]:.0f} px)"
        elif flatness[c] > conf.max_flatness:
            reasons[c] = f"the cost curve is flat (min/median {flatness[c]:.2f} > {conf.max_flatness})"
        elif agreeing < needed:
            reasons[c] = (
                f"{agreeing} of its {num_pairs[c]} pairs agree with {focal[c]:.0f} px (alone within "
                f"{conf.agreement:.0%}, or fitting it as well as their own minimum; one must pin it), need {needed}"
            )
        else:
            reasons[c] = "ok"
            estimate[c] = focal[c]
    return CameraFocals(estimate, focal, flatness, contrast, num_pairs, tuple(reasons), sweeps)


def choose_per_image_pairs(
    ranked_pairs: Sequence[tuple[str, str]],  # image-name pairs, best score first
    unknown: Collection[str],  # images whose focal is estimated
    fixed: Collection[str],  # images whose focal is known (held fixed)
    max_pairs_per_image: int,
) -> list[tuple[str, str]]:
    """The pairs for a joint per-image focal estimate (:func:`estimate_camera_focals`), best first.

    A pair qualifies when both images are unknown or fixed, and is kept while one of its unknown images has
    fewer than `max_pairs_per_image` pairs: every unknown image gets its best pairs, none gets all of them.
    """
    usable = set(unknown) | set(fixed)
    count = dict.fromkeys(unknown, 0)
    chosen = []
    for a, b in ranked_pairs:
        if not {a, b} <= usable:
            continue
        if any(n in count and count[n] < max_pairs_per_image for n in (a, b)):
            chosen.append((a, b))
            for n in {a, b} & count.keys():
                count[n] += 1
    return chosen
