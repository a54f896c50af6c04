"""Similarity transforms (Sim(3)): closed-form weighted least-squares fit between point sets (Umeyama).

A Sim(3) (s, R, t) maps x to ``s * R @ x + t``.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

__all__ = ["umeyama_sim3", "apply_sim3"]


def umeyama_sim3(
    src: np.ndarray,  # (N, 3) float
    dst: np.ndarray,  # (N, 3) float
    weights: np.ndarray | None = None,  # (N,) float >= 0, None = all ones
    *,
    with_scale: bool = True,
) -> tuple[float, np.ndarray, np.ndarray]:
    """Weighted least-squares similarity dst ≈ s R src + t (Umeyama 1991).

    Minimises ``sum_n w_n |dst_n - (s R src_n + t)|²`` in closed form. ``with_scale=False`` fits a rigid
    transform (s = 1).

    Returns:
        (scale float, R (3, 3) float64 with det +1, t (3,) float64).

    Raises:
        InputError: shapes disagree, fewer than 3 points with positive weight, or the points are
            degenerate (all identical).
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    if src.ndim != 2 or src.shape[1] != 3 or src.shape != dst.shape:
        raise InputError(f"umeyama_sim3: src {src.shape} and dst {dst.shape} must both be (N, 3)")
    w = np.ones(src.shape[0]) if weights is None else np.asarray(weights, np.float64).reshape(-1)
    if w.shape[0] != src.shape[0] or np.any(w < 0) or not np.all(np.isfinite(w)):
        raise InputError(f"umeyama_sim3: weights must be ({src.shape[0]},) finite and >= 0")
    if np.count_nonzero(w) < 3:
        raise InputError("umeyama_sim3: need at least 3 points with positive weight")
    w = w / w.sum()
    mu_s = w @ src
    mu_d = w @ dst
    xs = src - mu_s
    xd = dst - mu_d
    var_s = float(w @ np.sum(xs * xs, axis=1))
    if var_s <= 1e-300:
        raise InputError("umeyama_sim3: source points are all identical; cannot fit a similarity")
    cov = (xd * w[:, None]).T @ xs  # (3, 3) = sum w dst_c src_cᵀ
    u, d, vt = np.linalg.svd(cov)
    sign = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[2] = -1.0
    rot = (u * sign) @ vt
    scale = float((d * sign).sum() / var_s) if with_scale else 1.0
    trans = mu_d - scale * rot @ mu_s
    return scale, rot, trans


def apply_sim3(scale: float, rot: np.ndarray, trans: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(N, 3) points ``s R x + t``."""
    return scale * np.asarray(x, np.float64) @ np.asarray(rot).T + np.asarray(trans)
