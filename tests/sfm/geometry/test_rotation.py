"""rotvec_to_rotmat (sfm/geometry/rotation.py) against scipy, at small angles and through autograd."""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from sfm3r.sfm.geometry.rotation import rotvec_to_rotmat


def test_matches_scipy_for_large_small_and_zero_angles():
    rng = np.random.default_rng(0)
    rotvecs = np.concatenate([rng.normal(size=(50, 3)), 1e-6 * rng.normal(size=(5, 3)), np.zeros((1, 3))])
    ours = rotvec_to_rotmat(torch.as_tensor(rotvecs)).numpy()
    np.testing.assert_allclose(ours, Rotation.from_rotvec(rotvecs).as_matrix(), atol=1e-12)
    batched = rotvec_to_rotmat(torch.as_tensor(rotvecs.reshape(8, 7, 3)))
    assert batched.shape == (8, 7, 3, 3)
    assert torch.allclose(batched.reshape(-1, 3, 3), torch.as_tensor(ours))


def test_gradient_at_zero_is_the_cross_product_matrix():
    rotvec = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    jac = torch.autograd.functional.jacobian(rotvec_to_rotmat, rotvec)  # (3, 3, 3)
    assert torch.isfinite(jac).all()
    skew_x = torch.tensor([[0, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=torch.float64)
    assert torch.allclose(jac[..., 0], skew_x)
