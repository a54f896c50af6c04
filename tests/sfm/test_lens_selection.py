"""The AUTO lens ladder (sfm.align.lens_selection) on small synthetic scenes: keypoints seen through a known
lens (or none), GT poses as the starting point; the held-out tracks must pick the true model."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from alignment_synthetic import make_pair_results, make_scene, neighbour_pairs

from sfm3r.sfm.align.alignment import AlignConf, Lens, _estimate_lens
from sfm3r.sfm.align.lens_selection import distortion_difference, split_tracks
from sfm3r.sfm.align.tracks import build_tracks
from sfm3r.sfm.geometry.distortion import distort_pixels
from sfm3r.types import Camera, Scene

N = 10


@pytest.fixture(scope="module")
def synthetic():
    gt = make_scene(N, seed=1)
    pairs = make_pair_results(gt, neighbour_pairs(N, 3), pixel_noise=0.3, outlier_ratio=0.1, seed=2)
    return gt, pairs


def _scene(gt, cameras: tuple[Camera, ...], camera_of_image: np.ndarray) -> Scene:
    """The GT poses and `cameras` (pinhole) as the alignment's scene, before its track points."""
    return Scene(
        image_names=gt.image_names, cameras=cameras, camera_of_image=camera_of_image.astype(np.int64),
        rotations=gt.rotations, translations=gt.translations, points_xyz=np.zeros((0, 3)),
        points_rgb=np.zeros((0, 3), np.uint8), points_error=np.zeros(0), obs_point=np.zeros(0, np.int64),
        obs_image=np.zeros(0, np.int64), obs_xy=np.zeros((0, 2)), unregistered=(), info={},
    )  # fmt: skip


def _conf(lens_realign: bool) -> AlignConf:
    conf = AlignConf(lens=Lens.AUTO, lens_realign=lens_realign)
    return replace(conf, lens_ba=replace(conf.lens_ba, num_threads=1))  # small problems: threads only contend


def _choose(synthetic, model: str | None, distortion: tuple[float, ...] = ()) -> dict:
    gt, pairs = synthetic
    camera = gt.cameras[0]  # all images share it (same size, focal, principal point)
    if model:
        lens = replace(camera, model=model, distortion=distortion)
        pairs = [replace(p, xy_i=distort_pixels(p.xy_i, lens).astype(np.float32),
                         xy_j=distort_pixels(p.xy_j, lens).astype(np.float32)) for p in pairs]  # fmt: skip
    scene = _scene(gt, (camera,), np.zeros(N, np.int64))
    out = _estimate_lens(scene, pairs, _conf(lens_realign=False))
    report = out.info["lens"]
    assert set(report["candidates"]) == {"SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV"}, report
    assert all("heldout_error_px" in c for c in report["candidates"].values()), report
    if report["chosen"] == "none":
        assert out is not None and all(not c.has_distortion for c in out.cameras)
    else:
        assert {c.model for c in out.cameras} == {report["chosen"].upper()}
    return report | {"cameras": out.cameras}


def test_pinhole_data_keeps_pinhole(synthetic):
    report = _choose(synthetic, None)
    assert report["chosen"] == "none", report


def test_strong_simple_radial_lens_is_simple_radial(synthetic):
    report = _choose(synthetic, "SIMPLE_RADIAL", (-0.1,))
    assert report["chosen"] == "simple_radial", report
    np.testing.assert_allclose(report["cameras"][0].distortion, [-0.1], rtol=0.05)
    assert report["candidates"]["SIMPLE_RADIAL"]["z"] > 5


def test_k2_term_is_radial(synthetic):
    report = _choose(synthetic, "RADIAL", (-0.1, 0.08))
    assert report["chosen"] == "radial", report
    np.testing.assert_allclose(report["cameras"][0].distortion, [-0.1, 0.08], rtol=0.15)


def test_tangential_terms_are_opencv(synthetic):
    report = _choose(synthetic, "OPENCV", (-0.1, 0.05, 0.002, -0.0015))
    assert report["chosen"] == "opencv", report
    k1, _, p1, _ = report["cameras"][0].distortion
    assert k1 == pytest.approx(-0.1, rel=0.1) and p1 == pytest.approx(0.002, rel=0.3), report["cameras"][0]


def test_split_tracks_is_deterministic_and_complete(synthetic):
    gt, pairs = synthetic
    tracks = build_tracks(pairs, list(gt.image_names), min_length=2)
    fit, held = split_tracks(tracks)
    assert fit.num_tracks + held.num_tracks == tracks.num_tracks
    assert fit.num_observations + held.num_observations == tracks.num_observations
    assert 0.15 < held.num_tracks / tracks.num_tracks < 0.25
    again, _ = split_tracks(tracks)
    np.testing.assert_array_equal(fit.obs_xy, again.obs_xy)


def test_distortion_difference_is_the_corner_shift_against_pinhole():
    pinhole = Camera(640, 480, 600.0, 600.0, 320.0, 240.0)
    lens = replace(pinhole, model="SIMPLE_RADIAL", distortion=(-0.1,))
    # the largest shift is at a corner: 0.1·r² of its radius (r = 400 px / 600 px, to first order)
    assert distortion_difference(lens, pinhole) == pytest.approx(400 * 0.1 * (400 / 600) ** 2, rel=0.1)
    assert distortion_difference(lens, lens) == 0.0 and distortion_difference(pinhole, pinhole) == 0.0


@pytest.mark.parametrize("realign", [True, pytest.param(False, marks=pytest.mark.slow)],
                         ids=["fit-on-80%", "refit-on-all"])  # fmt: skip
def test_two_cameras_get_their_own_lens(synthetic, realign):
    """Every other image through a SIMPLE_RADIAL lens (its own camera), the others pinhole: the first
    camera gets SIMPLE_RADIAL with its k, the second stays pinhole, and the report says why per camera."""
    gt, pairs = synthetic
    camera = gt.cameras[0]
    lens = replace(camera, model="SIMPLE_RADIAL", distortion=(-0.1,))
    camera_of_image = np.arange(N) % 2  # 0: distorted, 1: pinhole
    group = dict(zip(gt.image_names, camera_of_image.tolist()))

    def seen(xy, name):
        return distort_pixels(xy, lens).astype(np.float32) if group[name] == 0 else xy

    pairs = [replace(p, xy_i=seen(p.xy_i, p.name_i), xy_j=seen(p.xy_j, p.name_j)) for p in pairs]
    scene = _scene(gt, (camera, camera), camera_of_image)
    out = _estimate_lens(scene, pairs, _conf(lens_realign=realign))
    report = out.info["lens"]
    assert report["chosen"] == "mixed" and report["chosen_per_camera"] == ["simple_radial", "none"], report
    assert [c["chosen"] for c in report["cameras"]] == ["simple_radial", "none"], report
    assert [c["images"] for c in report["cameras"]] == [N // 2, N // 2]
    radial = report["cameras"][0]["candidates"]["SIMPLE_RADIAL"]
    assert radial["z"] > 5 and radial["gain"] > 0.1, radial
    assert report["cameras"][1]["candidates"]["SIMPLE_RADIAL"]["effect_px"] < 0.5, report["cameras"][1]
    assert report["others_at"] == "OPENCV" and report["mixed"]["heldout_error_px"] < 0.35, report["mixed"]
    cams = [out.cameras[int(out.camera_of_image[out.image_names.index(gt.image_names[k])])] for k in (0, 1)]
    assert cams[0].model == "SIMPLE_RADIAL" and not cams[1].has_distortion, cams
    np.testing.assert_allclose(cams[0].distortion, [-0.1], rtol=0.05)
    np.testing.assert_allclose([cams[0].fx, cams[1].fx], camera.fx, rtol=0.02)
