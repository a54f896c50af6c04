"""SIFT extraction: pixel convention, downscaling, caps, dtypes, degenerate images."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import DATA

from sfm3r.sfm.classic.sift import PRESETS, SiftConf, SiftFeatures, extract_sift

FOUNTAIN = DATA / "strecha_fountain_P11" / "images_1024"


def _blob(height: int, width: int, cx: float, cy: float, sigma: float) -> np.ndarray:
    """A bright Gaussian blob centred on pixel *index* (cx, cy), i.e. COLMAP position (cx + 0.5, cy + 0.5)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    return (255 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))).astype(np.uint8)


def _load(name: str) -> np.ndarray:
    Image = pytest.importorskip("PIL.Image")
    path = FOUNTAIN / name
    if not path.exists():
        pytest.skip(f"shared data not found: {path}")
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def fountain_features() -> tuple[np.ndarray, SiftFeatures]:
    image = _load("0000.jpg")
    return image, extract_sift(image, SiftConf(max_image_size=640, max_num_features=2048))


def test_keypoints_use_colmap_pixel_convention():
    """pycolmap's keypoints are already COLMAP convention: the blob at pixel index (70, 50) is at (70.5, 50.5)."""
    feats = extract_sift(_blob(120, 160, 70, 50, 4.0))
    assert len(feats) >= 1
    np.testing.assert_allclose(feats.keypoints, np.broadcast_to([70.5, 50.5], feats.keypoints.shape), atol=0.05)


def test_downscaled_extraction_returns_original_pixels_and_scales():
    full = extract_sift(_blob(240, 320, 140, 100, 8.0), SiftConf(max_image_size=0))
    half = extract_sift(_blob(240, 320, 140, 100, 8.0), SiftConf(max_image_size=160))
    assert len(full) >= 1 and len(half) >= 1
    # The blob's own keypoint (SIFT ran at half resolution) comes back at its original-pixel position;
    # a half-pixel convention slip would put it 0.5 px off.
    nearest = lambda f: np.argmin(np.linalg.norm(f.keypoints - [140.5, 100.5], axis=1))  # noqa: E731
    np.testing.assert_allclose(half.keypoints[nearest(half)], [140.5, 100.5], atol=0.1)
    np.testing.assert_allclose(half.scales[nearest(half)], full.scales[nearest(full)], rtol=0.1)
    assert (half.width, half.height) == (320, 240)


def test_real_image_features_have_documented_shapes_and_dtypes(fountain_features):
    image, feats = fountain_features
    n = len(feats)
    assert 500 < n <= 2048
    assert feats.keypoints.shape == (n, 2) and feats.keypoints.dtype == np.float32
    assert feats.scales.shape == (n,) and feats.scales.dtype == np.float32 and (feats.scales > 0).all()
    assert feats.orientations.shape == (n,) and feats.orientations.dtype == np.float32
    assert feats.descriptors.shape == (n, 128) and feats.descriptors.dtype == np.uint8
    assert (feats.width, feats.height) == (image.shape[1], image.shape[0])
    # Keypoints in original pixels although SIFT ran at 640 px: they span the whole 1024-wide image.
    assert (feats.keypoints >= 0).all() and (feats.keypoints <= [feats.width, feats.height]).all()
    assert feats.keypoints[:, 0].max() > 900
    # COLMAP's RootSIFT * 512 format.
    np.testing.assert_allclose(np.linalg.norm(feats.descriptors.astype(np.float64), axis=1), 512, rtol=0.02)


def test_max_num_features_is_a_hard_cap_keeping_the_largest_scales(fountain_features):
    image, feats = fountain_features
    capped = extract_sift(image, SiftConf(max_image_size=640, max_num_features=300))
    assert len(capped) == 300
    # The survivors are the largest-scale keypoints of the uncapped set (same extraction otherwise).
    assert capped.scales.min() >= np.sort(feats.scales)[-300] - 1e-4


def test_grey_image_equals_rgb_image_with_equal_channels():
    rng = np.random.default_rng(0)
    grey = (rng.random((96, 128)) * 255).astype(np.uint8)
    grey = np.kron(grey[::8, ::8], np.ones((8, 8), np.uint8))  # blocky texture: many corners
    a = extract_sift(grey)
    b = extract_sift(np.repeat(grey[..., None], 3, axis=2))
    assert len(a) > 10
    np.testing.assert_array_equal(a.keypoints, b.keypoints)
    np.testing.assert_array_equal(a.descriptors, b.descriptors)


@pytest.mark.parametrize("shape", [(100, 120, 3), (8, 8, 3), (0, 5, 3)])
def test_textureless_or_tiny_image_gives_empty_features(shape):
    feats = extract_sift(np.full(shape, 128, np.uint8))
    assert len(feats) == 0
    assert feats.keypoints.shape == (0, 2) and feats.descriptors.shape == (0, 128)
    assert (feats.width, feats.height) == (shape[1], shape[0])


def test_bad_input_and_conf_are_rejected():
    with pytest.raises(ValueError, match="uint8"):
        extract_sift(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        extract_sift(np.zeros((10, 10, 4), np.uint8))
    with pytest.raises(ValueError, match="max_image_size"):
        SiftConf(max_image_size=-1)
    with pytest.raises(ValueError, match="without CUDA|unknown device"):
        extract_sift(np.zeros((10, 10), np.uint8), device="tpu")


def test_presets_are_valid_confs():
    assert set(PRESETS) >= {"default", "fast"}
    assert all(isinstance(c, SiftConf) for c in PRESETS.values())
    assert PRESETS["default"] == SiftConf()
