"""Classic two-view stage: matching, verification against ground truth, pairwise 3D, failure reporting."""

from __future__ import annotations

import itertools

import numpy as np
import pycolmap
import pytest
import torch
from conftest import DATA

from sfm3r.sfm.classic.sift import SiftConf, SiftFeatures, extract_sift
from sfm3r.sfm.classic.two_view import (
    BACKEND,
    DEFAULT_FOCAL_FACTOR,
    MatcherType,
    TwoViewConf,
    camera_prior,
    match_descriptors,
    match_pair,
    triangulate_pair,
)
from sfm3r.types import Camera, PairResult
from two_view_helpers import match_pairs

FOUNTAIN = DATA / "strecha_fountain_P11"
TEMPLE = DATA / "middlebury_templeRing"
SIFT = SiftConf(max_num_features=4096)  # a little faster than the default, same accuracy on these sets


class Scene:
    """A few images of one shared data set: features, GT poses and GT intrinsics as the camera prior."""

    def __init__(self, image_dir, gt_dir, names):
        Image = pytest.importorskip("PIL.Image")
        if not gt_dir.is_dir():
            pytest.skip(f"shared data not found: {gt_dir}")
        rec = pycolmap.Reconstruction(str(gt_dir))
        self.poses, self.cameras, self.features = {}, {}, {}
        for image in rec.images.values():
            if image.name not in names:
                continue
            pose = image.cam_from_world()
            self.poses[image.name] = (pose.rotation.matrix(), np.asarray(pose.translation))
            fx, fy, cx, cy = rec.cameras[image.camera_id].params
            self.cameras[image.name] = Camera(image.camera.width, image.camera.height, fx, fy, cx, cy)
            rgb = np.asarray(Image.open(image_dir / image.name).convert("RGB"))
            self.features[image.name] = extract_sift(rgb, SIFT)

    def match(self, a: str, b: str, conf: TwoViewConf = TwoViewConf()) -> PairResult:
        return match_pair(a, b, self.features[a], self.features[b], self.cameras[a], self.cameras[b], conf)

    def errors(self, res: PairResult) -> tuple[float, float]:
        """(rotation error, translation direction error) in degrees against the GT relative pose."""
        (ri, ti), (rj, tj) = self.poses[res.name_i], self.poses[res.name_j]
        rot = rj @ ri.T
        trans = tj - rot @ ti
        cos_r = (np.trace(res.rel_rotation @ rot.T) - 1) / 2
        cos_t = res.rel_translation @ trans / np.linalg.norm(trans)
        return float(np.degrees(np.arccos(np.clip(cos_r, -1, 1)))), float(np.degrees(np.arccos(np.clip(cos_t, -1, 1))))


@pytest.fixture(scope="module")
def fountain() -> Scene:
    return Scene(FOUNTAIN / "images_1024", FOUNTAIN / "gt_1024", {"0000.jpg", "0001.jpg", "0003.jpg"})


@pytest.fixture(scope="module")
def temple() -> Scene:
    return Scene(TEMPLE / "images", TEMPLE / "gt", {"templeR0020.png", "templeR0021.png", "templeR0023.png"})


@pytest.fixture(scope="module")
def fountain_results(fountain) -> list[PairResult]:
    return [fountain.match(a, b) for a, b in itertools.combinations(sorted(fountain.features), 2)]


def check_invariants(res: PairResult, fi: SiftFeatures, fj: SiftFeatures, ci: Camera, cj: Camera, conf: TwoViewConf):
    m = res.num_matches
    assert res.backend == BACKEND and res.verified and res.num_inliers == m >= conf.min_num_inliers
    for arr, shape, dtype in [
        (res.xy_i, (m, 2), np.float32),
        (res.xy_j, (m, 2), np.float32),
        (res.idx_i, (m,), np.int64),
        (res.idx_j, (m,), np.int64),
        (res.conf, (m,), np.float32),
        (res.pts_i, (m, 3), np.float32),
        (res.pts_j, (m, 3), np.float32),
        (res.rel_rotation, (3, 3), np.float64),
        (res.rel_translation, (3,), np.float64),
    ]:
        assert arr.shape == shape and arr.dtype == dtype
    # Matches are SIFT keypoints, referred to by their stable index.
    np.testing.assert_array_equal(res.xy_i, fi.keypoints[res.idx_i])
    np.testing.assert_array_equal(res.xy_j, fj.keypoints[res.idx_j])
    assert len(np.unique(res.idx_i)) == m and len(np.unique(res.idx_j)) == m  # one-to-one
    # A proper rotation and a unit translation; pts_j is pts_i moved by (R, t).
    rot, t = res.rel_rotation, res.rel_translation
    np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-9)
    assert np.linalg.det(rot) == pytest.approx(1.0)
    assert np.linalg.norm(t) == pytest.approx(1.0)
    np.testing.assert_allclose(res.pts_j, res.pts_i @ rot.T + t, atol=1e-3 * np.abs(res.pts_j).max())
    # In front of both cameras, and reprojecting onto the matched pixels.
    assert (res.pts_i[:, 2] > 0).all() and (res.pts_j[:, 2] > 0).all()
    for pts, xy, cam in [(res.pts_i, res.xy_i, ci), (res.pts_j, res.xy_j, cj)]:
        proj = pts[:, :2] / pts[:, 2:] * [cam.fx, cam.fy] + [cam.cx, cam.cy]
        assert np.linalg.norm(proj - xy, axis=1).max() <= conf.max_reproj_error + 1e-3
    assert ((res.conf > 0) & (res.conf <= 1)).all()


def test_verified_fountain_pairs_satisfy_the_pair_result_contract(fountain, fountain_results):
    conf = TwoViewConf()
    for res in fountain_results:
        f = fountain
        check_invariants(res, f.features[res.name_i], f.features[res.name_j], f.cameras[res.name_i],
                         f.cameras[res.name_j], conf)


def test_fountain_relative_poses_agree_with_ground_truth(fountain, fountain_results):
    errors = np.array([fountain.errors(res) for res in fountain_results])
    assert np.median(errors[:, 0]) < 0.5 and errors[:, 0].max() < 1.0  # rotation, degrees
    assert np.median(errors[:, 1]) < 1.0 and errors[:, 1].max() < 3.0  # translation direction, degrees


def test_temple_relative_poses_agree_with_ground_truth(temple):
    results = [temple.match(a, b) for a, b in itertools.combinations(sorted(temple.features), 2)]
    assert all(r.verified and r.num_inliers >= 100 for r in results)
    errors = np.array([temple.errors(res) for res in results])
    assert np.median(errors[:, 0]) < 0.5 and errors[:, 0].max() < 1.0
    assert np.median(errors[:, 1]) < 2.0 and errors[:, 1].max() < 5.0


def test_swapping_the_images_inverts_the_pair(fountain, fountain_results):
    res = fountain_results[0]
    back = fountain.match(res.name_j, res.name_i)
    assert back.verified
    # Same correspondences (matching is symmetric; RANSAC may differ by a few borderline inliers).
    fwd = set(zip(res.idx_i.tolist(), res.idx_j.tolist()))
    bwd = set(zip(back.idx_j.tolist(), back.idx_i.tolist()))
    assert len(fwd & bwd) > 0.95 * min(len(fwd), len(bwd))
    rot_err = np.degrees(np.arccos(np.clip((np.trace(back.rel_rotation @ res.rel_rotation) - 1) / 2, -1, 1)))
    assert rot_err < 0.2
    np.testing.assert_allclose(back.rel_translation, -res.rel_rotation.T @ res.rel_translation, atol=0.01)


def test_pair_from_two_different_scenes_is_reported_failed(fountain, temple):
    a, b = "0000.jpg", "templeR0020.png"
    res = match_pair(a, b, fountain.features[a], temple.features[b], fountain.cameras[a], temple.cameras[b])
    assert not res.verified
    assert (res.name_i, res.name_j) == (a, b) and res.backend == BACKEND
    assert res.num_matches == 0 and res.pts_i.shape == (0, 3) and res.idx_i.dtype == np.int64
    assert res.rel_rotation is None and res.rel_translation is None


def test_image_without_features_gives_a_well_formed_failed_result(fountain):
    a = "0000.jpg"
    empty = SiftFeatures.empty(640, 480)
    res = match_pair(a, "blank.png", fountain.features[a], empty, fountain.cameras[a], camera_prior(640, 480))
    assert not res.verified and res.num_matches == 0 and res.num_inliers == 0
    assert res.xy_i.shape == (0, 2) and res.xy_j.dtype == np.float32 and res.conf.shape == (0,)


def test_camera_prior_of_another_image_size_is_rejected(fountain):
    a, b = "0000.jpg", "0001.jpg"
    with pytest.raises(ValueError, match="camera prior of '0001.jpg'"):
        match_pair(a, b, fountain.features[a], fountain.features[b], fountain.cameras[a], camera_prior(640, 480))


def test_camera_prior_uses_exif_focal_or_the_default_factor():
    assert camera_prior(1024, 683, 900.0) == Camera(1024, 683, 900.0, 900.0, 512.0, 341.5)
    default = camera_prior(640, 480)
    assert default.fx == default.fy == DEFAULT_FOCAL_FACTOR * 640 and (default.cx, default.cy) == (320, 240)


def test_torch_matcher_agrees_with_colmap_matcher(fountain):
    """The fast torch matcher implements COLMAP's rule (mutual NN, ratio test, max angle) on the same data."""
    da = fountain.features["0000.jpg"].descriptors[:700]
    db = fountain.features["0001.jpg"].descriptors[:700]
    ours = match_descriptors(da, db, TwoViewConf(matcher=MatcherType.TORCH))
    ref = match_descriptors(da, db, TwoViewConf(matcher=MatcherType.PYCOLMAP))
    ours_set, ref_set = set(map(tuple, ours.tolist())), set(map(tuple, ref.tolist()))
    assert len(ours) > 50
    # COLMAP rounds dot products of uint8 descriptors; only borderline ratio-test cases may differ.
    assert len(ours_set & ref_set) >= 0.97 * max(len(ours_set), len(ref_set))


def test_matching_is_mutual_and_symmetric(fountain):
    da, db = fountain.features["0000.jpg"].descriptors[:1500], fountain.features["0001.jpg"].descriptors[:1500]
    ab = match_descriptors(da, db)
    ba = match_descriptors(db, da)
    assert set(map(tuple, ab.tolist())) == set(map(tuple, ba[:, ::-1].tolist()))
    assert len(np.unique(ab[:, 0])) == len(ab) == len(np.unique(ab[:, 1]))
    # Without cross-check there are more (one-directional) matches.
    assert len(match_descriptors(da, db, TwoViewConf(cross_check=False))) > len(ab)


def test_matching_handles_empty_and_single_descriptor_sets():
    d = np.random.default_rng(0).integers(0, 255, (10, 128)).astype(np.uint8)
    for matcher in MatcherType:
        assert match_descriptors(d, d[:0], TwoViewConf(matcher=matcher)).shape == (0, 2)
        assert match_descriptors(d[:0], d, TwoViewConf(matcher=matcher)).shape == (0, 2)
    # no second neighbour: the exact matcher skips the ratio test (COLMAP's index matcher needs two neighbours)
    assert match_descriptors(d[:1], d[:1], TwoViewConf(matcher=MatcherType.TORCH)).tolist() == [[0, 0]]
    with pytest.raises(ValueError, match="descriptors"):
        match_descriptors(d, d[:, :64])


def test_triangulate_pair_recovers_synthetic_points_exactly():
    rng = np.random.default_rng(1)
    cam = Camera(640, 480, 500.0, 510.0, 320.0, 240.0)
    pts = rng.uniform([-1, -1, 4], [1, 1, 8], (50, 3))
    angle = np.radians(10)
    rot = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    t = np.array([-1.0, 0.1, 0.2])
    t /= np.linalg.norm(t)
    pts_j = pts @ rot.T + t
    project = lambda p: p[:, :2] / p[:, 2:] * [cam.fx, cam.fy] + [cam.cx, cam.cy]  # noqa: E731
    tri = triangulate_pair(project(pts), project(pts_j), cam, cam, rot, t)
    np.testing.assert_allclose(tri["pts_i"], pts, rtol=1e-8)
    np.testing.assert_allclose(tri["pts_j"], pts_j, rtol=1e-8)
    assert tri["reproj"].max() < 1e-6
    centre_j = -rot.T @ t
    cos = [p @ (p - centre_j) / np.linalg.norm(p) / np.linalg.norm(p - centre_j) for p in pts]
    expected = np.degrees(np.arccos(cos))
    np.testing.assert_allclose(tri["angle_deg"], expected, rtol=1e-9)


def test_match_pairs_yields_every_pair_in_order_and_reports_progress(temple):
    names = sorted(temple.features)
    pairs = [(names[0], names[1]), (names[2], names[1])]
    calls = []
    results = list(match_pairs(pairs, temple.features, temple.cameras, progress=lambda d, n: calls.append((d, n))))
    assert [(r.name_i, r.name_j) for r in results] == pairs
    assert all(r.verified for r in results)
    assert calls == [(1, 2), (2, 2)]
    with pytest.raises(KeyError, match="missing.png"):
        match_pairs([(names[0], "missing.png")], temple.features, temple.cameras)


def test_conf_validation():
    with pytest.raises(ValueError):
        TwoViewConf(max_ratio=1.5)
    with pytest.raises(ValueError):
        TwoViewConf(min_num_inliers=2)
    assert TwoViewConf(matcher="pycolmap").matcher is MatcherType.PYCOLMAP


@pytest.mark.slow
def test_all_fountain_pairs_at_default_settings():
    """All 55 pairs of the 11 fountain images (minutes): nearly all verified (the widest baselines such as
    0000-0010 may fail), accurate rotations."""
    names = {f"{k:04d}.jpg" for k in range(11)}
    scene = Scene(FOUNTAIN / "images_1024", FOUNTAIN / "gt_1024", names)
    errors = []
    for a, b in itertools.combinations(sorted(names), 2):
        res = scene.match(a, b)
        if res.verified:
            errors.append(scene.errors(res)[0])
    assert len(errors) >= 45
    assert np.median(errors) < 0.2 and np.mean(np.array(errors) < 1.0) > 0.9


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matching_equals_cpu_matching(temple):
    da, db = (temple.features[n].descriptors for n in sorted(temple.features)[:2])
    np.testing.assert_array_equal(match_descriptors(da, db, device="cuda"), match_descriptors(da, db, device="cpu"))


def _reference_matches(desc_i: np.ndarray, desc_j: np.ndarray, conf: TwoViewConf) -> np.ndarray:
    """COLMAP's rule on the full similarity matrix in numpy (best two per row and per column)."""
    a = desc_i / np.linalg.norm(desc_i, axis=1, keepdims=True)
    b = desc_j / np.linalg.norm(desc_j, axis=1, keepdims=True)
    dist = np.arccos(np.clip(a @ b.T, -1, 1))  # (N_i, N_j)
    rows, cols = np.sort(dist, axis=1), np.sort(dist, axis=0)
    best_j, best_i = dist.argmin(1), dist.argmin(0)
    out = []
    for i, j in enumerate(best_j):
        ok_row = rows[i, 0] <= conf.max_distance and rows[i, 0] < conf.max_ratio * rows[i, 1]
        ok_col = cols[0, j] <= conf.max_distance and cols[0, j] < conf.max_ratio * cols[1, j]
        if ok_row and (not conf.cross_check or (best_i[j] == i and ok_col)):
            out.append((i, j))
    return np.array(out, np.int64).reshape(-1, 2)


@pytest.mark.parametrize("cross_check", [True, False])
def test_two_product_matcher_equals_the_full_matrix_rule(cross_check):
    rng = np.random.default_rng(5)
    desc_j = rng.random((700, 128)).astype(np.float32)
    desc_i = np.concatenate([desc_j[:300] + 0.05 * rng.random((300, 128)), rng.random((500, 128))]).astype(np.float32)
    desc_i[:20] = desc_j[40:60] + 0.02  # some rows close to two columns: ratio tests fail or pass by margin
    desc_i[20:40] = desc_j[40:60] - 0.02
    conf = TwoViewConf(cross_check=cross_check, max_distance=0.5)
    got = match_descriptors(desc_i, desc_j, conf)
    expected = _reference_matches(desc_i.astype(np.float64), desc_j.astype(np.float64), conf)
    assert len(expected) > 200
    np.testing.assert_array_equal(got, expected)
