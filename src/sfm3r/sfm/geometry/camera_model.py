"""Camera facts shared by every stage: the output camera model (one enum for the reconstruction config and
the bundle adjustment) and the default focal prior."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["DEFAULT_FOCAL_FACTOR", "CameraModel", "WRITTEN_MODELS"]

#: Focal prior when nothing better is known (no EXIF, no self-calibration): DEFAULT_FOCAL_FACTOR · max(W, H)
#: pixels, COLMAP's own default (ImageReaderOptions.default_focal_length_factor), about 45° across the long side.
DEFAULT_FOCAL_FACTOR = 1.2


class CameraModel(StrEnum):
    """COLMAP camera model of the output (values are COLMAP's names; parsing ignores case)."""

    # AUTO: for the reconstruction, the lens model held-out data supports (PINHOLE, SIMPLE_RADIAL, RADIAL or
    # OPENCV: sfm.align.lens_selection; run.json: counts.lens); for the bundle adjustment, the input camera's lens model if it has one, else
    # SIMPLE_PINHOLE when fx ≈ fy (1 %), else PINHOLE.
    AUTO = "AUTO"
    SIMPLE_PINHOLE = "SIMPLE_PINHOLE"  # one focal (the mean of fx, fy)
    PINHOLE = "PINHOLE"  # fx, fy, cx, cy
    SIMPLE_RADIAL = "SIMPLE_RADIAL"  # one focal + k
    RADIAL = "RADIAL"  # one focal + k1, k2
    OPENCV = "OPENCV"  # fx, fy + k1, k2, p1, p2

    @classmethod
    def _missing_(cls, value: object) -> CameraModel | None:
        if isinstance(value, str):
            return cls.__members__.get(value.upper())
        return None


#: The models a user may ask the reconstruction for (`--camera-model`): all of them.
WRITTEN_MODELS = tuple(CameraModel)
