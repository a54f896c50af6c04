"""Focal self-calibration from fundamental matrices: recovers a known focal, refuses degenerate input."""

from __future__ import annotations

import numpy as np
import pycolmap
import pytest
from scipy.spatial.transform import Rotation

from sfm3r.sfm.classic.self_calibration import SelfCalibConf, bougnoux_focals, essential_costs, estimate_focal

W, H = 640, 480


def _K(f: float) -> np.ndarray:
    return np.array([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1.0]])


def _skew(v: np.ndarray) -> np.ndarray:
    return np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])


def _random_pair(rng, focal, baseline=0.6, planar=False, tilt=0.08):
    """Two cameras around a random cloud at depth ~5, generic poses. Returns pixels (N, 2) x2 and GT F."""
    n = 300
    K = _K(focal)
    pix = rng.uniform([0, 0], [W, H], size=(n, 2))  # points seen by camera 1, depth 4-6
    depth = rng.uniform(4, 6, size=(n, 1))
    pts = depth * (np.linalg.inv(K) @ np.c_[pix, np.ones(n)].T).T
    if planar:
        pts = pts / (pts[:, 2:] + 0.3 * pts[:, :1]) * 5  # on the tilted plane z + 0.3 x = 5
    c = rng.normal(size=3)
    c = baseline * c / np.linalg.norm(c)  # second centre
    # camera 2 looks at the cloud centre (0, 0, 5), with a random roll and a small random tilt
    z = np.array([0, 0, 5.0]) - c
    z /= np.linalg.norm(z)
    x = np.cross([0, 1.0, 0], z)
    x /= np.linalg.norm(x)
    look = np.stack([x, np.cross(z, x), z])  # rows: camera axes in world
    R = Rotation.from_rotvec(rng.normal(scale=[tilt, tilt, 0.3])).as_matrix() @ look
    t = -R @ c
    x1 = (K @ pts.T).T
    x2 = (K @ (R @ pts.T + t[:, None])).T
    x1, x2 = x1[:, :2] / x1[:, 2:], x2[:, :2] / x2[:, 2:]
    F = np.linalg.inv(K).T @ _skew(t) @ R @ np.linalg.inv(K)
    inside = (x1 >= 0).all(1) & (x1 < [W, H]).all(1) & (x2 >= 0).all(1) & (x2 < [W, H]).all(1)
    return x1[inside], x2[inside], F


def _estimated_f(x1, x2, rng, noise=0.5, outliers=0.2):
    x1 = x1 + rng.normal(scale=noise, size=x1.shape)
    x2 = x2 + rng.normal(scale=noise, size=x2.shape)
    bad = rng.random(len(x1)) < outliers
    x2[bad] = rng.uniform([0, 0], [W, H], size=(bad.sum(), 2))
    options = pycolmap.RANSACOptions(max_error=2.0, random_seed=0)
    result = pycolmap.estimate_fundamental_matrix(x1, x2, options)
    return result["F"], result["num_inliers"]


def test_cost_vanishes_at_the_true_focal_only():
    rng = np.random.default_rng(0)
    _, _, F = _random_pair(rng, 1500.0)
    assert essential_costs(F[None], 1500.0, W / 2, H / 2)[0] < 1e-9
    assert essential_costs(F[None], 768.0, W / 2, H / 2)[0] > 0.01


def test_exact_fundamentals_give_the_focal_and_agree_with_bougnoux():
    rng = np.random.default_rng(1)
    fs = [_random_pair(rng, 1520.0)[2] for _ in range(5)]
    est = estimate_focal(fs, W, H)
    assert est.reason == "ok"
    assert est.focal_px == pytest.approx(1520.0, rel=1e-3)
    f_i, f_j = bougnoux_focals(fs[0], (W / 2, H / 2), (W / 2, H / 2))
    assert f_i == pytest.approx(1520.0, rel=1e-3) and f_j == pytest.approx(1520.0, rel=1e-3)


@pytest.mark.parametrize("focal", [400.0, 1520.0, 2400.0])
def test_noisy_correspondences_recover_the_focal_within_2_percent(focal):
    rng = np.random.default_rng(int(focal))
    fs, inliers = [], []
    while len(fs) < 12:
        x1, x2, _ = _random_pair(rng, focal)
        if len(x1) < 50:  # the second camera's tilt took the cloud out of view
            continue
        F, n = _estimated_f(x1, x2, rng)
        fs.append(F)
        inliers.append(n)
    fs.append(rng.normal(size=(3, 3)))  # a wrong F (bad pair) with few inliers: trimmed away
    inliers.append(20)
    est = estimate_focal(fs, W, H, weights=inliers)
    assert est.reason == "ok", est.reason
    assert est.focal_px == pytest.approx(focal, rel=0.02)
    assert est.flatness < 0.4 and est.contrast > 0.01
    assert est.costs.shape == est.focals.shape == (200,)


def test_pure_rotation_still_gives_the_focal():
    """No baseline: RANSAC returns some F = [e']x H with H = K R K^-1, and K^T F K = [.]x R is a valid
    essential matrix at the true focal for any e', so the focal is determined (as from a homography)."""
    rng = np.random.default_rng(3)
    fs, inliers = [], []
    for _ in range(8):
        x1, x2, _ = _random_pair(rng, 1500.0, baseline=0.0)  # same centre
        F, n = _estimated_f(x1, x2, rng, noise=0.3, outliers=0.0)
        fs.append(F)
        inliers.append(n)
    est = estimate_focal(fs, W, H, weights=inliers)
    assert est.focal_px == pytest.approx(1500.0, rel=0.02)


def test_planar_scene_falls_back():
    rng = np.random.default_rng(4)
    fs = []
    for _ in range(8):
        x1, x2, _ = _random_pair(rng, 1500.0, planar=True)
        fs.append(_estimated_f(x1, x2, rng, noise=0.3, outliers=0.0)[0])
    est = estimate_focal(fs, W, H)
    assert est.focal_px is None, (est.best_focal_px, est.flatness)


def test_turntable_aimed_at_its_centre_falls_back():
    """Cameras on a circle, looking down at its centre (templeRing): optical axes meet at a point at equal
    distance from every centre, Sturm's critical motion for one shared focal: every focal fits."""
    rng = np.random.default_rng(6)
    K = _K(1500.0)
    pts = rng.uniform(-0.4, 0.4, size=(400, 3))
    cams = []
    for angle in np.radians(np.arange(0, 80, 8)):
        c = np.array([5 * np.cos(angle), 5 * np.sin(angle), 2.0])
        z = -c / np.linalg.norm(c)
        x = np.cross([0, 0, 1.0], z)
        x /= np.linalg.norm(x)
        R = np.stack([x, np.cross(z, x), z])
        cams.append((R, -R @ c))
    fs = []
    for (R1, t1), (R2, t2) in zip(cams[:-1], cams[1:], strict=True):
        p1 = (K @ (R1 @ pts.T + t1[:, None])).T
        p2 = (K @ (R2 @ pts.T + t2[:, None])).T
        x1, x2 = p1[:, :2] / p1[:, 2:], p2[:, :2] / p2[:, 2:]
        fs.append(_estimated_f(x1, x2, rng, noise=0.3, outliers=0.0)[0])
    est = estimate_focal(fs, W, H)
    assert est.focal_px is None and "critical" in est.reason, (est.best_focal_px, est.reason)


def test_too_few_pairs_fall_back():
    rng = np.random.default_rng(5)
    est = estimate_focal([_random_pair(rng, 1500.0)[2]], W, H, conf=SelfCalibConf(min_pairs=3))
    assert est.focal_px is None and "usable pairs" in est.reason
    assert estimate_focal(np.zeros((0, 3, 3)), W, H).focal_px is None


def test_per_image_pairs_give_each_unknown_image_its_best_pairs_only():
    from sfm3r.sfm.classic.self_calibration import choose_per_image_pairs

    ranked = [("a", "b"), ("a", "c"), ("a", "x"), ("b", "c"), ("a", "k"), ("c", "k"), ("b", "k")]
    # x is neither unknown nor fixed: its pair never counts; k is fixed (known focal)
    chosen = choose_per_image_pairs(ranked, unknown={"a", "b", "c"}, fixed={"k"}, max_pairs_per_image=2)
    # a is full after (a, b), (a, c); (b, c) still serves b and c; (a, k) serves only a, which is full;
    # c is full after (a, c), (b, c); b is full after (a, b), (b, c)
    assert chosen == [("a", "b"), ("a", "c"), ("b", "c")]
    assert choose_per_image_pairs(ranked, unknown={"k"}, fixed=set(), max_pairs_per_image=3) == []
    assert choose_per_image_pairs(ranked, unknown={"c"}, fixed={"a", "b", "k"}, max_pairs_per_image=1) == [("a", "c")]
