"""Undistortion for the Gaussian Splatting folder: distorted photos -> PINHOLE cameras with straight lines."""

from __future__ import annotations

import dataclasses

import numpy as np
import pycolmap
import pytest
from colmap_classic_reader import read_model
from io_test_scenes import look_at
from PIL import Image

from sfm3r.io.colmap import read_colmap_model, write_colmap_model
from sfm3r.io.export import export_gaussian_splatting_folder
from sfm3r.io.images import read_image, read_image_info
from sfm3r.io.undistort import undistort_scene, undistorted_camera
from sfm3r.sfm.geometry.distortion import distort_pixels, to_pycolmap, undistort_pixels
from sfm3r.pipelines.export import export_model
from sfm3r.types import Camera, Scene

W, H = 320, 240
RADIAL = Camera(W, H, 250.0, 250.0, 161.0, 119.0, model="SIMPLE_RADIAL", distortion=(-0.15,))
OPENCV = Camera(W, H, 250.0, 252.0, 158.0, 121.0, model="OPENCV", distortion=(-0.12, 0.03, 0.001, -0.0005))
GRID = 40.0  # px: grid lines of the ideal (pinhole) image at multiples of this


def _grid_photo(camera: Camera) -> np.ndarray:
    """(H, W, 3) uint8: a grid of straight dark lines in the pinhole view, seen through `camera`'s lens."""
    u, v = np.meshgrid(np.arange(camera.width) + 0.5, np.arange(camera.height) + 0.5)
    rays = to_pycolmap(camera).cam_from_img(np.stack([u.ravel(), v.ravel()], 1))
    ideal = rays * [camera.fx, camera.fy] + [camera.cx, camera.cy]  # pinhole pixels, same K
    dist = np.abs((ideal + GRID / 2) % GRID - GRID / 2).min(axis=1).reshape(camera.height, camera.width)
    grey = np.clip(255 * (dist / 1.5), 40, 255).astype(np.uint8)  # lines ~3 px wide
    return np.repeat(grey[..., None], 3, axis=2)


def _line_rows(rgb: np.ndarray, y0: float, columns: np.ndarray) -> np.ndarray:
    """Per column, the intensity-weighted row of the dark line near row y0 (sub-pixel)."""
    grey = rgb[..., 0].astype(np.float64)
    rows = np.arange(int(y0) - 10, int(y0) + 11)
    out = []
    for x in columns:
        w = np.clip(255 - grey[rows, x], 0, None) ** 2
        out.append((w * (rows + 0.5)).sum() / w.sum())
    return np.array(out)


def _scene(camera: Camera) -> Scene:
    """Two images of one distorted camera observing random points (observations through the lens)."""
    rng = np.random.default_rng(0)
    poses = [look_at(np.array([x, 0.0, -4.0]), np.zeros(3)) for x in (-0.4, 0.4)]
    points = rng.uniform(-1.2, 1.2, size=(200, 3))
    pc = to_pycolmap(camera)
    obs = []
    for i, (rotation, translation) in enumerate(poses):
        xy = pc.img_from_cam(points @ rotation.T + translation)
        inside = (xy > 0).all(1) & (xy[:, 0] < camera.width) & (xy[:, 1] < camera.height)
        obs += [(p, i, *xy[p]) for p in np.flatnonzero(inside)]
    obs = np.array(obs)
    seen, obs_point = np.unique(obs[:, 0].astype(np.int64), return_inverse=True)
    return Scene(
        image_names=("a.jpg", "b.png"), cameras=(camera,), camera_of_image=np.zeros(2, np.int64),
        rotations=np.array([r for r, _ in poses]), translations=np.array([t for _, t in poses]),
        points_xyz=points[seen], points_rgb=np.full((len(seen), 3), 200, np.uint8),
        points_error=np.full(len(seen), 0.1), obs_point=obs_point, obs_image=obs[:, 1].astype(np.int64),
        obs_xy=obs[:, 2:4],
    )  # fmt: skip


def _write_photos(folder, scene, camera):
    folder.mkdir(parents=True, exist_ok=True)
    rgb = _grid_photo(camera)
    for name in scene.image_names:
        Image.fromarray(rgb).save(folder / name, **({"quality": 98} if name.endswith(".jpg") else {}))
    return [read_image_info(folder / name, name) for name in scene.image_names]


@pytest.mark.parametrize("camera", [RADIAL, OPENCV], ids=["SIMPLE_RADIAL", "OPENCV"])
def test_exported_images_of_a_distorted_camera_have_straight_lines(tmp_path, camera):
    scene = _scene(camera)
    infos = _write_photos(tmp_path / "photos", scene, camera)
    out = export_gaussian_splatting_folder(scene, infos, tmp_path / "out")

    rec = pycolmap.Reconstruction(str(out / "sparse" / "0"))
    assert {c.model.name for c in rec.cameras.values()} == {"PINHOLE"}
    cameras, images, _ = read_model(out / "sparse" / "0", ".bin")  # the independent classic reader
    assert {c[0] for c in cameras.values()} == {"PINHOLE"} and len(images) == 2
    for image in rec.images.values():  # every image has its camera's size
        cam = rec.cameras[image.camera_id]
        assert Image.open(out / "images" / image.name).size == (cam.width, cam.height)
        assert abs(cam.principal_point_x - cam.width / 2) < 0.5 and abs(cam.principal_point_y - cam.height / 2) < 0.5
    exported = read_colmap_model(out / "sparse" / "0")
    new = exported.cameras[0]
    assert new.model == "PINHOLE" or new.colmap_model()[0] == "PINHOLE"

    # straight lines: the grid row at ideal y = 40 (near the top, strongly bent by the lens), sampled
    # midway between the vertical grid lines
    y_ideal, x_ideal = GRID, np.arange(GRID / 2, W, GRID)[1:-1]
    for name in ("b.png", "a.jpg"):
        rgb = read_image(out / "images" / name)
        y0 = (y_ideal - camera.cy) / camera.fy * new.fy + new.cy
        columns = ((x_ideal - camera.cx) / camera.fx * new.fx + new.cx).astype(int)
        rows = _line_rows(rgb, y0, columns)
        assert np.abs(rows - y0).max() < 0.35, (name, rows - y0)
    # ...while the input photo bends it by a few pixels
    rows_in = _line_rows(_grid_photo(camera), y_ideal, x_ideal.astype(int))
    assert np.ptp(rows_in) > 1.5  # (the exported rows stay within 0.35 px)

    # observations moved with the images: they reproject through the new pinhole camera
    for p, i, xy in zip(exported.obs_point, exported.obs_image, exported.obs_xy):
        pc = exported.rotations[i] @ exported.points_xyz[p] + exported.translations[i]
        assert np.linalg.norm(pc[:2] / pc[2] * [new.fx, new.fy] + [new.cx, new.cy] - xy) < 1e-6
    assert exported.num_points > 0.9 * scene.num_points


def test_export_command_undistorts_a_distorted_model(tmp_path):
    scene = _scene(RADIAL)
    _write_photos(tmp_path / "photos", scene, RADIAL)
    write_colmap_model(scene, tmp_path / "model")
    assert pycolmap.Reconstruction(str(tmp_path / "model")).cameras[1].model.name == "SIMPLE_RADIAL"
    out = export_model(tmp_path / "model", tmp_path / "photos", tmp_path / "out")
    rec = pycolmap.Reconstruction(str(out / "sparse" / "0"))
    cam = rec.cameras[1]
    assert cam.model.name == "PINHOLE" and (cam.width, cam.height) != (W, H)
    assert Image.open(out / "images" / "a.jpg").size == (cam.width, cam.height)


def test_undistort_scene_leaves_pinhole_scenes_alone_and_maps_pixels_exactly():
    pinhole = _scene(dataclasses.replace(RADIAL, model="", distortion=()))
    same, replaced = undistort_scene(pinhole)
    assert same is pinhole and replaced == {}
    target = undistorted_camera(RADIAL)
    assert target.model == "PINHOLE" and not target.has_distortion
    xy = np.array([[5.0, 7.0], [160.0, 120.0], [300.0, 230.0]])
    back = to_pycolmap(RADIAL).img_from_cam(
        np.c_[(undistort_pixels(xy, RADIAL, target) - [target.cx, target.cy]) / [target.fx, target.fy], np.ones(3)]
    )
    np.testing.assert_allclose(back, xy, atol=1e-6)
    np.testing.assert_allclose(distort_pixels(undistort_pixels(xy, OPENCV), OPENCV), xy, atol=1e-6)
    assert np.abs(undistort_pixels(xy, OPENCV) - xy).max() > 5.0
