"""SIFT keypoints and descriptors of one image (the weight-free classic backend), through pycolmap.

Pure function on arrays: the pipeline loads the image (EXIF applied) and caches the result.

Conventions (checked in ``tests/sfm/test_sift.py``):

- pycolmap's SIFT already returns keypoints in COLMAP's pixel convention at the image it saw (a Gaussian
  blob centred on pixel *index* (70, 50) is detected at (70.5, 50.5)). When the image is downscaled before
  extraction (``SiftConf.max_image_size``), keypoints are mapped back with ``x * W / w``, ``y * H / h``,
  which is exact in that convention (image borders map to image borders), and scales with the mean factor.
  So :class:`SiftFeatures` keypoints are always in ORIGINAL image pixels, COLMAP convention (DESIGN.md §2).
- Colour images are converted to grey with COLMAP's own conversion (``Bitmap.clone_as_grey``, Rec. 709
  luma) and downscaled with COLMAP's bilinear ``Bitmap.rescale``, exactly as ``colmap feature_extractor``.
- Descriptors are COLMAP's uint8 SIFT descriptors: L1-root ("RootSIFT") normalised, times 512, rounded,
  i.e. what a COLMAP database stores. Their L2 norm is about 512; matching normalises them (two_view.py).

pycolmap 4.2.1 here is built without CUDA, so extraction runs on the CPU; a CUDA build of pycolmap would be
picked automatically (``device="auto"``), giving SiftGPU features (similar, not bit-identical).
"""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # imported where used: a cached rerun needs no pycolmap (~0.1 s)
    import pycolmap

logger = logging.getLogger(__name__)

__all__ = ["PRESETS", "SiftConf", "SiftFeatures", "extract_sift"]

DESCRIPTOR_DIM = 128


@dataclass(frozen=True, kw_only=True)
class SiftConf:
    """SIFT extraction options. Every field changes the features, so every field belongs to the cache key.

    Defaults measured on strecha_fountain_P11 at full resolution (3072x2048; 4 images, 6 pairs, GT camera
    prior, pair median / max relative-rotation error; extraction time per image on one loaded CPU thread):
    max_image_size 1024 / 1600 / 3200 with 8192 features: 0.047 / 0.045 / 0.042 deg median, 0.11 / 0.12 / 0.12
    deg max, 4.8 / 8.9 / 29.7 s. 4096 instead of 8192 features at 1600 px: 0.040 deg median but 0.17 deg max,
    matching about 2.5x faster. So: 1600 px (COLMAP's 3200 costs 3x the time for nothing measurable here)
    and COLMAP's 8192 features (the "fast" preset takes 1024 px / 4096).
    """

    # Longest image side (pixels) at which SIFT runs; larger images are downscaled first, keypoints mapped
    # back to original pixels. 0 disables downscaling.
    max_image_size: int = 1600
    # Hard cap on the number of keypoints (pycolmap's own cap is soft, it counts orientations per location):
    # the keypoints of largest scale are kept, as COLMAP does. 0 = no cap.
    max_num_features: int = 8192
    first_octave: int = -1  # -1 upsamples the image once: more small-scale features (COLMAP default)
    num_octaves: int = 4
    octave_resolution: int = 3  # scales per octave
    peak_threshold: float = 0.02 / 3  # DoG contrast threshold (COLMAP default 0.02 / octave_resolution)
    edge_threshold: float = 10.0  # max ratio of principal curvatures
    max_num_orientations: int = 2  # a location may yield up to this many keypoints (one per orientation)
    upright: bool = False  # True: no orientation assignment (all 0): for upright-only captures
    domain_size_pooling: bool = False  # DSP-SIFT descriptors (slower, slightly better matching)

    def __post_init__(self) -> None:
        if self.max_image_size < 0 or self.max_num_features < 0:
            raise ValueError(f"max_image_size and max_num_features must be >= 0 (0 = off), got {self}")
        if self.peak_threshold <= 0 or self.edge_threshold <= 0 or self.octave_resolution < 1:
            raise ValueError(f"invalid SIFT thresholds or octave resolution in {self}")


PRESETS: dict[str, SiftConf] = {
    "default": SiftConf(),
    # Faster, for previews and large collections.
    "fast": SiftConf(max_image_size=1024, max_num_features=4096),
    # COLMAP's own defaults for large photos.
    "colmap": SiftConf(max_image_size=3200, max_num_features=8192),
}


@dataclass(frozen=True, eq=False)
class SiftFeatures:
    """SIFT features of one image. N may be 0 (texture-less or tiny image): arrays are then empty.

    Keypoint i is referred to by its index i in every pair of this image (``PairResult.idx_*``).
    """

    keypoints: np.ndarray  # (N, 2) float32, x y in original image pixels, COLMAP convention
    scales: np.ndarray  # (N,) float32, SIFT scale in original image pixels
    orientations: np.ndarray  # (N,) float32, radians
    descriptors: np.ndarray  # (N, 128) uint8, RootSIFT * 512 (COLMAP database format)
    width: int  # original image width in pixels
    height: int  # original image height in pixels

    def __post_init__(self) -> None:
        n = self.keypoints.shape[0]
        if (
            self.keypoints.shape != (n, 2)
            or self.scales.shape != (n,)
            or self.orientations.shape != (n,)
            or self.descriptors.shape != (n, DESCRIPTOR_DIM)
        ):
            raise ValueError(
                f"inconsistent SiftFeatures shapes: {self.keypoints.shape=} {self.scales.shape=} "
                f"{self.orientations.shape=} {self.descriptors.shape=}, expected (N, 2), (N,), (N,), (N, 128)"
            )

    def __len__(self) -> int:
        return int(self.keypoints.shape[0])

    @classmethod
    def empty(cls, width: int, height: int) -> SiftFeatures:
        """Features of an image without any keypoint."""
        return cls(
            keypoints=np.zeros((0, 2), np.float32),
            scales=np.zeros(0, np.float32),
            orientations=np.zeros(0, np.float32),
            descriptors=np.zeros((0, DESCRIPTOR_DIM), np.uint8),
            width=width,
            height=height,
        )


def extract_sift(
    image: np.ndarray,  # (H, W, 3) uint8 RGB, or (H, W) uint8 grey; original image (EXIF applied)
    conf: SiftConf = SiftConf(),
    *,
    device: str = "auto",  # "auto" (CUDA if pycolmap has it), "cpu" or "cuda"
    num_threads: int = -1,  # CPU threads for pycolmap (-1: all cores); does not change the result
) -> SiftFeatures:
    """SIFT features of one image, keypoints in original-image pixels (COLMAP convention).

    The image is converted to grey and downscaled so that its longest side is at most
    ``conf.max_image_size``; at most ``conf.max_num_features`` keypoints (largest scales) are kept.
    """
    import pycolmap

    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"extract_sift expects a (H, W, 3) or (H, W) uint8 image, got {image.shape} {image.dtype}")
    height, width = image.shape[:2]
    if height == 0 or width == 0:
        return SiftFeatures.empty(width, height)

    bitmap = pycolmap.Bitmap.from_array(np.ascontiguousarray(image))
    if not bitmap.is_grey:
        bitmap = bitmap.clone_as_grey()
    scale = 1.0
    if conf.max_image_size and max(width, height) > conf.max_image_size:
        scale = conf.max_image_size / max(width, height)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        bitmap.rescale(new_w, new_h)

    extractor = _extractor(conf, _pycolmap_device(device), num_threads, threading.get_ident())
    kps, descs = extractor.extract(bitmap)
    kp = pycolmap.keypoints_to_matrix(kps).astype(np.float32).reshape(-1, 4)  # x, y, scale, orientation
    desc = np.asarray(descs.data, dtype=np.uint8).reshape(-1, DESCRIPTOR_DIM)

    if bitmap.width != width or bitmap.height != height:
        sx, sy = width / bitmap.width, height / bitmap.height
        kp[:, 0] *= sx
        kp[:, 1] *= sy
        kp[:, 2] *= 0.5 * (sx + sy)
    if conf.max_num_features and len(kp) > conf.max_num_features:
        # Keep the largest scales (COLMAP's choice); stable, and keep the original order of the survivors.
        keep = np.sort(np.argsort(-kp[:, 2], kind="stable")[: conf.max_num_features])
        kp, desc = kp[keep], desc[keep]
    logger.debug("SIFT: %d keypoints on a %dx%d image (scale %.3f)", len(kp), width, height, scale)
    return SiftFeatures(
        keypoints=np.ascontiguousarray(kp[:, :2]),
        scales=np.ascontiguousarray(kp[:, 2]),
        orientations=np.ascontiguousarray(kp[:, 3]),
        descriptors=np.ascontiguousarray(desc),
        width=width,
        height=height,
    )


def _pycolmap_device(device: str) -> pycolmap.Device:
    import pycolmap

    if device == "auto":
        return pycolmap.Device.cuda if pycolmap.has_cuda else pycolmap.Device.cpu
    if device == "cpu":
        return pycolmap.Device.cpu
    if device.startswith("cuda"):
        if not pycolmap.has_cuda:
            raise ValueError("device='cuda' asked for SIFT, but this pycolmap is built without CUDA: use 'cpu'")
        return pycolmap.Device.cuda
    raise ValueError(f"unknown device {device!r}: use 'auto', 'cpu' or 'cuda'")


@functools.lru_cache(maxsize=8)
def _extractor(conf: SiftConf, device: pycolmap.Device, num_threads: int, thread_id: int) -> pycolmap.FeatureExtractor:
    """A pycolmap extractor per (conf, device, threads, calling thread).

    Built once and reused (building one per image costs time); one per thread because COLMAP's extractor
    keeps per-image-size scratch state and is not safe to share between threads.
    """
    import pycolmap

    opts = pycolmap.FeatureExtractionOptions()
    opts.num_threads = num_threads
    sift = opts.sift
    sift.max_num_features = conf.max_num_features or 1 << 30
    sift.first_octave = conf.first_octave
    sift.num_octaves = conf.num_octaves
    sift.octave_resolution = conf.octave_resolution
    sift.peak_threshold = conf.peak_threshold
    sift.edge_threshold = conf.edge_threshold
    sift.max_num_orientations = conf.max_num_orientations
    sift.upright = conf.upright
    sift.domain_size_pooling = conf.domain_size_pooling
    return pycolmap.FeatureExtractor.create(opts, device=device)
