"""Downscaled copies images_<f>/: floor size, scale exactly 1/f, same names and format, kept when current."""

from __future__ import annotations

import numpy as np
import pycolmap
import pytest
from io_test_scenes import synthetic_scene
from PIL import Image

from sfm3r.errors import InputError
from sfm3r.io.downscale import (
    check_downscale_factors,
    downscaled_size,
    write_downscaled_copies,
)
from sfm3r.io.export import export_gaussian_splatting_folder
from sfm3r.io.images import read_image_info


def test_downscaled_size_rounds_down_as_gsplat_and_nerfstudio_do():
    assert downscaled_size(1024, 768, 2) == (512, 384)
    assert downscaled_size(1023, 767, 4) == (255, 191)  # gsplat: W // F; nerfstudio: floor (its default)
    assert downscaled_size(9, 9, 9) == (1, 1)
    with pytest.raises(InputError, match="larger than an image of 9x8"):
        downscaled_size(9, 8, 9)


@pytest.mark.parametrize("bad", [1, 0, -2, 2.0, 2.5, "2", True, None])
def test_check_downscale_factors_refuses_non_integers_and_factors_below_2(bad):
    with pytest.raises(InputError, match="downscale factor"):
        check_downscale_factors([2, bad])


def test_check_downscale_factors_sorts_and_deduplicates():
    assert check_downscale_factors([8, 2, 4, 2]) == (2, 4, 8)
    assert check_downscale_factors(()) == ()


def _gradient(width: int, height: int) -> np.ndarray:
    """(H, W, 3) uint8: red = 2 * column index, green = 3 * row index (linear in the pixel centres)."""
    x = np.broadcast_to(2 * np.arange(width)[None, :], (height, width))
    y = np.broadcast_to(3 * np.arange(height)[:, None], (height, width))
    return np.stack([x, y, np.full((height, width), 128)], axis=-1).astype(np.uint8)


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_copy_has_scale_exactly_one_over_the_factor(tmp_path, factor):
    """Pixel j of the copy is centred on source pixel coordinate (j + 0.5)·f (COLMAP pixels: x' = x / f),
    also when f does not divide the size (a resize of the whole image would stretch it by W / (f·floor(W/f)))."""
    width, height = 101, 77
    source = tmp_path / "a.png"
    Image.fromarray(_gradient(width, height)).save(source)
    target = tmp_path / f"images_{factor}" / "a.png"
    assert write_downscaled_copies(source, {factor: target}) == 1
    with Image.open(target) as copy:
        assert copy.format == "PNG" and copy.mode == "RGB"
        assert copy.size == (width // factor, height // factor)
        pixels = np.asarray(copy).astype(float)
    w, h = copy.size
    centres_x = (np.arange(w) + 0.5) * factor - 0.5  # source pixel index at each copy pixel's centre
    centres_y = (np.arange(h) + 0.5) * factor - 0.5
    inner = slice(2, -2)  # away from the borders, where the filter is cut
    np.testing.assert_allclose(pixels[h // 2, inner, 0], 2 * centres_x[inner], atol=1.01)
    np.testing.assert_allclose(pixels[inner, w // 2, 1], 3 * centres_y[inner], atol=1.01)


def test_jpeg_stays_jpeg_with_its_name_and_colour_profile(tmp_path):
    source = tmp_path / "photo.jpg"
    Image.fromarray(_gradient(64, 48)).save(source, quality=95, icc_profile=b"fake profile")
    targets = {2: tmp_path / "images_2" / "photo.jpg", 4: tmp_path / "images_4" / "photo.jpg"}
    assert write_downscaled_copies(source, targets) == 2
    for factor, path in targets.items():
        with Image.open(path) as copy:
            assert copy.format == "JPEG" and copy.size == (64 // factor, 48 // factor)
            assert copy.info.get("icc_profile") == b"fake profile"


def test_rerun_keeps_current_copies_and_redoes_stale_ones(tmp_path):
    source = tmp_path / "a.png"
    Image.fromarray(_gradient(40, 30)).save(source)
    targets = {2: tmp_path / "images_2" / "a.png", 4: tmp_path / "images_4" / "a.png"}
    assert write_downscaled_copies(source, targets) == 2
    stamps = {f: p.stat().st_mtime_ns for f, p in targets.items()}
    contents = {f: p.read_bytes() for f, p in targets.items()}
    assert write_downscaled_copies(source, targets) == 0  # unchanged source: nothing decoded or written
    assert {f: p.stat().st_mtime_ns for f, p in targets.items()} == stamps
    Image.fromarray(_gradient(40, 30)).save(targets[4])  # a copy that is not ours any more (no key)
    assert write_downscaled_copies(source, targets) == 1
    assert targets[4].read_bytes() == contents[4]
    Image.fromarray(255 - _gradient(40, 30)).save(source)  # the source changed: both copies redone
    assert write_downscaled_copies(source, targets) == 2
    assert targets[2].read_bytes() != contents[2]


def _write_inputs(folder, scene):
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(scene.image_names):
        camera = scene.cameras[int(scene.camera_of_image[i])]
        Image.fromarray(_gradient(camera.width, camera.height)).save(folder / name, quality=95)
    return [read_image_info(folder / name, name) for name in scene.image_names]


def test_export_writes_downscaled_folders_with_the_names_of_images(tmp_path):
    scene = synthetic_scene(("a.jpg", "b.png", "c.jpg"))
    infos = _write_inputs(tmp_path / "photos", scene)
    claimed = []
    out = export_gaussian_splatting_folder(
        scene, infos, tmp_path / "out", centre_principal_points=False, downscales=(4, 2), claim=claimed.extend
    )  # fmt: skip
    rec = pycolmap.Reconstruction(str(out / "sparse" / "0"))
    names = sorted(p.name for p in (out / "images").iterdir())
    for factor in (2, 4):
        folder = out / f"images_{factor}"
        assert sorted(p.name for p in folder.iterdir()) == names  # gsplat pairs the folders by sorted name
        for image in rec.images.values():
            camera = rec.cameras[image.camera_id]
            with Image.open(folder / image.name) as copy, Image.open(out / "images" / image.name) as full:
                assert copy.size == (camera.width // factor, camera.height // factor)
                assert copy.format == full.format
            assert folder / image.name in claimed  # claimed in the manifest before being written


def test_export_refuses_a_factor_larger_than_an_image_before_writing(tmp_path):
    scene = synthetic_scene(("a.jpg", "b.jpg"))  # 64x48 and 48x64 cameras
    infos = _write_inputs(tmp_path / "photos", scene)
    with pytest.raises(InputError, match="factor 50 is larger"):
        export_gaussian_splatting_folder(
            scene, infos, tmp_path / "out", centre_principal_points=False, downscales=(2, 50)
        )  # fmt: skip
    assert not (tmp_path / "out").exists()
    with pytest.raises(InputError, match="below 2"):
        export_gaussian_splatting_folder(scene, infos, tmp_path / "out", downscales=(1,))
    assert not (tmp_path / "out").exists()
