"""The Sim(3) RANSAC between two point sets that should agree up to one similarity ``dst ≈ s·R·src + t``.

One inlier rule everywhere: a correspondence is an inlier when ``|s R src + t − dst| < thr·|dst|``, the
residual relative to the point's distance from the origin of ``dst``'s frame (pointmaps are noisier far
away). One refit policy: the hypothesis with most inliers (random 3-point samples, vectorised, scored on
a random subset of at most ``SCORE_POINTS`` correspondences) is refitted ``refits`` times on its current
inliers, among all correspondences, with the caller's weights (local optimisation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sfm3r.sfm.geometry.similarity import fit_similarity_batch

__all__ = ["Sim3Fit", "relative_residuals", "sim3_ransac"]


@dataclass(frozen=True, eq=False)
class Sim3Fit:
    """A robust similarity ``dst ≈ scale·rotation·src + translation`` and the residuals under it."""

    scale: float
    rotation: np.ndarray  # (3, 3) float64
    translation: np.ndarray  # (3,) float64
    inliers: np.ndarray  # (M,) bool
    residuals: np.ndarray  # (M,) relative residual of every correspondence

    @property
    def num_inliers(self) -> int:
        return int(self.inliers.sum())


# Correspondences on which the random hypotheses are scored: scoring all of a pair's (thousands) cost more than
# the rest of the verification; the best hypothesis of a subset this size is refitted on all of them anyway.
SCORE_POINTS = 512


def _distinct_triples(m: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """(count, 3) int64: uniformly random triples of distinct indices in [0, m), m >= 3."""
    first = rng.integers(0, m, count)
    second = rng.integers(0, m - 1, count)
    second += second >= first
    low, high = np.minimum(first, second), np.maximum(first, second)
    third = rng.integers(0, m - 2, count)
    third += third >= low
    third += third >= high
    return np.stack([first, second, third], 1)


def relative_residuals(src, dst, scale, rot, trans) -> np.ndarray:
    """(B, M) ``|s R src + t − dst| / |dst|`` of hypotheses s (B,), R (B, 3, 3), t (B, 3); src, dst (M, 3)."""
    d = scale[:, None, None] * (src[None] @ rot.transpose(0, 2, 1)) + (trans[:, None] - dst[None])
    depth = np.maximum(np.sqrt((dst * dst).sum(-1)), 1e-9)
    return np.sqrt((d * d).sum(-1)) / depth[None]


def sim3_ransac(
    src: np.ndarray,  # (M, 3)
    dst: np.ndarray,  # (M, 3)
    weights: np.ndarray,  # (M,) >= 0, used by the refits
    *,
    rng: np.random.Generator,
    iters: int = 128,
    thr: float = 0.05,
    refits: int = 3,
) -> Sim3Fit | None:
    """Robust similarity from ``iters`` random 3-point hypotheses, then ``refits`` weighted refits.

    Returns None when fewer than 3 inliers remain before a refit (no similarity is supported).
    Raises ValueError for M < 3.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    w = np.asarray(weights, np.float64)
    m = src.shape[0]
    if m < 3:
        raise ValueError(f"a similarity fit needs at least 3 point pairs, got {m}")
    samples = _distinct_triples(m, iters, rng)
    s, R, t = fit_similarity_batch(src[samples], dst[samples], np.ones(samples.shape))
    # hypotheses are scored on at most SCORE_POINTS random correspondences (the refits below use all)
    scored = np.sort(rng.choice(m, SCORE_POINTS, replace=False)) if m > SCORE_POINTS else slice(None)
    best = int(np.argmax((relative_residuals(src[scored], dst[scored], s, R, t) < thr).sum(1)))
    s, R, t = s[best : best + 1], R[best : best + 1], t[best : best + 1]
    res = relative_residuals(src, dst, s, R, t)[0]
    inl = res < thr
    for _ in range(refits):
        if inl.sum() < 3:
            return None
        s, R, t = fit_similarity_batch(src[None, inl], dst[None, inl], w[None, inl])
        res = relative_residuals(src, dst, s, R, t)[0]
        inl = res < thr
    return Sim3Fit(scale=float(s[0]), rotation=R[0], translation=t[0], inliers=inl, residuals=res)
