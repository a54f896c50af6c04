"""nerfstudio's transforms.json in the 3DGS folder: its poses go back to sparse/0's, its files and sizes exist."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pycolmap
import pytest
from io_test_scenes import synthetic_scene
from PIL import Image

from sfm3r.io.export import export_gaussian_splatting_folder
from sfm3r.io.images import read_image_info
from sfm3r.io.ply import read_ply


def _write_inputs(folder, scene):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, name in enumerate(scene.image_names):
        camera = scene.cameras[int(scene.camera_of_image[i])]
        Image.fromarray(rng.integers(0, 256, (camera.height, camera.width, 3), dtype=np.uint8)).save(folder / name)
    return [read_image_info(folder / name, name) for name in scene.image_names]


def _colmap_from_nerfstudio(transform_matrix, applied_transform) -> np.ndarray:
    """(3, 4) cam_from_world in COLMAP's conventions from a frame of transforms.json, undoing nerfstudio's
    steps one by one: the world turn `applied_transform`, then the OpenGL camera axes (y up, z back)."""
    c2w = np.asarray(transform_matrix, dtype=float)
    turn = np.asarray(applied_transform, dtype=float)
    assert c2w.shape == (4, 4) and turn.shape == (3, 4)
    np.testing.assert_array_equal(c2w[3], [0, 0, 0, 1])
    world_from_turned = np.linalg.inv(np.vstack([turn, [0, 0, 0, 1]]))
    c2w = world_from_turned @ c2w  # camera-to-world in COLMAP's world, OpenGL camera axes
    c2w[:3, 1:3] *= -1  # OpenGL -> OpenCV camera axes (x right, y down, z forward)
    return np.linalg.inv(c2w)[:3]


@pytest.mark.parametrize("shared_camera", [True, False])
def test_transforms_json_converts_back_to_the_poses_of_sparse0(tmp_path, shared_camera):
    scene = synthetic_scene(("a.jpg", "b.png", "c.jpg", "d.png"))
    if shared_camera:
        scene = dataclasses.replace(scene, camera_of_image=np.zeros(scene.num_images, dtype=np.int64))
    infos = _write_inputs(tmp_path / "photos", scene)
    out = export_gaussian_splatting_folder(scene, infos, tmp_path / "out", centre_principal_points=False)
    meta = json.loads((out / "transforms.json").read_text())
    rec = pycolmap.Reconstruction(str(out / "sparse" / "0"))
    assert len(meta["frames"]) == rec.num_reg_images() == scene.num_images
    assert ("fl_x" in meta) == shared_camera  # one camera: intrinsics at the top, else in each frame
    for frame in meta["frames"]:
        image = rec.images[frame["colmap_im_id"]]
        assert frame["file_path"] == f"images/{image.name}"
        np.testing.assert_allclose(
            _colmap_from_nerfstudio(frame["transform_matrix"], meta["applied_transform"]),
            image.cam_from_world().matrix(), atol=1e-9,
        )  # fmt: skip
        camera = rec.cameras[image.camera_id]
        intrinsics = meta if shared_camera else frame
        assert intrinsics["camera_model"] == "OPENCV"
        assert (intrinsics["w"], intrinsics["h"]) == (camera.width, camera.height)
        np.testing.assert_allclose(
            [intrinsics["fl_x"], intrinsics["fl_y"], intrinsics["cx"], intrinsics["cy"]],
            [camera.focal_length_x, camera.focal_length_y, camera.principal_point_x, camera.principal_point_y],
            rtol=1e-12,
        )  # fmt: skip
        assert [intrinsics[k] for k in ("k1", "k2", "p1", "p2")] == [0.0] * 4  # undistorted pinhole images
        with Image.open(out / frame["file_path"]) as photo:
            assert photo.size == (intrinsics["w"], intrinsics["h"])


def test_sparse_pc_ply_holds_the_points_in_the_turned_world(tmp_path):
    scene = synthetic_scene(("a.jpg", "b.jpg", "c.jpg"))
    infos = _write_inputs(tmp_path / "photos", scene)
    out = export_gaussian_splatting_folder(scene, infos, tmp_path / "out", centre_principal_points=False)
    meta = json.loads((out / "transforms.json").read_text())
    assert meta["ply_file_path"] == "sparse_pc.ply"
    turned_xyz, turned_rgb = read_ply(out / meta["ply_file_path"])
    xyz, rgb = read_ply(out / "points.ply")
    turn = np.asarray(meta["applied_transform"])
    np.testing.assert_allclose(turned_xyz, xyz @ turn[:, :3].T + turn[:, 3], atol=1e-5)  # float32 in the PLY
    np.testing.assert_array_equal(turned_rgb, rgb)
    # nerfstudio's turn: x stays, y is COLMAP's z, z is COLMAP's -y
    np.testing.assert_array_equal(turn, [[1, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0]])


def test_transforms_json_can_be_left_out(tmp_path):
    scene = synthetic_scene(("a.jpg", "b.jpg"))
    infos = _write_inputs(tmp_path / "photos", scene)
    out = export_gaussian_splatting_folder(scene, infos, tmp_path / "out", nerfstudio=False)
    assert not (out / "transforms.json").exists() and not (out / "sparse_pc.ply").exists()
