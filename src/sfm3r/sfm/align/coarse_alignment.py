"""Coarse 3D alignment: the reference's 3D matching objective (§6.4), solved by robust Levenberg–Marquardt.

Every verified match k links anchor a of image i and anchor b of image j. With canonical camera points
p = D·K⁻¹[x, y, 1]ᵀ, world-from-camera rotations Q, centres C and per-image scales λ, the two world points
are X_a = λ_i·Q_i·p_a + C_i and X_b = λ_j·Q_j·p_b + C_j. The residual is (X_a − X_b) divided by the
match's mean depth (pointmap errors grow with depth), weighted by the match confidence, under a Cauchy
loss. Parameters per image: a rotation increment (3, left-multiplied), the centre (3) and log λ (1); the
root image is fixed (gauge). The flat match table is evaluated vectorised (no Python loop per pair);
the normal equations are block-sparse (block_lm); the iterations are the kernel's LM loop (geometry.lm).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sfm3r.sfm.align.block_lm import DENSE_FILL, DENSE_MAX_COLUMNS, image_graph_fill, normal_equations, pair_ids, solve_damped
from sfm3r.sfm.align.canonical import CanonicalData
from sfm3r.sfm.align.step_confs import CoarseConf
from sfm3r.sfm.geometry.arrays import arrays_for
from sfm3r.sfm.geometry.lm import levenberg_marquardt
from sfm3r.sfm.geometry.rotation import rotvec_to_rotmat, skew

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class CoarseResult:
    rotations: np.ndarray  # (N, 3, 3) cam_from_world
    centres: np.ndarray  # (N, 3)
    scales: np.ndarray  # (N,) λ
    inlier_matches: np.ndarray  # (K,) bool: relative residual below outlier_threshold
    cost_history: tuple[float, ...]


def anchor_rays(canon: CanonicalData, focal: np.ndarray, pp: np.ndarray) -> np.ndarray:
    """(A, 3) K⁻¹[x, y, 1] of every anchor; focal (N,), pp (N, 2)."""
    img = canon.anchor_image
    xy = (canon.anchor_xy - pp[img]) / focal[img, None]
    return np.concatenate([xy, np.ones((xy.shape[0], 1))], 1)


def coarse_align(
    canon: CanonicalData,
    rotations: np.ndarray,  # (N, 3, 3) cam_from_world initial
    centres: np.ndarray,  # (N, 3)
    scales: np.ndarray,  # (N,)
    focal: np.ndarray,  # (N,)
    pp: np.ndarray,  # (N, 2)
    root: int,
    conf: CoarseConf,
    device: str = "cpu",  # "cpu", or a torch device (e.g. "cuda")
    on_iteration: Callable[[int, int, float], None] | None = None,  # (iteration, max_iters, cost) per step
) -> CoarseResult:
    """Refine poses and per-image scales on the 3D matching objective.

    On the CPU a problem of at most NUMPY_MAX_MATCHES matches runs on numpy, a larger one on torch
    (geometry.arrays).
    """
    arrays = arrays_for(device, canon.match_a.size)
    xp, asarray = arrays.xp, arrays.asarray
    N = len(canon.image_names)
    p_anchor = asarray(anchor_rays(canon, focal, pp) * canon.anchor_depth[:, None], xp.float64)
    ii = asarray(canon.edge_i[canon.match_edge], xp.int64)
    jj = asarray(canon.edge_j[canon.match_edge], xp.int64)
    pa = p_anchor[asarray(canon.match_a, xp.int64)]
    pb = p_anchor[asarray(canon.match_b, xp.int64)]
    c = asarray(canon.match_conf, xp.float64)
    c = c / c.mean()
    pid_np, pair_ab = pair_ids(canon.edge_i[canon.match_edge], canon.edge_j[canon.match_edge])
    pid = asarray(pid_np, xp.int64)
    Q = asarray(np.transpose(rotations, (0, 2, 1)), xp.float64)
    C = asarray(centres, xp.float64)
    L = asarray(np.log(scales), xp.float64)
    free = np.ones(N * 7, bool)
    free[root * 7 : root * 7 + 7] = False
    delta2 = conf.robust_scale**2
    dense = 7 * N <= DENSE_MAX_COLUMNS and image_graph_fill(pair_ab, N) > DENSE_FILL

    def residuals(Q, C, L):
        va = xp.exp(L[ii])[:, None] * (Q[ii] @ pa[..., None])[..., 0]
        vb = xp.exp(L[jj])[:, None] * (Q[jj] @ pb[..., None])[..., 0]
        sig = 0.5 * (xp.exp(L[ii]) * pa[:, 2] + xp.exp(L[jj]) * pb[:, 2])
        r = (va + C[ii] - vb - C[jj]) / sig[:, None]
        return r, va / sig[:, None], vb / sig[:, None], sig

    def cost(r):
        return float((c * delta2 * xp.log1p((r * r).sum(1) / delta2)).sum())

    def linearise(state):
        _, _, _, r, va, vb, sig = state
        w = c / (1 + (r * r).sum(1) / delta2)
        eye_sig = arrays.asarray(np.eye(3), xp.float64) * (1 / sig)[:, None, None]  # (K, 3, 3)
        Ja = xp.concatenate([-skew(va), eye_sig, va[..., None]], axis=2)
        Jb = -xp.concatenate([-skew(vb), eye_sig, vb[..., None]], axis=2)
        return normal_equations(Ja, Jb, r, w, ii, jj, pid, pair_ab, N)

    def solve(system, mu):
        H, g = system
        return asarray(solve_damped(H, g, mu, free, dense=dense), xp.float64).reshape(N, 7)

    def update(state, d):
        Q, C, L = state[:3]
        Qn, Cn, Ln = rotvec_to_rotmat(d[:, :3]) @ Q, C + d[:, 3:6], L + d[:, 6]
        new = (Qn, Cn, Ln, *residuals(Qn, Cn, Ln))
        return new, cost(new[3])

    state = (Q, C, L, *residuals(Q, C, L))
    out = levenberg_marquardt(state, cost(state[3]), linearise=linearise, solve=solve, update=update,
                              max_iters=conf.max_iters, tolerance=conf.tolerance, on_iteration=on_iteration)
    Q, C, L, r = out.state[:4]
    history = out.cost_history
    logger.info("coarse alignment: cost %.4g -> %.4g in %d iterations", history[0], history[-1], len(history) - 1)
    rn = np.linalg.norm(arrays.to_numpy(r), axis=1)
    return CoarseResult(
        rotations=np.transpose(arrays.to_numpy(Q), (0, 2, 1)),
        centres=arrays.to_numpy(C),
        scales=np.exp(arrays.to_numpy(L)),
        inlier_matches=rn < conf.outlier_threshold,
        cost_history=tuple(history),
    )
