"""Per-camera focal self-calibration from fundamental matrices between cameras of different unknown focals
(internet photos: every image its own camera): recovers each focal, holds known ones, refuses what the data
do not determine."""

from __future__ import annotations

import numpy as np
import pycolmap
import pytest
from scipy.spatial.transform import Rotation

from sfm3r.sfm.classic.self_calibration import SelfCalibConf, estimate_camera_focals, pair_essential_costs

SIZES = np.array([[640, 480], [800, 600], [480, 640], [1024, 768], [900, 600]], np.float64)
FOCALS = np.array([600.0, 900.0, 1400.0, 1100.0, 750.0])


def _K(c: int) -> np.ndarray:
    return np.array([[FOCALS[c], 0, SIZES[c, 0] / 2], [0, FOCALS[c], SIZES[c, 1] / 2], [0, 0, 1.0]])


def _skew(v: np.ndarray) -> np.ndarray:
    return np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])


def _cameras(rng, planar: bool = False):
    """A cloud around the origin (or the plane z = 0.3 x) and one camera per size at 6-9 units, aimed near the
    origin from a generic direction with a random roll. Returns points (N, 3) and poses [(R, t)] cam_from_world."""
    pts = rng.uniform(-2, 2, size=(3000, 3))
    if planar:
        pts[:, 2] = 0.3 * pts[:, 0]
    poses = []
    for _ in SIZES:
        centre = rng.normal(size=3)
        centre *= rng.uniform(6, 9) / np.linalg.norm(centre)
        z = rng.normal(scale=0.7, size=3) - centre
        z /= np.linalg.norm(z)
        x = np.cross([0, 1.0, 0], z)
        x /= np.linalg.norm(x)
        R = Rotation.from_rotvec(rng.normal(scale=[0.05, 0.05, 0.3])).as_matrix() @ np.stack([x, np.cross(z, x), z])
        poses.append((R, -R @ centre))
    return pts, poses


def _exact_f(poses, a: int, b: int) -> np.ndarray:
    """GT F of cameras (a, b): x_b^T F x_a = 0."""
    R = poses[b][0] @ poses[a][0].T
    t = poses[b][1] - R @ poses[a][1]
    return np.linalg.inv(_K(b)).T @ _skew(t) @ R @ np.linalg.inv(_K(a))


def _ransac_f(pts, poses, a: int, b: int, rng, noise: float = 0.5):
    """F of cameras (a, b) by RANSAC from the points both see, with pixel noise. -> (F, inliers)"""

    def project(c):
        p = (_K(c) @ (poses[c][0] @ pts.T + poses[c][1][:, None])).T
        xy = p[:, :2] / p[:, 2:]
        return xy, (p[:, 2] > 0) & (xy >= 0).all(1) & (xy < SIZES[c]).all(1)

    (xy_a, in_a), (xy_b, in_b) = project(a), project(b)
    seen = in_a & in_b
    xy_a = xy_a[seen] + rng.normal(scale=noise, size=(seen.sum(), 2))
    xy_b = xy_b[seen] + rng.normal(scale=noise, size=(seen.sum(), 2))
    found = pycolmap.estimate_fundamental_matrix(xy_a, xy_b, pycolmap.RANSACOptions(max_error=2.0, random_seed=0))
    return found["F"], found["num_inliers"]


ALL_PAIRS = np.array([(a, b) for a in range(len(SIZES)) for b in range(a + 1, len(SIZES))])
UNKNOWN = np.full(len(SIZES), np.nan)


def test_pair_cost_vanishes_at_the_two_true_focals_only():
    _, poses = _cameras(np.random.default_rng(0))
    F = _exact_f(poses, 0, 3)[None]
    pp_a, pp_b = SIZES[[0]] / 2, SIZES[[3]] / 2
    assert pair_essential_costs(F, FOCALS[[0]], FOCALS[[3]], pp_a, pp_b)[0] < 1e-9
    assert pair_essential_costs(F, FOCALS[[0]], 1.3 * FOCALS[[3]], pp_a, pp_b)[0] > 0.005
    assert pair_essential_costs(F, 1.3 * FOCALS[[0]], FOCALS[[3]], pp_a, pp_b)[0] > 0.005


def test_exact_fundamentals_give_every_focal():
    _, poses = _cameras(np.random.default_rng(1))
    fs = [_exact_f(poses, a, b) for a, b in ALL_PAIRS]
    est = estimate_camera_focals(fs, ALL_PAIRS, SIZES, UNKNOWN)
    assert est.reasons == ("ok",) * len(SIZES)
    np.testing.assert_allclose(est.focal_px, FOCALS, rtol=2e-3)
    assert est.num_pairs.tolist() == [4] * len(SIZES)


def test_noisy_fundamentals_and_a_wrong_one_give_every_focal_within_2_percent():
    rng = np.random.default_rng(2)
    pts, poses = _cameras(rng)
    found = [_ransac_f(pts, poses, a, b, rng) for a, b in ALL_PAIRS]
    fs = [f for f, _ in found] + [rng.normal(size=(3, 3))]  # a wrong F (a bad pair) with few inliers
    weights = [n for _, n in found] + [40]
    pair_cameras = np.vstack([ALL_PAIRS, [[1, 4]]])
    est = estimate_camera_focals(fs, pair_cameras, SIZES, UNKNOWN, weights)
    assert est.reasons == ("ok",) * len(SIZES), est.reasons
    np.testing.assert_allclose(est.focal_px, FOCALS, rtol=0.02)
    assert (est.flatness < 0.4).all()


def test_known_focals_stay_fixed_and_pairs_between_them_are_ignored():
    rng = np.random.default_rng(3)
    pts, poses = _cameras(rng)
    found = [_ransac_f(pts, poses, a, b, rng) for a, b in ALL_PAIRS]
    known = UNKNOWN.copy()
    known[[0, 3]] = FOCALS[[0, 3]]
    fs = [f for f, _ in found]
    fs[[tuple(p) for p in ALL_PAIRS.tolist()].index((0, 3))] = np.eye(3)  # between two known: never looked at
    est = estimate_camera_focals(fs, ALL_PAIRS, SIZES, known, [n for _, n in found])
    assert est.reasons[0] == est.reasons[3] == "known"
    assert est.focal_px[0] == FOCALS[0] and est.focal_px[3] == FOCALS[3]
    np.testing.assert_allclose(est.focal_px[[1, 2, 4]], FOCALS[[1, 2, 4]], rtol=0.02)
    assert est.num_pairs[0] == 3  # its pair with the other known camera does not count


def test_a_camera_with_too_few_pairs_is_refused_but_the_others_are_found():
    _, poses = _cameras(np.random.default_rng(4))
    pairs = np.array([p for p in ALL_PAIRS if 4 not in p] + [[1, 4]])  # camera 4: one pair
    est = estimate_camera_focals([_exact_f(poses, a, b) for a, b in pairs], pairs, SIZES, UNKNOWN)
    assert np.isnan(est.focal_px[4]) and "1 usable pairs" in est.reasons[4]
    assert np.isfinite(est.best_focal_px[4])
    np.testing.assert_allclose(est.focal_px[:4], FOCALS[:4], rtol=2e-3)


def test_a_camera_with_one_strong_pair_to_an_accepted_camera_is_found():
    """Internet photos (Sacre-Coeur sparse): a photo linked to the others by a single good pair. With the
    other camera's focal accepted, that one F fixes the photo's focal (two equations, one unknown)."""
    rng = np.random.default_rng(4)
    pts, poses = _cameras(rng)
    pairs = np.array([p for p in ALL_PAIRS if 4 not in p] + [[1, 4]])  # camera 4: one pair
    found = [_ransac_f(pts, poses, a, b, rng) for a, b in pairs]
    weights = [n for _, n in found]
    assert weights[-1] >= 100
    est = estimate_camera_focals([f for f, _ in found], pairs, SIZES, UNKNOWN, weights)
    assert est.reasons == ("ok",) * len(SIZES), est.reasons
    np.testing.assert_allclose(est.focal_px, FOCALS, rtol=0.02)
    # a weak single pair (few inliers: unrelated views reach 14-17) is not enough on its own
    est = estimate_camera_focals([f for f, _ in found], pairs, SIZES, UNKNOWN, weights[:-1] + [40])
    assert np.isnan(est.focal_px[4]) and "40 inliers" in est.reasons[4], est.reasons[4]
    np.testing.assert_allclose(est.focal_px[:4], FOCALS[:4], rtol=0.02)


def test_one_strong_pair_needs_the_other_camera_accepted():
    """Cameras 3 and 4 see each other only: one F for two unknown focals is not trusted, however strong."""
    rng = np.random.default_rng(7)
    pts, poses = _cameras(rng)
    pairs = np.array([p for p in ALL_PAIRS if 3 not in p and 4 not in p] + [[3, 4]])
    found = [_ransac_f(pts, poses, a, b, rng) for a, b in pairs]
    est = estimate_camera_focals([f for f, _ in found], pairs, SIZES, UNKNOWN, [1000.0] * len(found))
    assert np.isnan(est.focal_px[[3, 4]]).all(), est.reasons
    assert all("not accepted" in est.reasons[c] for c in (3, 4)), est.reasons
    np.testing.assert_allclose(est.focal_px[:3], FOCALS[:3], rtol=0.02)


def test_a_camera_whose_pairs_disagree_is_refused():
    """One true F and two wrong ones (bad pairs with many inliers): no two pairs agree on camera 4's focal."""
    rng = np.random.default_rng(6)
    _, poses = _cameras(rng)
    pairs = np.array([p for p in ALL_PAIRS if 4 not in p] + [[0, 4], [1, 4], [4, 2]])
    fs = [_exact_f(poses, a, b) for a, b in pairs[:-2]] + [rng.normal(size=(3, 3)), rng.normal(size=(3, 3))]
    est = estimate_camera_focals(fs, pairs, SIZES, UNKNOWN)
    assert np.isnan(est.focal_px[4]), est.reasons[4]
    np.testing.assert_allclose(est.focal_px[:4], FOCALS[:4], rtol=2e-3)


def test_planar_scene_is_refused():
    """A plane's F is a 2-D family (any F = [e']x H): RANSAC picks one arbitrarily, so every focal fits."""
    rng = np.random.default_rng(5)
    pts, poses = _cameras(rng, planar=True)
    found = [_ransac_f(pts, poses, a, b, rng, noise=0.3) for a, b in ALL_PAIRS]
    est = estimate_camera_focals([f for f, _ in found], ALL_PAIRS, SIZES, UNKNOWN, [n for _, n in found])
    assert np.isnan(est.focal_px).all(), (est.best_focal_px, est.reasons)


def test_no_pairs_and_bad_input():
    est = estimate_camera_focals(np.zeros((0, 3, 3)), np.zeros((0, 2), int), SIZES, UNKNOWN)
    assert np.isnan(est.focal_px).all() and all("0 usable pairs" in r for r in est.reasons)
    with pytest.raises(ValueError, match="weights"):
        estimate_camera_focals(np.eye(3)[None], [[0, 1]], SIZES, UNKNOWN, weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="cameras"):
        estimate_camera_focals(np.eye(3)[None], [[0, 7]], SIZES, UNKNOWN)


# Sacre-Coeur's sparse subset (5 internet photos): the F-RANSAC F of its 6 pairs with >= 30 inliers (each
# normalised), their inlier counts, the photos' sizes and pseudo-GT focals (a COLMAP model).
_SC_SIZES = np.array([[780, 1063], [1068, 694], [1067, 694], [761, 1015], [675, 1012]], np.float64)
_SC_GT = np.array([1255.7, 873.3, 858.3, 2721.1, 2833.6])
_SC_CAMS = np.array([(0, 3), (0, 4), (2, 1), (1, 3), (1, 4), (4, 3)])
_SC_WEIGHTS = np.array([117.0, 342.0, 223.0, 40.0, 79.0, 816.0])
_SC_F = np.array([
    [8.5223264529e-07, 3.3119024734e-05, -2.3018166051e-02, -3.3251243141e-05, 1.6933228737e-06, 1.9665708597e-02, 2.2375003995e-02, -1.9159781244e-02, -9.9910744353e-01],
    [4.8403326196e-07, 1.5865663591e-05, -1.0936200068e-02, -1.5799736099e-05, 5.8797290171e-07, 8.0895247153e-03, 1.1948108601e-02, -8.0498613524e-03, -9.9980368125e-01],
    [3.2712563363e-07, 7.5244139701e-06, -8.0386827058e-03, -8.7422213091e-06, -9.2337295106e-07, 2.7172285106e-03, 6.0726689317e-03, -2.0833533787e-03, 9.9994338762e-01],
    [5.9630682286e-07, -4.0168744322e-06, 1.8519099113e-03, 2.9768027967e-06, -7.3601335121e-07, 2.3924590008e-03, -1.9005517036e-03, -1.0170286957e-03, -9.9999310003e-01],
    [-1.0511664613e-06, 9.1612311025e-06, -4.2043572592e-03, -6.2966771035e-06, -2.0760472048e-06, -1.9173215679e-03, 4.7713929343e-03, 2.6817514962e-03, 9.9997434424e-01],
    [8.2311130495e-08, -7.6553485743e-06, 8.2030627341e-03, 7.8552748763e-06, 1.1072234839e-07, 7.0980690609e-03, -7.7055977343e-03, -7.6087795408e-03, 9.9988252175e-01],
]).reshape(-1, 3, 3)  # fmt: skip


def test_a_pair_that_fits_the_focal_without_pinning_it_agrees_and_a_wrong_f_does_not():
    """Sacre-Coeur sparse: photos 3 and 4 are narrow views (~14 deg). Each has one pair that pins its focal,
    one whose own minimum is 10-80 % off but which fits the estimate about as well, and (photo 3) a wrong F
    (40 inliers, cost ~0.2 at every focal). Counted as agreeing, the fitting pairs let both be accepted."""
    est = estimate_camera_focals(_SC_F, _SC_CAMS, _SC_SIZES, np.full(5, np.nan), _SC_WEIGHTS)
    assert [est.reasons[c] for c in (1, 2, 3, 4)] == ["ok"] * 4, est.reasons
    np.testing.assert_allclose(est.focal_px[1:], _SC_GT[1:], rtol=0.03)
    assert np.isnan(est.focal_px[0]) and "every focal fits" in est.reasons[0]  # its aggregate curve is flat
    # Only pins count (the rule before): photos 3 and 4 are refused with 1 agreeing pair of 3.
    pins_only = estimate_camera_focals(_SC_F, _SC_CAMS, _SC_SIZES, np.full(5, np.nan), _SC_WEIGHTS,
                                       SelfCalibConf(max_consistent_cost=0.0))  # fmt: skip
    assert np.isnan(pins_only.focal_px[[3, 4]]).all(), pins_only.reasons
    # A wrong F is never a fitting pair: without photo 3's pinning pair (to photo 4) it is refused.
    keep = [0, 1, 2, 3, 4]
    alone = estimate_camera_focals(_SC_F[keep], _SC_CAMS[keep], _SC_SIZES, np.full(5, np.nan), _SC_WEIGHTS[keep])
    assert np.isnan(alone.focal_px[3]), alone.reasons[3]
