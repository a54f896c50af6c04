"""Which images share one camera (focal and principal point) in the alignment.

Most photo sets for 3D reconstruction come from one camera at one zoom (a phone video, a walk-around with
a fixed lens). Giving them one shared focal removes the per-image focal freedom that a ring or a turntable
capture cannot constrain (measured on the Middlebury temple ring, classic backend, all 47 images: AUC@3
50.4 with a focal per image, 69.7 with one shared focal; COLMAP 58.9). Modes (as COLMAP's camera modes):

- ``auto``: images share a camera when they have the same size and the same focal prior (EXIF focal, or
  none) and, for known cameras, the same given intrinsics. Internet photos of different sizes or zooms keep
  their own cameras;
- ``single``: one camera for all images (they must have one size);
- ``per-image``: one camera per image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum

import numpy as np

from sfm3r.errors import InputError
from sfm3r.types import Camera, ImageInfo


class CameraMode(StrEnum):
    AUTO = "auto"  # share within groups of the same size and focal prior
    SINGLE = "single"  # one camera for all images
    PER_IMAGE = "per-image"  # one camera per image


def camera_groups(
    images: Sequence[ImageInfo], mode: CameraMode, known: Mapping[str, Camera] | None = None
) -> np.ndarray:
    """(N,) int64 camera group of each image, numbered 0.. in order of first appearance."""
    mode = CameraMode(mode)
    known = known or {}
    if mode == CameraMode.PER_IMAGE:
        return np.arange(len(images), dtype=np.int64)
    if mode == CameraMode.SINGLE:
        sizes = {(im.width, im.height) for im in images}
        if len(sizes) > 1:
            listed = ", ".join(f"{w}x{h}" for w, h in sorted(sizes))
            raise InputError(
                f"one shared camera needs images of one size, but these images have several sizes ({listed}); "
                "use the default camera mode (auto) or per-image"
            )
        return np.zeros(len(images), dtype=np.int64)
    keys: dict[tuple, int] = {}
    groups = np.empty(len(images), dtype=np.int64)
    for k, im in enumerate(images):
        cam = known.get(im.name)
        given = (cam.fx, cam.fy, cam.cx, cam.cy) if cam is not None else None
        focal = round(float(im.prior_focal_px), 1) if im.prior_focal_px else None
        groups[k] = keys.setdefault((im.width, im.height, focal, given), len(keys))
    return groups
