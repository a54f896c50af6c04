"""SIFT features of an image file: the unit of work of the feature-extraction worker processes.

Kept apart from pipelines/classic.py so that a worker process imports only what it needs (numpy, Pillow,
pycolmap), not the cache, the matcher or torch.
"""

from __future__ import annotations

from pathlib import Path

from sfm3r.io.images import read_image
from sfm3r.sfm.classic.sift import SiftConf, SiftFeatures, extract_sift

__all__ = ["sift_of_file"]


def sift_of_file(job: tuple[Path, SiftConf]) -> SiftFeatures:
    """(image path, SIFT options) -> the SIFT features of the image as displayed (EXIF orientation applied)."""
    path, conf = job
    return extract_sift(read_image(path), conf)
