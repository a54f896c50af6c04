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

    AUTO = "AUTO"  # bundle adjustment only: SIMPLE_PINHOLE when fx ≈ fy (1 %), else PINHOLE
    SIMPLE_PINHOLE = "SIMPLE_PINHOLE"  # one focal (the mean of fx, fy)
    PINHOLE = "PINHOLE"  # fx, fy, cx, cy

    @classmethod
    def _missing_(cls, value: object) -> CameraModel | None:
        if isinstance(value, str):
            return cls.__members__.get(value.upper())
        return None


#: The models a user may ask the reconstruction to write (``AUTO`` is the bundle adjustment's own choice).
WRITTEN_MODELS = (CameraModel.PINHOLE, CameraModel.SIMPLE_PINHOLE)
