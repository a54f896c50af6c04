"""Triangulation: points from two or more viewing rays (numpy, float64, batched over points).

- :func:`triangulate_dlt`: the linear (DLT) two-view triangulation from normalised image coordinates.
- :func:`two_ray_midpoint`: the midpoint of the shortest segment between two rays.
- :func:`ray_least_squares`: the weighted least-squares point of many rays per track (the multi-view refit).

Written once here so the classic two-view stage and the alignment's track triangulation share one formula.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ray_least_squares", "triangulate_dlt", "two_ray_midpoint"]


def triangulate_dlt(
    norm_i: np.ndarray,  # (M, 2) normalised image coordinates in image i ((x - c) / f)
    norm_j: np.ndarray,  # (M, 2) in image j
    proj_i: np.ndarray,  # (3, 4) camera i from the frame of the result, [R | t]
    proj_j: np.ndarray,  # (3, 4) camera j from the frame of the result
) -> np.ndarray:
    """(M, 3) float64 points whose projections are ``norm_i`` / ``norm_j`` (linear DLT, one SVD per point).

    Each equation row is scaled to unit norm before the SVD (conditioning). Points at infinity (parallel
    rays: a null vector with a zero or round-off last coordinate) come back non-finite or very far away;
    callers filter them by depth, angle or reprojection error.
    """
    a = np.stack(
        [
            norm_i[:, :1] * proj_i[2] - proj_i[0],
            norm_i[:, 1:] * proj_i[2] - proj_i[1],
            norm_j[:, :1] * proj_j[2] - proj_j[0],
            norm_j[:, 1:] * proj_j[2] - proj_j[1],
        ],
        axis=1,
    )  # (M, 4, 4)
    a /= np.maximum(np.linalg.norm(a, axis=2, keepdims=True), 1e-12)
    hom = np.linalg.svd(a)[2][:, -1]  # (M, 4) null vector
    with np.errstate(divide="ignore", invalid="ignore"):
        return hom[:, :3] / hom[:, 3:]


def two_ray_midpoint(c1: np.ndarray, d1: np.ndarray, c2: np.ndarray, d2: np.ndarray) -> np.ndarray:
    """(H, 3) midpoint of the shortest segment between rays (c1, d1) and (c2, d2); all (H, 3), d unit.

    Near-parallel rays (1 - (d1·d2)² <= 1e-12) divide by 1e-12 instead: the result is finite but far
    away and meaningless; callers reject it by reprojection error or triangulation angle.
    """
    w = c1 - c2
    b = np.sum(d1 * d2, axis=1)
    d = np.sum(d1 * w, axis=1)
    e = np.sum(d2 * w, axis=1)
    den = 1.0 - b * b
    den = np.where(den > 1e-12, den, 1e-12)
    s = (b * e - d) / den
    t = (e - b * d) / den
    return 0.5 * (c1 + s[:, None] * d1 + c2 + t[:, None] * d2)


def ray_least_squares(
    centers: np.ndarray,  # (K, 3) ray origins (camera centres), one per observation
    dirs: np.ndarray,  # (K, 3) unit ray directions
    weights: np.ndarray,  # (K,) weight of each ray (0 drops it)
    obs_track: np.ndarray,  # (K,) int track of each observation, in [0, num_tracks)
    num_tracks: int,
) -> np.ndarray:
    """(T, 3) points minimising sum_k w_k |(I - d dᵀ)(X - c)|² per track; NaN for singular tracks."""
    proj = np.eye(3)[None] - dirs[:, :, None] * dirs[:, None, :]  # (K, 3, 3)
    wp = proj.reshape(-1, 9) * weights[:, None]
    A = np.stack([np.bincount(obs_track, wp[:, c], minlength=num_tracks) for c in range(9)], 1)
    A = A.astype(float).reshape(-1, 3, 3)
    wb = np.einsum("kij,kj->ki", proj, centers) * weights[:, None]
    b = np.stack([np.bincount(obs_track, wb[:, c], minlength=num_tracks) for c in range(3)], 1).astype(float)
    det = np.linalg.det(A)
    ok = np.abs(det) > 1e-300
    X = np.full((num_tracks, 3), np.nan)
    X[ok] = np.linalg.solve(A[ok], b[ok][..., None])[..., 0]
    return X
