"""Units of work of the classic backend's worker processes (pipelines/process_pool.py).

pycolmap's SIFT extraction and its two-view RANSAC hold the GIL, so the classic backend runs them in
worker processes, one per core. This module is what a worker imports: kept apart from
pipelines/classic.py so that it loads only numpy, Pillow and pycolmap, not the cache, the matcher or
torch. Each job is a picklable tuple; a verification job carries the keypoints, not the descriptors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sfm3r.io.images import read_image
from sfm3r.sfm.classic.sift import SiftConf, SiftFeatures, extract_sift
from sfm3r.sfm.classic.two_view import TwoViewConf, verify_keypoint_matches
from sfm3r.types import Camera, PairResult

__all__ = ["VerifyJob", "sift_of_file", "verify_job"]

# (name_i, name_j, keypoints_i (N_i, 2), keypoints_j (N_j, 2), prior_i, prior_j, matches (M, 2), conf)
VerifyJob = tuple[str, str, np.ndarray, np.ndarray, Camera, Camera, np.ndarray, TwoViewConf]


def sift_of_file(job: tuple[Path, SiftConf]) -> SiftFeatures:
    """(image path, SIFT options) -> the SIFT features of the image as displayed (EXIF orientation applied)."""
    path, conf = job
    return extract_sift(read_image(path), conf)


def verify_job(job: VerifyJob) -> PairResult:
    """Geometric verification and pairwise 3D of one pair's putative matches (two_view.verify_keypoint_matches)."""
    return verify_keypoint_matches(*job)
