"""The Gaussian Splatting folder: images as the cameras see them, flat unique names, model, PLY."""

from __future__ import annotations

import dataclasses

import numpy as np
import pycolmap
import pytest
from io_test_scenes import synthetic_scene
from PIL import Image

from sfm3r.errors import InputError, ReconstructionError
from sfm3r.io.export import export_gaussian_splatting_folder, export_names, flat_name
from sfm3r.io.images import read_image, read_image_info
from sfm3r.io.ply import read_ply

# Scene image i uses camera [SIMPLE 64x48, PINHOLE 48x64, SIMPLE][i % 3] (see io_test_scenes).
NAMES = ("plain.jpg", "sub/nested.jpg", "turned.jpg", "grey.png", "x.webp")
EXPECTED_FILES = {  # source name -> exported name, and whether the bytes are copied
    "plain.jpg": ("plain.jpg", True),
    "sub/nested.jpg": ("sub__nested.jpg", True),
    "turned.jpg": ("turned.png", False),  # EXIF rotation: re-encoded
    "grey.png": ("grey.png", False),  # 8-bit grey: re-encoded as RGB
    "x.webp": ("x.png", False),  # WebP: re-encoded
}


def _pixels(width: int, height: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def _write_inputs(folder, scene):
    """Write one image file per scene image, displayed size = its camera's size; return ImageInfos."""
    for i, name in enumerate(scene.image_names):
        camera = scene.cameras[int(scene.camera_of_image[i])]
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        rgb = _pixels(camera.width, camera.height, i)
        if name == "turned.jpg":  # stored rotated, EXIF orientation 6 turns it back
            exif = Image.Exif()
            exif[0x0112] = 6
            Image.fromarray(np.ascontiguousarray(np.rot90(rgb, 1))).save(path, exif=exif)
        elif name == "grey.png":
            Image.fromarray(rgb[..., 0]).save(path)
        else:
            Image.fromarray(rgb).save(path)
    return [read_image_info(folder / name, name) for name in scene.image_names]


@pytest.fixture
def exported(tmp_path):
    scene = synthetic_scene(NAMES)
    infos = _write_inputs(tmp_path / "photos", scene)
    # These cameras' principal points are 0.5-1 px off-centre; the centring crop has its own tests
    # (test_export_crop.py), here every image keeps its size.
    out = export_gaussian_splatting_folder(scene, infos, tmp_path / "out", centre_principal_points=False)
    return scene, infos, out


def test_export_lays_out_images_model_and_points(exported):
    scene, infos, out = exported
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(v[0] for v in EXPECTED_FILES.values())
    rec = pycolmap.Reconstruction(str(out / "sparse" / "0"))
    assert rec.num_reg_images() == scene.num_images and rec.num_points3D() == scene.num_points
    for i, info in enumerate(infos):
        exported_name, copied = EXPECTED_FILES[info.name]
        image = rec.find_image_with_name(exported_name)
        assert image is not None, exported_name
        np.testing.assert_allclose(image.cam_from_world().rotation.matrix(), scene.rotations[i], atol=1e-9)
        camera = rec.cameras[image.camera_id]
        with Image.open(out / "images" / exported_name) as written:  # what a trainer sees (no EXIF)
            assert written.size == (camera.width, camera.height)
            assert written.mode == "RGB" and dict(written.getexif()).get(0x0112, 1) == 1
            pixels = np.asarray(written)
        if copied:
            assert (out / "images" / exported_name).read_bytes() == info.path.read_bytes()
        else:
            np.testing.assert_array_equal(pixels, read_image(info.path))
    xyz, rgb = read_ply(out / "points.ply")
    np.testing.assert_allclose(xyz, scene.points_xyz, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(rgb, scene.points_rgb)
    assert not (out / "sparse" / "0" / "points3D.ply").exists()  # graphdeco would prefer it (needs normals)


def test_export_writes_text_model_and_dense_points_on_request(tmp_path):
    scene = synthetic_scene(NAMES)
    dense = np.random.default_rng(1).normal(size=(7, 3)).astype(np.float32)
    scene = dataclasses.replace(scene, dense_xyz=dense, dense_rgb=np.full((7, 3), 9, np.uint8))
    infos = _write_inputs(tmp_path / "photos", scene)
    out = export_gaussian_splatting_folder(scene, infos, tmp_path / "out", text=True, dense=True)
    assert (out / "sparse" / "0" / "images.txt").exists() and (out / "sparse" / "0" / "images.bin").exists()
    xyz, rgb = read_ply(out / "points.ply")
    np.testing.assert_array_equal(xyz, dense)


@pytest.mark.parametrize(
    "bad",
    ["../evil.jpg", "a/../../evil.jpg", "/etc/evil.jpg", "C:/evil.jpg", "c:evil.jpg", "a\\..\\..\\b.jpg", "a//b", ""],
)
def test_flat_name_refuses_names_that_could_escape(bad):
    with pytest.raises(InputError):
        flat_name(bad)


def test_export_refuses_unsafe_names_before_writing_anything(tmp_path):
    scene = synthetic_scene(NAMES)
    infos = _write_inputs(tmp_path / "photos", scene)
    scene = dataclasses.replace(scene, image_names=("../evil.jpg",) + scene.image_names[1:])
    infos = [dataclasses.replace(infos[0], name="../evil.jpg")] + infos[1:]
    with pytest.raises(InputError, match="evil"):
        export_gaussian_splatting_folder(scene, infos, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.jpg").exists()


def test_export_names_are_flat_unique_and_deterministic():
    names = ["a/b.jpg", "a__b.jpg", "B.jpg", "b.JPG", "c.tif", "c.png", "x/c.png"]
    mapping = export_names(names, reencoded={"c.tif"})
    assert mapping == export_names(names[::-1], reencoded={"c.tif"})  # independent of input order
    assert len({v.casefold() for v in mapping.values()}) == len(names)  # unique, even case-insensitively
    assert all("/" not in v for v in mapping.values())
    assert mapping["a__b.jpg"] == "a__b.jpg" and mapping["c.png"] == "c.png"  # names needing no change keep it
    assert mapping["a/b.jpg"] == "a__b_2.jpg" and mapping["c.tif"] == "c_2.png" and mapping["x/c.png"] == "x__c.png"


def test_export_refuses_images_changed_or_resized_since_reconstruction(tmp_path):
    scene = synthetic_scene(NAMES)
    infos = _write_inputs(tmp_path / "photos", scene)
    Image.fromarray(_pixels(64, 48, 99)).save(infos[0].path)  # same size, other content
    with pytest.raises(InputError, match="changed"):
        export_gaussian_splatting_folder(scene, infos, tmp_path / "out")
    Image.fromarray(_pixels(32, 24, 0)).save(infos[0].path)
    infos[0] = read_image_info(infos[0].path, infos[0].name)
    with pytest.raises(InputError, match="32x24"):
        export_gaussian_splatting_folder(scene, infos, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_export_refuses_missing_infos_and_non_finite_scenes(tmp_path):
    scene = synthetic_scene(NAMES)
    infos = _write_inputs(tmp_path / "photos", scene)
    with pytest.raises(InputError, match="plain.jpg"):
        export_gaussian_splatting_folder(scene, infos[1:], tmp_path / "out")
    translations = scene.translations.copy()
    translations[0, 0] = np.nan
    with pytest.raises(ReconstructionError):
        export_gaussian_splatting_folder(dataclasses.replace(scene, translations=translations), infos, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_flat_name_keeps_ordinary_characters():
    assert flat_name("2024-01-01 12:30:00.jpg") == "2024-01-01 12:30:00.jpg"  # colons are fine on posix
    assert flat_name("day 1/IMG_0001.JPG") == "day 1__IMG_0001.JPG"
