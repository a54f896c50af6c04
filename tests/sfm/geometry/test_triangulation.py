"""geometry.triangulation: DLT, two-ray midpoint and multi-ray least squares on synthetic cameras."""

from __future__ import annotations

import numpy as np

from sfm3r.sfm.geometry.projection import perspective_divide
from sfm3r.sfm.geometry.triangulation import ray_least_squares, triangulate_dlt, two_ray_midpoint


def _rot_y(deg: float) -> np.ndarray:
    a = np.radians(deg)
    return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])


def _cameras(n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """n cameras on an arc looking at the origin region: rotations (n, 3, 3), translations (n, 3)."""
    rot = np.stack([_rot_y(a) for a in np.linspace(-20, 20, n)])
    centres = rng.normal(scale=0.5, size=(n, 3)) + [0, 0, -6]
    trans = -np.einsum("nij,nj->ni", rot, centres)
    return rot, trans


def test_dlt_recovers_points_exactly_with_general_cameras():
    rng = np.random.default_rng(0)
    pts = rng.uniform(-1, 1, (40, 3))
    rot, trans = _cameras(2, rng)
    proj = np.concatenate([rot, trans[:, :, None]], axis=2)  # (2, 3, 4)
    norm = [perspective_divide(pts @ rot[c].T + trans[c])[0] for c in range(2)]
    got = triangulate_dlt(norm[0], norm[1], proj[0], proj[1])
    assert got.shape == (40, 3)
    np.testing.assert_allclose(got, pts, atol=1e-9)


def test_dlt_point_at_infinity_is_non_finite_and_empty_batch_works():
    proj_i = np.hstack([np.eye(3), np.zeros((3, 1))])
    proj_j = np.hstack([np.eye(3), [[1.0], [0.0], [0.0]]])
    same = np.array([[0.1, 0.2]])  # identical rays from two centres: the point is at infinity
    far = triangulate_dlt(same, same, proj_i, proj_j)[0]
    assert not np.all(np.isfinite(far)) or abs(far[2]) > 1e9  # at infinity, or numerically very far
    if np.all(np.isfinite(far)):
        np.testing.assert_allclose(far[:2] / far[2], same[0], rtol=1e-6)  # ... along the common ray
    assert triangulate_dlt(np.zeros((0, 2)), np.zeros((0, 2)), proj_i, proj_j).shape == (0, 3)


def test_two_ray_midpoint_exact_on_intersecting_rays_and_midpoint_on_skew_rays():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(30, 3))
    c1, c2 = rng.normal(size=(30, 3)) + [0, 0, -5], rng.normal(size=(30, 3)) + [3, 0, -5]
    d1 = (X - c1) / np.linalg.norm(X - c1, axis=1, keepdims=True)
    d2 = (X - c2) / np.linalg.norm(X - c2, axis=1, keepdims=True)
    np.testing.assert_allclose(two_ray_midpoint(c1, d1, c2, d2), X, atol=1e-9)
    # skew rays: x axis at z=0 and y axis at z=2 -> midpoint (0, 0, 1)
    got = two_ray_midpoint(np.array([[5.0, 0, 0]]), np.array([[1.0, 0, 0]]),
                           np.array([[0, 7.0, 2]]), np.array([[0, 1.0, 0]]))
    np.testing.assert_allclose(got, [[0, 0, 1]], atol=1e-12)


def test_two_ray_midpoint_parallel_rays_stay_finite():
    c1, c2 = np.array([[0.0, 0, 0]]), np.array([[1.0, 0, 0]])
    d = np.array([[0.0, 0, 1]])
    got = two_ray_midpoint(c1, d, c2, d)
    assert got.shape == (1, 3) and np.all(np.isfinite(got))  # denominator clamped, no nan/inf


def test_ray_least_squares_recovers_tracks_and_flags_singular_ones():
    rng = np.random.default_rng(2)
    rot, trans = _cameras(5, rng)
    centres = -np.einsum("nji,nj->ni", rot, trans)
    X = rng.uniform(-1, 1, (6, 3))
    obs_track = np.repeat(np.arange(6), 5)
    obs_image = np.tile(np.arange(5), 6)
    d = X[obs_track] - centres[obs_image]
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    w = rng.uniform(0.5, 2.0, obs_track.size)
    w[obs_track == 5] = 0.0  # track 5 has no weight at all: singular
    got = ray_least_squares(centres[obs_image], d, w, obs_track, 7)  # track 6 has no observation
    assert got.shape == (7, 3)
    np.testing.assert_allclose(got[:5], X[:5], atol=1e-9)
    assert np.all(np.isnan(got[5:]))
