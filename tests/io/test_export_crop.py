"""The centring crop of the Gaussian Splatting folder: graphdeco 3DGS assumes a centred principal point."""

from __future__ import annotations

import dataclasses
import io
import logging

import numpy as np
import pycolmap
import pytest
from click.testing import CliRunner
from io_test_scenes import look_at
from PIL import Image

from sfm3r.cli.main import cli
from sfm3r.io import export as export_module
from sfm3r.io.colmap import read_colmap_model, write_colmap_model
from sfm3r.io.export import Crop, centring_crop, crop_camera, export_gaussian_splatting_folder
from sfm3r.io.images import DecodedImages, read_image, read_image_info
from sfm3r.pipelines.export import export_model
from sfm3r.types import Camera, Scene

# Shared camera, principal point 7.3 px left of and 4.6 px below the centre (100, 75):
# x keeps the first round(2 * 92.7) = 185 columns (15 cut on the right, 7.5 %),
# y cuts the first round(2 * 79.6 - 150) = 9 rows (6 %): 185 x 141, pp (92.7, 70.6).
OFF = Camera(width=200, height=150, fx=150.0, fy=150.0, cx=100 - 7.3, cy=75 + 4.6)
OFF_CROP = Crop(left=0, top=9, right=15, bottom=0)
CENTRED = Camera(width=120, height=90, fx=110.0, fy=112.0, cx=60.2, cy=45.0)  # 0.2 px off: left alone
NAMES = ("off_0.jpg", "off_1.jpg", "sub/off_2.png", "centred_0.jpg", "centred_1.png")
EXPORTED = {"off_0.jpg": "off_0.jpg", "off_1.jpg": "off_1.jpg", "sub/off_2.png": "sub__off_2.png",
            "centred_0.jpg": "centred_0.jpg", "centred_1.png": "centred_1.png"}  # fmt: skip


def _scene(cameras=(OFF, CENTRED), seed: int = 0) -> Scene:
    """Five images on an arc (the first three use cameras[0]), noisy observations of random points."""
    rng = np.random.default_rng(seed)
    camera_of_image = np.array([0, 0, 0, 1, 1], dtype=np.int64)
    poses = [look_at(np.array([4 * np.sin(a), 0.2 * i, -4 * np.cos(a)]), np.zeros(3))
             for i, a in enumerate(np.linspace(-0.5, 0.5, len(NAMES)))]  # fmt: skip
    points = rng.uniform(-2.5, 2.5, size=(300, 3))
    obs = []
    for i, (rotation, translation) in enumerate(poses):
        camera = cameras[camera_of_image[i]]
        cam_pts = points @ rotation.T + translation
        xy = cam_pts[:, :2] / cam_pts[:, 2:] * [camera.fx, camera.fy] + [camera.cx, camera.cy]
        xy += rng.normal(scale=0.7, size=xy.shape)  # residuals the crop must keep unchanged
        inside = (xy > 0).all(axis=1) & (xy[:, 0] < camera.width) & (xy[:, 1] < camera.height)
        obs += [(p, i, *xy[p]) for p in np.flatnonzero(inside & (cam_pts[:, 2] > 0.1))]
    obs = np.array(obs)
    seen, obs_point = np.unique(obs[:, 0].astype(np.int64), return_inverse=True)
    return Scene(
        image_names=NAMES,
        cameras=tuple(cameras),
        camera_of_image=camera_of_image,
        rotations=np.array([r for r, _ in poses]),
        translations=np.array([t for _, t in poses]),
        points_xyz=points[seen],
        points_rgb=rng.integers(0, 256, size=(len(seen), 3), dtype=np.uint8),
        points_error=rng.uniform(0.1, 1.0, len(seen)),
        obs_point=obs_point,
        obs_image=obs[:, 1].astype(np.int64),
        obs_xy=obs[:, 2:4],
    )


def _write_photos(folder, scene):
    for i, name in enumerate(scene.image_names):
        camera = scene.cameras[int(scene.camera_of_image[i])]
        rgb = np.random.default_rng(i).integers(0, 256, size=(camera.height, camera.width, 3), dtype=np.uint8)
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(folder / name)
    return [read_image_info(folder / name, name) for name in scene.image_names]


def _residuals(scene: Scene) -> dict[tuple, np.ndarray]:
    """{(image stem, point xyz): observed - projected (2,)} over every observation."""
    result = {}
    for p, i, xy in zip(scene.obs_point, scene.obs_image, scene.obs_xy):
        camera = scene.cameras[int(scene.camera_of_image[i])]
        cam = scene.rotations[i] @ scene.points_xyz[p] + scene.translations[i]
        projected = cam[:2] / cam[2] * [camera.fx, camera.fy] + [camera.cx, camera.cy]
        key = (scene.image_names[i].replace("sub__", "sub/").rsplit(".", 1)[0], tuple(np.round(scene.points_xyz[p], 9)))
        result[key] = xy - projected
    return result


@pytest.fixture
def cropped(tmp_path):
    scene = _scene()
    infos = _write_photos(tmp_path / "photos", scene)
    out = export_gaussian_splatting_folder(scene, infos, tmp_path / "out")
    return scene, infos, out


def test_centring_crop_leaves_the_principal_point_within_a_quarter_pixel_of_the_centre():
    assert centring_crop(OFF) == OFF_CROP
    assert centring_crop(CENTRED) is None
    for cx in np.linspace(80.0, 120.0, 97):
        for cy in (60.01, 74.6, 75.49, 90.3):
            camera = Camera(width=200, height=150, fx=1.0, fy=1.0, cx=float(cx), cy=cy)
            crop = centring_crop(camera)
            new = camera if crop is None else crop_camera(camera, crop)
            assert abs(new.cx - new.width / 2) <= (0.25 if abs(cx - 100) >= 0.5 else 0.5)
            assert abs(new.cy - new.height / 2) <= (0.25 if abs(cy - 75) >= 0.5 else 0.5)
            if crop is not None:  # cut on one side only per axis; focal unchanged
                assert min(crop.left, crop.right) == 0 and min(crop.top, crop.bottom) == 0
                assert (new.fx, new.fy) == (camera.fx, camera.fy)


def test_export_crops_the_images_of_an_off_centre_camera(cropped):
    scene, infos, out = cropped
    written = read_colmap_model(out / "sparse" / "0")
    assert sorted(written.image_names) == sorted(EXPORTED.values())
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(EXPORTED.values())
    for i, info in enumerate(infos):
        j = written.image_names.index(EXPORTED[info.name])
        camera = written.cameras[int(written.camera_of_image[j])]
        path = out / "images" / EXPORTED[info.name]
        if i < 3:  # the shared off-centre camera: cropped, exact principal point, same focal
            assert (camera.width, camera.height) == (185, 141)
            assert camera.cx == pytest.approx(92.7, abs=1e-12) and camera.cy == pytest.approx(70.6, abs=1e-12)
            assert (camera.fx, camera.fy) == (OFF.fx, OFF.fy)
            assert abs(camera.cx - camera.width / 2) < 0.5 and abs(camera.cy - camera.height / 2) < 0.5
            with Image.open(path) as image:  # cropped, in the photo's own format
                assert image.format == ("PNG" if info.name.endswith(".png") else "JPEG")
                assert image.size == (185, 141)
                expected = read_image(info.path)[9:150, 0:185]
                if image.format == "JPEG":  # the same crop through a quality-95, 4:4:4 JPEG
                    buffer = io.BytesIO()
                    Image.fromarray(expected).save(buffer, format="JPEG", quality=95, subsampling=0)
                    expected = np.asarray(Image.open(buffer))
                np.testing.assert_array_equal(np.asarray(image), expected)
        else:  # the centred camera: untouched, its files copied byte for byte
            assert camera == CENTRED
            assert path.read_bytes() == info.path.read_bytes()
        np.testing.assert_allclose(written.rotations[j], scene.rotations[i], atol=1e-12)
    assert pycolmap.Reconstruction(str(out / "sparse" / "0")).num_reg_images() == 5


def test_cropped_observations_keep_their_residuals_and_stay_inside_the_image(cropped):
    scene, _, out = cropped
    written = read_colmap_model(out / "sparse" / "0")
    before, after = _residuals(scene), _residuals(written)
    assert set(after) <= set(before)
    for key, residual in after.items():  # same 3D point, same pose: the crop shifts both sides alike
        np.testing.assert_allclose(residual, before[key], atol=1e-9)
    size = np.array([[c.width, c.height] for c in written.cameras])[written.camera_of_image[written.obs_image]]
    assert ((written.obs_xy >= 0) & (written.obs_xy <= size)).all()

    # Dropped: exactly the observations outside the crop, plus those of points left with < 2 observations.
    shifted = scene.obs_xy - [OFF_CROP.left, OFF_CROP.top]
    outside = (scene.obs_image < 3) & ~((shifted >= 0) & (shifted <= [185, 141])).all(axis=1)
    lost = np.bincount(scene.obs_point[outside], minlength=scene.num_points)
    left = np.bincount(scene.obs_point[~outside], minlength=scene.num_points)
    removed = (lost > 0) & (left < 2)
    assert outside.sum() > 0 and removed.sum() > 0  # the scene exercises both rules
    assert written.num_points == scene.num_points - removed.sum()
    assert len(written.obs_xy) == (~outside & ~removed[scene.obs_point]).sum()
    untouched = scene.obs_image >= 3
    assert (written.obs_image >= 3).sum() == (untouched & ~removed[scene.obs_point]).sum()


def test_export_logs_what_it_cropped(tmp_path, caplog):
    scene = _scene()
    infos = _write_photos(tmp_path / "photos", scene)
    with caplog.at_level(logging.INFO, logger="sfm3r.io.export"):
        export_gaussian_splatting_folder(scene, infos, tmp_path / "out")
    assert "1 camera(s) (3 images, largest crop 15 px)" in caplog.text


def test_a_crop_over_ten_percent_is_refused_with_a_warning(tmp_path, caplog):
    far = Camera(width=200, height=150, fx=150.0, fy=150.0, cx=88.0, cy=75.0)  # would cut 24 columns (12 %)
    scene = _scene(cameras=(far, CENTRED))
    infos = _write_photos(tmp_path / "photos", scene)
    with caplog.at_level(logging.WARNING, logger="sfm3r.io.export"):
        out = export_gaussian_splatting_folder(scene, infos, tmp_path / "out")
    assert "camera 0" in caplog.text and "off_0.jpg" in caplog.text and "10%" in caplog.text
    written = read_colmap_model(out / "sparse" / "0")
    assert set(written.cameras) == {far, CENTRED}
    assert len(written.obs_xy) == len(scene.obs_xy)
    for info in infos:
        assert (out / "images" / info.name.replace("/", "__")).read_bytes() == info.path.read_bytes()


def test_the_exported_folder_exports_again_without_a_second_crop(cropped, tmp_path):
    _, _, out = cropped
    again = export_model(out / "sparse" / "0", out / "images", tmp_path / "again")
    for path in (out / "images").iterdir():
        assert (again / "images" / path.name).read_bytes() == path.read_bytes()
    cameras = set(read_colmap_model(out / "sparse" / "0").cameras)
    assert set(read_colmap_model(again / "sparse" / "0").cameras) == cameras


def test_cli_export_crops_by_default_and_keeps_images_whole_with_no_crop(tmp_path):
    scene = _scene()
    infos = _write_photos(tmp_path / "photos", scene)
    write_colmap_model(scene, tmp_path / "model")
    runner = CliRunner()
    result = runner.invoke(cli, ["export", str(tmp_path / "model"), str(tmp_path / "photos"), str(tmp_path / "crop")])
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "crop" / "images" / "off_0.jpg") as image:
        assert image.size == (185, 141)

    args = ["export", str(tmp_path / "model"), str(tmp_path / "photos"), str(tmp_path / "whole"), "--no-crop"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    for info in infos:
        assert (tmp_path / "whole" / "images" / info.name.replace("/", "__")).read_bytes() == info.path.read_bytes()
    written = read_colmap_model(tmp_path / "whole" / "sparse" / "0")
    assert set(written.cameras) == {OFF, CENTRED} and len(written.obs_xy) == len(scene.obs_xy)


def _mtimes(folder) -> dict[str, int]:
    return {path.name: path.stat().st_mtime_ns for path in sorted((folder / "images").iterdir())}


def test_a_second_export_keeps_the_images_it_wrote_identically_and_rewrites_a_changed_crop(tmp_path, monkeypatch):
    scene = _scene()
    infos = _write_photos(tmp_path / "photos", scene)
    out, written = tmp_path / "out", {}
    export_gaussian_splatting_folder(scene, infos, out, written=written)
    model_files = [f"sparse/0/{stem}.bin" for stem in ("cameras", "images", "points3D", "rigs", "frames")]
    assert sorted(written) == sorted([f"images/{name}" for name in EXPORTED.values()] + model_files)
    for key, record in written.items():
        assert record["size"] == (out / key).stat().st_size and record["mtime_ns"] == (out / key).stat().st_mtime_ns
    first, contents = _mtimes(out), {p.name: p.read_bytes() for p in (out / "images").iterdir()}

    made = []
    real_export_image = export_module._export_image
    monkeypatch.setattr(export_module, "_export_image", lambda info, *args: made.append(info.name) or real_export_image(info, *args))
    export_gaussian_splatting_folder(scene, infos, out, written=written)  # the same scene again: nothing made
    assert made == [] and _mtimes(out) == first

    # The off-centre camera's principal point moves by 2 px: its three images get another crop; the two
    # images of the centred camera stay as they are.
    moved = dataclasses.replace(OFF, cx=OFF.cx - 2.0)
    export_gaussian_splatting_folder(_scene(cameras=(moved, CENTRED)), infos, out, written=written)
    assert sorted(made) == ["off_0.jpg", "off_1.jpg", "sub/off_2.png"]
    with Image.open(out / "images" / "off_0.jpg") as image:
        assert image.size == (181, 141)
    assert {name: _mtimes(out)[name] for name in ("centred_0.jpg", "centred_1.png")} == {
        name: first[name] for name in ("centred_0.jpg", "centred_1.png")
    }

    # A file changed after the export (another tool wrote it), or a record that is not ours: written again.
    made.clear()
    (out / "images" / "centred_0.jpg").write_bytes(b"not the image")
    written["images/centred_1.png"] = {"recipe": "x", "size": "?", "mtime_ns": 0}
    export_gaussian_splatting_folder(_scene(cameras=(moved, CENTRED)), infos, out, written=written)
    assert sorted(made) == ["centred_0.jpg", "centred_1.png"]
    assert (out / "images" / "centred_0.jpg").read_bytes() == contents["centred_0.jpg"]


def test_a_second_export_keeps_the_model_files_of_the_same_model_and_rewrites_them_otherwise(tmp_path, monkeypatch):
    scene = _scene()
    infos = _write_photos(tmp_path / "photos", scene)
    out, written = tmp_path / "out", {}
    model = out / "sparse" / "0"
    export_gaussian_splatting_folder(scene, infos, out, written=written)
    wrote = []
    real_write = export_module.write_colmap_model
    monkeypatch.setattr(export_module, "write_colmap_model", lambda *args, **kw: wrote.append(1) or real_write(*args, **kw))

    def mtimes() -> dict[str, int]:
        return {path.name: path.stat().st_mtime_ns for path in sorted(model.iterdir())}

    first = mtimes()
    export_gaussian_splatting_folder(dataclasses.replace(scene, info={"timings": 1.0}), infos, out, written=written)
    assert wrote == [] and mtimes() == first  # the same model (its log aside): the files are kept
    moved = dataclasses.replace(scene, translations=scene.translations + 0.01)
    export_gaussian_splatting_folder(moved, infos, out, written=written)
    assert len(wrote) == 1 and read_colmap_model(model).translations == pytest.approx(moved.translations)
    export_gaussian_splatting_folder(moved, infos, out, text=True, written=written)  # another format asked
    assert len(wrote) == 2 and (model / "images.txt").exists()
    export_gaussian_splatting_folder(moved, infos, out, written=written)  # the text files go again
    assert len(wrote) == 3 and not (model / "images.txt").exists()
    points = read_colmap_model(model).points_xyz  # the cropped scene's
    (model / "points3D.bin").write_bytes(b"changed by another tool")
    export_gaussian_splatting_folder(moved, infos, out, written=written)
    assert len(wrote) == 4 and np.array_equal(read_colmap_model(model).points_xyz, points)


def test_export_without_a_record_writes_every_image(cropped, monkeypatch):
    scene, infos, out = cropped
    made = []
    real_export_image = export_module._export_image
    monkeypatch.setattr(export_module, "_export_image", lambda info, *args: made.append(info.name) or real_export_image(info, *args))
    export_gaussian_splatting_folder(scene, infos, out)
    assert sorted(made) == sorted(NAMES)


def test_export_takes_the_pixels_of_the_images_it_writes_from_the_given_decoder(cropped, tmp_path):
    """The pipeline hands the export the images the point colours decoded (DecodedImages): the same files, one
    decode fewer per cropped image."""
    scene, infos, out = cropped
    decoded = DecodedImages(budget_bytes=10**7)
    for info in infos:
        decoded(info.path)  # as the colours stage does
    export_gaussian_splatting_folder(scene, infos, tmp_path / "again", read_rgb=decoded)
    assert decoded.reused == 3  # the three cropped images; the others are copied as they are
    for name in EXPORTED.values():
        assert (tmp_path / "again" / "images" / name).read_bytes() == (out / "images" / name).read_bytes()
