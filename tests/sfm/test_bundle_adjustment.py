"""refine_scene: triangulation + robust bundle adjustment on synthetic ground truth."""

from __future__ import annotations

import numpy as np
import pytest
from ba_synthetic import make_scene, perturb, rotation_angle_deg

from sfm3r.errors import InputError, ReconstructionError
from sfm3r.sfm.align.bundle_adjustment import BundleAdjustmentConf, refine_scene
from sfm3r.sfm.geometry.similarity import apply_similarity as apply_sim3, fit_similarity as umeyama_sim3
from sfm3r.sfm.align.tracks import build_tracks
from sfm3r.types import Camera


@pytest.fixture(scope="module")
def noisy_scene():
    """12 cameras around 400 points, 0.5 px noise, 20 % outlier matches; poses perturbed by 2°, 5 % of the
    extent, focal by 5 %."""
    sc = make_scene(12, num_points=400, outlier_frac=0.2, seed=0)
    tracks = build_tracks(sc.pairs, sc.names)
    cams, rots, trans = perturb(sc, rot_deg=2.0, trans_frac=0.05, focal_frac=0.05, seed=1)
    return sc, tracks, cams, rots, trans


def _errors_to_gt(scene, sc):
    """Max rotation error (deg), max centre error (fraction of the extent) after a Sim(3) fit."""
    centers_gt = -np.einsum("nji,nj->ni", sc.rotations, sc.translations)
    s, R, t = umeyama_sim3(scene.camera_centers(), centers_gt)
    rot_err = rotation_angle_deg(np.einsum("nij,kj->nik", scene.rotations, R), sc.rotations).max()
    extent = np.linalg.norm(centers_gt.max(0) - centers_gt.min(0))
    ctr_err = np.linalg.norm(apply_sim3(s, R, t, scene.camera_centers()) - centers_gt, axis=1).max() / extent
    return rot_err, ctr_err


def _reproject(scene):
    cam = [scene.cameras[c] for c in scene.camera_of_image[scene.obs_image]]
    K = np.array([[c.fx, c.fy, c.cx, c.cy] for c in cam])
    pc = np.einsum("kij,kj->ki", scene.rotations[scene.obs_image], scene.points_xyz[scene.obs_point])
    pc += scene.translations[scene.obs_image]
    uv = pc[:, :2] / pc[:, 2:] * K[:, :2] + K[:, 2:]
    return np.linalg.norm(uv - scene.obs_xy, axis=1), pc[:, 2]


def test_recovers_ground_truth_from_perturbed_poses_and_focal(noisy_scene):
    sc, tracks, cams, rots, trans = noisy_scene
    scene = refine_scene(tracks, sc.names, cams, np.arange(12), rots, trans)
    rot_err, ctr_err = _errors_to_gt(scene, sc)
    assert rot_err < 0.2
    assert ctr_err < 0.01
    focal = np.array([scene.cameras[c].fx for c in scene.camera_of_image])
    np.testing.assert_allclose(focal, [c.fx for c in sc.cameras], rtol=0.01)
    assert scene.info["mean_reproj_error_after"] < 1.0 < scene.info["mean_reproj_error_before"]
    assert scene.num_points > 0.9 * len(sc.points)


def test_scene_tables_are_consistent(noisy_scene):
    sc, tracks, cams, rots, trans = noisy_scene
    conf = BundleAdjustmentConf(max_reproj_error=2.0)
    scene = refine_scene(tracks, sc.names, cams, np.arange(12), rots, trans, conf)
    err, depth = _reproject(scene)
    assert np.all(depth > 0) and np.all(err <= 2.0 + 1e-6)
    per_point = np.bincount(scene.obs_point, err) / np.bincount(scene.obs_point)
    np.testing.assert_allclose(scene.points_error, per_point, atol=1e-6)
    assert np.all(np.bincount(scene.obs_point, minlength=scene.num_points) >= 2)
    key = scene.obs_point * 100 + scene.obs_image
    assert np.unique(key).size == key.size  # one observation per image and point
    assert np.all(scene.points_rgb == 128) and scene.points_rgb.dtype == np.uint8
    for arr in (scene.points_xyz, scene.rotations, scene.translations):
        assert np.all(np.isfinite(arr))
    np.testing.assert_allclose(np.einsum("nij,nkj->nik", scene.rotations, scene.rotations),
                               np.broadcast_to(np.eye(3), (12, 3, 3)), atol=1e-9)
    for key in ("tracks_in", "points_out", "observations_out", "mean_reproj_error_before",
                "mean_reproj_error_after", "ba_iterations", "time_s"):
        assert key in scene.info
    assert scene.info["observations_out"] == scene.obs_point.size


def test_intrinsics_options(noisy_scene):
    sc, tracks, cams, rots, trans = noisy_scene
    fixed = refine_scene(tracks, sc.names, cams, np.arange(12), rots, trans, BundleAdjustmentConf(refine_focal=False))
    assert [c.fx for c in fixed.cameras] == [c.fx for c in cams]
    # principal point stays fixed by default
    default = refine_scene(tracks, sc.names, cams, np.arange(12), rots, trans)
    assert [(c.cx, c.cy) for c in default.cameras] == [(c.cx, c.cy) for c in cams]
    # shared intrinsics: one camera for all images of the same size
    shared = refine_scene(tracks, sc.names, cams, np.arange(12), rots, trans, BundleAdjustmentConf(shared_intrinsics=True))
    assert len(shared.cameras) == 1 and np.all(shared.camera_of_image == 0)
    assert shared.cameras[0].fx == shared.cameras[0].fy


def test_camera_models_give_each_camera_its_own_model(noisy_scene):
    """camera_models: images 0-5 SIMPLE_RADIAL (k estimated, ~0 on this pinhole data), the others as the
    conf says (AUTO: SIMPLE_PINHOLE); a list of the wrong length is an InputError."""
    from sfm3r.sfm.align.bundle_adjustment import CameraModel

    sc, tracks, cams, rots, trans = noisy_scene
    models = [CameraModel.SIMPLE_RADIAL] * 6 + [CameraModel.AUTO] * 6
    scene = refine_scene(tracks, sc.names, cams, np.arange(12), rots, trans, camera_models=models)
    assert scene.info["camera_models"] == ["SIMPLE_RADIAL"] * 6 + ["SIMPLE_PINHOLE"] * 6
    assert [c.model for c in scene.cameras[:6]] == ["SIMPLE_RADIAL"] * 6
    assert all(abs(c.distortion[0]) < 0.02 for c in scene.cameras[:6]) and not scene.cameras[6].has_distortion
    with pytest.raises(InputError, match="camera_models"):
        refine_scene(tracks, sc.names, cams, np.arange(12), rots, trans, camera_models=models[:3])


def test_shared_focal_is_recovered():
    sc = make_scene(10, num_points=300, outlier_frac=0.1, focal=520.0, focal_jitter=0.0, seed=5)
    tracks = build_tracks(sc.pairs, sc.names)
    _, rots, trans = perturb(sc, seed=2)
    one = Camera(width=640, height=480, fx=520.0 * 1.05, fy=520.0 * 1.05, cx=320, cy=240)
    scene = refine_scene(tracks, sc.names, [one], np.zeros(10, np.int64), rots, trans)
    assert len(scene.cameras) == 1
    assert abs(scene.cameras[0].fx / 520.0 - 1) < 0.01
    rot_err, ctr_err = _errors_to_gt(scene, sc)
    assert rot_err < 0.2 and ctr_err < 0.01


def test_image_without_observations_stays_registered(noisy_scene):
    sc, tracks, cams, rots, trans = noisy_scene
    names = list(sc.names) + ["lonely.jpg"]
    scene = refine_scene(tracks, names, list(cams) + [cams[0]], np.arange(13), np.concatenate([rots, rots[:1]]),
                         np.concatenate([trans, trans[:1] + 1.0]))
    assert scene.image_names[-1] == "lonely.jpg" and scene.unregistered == ()
    assert scene.info["images_without_observations"] == ["lonely.jpg"]
    np.testing.assert_array_equal(scene.translations[-1], trans[0] + 1.0)


def test_bad_inputs_raise(noisy_scene):
    sc, tracks, cams, rots, trans = noisy_scene
    with pytest.raises(InputError, match="rotations"):
        refine_scene(tracks, sc.names, cams, np.arange(12), rots[:5], trans)
    with pytest.raises(InputError, match="camera_of_image"):
        refine_scene(tracks, sc.names, cams, np.arange(12) + 1, rots, trans)
    with pytest.raises(InputError, match="rounds"):
        refine_scene(tracks, sc.names, cams, np.arange(12), rots, trans, BundleAdjustmentConf(rounds=0))
    bad = rots.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        refine_scene(tracks, sc.names, cams, np.arange(12), bad, trans)


def test_zero_baseline_raises_reconstruction_error(noisy_scene):
    """All cameras at one centre: no track has a triangulation angle, nothing can be reconstructed."""
    sc, tracks, cams, rots, _ = noisy_scene
    with pytest.raises(ReconstructionError, match="no track could be triangulated"):
        refine_scene(tracks, sc.names, cams, np.arange(12), rots, np.zeros((12, 3)))


def test_vectorised_triangulation_matches_pycolmap_reference():
    """The fast path (_triangulate, all tracks at once) against pycolmap's per-track LO-RANSAC."""
    import pycolmap

    from sfm3r.sfm.align.bundle_adjustment import _triangulate

    sc = make_scene(8, num_points=60, outlier_frac=0.2, seed=7)
    tracks = build_tracks(sc.pairs, sc.names)
    K = np.array([[c.fx, c.fy, c.cx, c.cy] for c in sc.cameras])
    thr = np.full(tracks.num_observations, 4.0)
    tri = _triangulate(tracks.obs_track, tracks.obs_image, tracks.obs_xy, tracks.num_tracks, K, sc.rotations,
                       sc.translations, thr, BundleAdjustmentConf(), np.random.default_rng(0))
    opts = pycolmap.EstimateTriangulationOptions()
    opts.residual_type = pycolmap.TriangulationResidualType.REPROJECTION_ERROR
    opts.ransac.max_error = 4.0
    cams = [pycolmap.Camera(model="PINHOLE", width=c.width, height=c.height, params=[c.fx, c.fy, c.cx, c.cy])
            for c in sc.cameras]
    poses = [pycolmap.Rigid3d(pycolmap.Rotation3d(R), t) for R, t in zip(sc.rotations, sc.translations)]
    compared = 0
    for t in range(tracks.num_tracks):
        sel = np.flatnonzero(tracks.obs_track == t)
        if tri.point_of_track[t] < 0 or sel.size < 3:
            continue
        ref = pycolmap.estimate_triangulation(tracks.obs_xy[sel], [poses[i] for i in tracks.obs_image[sel]],
                                              [cams[i] for i in tracks.obs_image[sel]], opts)
        assert ref is not None
        np.testing.assert_array_equal(tri.obs_keep[sel], np.asarray(ref["inliers"], bool))
        ours = tri.xyz[tri.point_of_track[t]]
        assert np.linalg.norm(ours - np.ravel(ref["xyz"])) < 1e-2 * np.linalg.norm(ours - sc.points.mean(0)) + 1e-3
        compared += 1
    assert compared > 40


def _points_only_problem(loss):
    """The inputs of one points-only BA round on a synthetic scene, its points moved off their optimum."""
    import dataclasses

    from sfm3r.sfm.align import bundle_adjustment as ba

    sc = make_scene(12, num_points=400, outlier_frac=0.2, seed=0)
    tracks = build_tracks(sc.pairs, sc.names)
    conf = BundleAdjustmentConf(refine_focal=False, refine_poses=False, camera_model="pinhole", loss=loss)
    order = np.lexsort((tracks.obs_image, tracks.obs_track))
    obs = tracks.obs_track[order], tracks.obs_image[order], np.asarray(tracks.obs_xy, np.float64)[order]
    group_of_img, params = ba._initial_intrinsics(list(sc.cameras), np.arange(12), conf)
    K = ba._intrinsics_per_image(params, group_of_img)
    tri = ba._triangulate(*obs, tracks.num_tracks, K, sc.rotations, sc.translations, np.full(obs[0].size, 20.0),
                          conf, np.random.default_rng(0))
    noise = np.random.default_rng(1).normal(scale=0.01 * np.ptp(sc.points, axis=0).max(), size=tri.xyz.shape)
    tri = dataclasses.replace(tri, xyz=tri.xyz + noise)
    return sc, tri, obs, group_of_img, params, K, conf


@pytest.mark.parametrize("loss", ["trivial", "huber", "soft_l1", "cauchy"])
def test_points_only_solver_reaches_pycolmaps_optimum(loss):
    """Poses and pinhole cameras fixed: the per-point solver ends where pycolmap's BA does, at no higher cost."""
    from sfm3r.sfm.align import bundle_adjustment as ba

    sc, tri, (ot, oi, ox), group_of_img, params, K, conf = _points_only_problem(loss)
    assert ba._points_only(conf, params)
    ours = ba._refine_points(tri, ot, oi, ox, group_of_img, params, sc.rotations, sc.translations, conf, 2.0)
    ref = ba._bundle_adjust_colmap(tri, ot, oi, ox, sc.names, group_of_img, params, sc.rotations, sc.translations,
                                   conf, 2.0)
    kept = np.flatnonzero(tri.obs_keep)
    pt = tri.point_of_track[ot[kept]]

    def cost(xyz):
        err = ba._reproj_errors(xyz[pt], ox[kept], K, sc.rotations, sc.translations, oi[kept])
        return ba._robust_loss(err * err, ba.LossType(loss), 2.0)[0].sum()

    assert cost(ours.xyz) <= cost(ref.xyz) * (1 + 1e-6) < cost(tri.xyz)
    extent = np.ptp(sc.points, axis=0).max()
    np.testing.assert_allclose(ours.xyz, ref.xyz, atol=1e-4 * extent)
    assert abs(ours.errors.mean() - ref.errors.mean()) < 1e-3
    np.testing.assert_array_equal(ours.rot, sc.rotations)  # nothing but the points moved


def test_points_only_bundle_adjustment_takes_the_per_point_solver_only_when_cameras_are_fixed(noisy_scene,
                                                                                                monkeypatch):
    """refine_scene with poses and focals fixed gives the same scene through the per-point solver as through
    pycolmap; anything that moves a camera goes to pycolmap."""
    from sfm3r.sfm.align import bundle_adjustment as ba

    sc, tracks, cams, _, _ = noisy_scene
    conf = BundleAdjustmentConf(refine_focal=False, refine_poses=False, camera_model="pinhole")
    fast = refine_scene(tracks, sc.names, list(sc.cameras), np.arange(12), sc.rotations, sc.translations, conf)
    points_only = ba._points_only
    monkeypatch.setattr(ba, "_points_only", lambda conf, params: False)
    slow = refine_scene(tracks, sc.names, list(sc.cameras), np.arange(12), sc.rotations, sc.translations, conf)
    np.testing.assert_array_equal(fast.obs_image, slow.obs_image)
    np.testing.assert_allclose(fast.points_xyz, slow.points_xyz, atol=1e-4 * np.ptp(sc.points, axis=0).max())
    assert abs(fast.info["mean_reproj_error_after"] - slow.info["mean_reproj_error_after"]) < 1e-3
    _, params = ba._initial_intrinsics(cams, np.arange(12), conf)
    assert points_only(conf, params)
    for moved in ({"refine_poses": True}, {"refine_focal": True}, {"refine_principal_point": True}):
        assert not points_only(BundleAdjustmentConf(**{**dict(refine_focal=False, refine_poses=False), **moved}),
                               params)
    _, radial = ba._initial_intrinsics(cams, np.arange(12), BundleAdjustmentConf(camera_model="simple_radial"))
    assert not points_only(conf, radial)
