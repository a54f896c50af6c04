"""Rotation vectors to rotation matrices on numpy arrays or torch tensors (the alignment's pose updates).

Written here rather than taken from roma: importing roma also imports torch._dynamo (1.8 s on this
machine, on top of torch's own 2.5 s), for the one conversion the alignment needs.
"""

from __future__ import annotations

import numpy as np

from sfm3r.sfm.geometry.arrays import Array, namespace

__all__ = ["rotvec_to_rotmat", "skew"]


def skew(v: Array) -> Array:
    """(..., 3) -> (..., 3, 3) cross-product matrices, skew(v) @ w = v × w (numpy or torch, as v)."""
    z = 0.0 * v[..., 0]
    return namespace(v).stack(
        [z, -v[..., 2], v[..., 1], v[..., 2], z, -v[..., 0], -v[..., 1], v[..., 0], z], -1
    ).reshape(*v.shape, 3)


def rotvec_to_rotmat(rotvec: Array) -> Array:
    """(..., 3) axis * angle (radians) -> (..., 3, 3) rotation matrices (Rodrigues' formula).

    R = I + a K + b K^2 with K the cross-product matrix of the rotation vector, a = sin(t)/t and
    b = (1 - cos(t))/t^2, t = |rotvec|; below t = 1e-4 their Taylor series are used (exact to float64).
    Same library as the input; with torch, differentiable (autograd) everywhere, also at 0.
    """
    xp = namespace(rotvec)
    theta2 = (rotvec * rotvec).sum(-1)[..., None]  # (..., 1)
    small = theta2 < 1e-8
    safe2 = xp.where(small, 1.0, theta2)
    safe = xp.sqrt(safe2)
    a = xp.where(small, 1.0 - theta2 / 6.0, xp.sin(safe) / safe)
    b = xp.where(small, 0.5 - theta2 / 24.0, (1.0 - xp.cos(safe)) / safe2)
    cross = skew(rotvec)
    eye = np.eye(3) if xp is np else xp.eye(3, dtype=rotvec.dtype, device=rotvec.device)
    return eye + a[..., None] * cross + b[..., None] * (cross @ cross)
