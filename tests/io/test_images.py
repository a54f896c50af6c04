"""Image files: listing, decoding (EXIF, colour modes, broken files), infos, network preprocessing."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES
from PIL import Image, ImageFile, TiffImagePlugin

from sfm3r.errors import ImageReadError, InputError
from sfm3r.io.images import (
    DecodedImages,
    list_image_files,
    load_image_infos,
    preprocess_for_network,
    read_image,
    read_image_info,
    resize_for_network,
)

PREPROCESS = FIXTURES / "preprocess"
TINY = FIXTURES / "mast3r_tiny"


def _pattern(height: int = 30, width: int = 40) -> np.ndarray:
    """(H, W, 3) uint8 with no symmetry: every pixel distinct, so any flip or rotation is visible."""
    ys, xs = np.mgrid[0:height, 0:width]
    return np.stack([xs * 6 % 256, ys * 8 % 256, (xs + 3 * ys) % 256], axis=-1).astype(np.uint8)


def _stored_for_orientation(displayed: np.ndarray, orientation: int) -> np.ndarray:
    """The pixels a camera stores so that EXIF `orientation` displays `displayed`.

    From the EXIF definition of where the stored 0th row / 0th column appear, independent of Pillow.
    """
    return {
        1: lambda d: d,
        2: lambda d: d[:, ::-1],  # row 0 top, column 0 right
        3: lambda d: d[::-1, ::-1],  # row 0 bottom, column 0 right
        4: lambda d: d[::-1, :],  # row 0 bottom, column 0 left
        5: lambda d: d.transpose(1, 0, 2),  # row 0 left, column 0 top
        6: lambda d: np.rot90(d, 1),  # row 0 right, column 0 top
        7: lambda d: d[::-1, ::-1].transpose(1, 0, 2),  # row 0 right, column 0 bottom
        8: lambda d: np.rot90(d, -1),  # row 0 left, column 0 bottom
    }[orientation](displayed)


def _save(path: Path, rgb: np.ndarray, orientation: int = 1, **kwargs) -> Path:
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(np.ascontiguousarray(rgb)).save(path, exif=exif, **kwargs)
    return path


# --------------------------------------------------------------------------------------------------
# list_image_files


def test_list_image_files_finds_every_extension_in_any_case_sorted(tmp_path):
    names = ["b.JPG", "a.jpeg", "c.png", "d.WebP", "e.bmp", "f.tif", "g.TIFF"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "._a.jpg").write_bytes(b"macOS resource fork")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "h.jpg").write_bytes(b"x")
    (tmp_path / "dir.jpg").mkdir()  # a folder with an image-like name is not a file
    found = list_image_files(tmp_path)
    assert [p.name for p in found] == sorted(names)


def test_list_image_files_recursive_sorts_by_relative_name(tmp_path):
    for rel in ["z.jpg", "a/y.jpg", "a/b/x.png", "b.jpg", ".hidden/w.jpg"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    found = list_image_files(tmp_path, recursive=True)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["a/b/x.png", "a/y.jpg", "b.jpg", "z.jpg"]
    assert [p.name for p in list_image_files(tmp_path)] == ["b.jpg", "z.jpg"]


@pytest.mark.parametrize("case", ["missing", "file", "empty", "only_subfolder"])
def test_list_image_files_bad_folder_names_folder_and_extensions(tmp_path, case):
    folder = tmp_path / "photos"
    if case == "file":
        folder.write_text("x")
    elif case in ("empty", "only_subfolder"):
        folder.mkdir()
    if case == "only_subfolder":
        (folder / "sub").mkdir()
        (folder / "sub" / "a.jpg").write_bytes(b"x")
    with pytest.raises(InputError) as info:
        list_image_files(folder)
    assert str(folder) in str(info.value)
    assert "*.jpg" in str(info.value) and "*.png" in str(info.value)


# --------------------------------------------------------------------------------------------------
# read_image: EXIF orientation and colour modes


@pytest.mark.parametrize("orientation", range(1, 9))
def test_read_image_applies_every_exif_orientation(tmp_path, orientation):
    displayed = _pattern()
    path = _save(tmp_path / "o.png", _stored_for_orientation(displayed, orientation), orientation)
    np.testing.assert_array_equal(read_image(path), displayed)


def test_read_image_applies_exif_orientation_of_a_jpeg(tmp_path):
    displayed = np.zeros((48, 64, 3), np.uint8)
    displayed[:16, :32] = (255, 0, 0)  # a red block in the top-left corner, as displayed
    path = _save(tmp_path / "o.jpg", _stored_for_orientation(displayed, 6), 6, quality=95)
    got = read_image(path)
    assert got.shape == displayed.shape
    assert np.abs(got.astype(int) - displayed).mean() < 3


def test_read_image_converts_colour_modes_to_rgb(tmp_path):
    rgb = _pattern()
    grey = rgb[..., 0]
    Image.fromarray(grey, "L").save(tmp_path / "l.png")
    np.testing.assert_array_equal(read_image(tmp_path / "l.png"), np.repeat(grey[..., None], 3, 2))

    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 7, np.uint8)], axis=2)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), rgb)  # alpha dropped, not composited

    Image.fromarray(np.stack([grey, grey], 2), "LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(read_image(tmp_path / "la.png"), np.repeat(grey[..., None], 3, 2))

    Image.fromarray(rgb).quantize(colors=16).save(tmp_path / "p.png")
    palette = read_image(tmp_path / "p.png")
    assert palette.shape == rgb.shape and palette.dtype == np.uint8
    assert len(np.unique(palette.reshape(-1, 3), axis=0)) <= 16

    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=100)
    assert np.abs(read_image(tmp_path / "cmyk.jpg").astype(int) - rgb).mean() < 8


def test_read_image_scales_16_bit_images_to_8_bit(tmp_path):
    values = np.array([[0, 257, 32896, 65535]], np.uint16)  # -> 0, 1, 128, 255
    Image.fromarray(values).save(tmp_path / "g16.png")
    got = read_image(tmp_path / "g16.png")
    assert got.dtype == np.uint8 and got.shape == (1, 4, 3)
    np.testing.assert_array_equal(got[0, :, 0], [0, 1, 128, 255])
    np.testing.assert_array_equal(got[..., 0], got[..., 2])


# --------------------------------------------------------------------------------------------------
# read_image: broken files


def _jpeg_bytes(tmp_path: Path) -> bytes:
    return _save(tmp_path / "full.jpg", _pattern(120, 160), quality=90).read_bytes()


def test_read_image_rejects_missing_empty_and_garbage_files(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.png").write_text("this is not a picture")
    for name in ["missing.jpg", "empty.jpg", "text.png"]:
        with pytest.raises(ImageReadError, match=name):
            read_image(tmp_path / name)


@pytest.mark.parametrize("kept_fraction", [0.3, 0.9, "all but 2 bytes"])
def test_read_image_rejects_truncated_jpeg(tmp_path, kept_fraction):
    data = _jpeg_bytes(tmp_path)
    keep = len(data) - 2 if kept_fraction == "all but 2 bytes" else int(len(data) * kept_fraction)
    (tmp_path / "cut.jpg").write_bytes(data[:keep])
    with pytest.raises(ImageReadError, match="cut.jpg"):
        read_image(tmp_path / "cut.jpg")
    with pytest.raises(ImageReadError, match="cut.jpg"):  # the 1/8-scale check decodes every byte too
        read_image_info(tmp_path / "cut.jpg", "cut.jpg")


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_truncated_files_are_rejected_even_if_pillow_was_told_to_accept_them(tmp_path, monkeypatch, suffix):
    """Regression: with Pillow's global LOAD_TRUNCATED_IMAGES on, half a file used to load grey-padded
    (for PNG through the EXIF lookup, which decodes the file before the strict check)."""
    Image.fromarray(_pattern(120, 160)).save(tmp_path / f"full{suffix}")  # a PNG without EXIF: see above
    data = (tmp_path / f"full{suffix}").read_bytes()
    (tmp_path / f"cut{suffix}").write_bytes(data[: len(data) // 2])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(ImageReadError, match=f"cut{suffix}"):
        read_image(tmp_path / f"cut{suffix}")
    with pytest.raises(ImageReadError, match=f"cut{suffix}"):
        read_image_info(tmp_path / f"cut{suffix}", f"cut{suffix}")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is restored


def test_read_image_rejects_truncated_png(tmp_path):
    Image.fromarray(_pattern(100, 100)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="cut.png"):
        read_image(tmp_path / "cut.png")



# --------------------------------------------------------------------------------------------------
# DecodedImages


def test_decoded_images_decode_each_file_once_and_hand_out_read_only_arrays(tmp_path):
    paths = [_save(tmp_path / f"{k}.png", np.roll(_pattern(), k, axis=1)) for k in range(3)]
    decoded = DecodedImages(budget_bytes=10**6)
    first = [decoded(path) for path in paths]
    again = [decoded(path) for path in paths]
    assert decoded.reused == 3 and all(a is b for a, b in zip(first, again))
    for path, rgb in zip(paths, again):
        np.testing.assert_array_equal(rgb, read_image(path))
        with pytest.raises(ValueError):
            rgb[0, 0, 0] = 1  # shared: read-only
    decoded.clear()
    assert decoded.held_bytes == 0 and decoded(paths[0]) is not first[0]


def test_decoded_images_keep_no_more_than_their_budget(tmp_path):
    paths = [_save(tmp_path / f"{k}.png", _pattern()) for k in range(3)]  # 30 x 40 x 3 = 3600 bytes each
    decoded = DecodedImages(budget_bytes=2 * 3600)
    for _ in range(2):
        for path in paths:
            decoded(path)
    assert decoded.held_bytes == 7200 and decoded.reused == 2  # the first two kept, the third decoded twice


def test_decoded_images_decode_a_file_changed_since_anew(tmp_path):
    path = _save(tmp_path / "a.png", _pattern())
    decoded = DecodedImages(budget_bytes=10**6)
    decoded(path)
    stat = os.stat(path)
    _save(path, _pattern()[::-1])
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a new mtime even on coarse clocks
    np.testing.assert_array_equal(decoded(path), _pattern()[::-1])
    assert decoded.reused == 0
    with pytest.raises(ImageReadError):
        decoded(tmp_path / "missing.png")

# --------------------------------------------------------------------------------------------------
# load_image_infos


def _exif_with_focal(**tags) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = 1
    sub = exif.get_ifd(0x8769)
    for tag, value in tags.items():
        sub[int(tag[1:], 16)] = value
    return exif


def test_load_image_infos_names_hashes_sizes_after_exif(tmp_path):
    _save(tmp_path / "plain.png", _pattern(30, 40))
    (tmp_path / "sub").mkdir()
    _save(tmp_path / "sub" / "turned.jpg", _stored_for_orientation(_pattern(30, 40), 6), 6)
    infos = load_image_infos(tmp_path, recursive=True)
    assert [i.name for i in infos] == ["plain.png", "sub/turned.jpg"]
    for info in infos:
        assert info.path.is_absolute() and info.path == (tmp_path / info.name).absolute()
        assert info.sha256 == hashlib.sha256(info.path.read_bytes()).hexdigest()
        assert (info.height, info.width) == read_image(info.path).shape[:2] == (30, 40)
        assert info.prior_focal_px is None


def test_load_image_infos_focal_prior_from_35mm_equivalent(tmp_path):
    exif = _exif_with_focal(xA405=28)  # FocalLengthIn35mmFilm = 28 mm
    Image.fromarray(_pattern(30, 40)).save(tmp_path / "a.jpg", exif=exif)
    (info,) = load_image_infos(tmp_path)
    assert info.prior_focal_px == pytest.approx(28 / 36 * 40)


def test_load_image_infos_focal_prior_from_focal_length_and_sensor_resolution(tmp_path):
    # A phone: 4.1 mm lens, a 5.6 mm sensor of 4000 px (5000/7 px per mm, unit 4 = mm), stored at 40 px
    # (26 mm in 35 mm terms: plausible, see test_absurd_exif_focal_is_ignored_with_a_warning).
    exif = _exif_with_focal(
        x920A=TiffImagePlugin.IFDRational(41, 10), xA20E=TiffImagePlugin.IFDRational(5000, 7), xA210=4, xA002=4000
    )
    Image.fromarray(_pattern(30, 40)).save(tmp_path / "a.jpg", exif=exif)
    (info,) = load_image_infos(tmp_path)
    assert info.prior_focal_px == pytest.approx(4.1 * 5000 / 7 * 40 / 4000)


def test_load_image_infos_raises_or_skips_bad_images(tmp_path, caplog):
    _save(tmp_path / "good.png", _pattern())
    data = _jpeg_bytes(tmp_path)
    (tmp_path / "full.jpg").unlink()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="cut.jpg"):
        load_image_infos(tmp_path)
    with caplog.at_level(logging.WARNING, logger="sfm3r.io.images"):
        infos = load_image_infos(tmp_path, skip_bad_images=True)
    assert [i.name for i in infos] == ["good.png"]
    assert any("cut.jpg" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_load_image_infos_all_bad_is_an_input_error(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"")
    with pytest.raises(InputError, match=str(tmp_path)):
        load_image_infos(tmp_path, skip_bad_images=True)


# --------------------------------------------------------------------------------------------------
# Network preprocessing: golden fixtures from the official loader


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


_CASES = json.loads((PREPROCESS / "cases.json").read_text())["cases"] if PREPROCESS.is_dir() else []


@pytest.mark.parametrize("case", _CASES, ids=lambda c: f"{c['source']}-{c['size']}-sq{int(c['square_ok'])}")
def test_preprocess_reproduces_official_loader_bit_for_bit(case):
    rgb = read_image(PREPROCESS / case["source"])
    net_rgb, view = resize_for_network(rgb, size=case["size"], square_ok=case["square_ok"])
    tensor, view2 = preprocess_for_network(rgb, size=case["size"], square_ok=case["square_ok"])
    if _sha256(net_rgb) != case["uint8_sha256"]:  # show where it differs before failing
        expected = np.asarray(Image.open(PREPROCESS / case["output_png"]).convert("RGB"))
        np.testing.assert_array_equal(net_rgb, expected)
    assert _sha256(net_rgb) == case["uint8_sha256"]
    assert tensor.dtype.is_floating_point and tensor.dtype.itemsize == 4
    assert list(tensor.shape) == case["tensor_shape"]
    assert _sha256(tensor.numpy()) == case["tensor_float32_sha256"]
    assert [view.net_height, view.net_width] == case["true_shape"] and view == view2


@pytest.mark.parametrize("name", ["land_a", "land_b", "port_c", "port_d", "land_e"])
def test_preprocess_reproduces_tiny_model_inputs_at_size_64(name):
    if not TINY.is_dir():
        pytest.skip(f"fixtures not found at {TINY}")
    inputs = np.load(TINY / "inputs.npz")
    tensor, view = preprocess_for_network(read_image(TINY / f"src_{name}.png"), size=64)
    np.testing.assert_array_equal(tensor.numpy(), inputs[f"img_{name}"])
    np.testing.assert_array_equal([[view.net_height, view.net_width]], inputs[f"true_shape_{name}"])


@pytest.mark.parametrize("width,height", [(200, 4), (3, 600)])
def test_preprocess_rejects_images_too_elongated_for_the_crop(width, height):
    with pytest.raises(InputError, match="elongated"):
        preprocess_for_network(np.zeros((height, width, 3), np.uint8))


def test_preprocess_rejects_non_rgb_uint8_arrays():
    with pytest.raises(InputError, match="uint8"):
        preprocess_for_network(np.zeros((48, 64, 3), np.float32))


# --------------------------------------------------------------------------------------------------
# NetView: network pixels back to original pixels


def test_net_view_maps_pixel_centres_analytically():
    # 640x480 -> 512x384, no crop: scale 1.25, network pixel 0 covers original [0, 1.25).
    _, view = resize_for_network(np.zeros((480, 640, 3), np.uint8))
    np.testing.assert_allclose(view.net_to_original([[0, 0], [511, 383]]), [[0.625, 0.625], [639.375, 479.375]])
    # 500x500 square -> 512x512 resized, cropped to 512x384 starting 64 rows down.
    _, view = resize_for_network(np.zeros((500, 500, 3), np.uint8))
    assert (view.crop_left, view.crop_top, view.net_width, view.net_height) == (0, 64, 512, 384)
    np.testing.assert_allclose(view.net_to_original([[0, 0]]), [[0.5 * 500 / 512, 64.5 * 500 / 512]])
    # The crop is centred: the first and last network pixel are symmetric about the image centre.
    for width, height, size in [(1000, 563, 512), (333, 500, 512), (640, 480, 224), (300, 199, 224)]:
        _, view = resize_for_network(np.zeros((height, width, 3), np.uint8), size=size)
        first, last = view.net_to_original([[0, 0], [view.net_width - 1, view.net_height - 1]])
        resized_pixel = np.array([view.scale_x, view.scale_y])  # original pixels per resized pixel
        np.testing.assert_allclose(first + last, [width, height], atol=resized_pixel.max() + 1e-9)


def _smooth_image(width: int, height: int) -> tuple[np.ndarray, callable]:
    """A low-frequency image and its analytic colour at continuous (COLMAP) coordinates (N, 2)."""

    def colour(xy: np.ndarray) -> np.ndarray:
        x, y = xy[..., 0], xy[..., 1]
        return np.stack(
            [127.5 + 100 * np.sin(2 * np.pi * x / 128), 127.5 + 100 * np.cos(2 * np.pi * y / 128), 0 * x], -1
        )

    ys, xs = np.mgrid[0:height, 0:width]
    centres = np.stack([xs + 0.5, ys + 0.5], axis=-1)  # COLMAP: pixel (0, 0) is centred at (0.5, 0.5)
    return np.rint(colour(centres)).astype(np.uint8), colour


@pytest.mark.parametrize(
    "width,height,size", [(1024, 768, 512), (800, 800, 512), (950, 565, 512), (600, 450, 224), (400, 300, 512)]
)
def test_net_view_colour_at_network_pixel_matches_original_at_mapped_point(width, height, size):
    """Mean error about 0.3 grey levels; half an original pixel off (a forgotten +0.5) gives about 1.6."""
    rgb, colour = _smooth_image(width, height)
    net_rgb, view = resize_for_network(rgb, size=size)
    ys, xs = np.mgrid[0 : view.net_height, 0 : view.net_width]
    mapped = view.net_to_original(np.stack([xs, ys], axis=-1).reshape(-1, 2))

    def mean_error(xy: np.ndarray) -> float:
        return float(np.abs(net_rgb[..., :2] - colour(xy).reshape(net_rgb.shape)[..., :2]).mean())

    assert mean_error(mapped) < 0.5
    assert mean_error(mapped - 0.5) > 1.0  # the test can see a half-pixel mistake
