"""Degenerate geometry: the scene is real but Structure-from-Motion is ill-posed or partly impossible.

Whatever happens, the run ends in one of two ways: a model whose every value is finite (images that
cannot be placed are listed as not registered), or exit code 2 with one "Error:" line. Never a NaN pose
in the output, never a traceback. Non-finite values produced anywhere are caught before writing.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from reliability_helpers import (
    FAST,
    SAMPLE,
    assert_success,
    assert_user_error,
    invoke,
    photo_folder,
    run_json,
)

from sfm3r.io.colmap import read_colmap_model


def _assert_finite_model_or_clear_error(result, out: Path) -> str:
    """Either a finite model (returns "model") or a one-line user error (returns "error")."""
    if result.exit_code == 2:
        assert_user_error(result)
        assert not (out / "sparse" / "0" / "images.bin").exists()
        return "error"
    assert_success(result)
    scene = read_colmap_model(out / "sparse" / "0")
    for name in ("rotations", "translations", "points_xyz", "obs_xy"):
        assert np.isfinite(getattr(scene, name)).all(), name
    for camera in scene.cameras:
        assert np.isfinite([camera.fx, camera.fy, camera.cx, camera.cy]).all() and camera.fx > 0
    return "model"


def _rotated_views(photo: Image.Image, angles_deg, size=(384, 256), focal=420.0) -> list[Image.Image]:
    """Views of `photo` from its own centre, turned by (yaw, pitch): the homography K_out R^T K_src^-1."""
    from scipy.spatial.transform import Rotation

    w, h = photo.size
    k_src = np.array([[700.0, 0, w / 2], [0, 700.0, h / 2], [0, 0, 1]])
    k_out = np.array([[focal, 0, size[0] / 2], [0, focal, size[1] / 2], [0, 0, 1]])
    views = []
    for yaw, pitch in angles_deg:
        rotation = Rotation.from_euler("yx", [yaw, pitch], degrees=True).as_matrix()
        out_to_src = k_src @ rotation.T @ np.linalg.inv(k_out)
        coeffs = tuple((out_to_src / out_to_src[2, 2]).ravel()[:8])
        views.append(photo.transform(size, Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BICUBIC))
    return views


def test_pure_rotation(tmp_path):
    """A panorama: four views turned about one centre. No baseline, so no depth: the cameras must share
    their centre (within noise) and every value must be finite; a clear error would also do."""
    photos = tmp_path / "photos"
    photos.mkdir()
    with Image.open(SAMPLE / "images" / "0004.jpg") as photo:
        for k, view in enumerate(_rotated_views(photo.convert("RGB"), [(-8, 0), (-3, 2), (3, -2), (8, 1)])):
            view.save(photos / f"pano_{k}.jpg", quality=95)
    out = tmp_path / "out"
    outcome = _assert_finite_model_or_clear_error(invoke("reconstruct", photos, out, *FAST), out)
    if outcome == "model":
        scene = read_colmap_model(out / "sparse" / "0")
        centres = -np.einsum("nji,nj->ni", scene.rotations, scene.translations)
        depth = np.median(np.linalg.norm(scene.points_xyz - centres.mean(0), axis=1))
        assert np.linalg.norm(centres - centres.mean(0), axis=1).max() < 0.1 * depth
        assert "the cameras barely move" in (out / "log.txt").read_text()  # reported


def _look_at(centre: np.ndarray, target: np.ndarray) -> np.ndarray:
    """cam_from_world rotation of a camera at `centre` looking at `target` (OpenCV axes, y down)."""
    z = (target - centre) / np.linalg.norm(target - centre)
    x = np.cross([0.0, 1.0, 0.0], z)
    x /= np.linalg.norm(x)
    return np.stack([x, np.cross(z, x), z])


def _planar_views(photo: Image.Image, centres, size=(384, 256), focal=420.0, f_src=700.0) -> list[Image.Image]:
    """A poster on the plane z = 1 (the photo, as its camera at the origin saw it) viewed from `centres`,
    each camera looking at the poster's centre: every output corner's ray is intersected with the plane."""
    w, h = photo.size
    k_src = np.array([[f_src, 0, w / 2], [0, f_src, h / 2], [0, 0, 1]])
    k_out_inv = np.linalg.inv(np.array([[focal, 0, size[0] / 2], [0, focal, size[1] / 2], [0, 0, 1]]))
    views = []
    for centre in np.asarray(centres, np.float64):
        rotation = _look_at(centre, np.array([0.0, 0.0, 1.0]))
        quad = []
        for x, y in [(0, 0), (0, size[1]), (size[0], size[1]), (size[0], 0)]:  # PIL's QUAD corner order
            ray = rotation.T @ k_out_inv @ np.array([x, y, 1.0])
            on_plane = centre + (1.0 - centre[2]) / ray[2] * ray
            pixel = k_src @ on_plane
            quad += [pixel[0] / pixel[2], pixel[1] / pixel[2]]
        views.append(photo.transform(size, Image.Transform.QUAD, tuple(quad), Image.Resampling.BICUBIC))
    return views


def test_planar_scene(tmp_path):
    """A flat poster from four positions 0.3 plane-distances apart: all placed, every value finite. (The
    focal length cannot be calibrated from one plane, so the geometry is only as good as the focal prior.)"""
    photos = tmp_path / "photos"
    photos.mkdir()
    with Image.open(SAMPLE / "images" / "0005.jpg") as photo:
        centres = [(-0.3, 0, 0), (0.3, 0, 0), (0, 0.25, 0), (0.1, -0.25, 0.1)]
        for k, view in enumerate(_planar_views(photo.convert("RGB"), centres)):
            view.save(photos / f"poster_{k}.jpg", quality=95)
    out = tmp_path / "out"
    assert _assert_finite_model_or_clear_error(invoke("reconstruct", photos, out, *FAST), out) == "model"
    assert run_json(out)["counts"]["scene"]["registered"] == 4


def test_images_that_match_nothing_are_reported(tmp_path):
    """A blank frame (no features at all) and a noise frame (features, no matches) are left out and listed."""
    photos = photo_folder(tmp_path / "photos", ["0003.jpg", "0004.jpg", "0005.jpg"])
    Image.new("RGB", (384, 256), (128, 128, 128)).save(photos / "blank.png")
    noise = np.random.default_rng(0).integers(0, 256, (256, 384, 3), dtype=np.uint8)
    Image.fromarray(noise).save(photos / "noise.png")
    out = tmp_path / "out"
    result = invoke("reconstruct", photos, out, *FAST)
    assert _assert_finite_model_or_clear_error(result, out) == "model"
    scene = run_json(out)["counts"]["scene"]
    assert scene["registered"] == 3
    assert sorted(scene["unregistered"]) == ["blank.png", "noise.png"]
    assert "Not registered: " in result.output
    assert "the cameras barely move" not in (out / "log.txt").read_text()  # a real baseline: no warning


# --------------------------------------------------------------------------------------------------
# Non-finite values from the alignment: caught before anything is written


@pytest.fixture
def nan_alignment(monkeypatch):
    """Make the alignment return a scene whose first camera position or first point is NaN."""
    import sfm3r.pipelines.alignment_stage as alignment_stage  # the cached alignment stage calls align_scene

    real = alignment_stage.align_scene
    where = {}

    def poisoned(*args, **kwargs):
        scene = real(*args, **kwargs)
        field = where["field"]
        values = np.array(getattr(scene, field), dtype=np.float64)
        values[0] = np.nan
        return dataclasses.replace(scene, **{field: values})

    monkeypatch.setattr(alignment_stage, "align_scene", poisoned)
    return where


@pytest.mark.parametrize(("command", "field"), [("reconstruct", "translations"), ("align", "points_xyz")])
def test_non_finite_alignment_is_a_clear_error_and_writes_nothing(tmp_path, nan_alignment, field, command):
    nan_alignment["field"] = field
    photos = photo_folder(tmp_path / "photos", ["0004.jpg", "0005.jpg"])
    out = tmp_path / "out"
    assert_user_error(invoke(command, photos, out, *FAST), "non-finite", "nothing was written", "more overlap")
    assert not (out / "sparse").exists() or not any((out / "sparse").rglob("*.bin"))
    assert not (out / "points.ply").exists()
    assert not (out / "images").exists()
