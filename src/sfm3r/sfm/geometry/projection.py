"""The pinhole projection (OpenCV axes: x right, y down, z forward; pixels in COLMAP's convention).

Works on numpy arrays and torch tensors alike (only operators and ``[..., k]`` indexing are used).
"""

from __future__ import annotations

__all__ = ["perspective_divide", "project_pinhole"]


def perspective_divide(points, min_depth: float | None = None):
    """Camera points (..., 3) -> (normalised image coordinates (..., 2), depth (...)).

    ``min_depth``: clamp the depth from below before dividing (a point behind the camera then projects
    somewhere finite; callers that must know test the returned depth, which is the clamped one).
    """
    z = points[..., 2]
    if min_depth is not None:
        z = z.clamp_min(min_depth) if hasattr(z, "clamp_min") else z.clip(min_depth, None)
    return points[..., :2] / z[..., None], z


def project_pinhole(points, fx, fy, cx, cy):
    """Camera points (..., 3) -> (pixels (..., 2), depth (...)); fx, fy, cx, cy broadcast against (...).

    No clamping: a point at depth 0 gives inf/nan pixels, one behind the camera a mirrored projection; test
    ``depth > 0``.
    """
    z = points[..., 2]
    u = fx * (points[..., 0] / z) + cx
    v = fy * (points[..., 1] / z) + cy
    stack = getattr(points, "new_tensor", None)
    if stack is not None:  # torch
        import torch

        return torch.stack([u, v], -1), z
    import numpy as np

    return np.stack([u, v], -1), z
