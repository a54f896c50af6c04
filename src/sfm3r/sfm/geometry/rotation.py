"""Rotation vectors to rotation matrices on torch tensors (the alignment's pose updates).

Written here rather than taken from roma: importing roma also imports torch._dynamo (1.8 s on this
machine, on top of torch's own 2.5 s), for the one conversion the alignment needs.
"""

from __future__ import annotations

import torch

__all__ = ["rotvec_to_rotmat"]


def rotvec_to_rotmat(rotvec: torch.Tensor) -> torch.Tensor:
    """(..., 3) axis * angle (radians) -> (..., 3, 3) rotation matrices (Rodrigues' formula).

    R = I + a K + b K^2 with K the cross-product matrix of the rotation vector, a = sin(t)/t and
    b = (1 - cos(t))/t^2, t = |rotvec|; below t = 1e-4 their Taylor series are used (exact to float64).
    Differentiable (autograd) everywhere, also at 0.
    """
    theta2 = (rotvec * rotvec).sum(dim=-1, keepdim=True)  # (..., 1)
    small = theta2 < 1e-8
    safe2 = torch.where(small, torch.ones_like(theta2), theta2)
    safe = safe2.sqrt()
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(safe) / safe)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(safe)) / safe2)
    x, y, z = rotvec.unbind(dim=-1)
    zero = torch.zeros_like(x)
    cross = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*rotvec.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=rotvec.dtype, device=rotvec.device).expand_as(cross)
    return eye + a[..., None] * cross + b[..., None] * (cross @ cross)
