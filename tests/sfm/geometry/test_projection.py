"""geometry.projection: the pinhole projection, numpy and torch."""

from __future__ import annotations

import numpy as np
import torch

from sfm3r.sfm.geometry.projection import perspective_divide, project_pinhole


def test_projection_matches_the_calibration_matrix_in_numpy_and_torch():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(20, 3)) + [0, 0, 5]
    K = np.array([[500.0, 0, 320], [0, 480, 240], [0, 0, 1]])
    h = pts @ K.T
    want = h[:, :2] / h[:, 2:]
    xy, z = project_pinhole(pts, 500.0, 480.0, 320.0, 240.0)
    np.testing.assert_allclose(xy, want, rtol=1e-12)
    np.testing.assert_array_equal(z, pts[:, 2])
    xy_t, z_t = project_pinhole(torch.as_tensor(pts), 500.0, 480.0, 320.0, 240.0)
    np.testing.assert_allclose(xy_t.numpy(), want, rtol=1e-12)
    assert isinstance(xy_t, torch.Tensor) and torch.equal(z_t, torch.as_tensor(pts[:, 2]))


def test_per_point_intrinsics_broadcast():
    pts = np.array([[1.0, 2.0, 4.0], [1.0, 2.0, 4.0]])
    xy, _ = project_pinhole(pts, np.array([100.0, 200.0]), np.array([100.0, 200.0]), 0.0, np.array([0.0, 10.0]))
    np.testing.assert_allclose(xy, [[25.0, 50.0], [50.0, 110.0]])


def test_perspective_divide_clamps_the_depth_when_asked():
    pts = np.array([[1.0, 1.0, 2.0], [1.0, 1.0, -1.0]])
    uv, z = perspective_divide(pts)
    np.testing.assert_allclose(uv, [[0.5, 0.5], [-1.0, -1.0]])
    uv_c, z_c = perspective_divide(torch.as_tensor(pts), min_depth=1e-3)
    assert z_c[1] == 1e-3 and uv_c[1, 0] == 1e3
    _, z_n = perspective_divide(pts, min_depth=1e-3)
    assert z_n[1] == 1e-3 and z[1] == -1.0
