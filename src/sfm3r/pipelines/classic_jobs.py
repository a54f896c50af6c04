"""Units of work of the classic backend's worker processes (pipelines/process_pool.py).

pycolmap's SIFT extraction and its two-view RANSAC hold the GIL, so the classic backend runs them in
worker processes, one per core. This module is what a worker imports: kept apart from
pipelines/classic.py so that it loads only numpy, Pillow and pycolmap, not the cache, the matcher or
torch. Each job is a picklable tuple; a verification job carries the keypoints, not the descriptors, and
a self-calibration job the matched keypoints alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sfm3r.io.images import read_image
from sfm3r.sfm.classic.sift import SiftConf, SiftFeatures, extract_sift
from sfm3r.sfm.classic.two_view import VerifyArgs, verify_keypoint_matches
from sfm3r.types import PairResult

__all__ = ["FundamentalJob", "VerifyJob", "fundamental_job", "sift_of_file", "verify_job"]

VerifyJob = VerifyArgs  # one pair's verify_keypoint_matches arguments (sfm/classic/two_view.py)


# (matched keypoints of image i (M, 2) float64, their matches in image j (M, 2) float64, RANSAC max error px,
#  RANSAC minimum number of trials, RANSAC confidence)
FundamentalJob = tuple[np.ndarray, np.ndarray, float, int, float]


def sift_of_file(job: tuple[Path, SiftConf]) -> SiftFeatures:
    """(image path, SIFT options) -> the SIFT features of the image as displayed (EXIF orientation applied)."""
    path, conf = job
    return extract_sift(read_image(path), conf)


def verify_job(job: VerifyJob) -> PairResult:
    """Geometric verification and pairwise 3D of one pair's putative matches (two_view.verify_keypoint_matches)."""
    return verify_keypoint_matches(*job)


def fundamental_job(job: FundamentalJob) -> tuple[np.ndarray, int] | None:
    """F (x_j^T F x_i = 0, (3, 3)) of one pair's matched keypoints by seeded LO-RANSAC and its inlier count;
    None when no F was found. Seeded: the same F in a worker as here."""
    import pycolmap

    xy_i, xy_j, max_error, min_trials, confidence = job
    options = pycolmap.RANSACOptions(max_error=max_error, random_seed=0, num_threads=1)
    options.min_num_trials, options.confidence = min_trials, confidence
    found = pycolmap.estimate_fundamental_matrix(xy_i, xy_j, options)
    return None if found is None else (np.asarray(found["F"], np.float64), int(found["num_inliers"]))
