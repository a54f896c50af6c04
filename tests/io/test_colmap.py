"""COLMAP writer and reader: pycolmap round trips, an independent classic reader, refusals."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pycolmap
import pytest
from colmap_classic_reader import quaternion_wxyz_to_matrix, read_model
from conftest import DATA
from io_test_scenes import PINHOLE, SIMPLE, observation_set, synthetic_scene

from sfm3r.errors import InputError, ReconstructionError
from sfm3r.io.colmap import read_colmap_model, scene_to_reconstruction, write_colmap_model
from sfm3r.types import Camera, Scene


def _camera_of(scene: Scene, i: int) -> Camera:
    return scene.cameras[int(scene.camera_of_image[i])]


def _expected_tracks(scene: Scene) -> dict[int, set[tuple[str, float, float]]]:
    """{point index: {(image name, x, y)}} from the Scene's observation table."""
    tracks: dict[int, set] = {p: set() for p in range(scene.num_points)}
    for p, i, (x, y) in zip(scene.obs_point, scene.obs_image, scene.obs_xy):
        tracks[int(p)].add((scene.image_names[i], float(x), float(y)))
    return tracks


# --------------------------------------------------------------------------------------------------
# Scene -> pycolmap


def test_reconstruction_holds_cameras_poses_and_tracks_of_the_scene():
    scene = synthetic_scene()
    rec = scene_to_reconstruction(scene)
    assert rec.num_cameras() == 2  # the third Scene camera equals the first: shared
    assert rec.cameras[1].model.name == "SIMPLE_PINHOLE" and list(rec.cameras[1].params) == [50.0, 32.5, 23.75]
    assert rec.cameras[2].model.name == "PINHOLE" and list(rec.cameras[2].params) == [61.0, 58.5, 24.25, 31.0]
    assert (rec.cameras[2].width, rec.cameras[2].height) == (48, 64)
    assert rec.num_reg_images() == scene.num_images
    for i, name in enumerate(scene.image_names):
        image = rec.images[i + 1]
        assert image.name == name and image.camera_id == [1, 2, 1][i % 3]
        np.testing.assert_allclose(image.cam_from_world().rotation.matrix(), scene.rotations[i], atol=1e-12)
        np.testing.assert_allclose(image.cam_from_world().translation, scene.translations[i], atol=1e-12)
        assert image.num_points2D() == np.sum(scene.obs_image == i) == image.num_points3D
    tracks = _expected_tracks(scene)
    for p in range(scene.num_points):
        point = rec.points3D[p + 1]
        np.testing.assert_array_equal(point.xyz, scene.points_xyz[p])
        np.testing.assert_array_equal(point.color, scene.points_rgb[p])
        elements = [(rec.images[e.image_id], e.point2D_idx) for e in point.track.elements]
        got = {(image.name, *image.points2D[idx].xy) for image, idx in elements}
        assert got == tracks[p]
        for e in point.track.elements:  # the point2D links back to its point
            assert rec.images[e.image_id].points2D[e.point2D_idx].point3D_id == p + 1
    assert rec.points3D[1].error == -1  # NaN error -> COLMAP's "unknown"
    assert rec.points3D[2].error == pytest.approx(scene.points_error[1])


def test_pixels_are_written_without_any_half_pixel_shift():
    scene = synthetic_scene()
    rec = scene_to_reconstruction(scene)
    k = int(np.flatnonzero(scene.obs_image == 0)[0])
    assert tuple(rec.images[1].points2D[0].xy) == tuple(scene.obs_xy[k])  # first observation of image 0, as is
    assert rec.cameras[1].principal_point_x == SIMPLE.cx


@pytest.mark.parametrize("ratio,model", [(1.0, "SIMPLE_PINHOLE"), (1 + 1e-12, "SIMPLE_PINHOLE"), (1 + 1e-6, "PINHOLE")])
def test_simple_pinhole_only_when_focals_agree(ratio, model):
    camera = dataclasses.replace(PINHOLE, fx=600.0, fy=600.0 * ratio)
    scene = dataclasses.replace(synthetic_scene(), cameras=(camera, camera, camera))
    assert scene_to_reconstruction(scene).cameras[1].model.name == model


# --------------------------------------------------------------------------------------------------
# Files: pycolmap and an independent classic reader


@pytest.mark.parametrize("ext", [".bin", ".txt"])
def test_written_model_parses_with_an_independent_classic_reader(tmp_path, ext):
    scene = synthetic_scene()
    write_colmap_model(scene, tmp_path / "sparse" / "0", binary=ext == ".bin", text=ext == ".txt")
    cameras, images, points = read_model(tmp_path / "sparse" / "0", ext)
    assert len(cameras) == 2 and len(images) == scene.num_images and len(points) == scene.num_points
    by_name = {image["name"]: image for image in images.values()}
    for i, name in enumerate(scene.image_names):
        image, camera = by_name[name], _camera_of(scene, i)
        model, width, height, params = cameras[image["camera_id"]]
        assert (width, height) == (camera.width, camera.height)
        assert model == ("SIMPLE_PINHOLE" if camera.fx == camera.fy else "PINHOLE")
        focals = [camera.fx] if model == "SIMPLE_PINHOLE" else [camera.fx, camera.fy]
        np.testing.assert_allclose(params, focals + [camera.cx, camera.cy], rtol=1e-15)
        np.testing.assert_allclose(quaternion_wxyz_to_matrix(image["q"]), scene.rotations[i], atol=1e-9)
        np.testing.assert_allclose(image["t"], scene.translations[i], atol=1e-9)
        assert (image["point3D_ids"] != -1).all()
    tracks = _expected_tracks(scene)
    points_by_xyz = {tuple(point["xyz"]): point for point in points.values()}  # 17 digits in text: exact
    for p in range(scene.num_points):
        point = points_by_xyz[tuple(scene.points_xyz[p])]
        assert point["rgb"] == tuple(scene.points_rgb[p])
        assert point["error"] == (-1 if np.isnan(scene.points_error[p]) else pytest.approx(scene.points_error[p]))
        got = set()
        for image_id, idx in point["track"]:
            image = images[image_id]
            assert points[image["point3D_ids"][idx]] is point  # the point2D links back to this point
            got.add((image["name"], *image["xy"][idx]))
        assert got == tracks[p]


def test_binary_and_text_models_read_back_identically_with_pycolmap(tmp_path):
    scene = synthetic_scene()
    write_colmap_model(scene, tmp_path / "bin")
    write_colmap_model(scene, tmp_path / "txt", binary=False, text=True)
    recs = [pycolmap.Reconstruction(str(tmp_path / d)) for d in ("bin", "txt")]
    for rec in recs:
        assert (rec.num_cameras(), rec.num_reg_images(), rec.num_points3D()) == (2, 5, scene.num_points)
        for i in range(scene.num_images):
            pose = rec.images[i + 1].cam_from_world()
            np.testing.assert_allclose(pose.rotation.matrix(), scene.rotations[i], atol=1e-9)
            np.testing.assert_allclose(pose.translation, scene.translations[i], atol=1e-9)
    assert recs[0].compute_mean_reprojection_error() == pytest.approx(recs[1].compute_mean_reprojection_error())


def test_read_colmap_model_round_trip(tmp_path):
    scene = synthetic_scene()
    back = read_colmap_model(write_colmap_model(scene, tmp_path / "model"))
    assert back.image_names == scene.image_names
    assert len(back.cameras) == 2
    for i in range(scene.num_images):
        assert _camera_of(back, i) == _camera_of(scene, i)
    np.testing.assert_allclose(back.rotations, scene.rotations, atol=1e-9)
    np.testing.assert_allclose(back.translations, scene.translations, atol=1e-9)
    np.testing.assert_array_equal(back.points_xyz, scene.points_xyz)
    np.testing.assert_array_equal(back.points_rgb, scene.points_rgb)
    np.testing.assert_allclose(back.points_error, scene.points_error)  # NaN stays NaN
    assert observation_set(back) == observation_set(scene)
    assert back.unregistered == () and "distortion" not in back.info


def test_read_colmap_model_of_distorted_ground_truth_keeps_the_distortion(tmp_path):
    gt = DATA / "sacre_coeur" / "gt"
    if not gt.is_dir():
        pytest.skip(f"data not found at {gt}")
    scene = read_colmap_model(gt)
    rec = pycolmap.Reconstruction(str(gt))
    assert scene.num_images == rec.num_reg_images() and scene.num_points == 0
    assert "distortion" not in scene.info  # SIMPLE_RADIAL is handled, nothing dropped
    first = rec.images[min(rec.reg_image_ids())]
    camera = scene.cameras[int(scene.camera_of_image[0])]
    assert scene.image_names[0] == first.name
    assert camera.model == "SIMPLE_RADIAL" and camera.has_distortion
    assert camera.fx == rec.cameras[first.camera_id].focal_length
    assert camera.distortion == (rec.cameras[first.camera_id].params[3],)
    # and written back unchanged
    again = pycolmap.Reconstruction(str(write_colmap_model(scene, tmp_path / "model")))
    written = again.cameras[again.images[1].camera_id]
    assert written.model.name == "SIMPLE_RADIAL"
    np.testing.assert_allclose(written.params, rec.cameras[first.camera_id].params)


def test_pinhole_camera_with_equal_focals_is_written_as_pinhole(tmp_path):
    """A camera that says PINHOLE stays PINHOLE even when fx == fy (it was written as SIMPLE_PINHOLE)."""
    scene = synthetic_scene()
    cameras = tuple(dataclasses.replace(c, fy=c.fx, model="PINHOLE") for c in scene.cameras)
    rec = pycolmap.Reconstruction(str(write_colmap_model(dataclasses.replace(scene, cameras=cameras), tmp_path)))
    assert {c.model.name for c in rec.cameras.values()} == {"PINHOLE"}
    back = read_colmap_model(tmp_path)
    assert all(c.model == "PINHOLE" for c in back.cameras)


def test_unsupported_distortion_model_keeps_the_pinhole_part(tmp_path, caplog):
    rec = pycolmap.Reconstruction()
    rec.add_camera_with_trivial_rig(pycolmap.Camera(camera_id=1, model="FULL_OPENCV", width=64, height=48,
                                                    params=[50, 51, 32, 24, 0.1, 0, 0, 0, 0, 0, 0, 0]))
    rec.add_image_with_trivial_frame(pycolmap.Image(name="a.png", keypoints=np.zeros((0, 2)), camera_id=1, image_id=1),
                                     pycolmap.Rigid3d())
    rec.write_binary(str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="sfm3r.io.colmap"):
        scene = read_colmap_model(tmp_path)
    assert scene.cameras[0] == Camera(64, 48, 50.0, 51.0, 32.0, 24.0)
    assert scene.info["distortion"][0]["model"] == "FULL_OPENCV" and "unsupported" in caplog.text


def test_read_colmap_model_refuses_folders_without_a_model(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_colmap_model(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="expected cameras, images and points3D"):
        read_colmap_model(tmp_path / "empty")


def test_rewriting_in_one_format_removes_stale_files_of_the_other(tmp_path):
    scene = synthetic_scene()
    write_colmap_model(scene, tmp_path, binary=True, text=True)
    assert (tmp_path / "images.txt").exists() and (tmp_path / "images.bin").exists()
    write_colmap_model(scene, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{s}.bin" for s in ["cameras", "images", "points3D", "rigs", "frames"]
    )


# --------------------------------------------------------------------------------------------------
# Refusals


def _with(scene: Scene, name: str, index, value) -> Scene:
    array = np.array(getattr(scene, name), copy=True)
    array[index] = value
    return dataclasses.replace(scene, **{name: array})


@pytest.mark.parametrize(
    "name,index,value",
    [
        ("rotations", (1, 0, 0), np.nan),
        ("translations", (2, 1), np.inf),
        ("points_xyz", (3, 2), np.nan),
        ("obs_xy", (4, 0), -np.inf),
        ("rotations", (0,), 2 * np.eye(3)),  # not a rotation
        ("rotations", (0,), -np.eye(3)),  # a reflection
    ],
)
def test_refuses_non_finite_or_invalid_values_before_writing_anything(tmp_path, name, index, value):
    scene = _with(synthetic_scene(), name, index, value)
    with pytest.raises(ReconstructionError, match="refusing|rotation"):
        write_colmap_model(scene, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("field,value", [("fx", np.nan), ("cy", np.inf), ("fy", -5.0)])
def test_refuses_invalid_intrinsics(tmp_path, field, value):
    scene = synthetic_scene()
    scene = dataclasses.replace(scene, cameras=(dataclasses.replace(SIMPLE, **{field: value}),) + scene.cameras[1:])
    with pytest.raises(ReconstructionError, match="intrinsics"):
        write_colmap_model(scene, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_refuses_inconsistent_arrays():
    scene = synthetic_scene()
    with pytest.raises(ValueError, match="obs_xy"):
        scene_to_reconstruction(dataclasses.replace(scene, obs_xy=scene.obs_xy[:-1]))
    with pytest.raises(ValueError, match="obs_point"):
        scene_to_reconstruction(_with(scene, "obs_point", 0, scene.num_points))
    with pytest.raises(ValueError, match="uint8"):
        scene_to_reconstruction(dataclasses.replace(scene, points_rgb=scene.points_rgb.astype(np.int64) + 200))


def test_a_model_truncated_by_a_full_disk_is_an_oserror_and_nothing_is_replaced(tmp_path, monkeypatch):
    """pycolmap's writers do not report a full disk; the writer reads the model back and says so."""
    import errno

    scene = synthetic_scene()
    write_colmap_model(scene, tmp_path)
    before = (tmp_path / "points3D.bin").read_bytes()
    real = pycolmap.Reconstruction.write_binary

    for truncated in ("cameras.bin", "images.bin"):  # images.bin: read again to add the 3D point ids

        def truncating(rec, path, truncated=truncated):
            real(rec, path)
            with open(f"{path}/{truncated}", "r+b") as handle:
                handle.truncate(len(open(f"{path}/{truncated}", "rb").read()) // 2)

        monkeypatch.setattr(pycolmap.Reconstruction, "write_binary", truncating)
        with pytest.raises(OSError) as raised:
            write_colmap_model(scene, tmp_path)
        assert raised.value.errno == errno.EIO and "disk full" in str(raised.value)
        assert (tmp_path / "points3D.bin").read_bytes() == before
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def _big_scene(num_images: int, num_points: int, seed: int = 0) -> Scene:
    """Random poses and points; tracks of 0 to num_images observations (points unseen by any image too), an
    image without observations, unknown (NaN) errors, two cameras."""
    rng = np.random.default_rng(seed)
    rotations = np.array([np.linalg.qr(rng.normal(size=(3, 3)))[0] for _ in range(num_images)])
    rotations *= np.sign(np.linalg.det(rotations))[:, None, None]
    lengths = rng.integers(0, num_images, num_points)  # image num_images - 1 is never observed
    obs_point = np.repeat(np.arange(num_points), lengths)
    obs_image = np.concatenate([rng.choice(num_images - 1, n, replace=False) for n in lengths])
    shuffle = rng.permutation(len(obs_point))
    errors = rng.uniform(0, 2, num_points)
    errors[::7] = np.nan
    return Scene(
        image_names=tuple(f"dir/img {i}.jpg" for i in range(num_images)),
        cameras=(SIMPLE, PINHOLE),
        camera_of_image=np.arange(num_images) % 2,
        rotations=rotations,
        translations=rng.normal(size=(num_images, 3)),
        points_xyz=rng.normal(size=(num_points, 3)) * 100,
        points_rgb=rng.integers(0, 256, (num_points, 3), dtype=np.uint8),
        points_error=errors,
        obs_point=obs_point[shuffle],
        obs_image=obs_image[shuffle],
        obs_xy=rng.uniform(0, 600, size=(len(obs_point), 2)),
    )


@pytest.mark.parametrize("make", [synthetic_scene, lambda: _big_scene(7, 3000), lambda: _big_scene(3, 70_000, seed=1)])
def test_binary_model_is_byte_for_byte_what_pycolmap_writes(tmp_path, make):
    """The 3D points of the binary model are written with numpy (no Python call per point): the files must be
    pycolmap's own, byte for byte (70,000 points: more than one chunk of _POINTS_PER_CHUNK)."""
    scene = make()
    scene_to_reconstruction(scene).write_binary(str(tmp_path))  # every point through pycolmap
    write_colmap_model(scene, tmp_path / "ours")
    for name in ("cameras.bin", "images.bin", "points3D.bin", "rigs.bin", "frames.bin"):
        assert (tmp_path / "ours" / name).read_bytes() == (tmp_path / name).read_bytes(), name
