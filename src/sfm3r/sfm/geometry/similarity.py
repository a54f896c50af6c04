"""Similarity transforms (Sim(3)) and their closed-form weighted least-squares fit (Umeyama 1991).

A Sim(3) (s, R, t) maps x to ``s·R·x + t``; with s = 1 it is a rigid transform. :func:`fit_similarity_batch`
is the one implementation (B independent fits at once, no checks: RANSAC hypotheses and refits);
:func:`fit_similarity` is the checked single fit for callers with user-sized input.
"""

from __future__ import annotations

import numpy as np

from sfm3r.errors import InputError

__all__ = ["apply_similarity", "fit_similarity", "fit_similarity_batch"]

_TINY = 1e-300  # variance floor: identical points give s = 0 in the batch fit instead of a division by zero


def fit_similarity_batch(
    src: np.ndarray,  # (B, M, 3)
    dst: np.ndarray,  # (B, M, 3)
    weights: np.ndarray,  # (B, M) >= 0
    *,
    with_scale: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """B weighted fits ``dst ≈ s·R·src + t``, each minimising ``Σ_m w_m |dst_m − (s R src_m + t)|²``.

    Returns (s (B,), R (B, 3, 3) with det +1, t (B, 3)), float64. Degenerate input (all source points
    identical, zero weights) gives s = 0 or an arbitrary rotation rather than an error.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    w = np.asarray(weights, np.float64)
    w = w / np.maximum(w.sum(-1, keepdims=True), 1e-12)
    mu_s = np.einsum("bm,bmk->bk", w, src)
    mu_d = np.einsum("bm,bmk->bk", w, dst)
    xs = src - mu_s[:, None]
    xd = dst - mu_d[:, None]
    cov = np.einsum("bm,bmk,bml->bkl", w, xd, xs)  # (B, 3, 3) Σ w (dst − μ_d)(src − μ_s)ᵀ
    u, d, vt = np.linalg.svd(cov)
    sign = np.sign(np.linalg.det(u @ vt))
    sign[sign == 0] = 1.0
    e = np.ones((src.shape[0], 3))
    e[:, 2] = sign
    rot = np.einsum("bij,bj,bjk->bik", u, e, vt)
    if with_scale:
        var_s = np.einsum("bm,bmk,bmk->b", w, xs, xs)
        scale = (d * e).sum(-1) / np.maximum(var_s, _TINY)
    else:
        scale = np.ones(src.shape[0])
    trans = mu_d - scale[:, None] * np.einsum("bij,bj->bi", rot, mu_s)
    return scale, rot, trans


def fit_similarity(
    src: np.ndarray,  # (N, 3)
    dst: np.ndarray,  # (N, 3)
    weights: np.ndarray | None = None,  # (N,) >= 0, None = all ones
    *,
    with_scale: bool = True,
) -> tuple[float, np.ndarray, np.ndarray]:
    """Weighted least-squares ``dst ≈ s·R·src + t``; ``with_scale=False`` fits a rigid transform (s = 1).

    Returns:
        (scale float, R (3, 3) float64 with det +1, t (3,) float64).

    Raises:
        InputError: shapes disagree, fewer than 3 points with positive weight, or the source points are
            all identical.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    if src.ndim != 2 or src.shape[1] != 3 or src.shape != dst.shape:
        raise InputError(f"fit_similarity: src {src.shape} and dst {dst.shape} must both be (N, 3)")
    w = np.ones(src.shape[0]) if weights is None else np.asarray(weights, np.float64).reshape(-1)
    if w.shape[0] != src.shape[0] or np.any(w < 0) or not np.all(np.isfinite(w)):
        raise InputError(f"fit_similarity: weights must be ({src.shape[0]},) finite and >= 0")
    if np.count_nonzero(w) < 3:
        raise InputError("fit_similarity: need at least 3 points with positive weight")
    wn = w / w.sum()
    centred = src - wn @ src
    if float(wn @ np.sum(centred * centred, axis=1)) <= _TINY:
        raise InputError("fit_similarity: source points are all identical; cannot fit a similarity")
    s, R, t = fit_similarity_batch(src[None], dst[None], w[None], with_scale=with_scale)
    return float(s[0]), R[0], t[0]


def apply_similarity(scale: float, rot: np.ndarray, trans: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(N, 3) points ``s·R·x + t``."""
    return scale * np.asarray(x, np.float64) @ np.asarray(rot).T + np.asarray(trans)
