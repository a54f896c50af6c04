"""Focal of one image size by aligning its pairs from several focal hypotheses (the multi-view sweep).

Pairwise self-calibration (sfm/classic/self_calibration.py) cannot tell the focal under critical motion, e.g. a
ring of cameras aimed at one object: its cost curve is flat. The alignment can, because it refines the
focal against every image at once. So the pairs are verified and aligned from a few focal hypotheses,
and the refined focal of the hypothesis with the most images placed, then the lowest mean reprojection
error, wins.

The hypotheses are tried nearest first to the pairwise curve's (flat, but still informative) minimum,
or to COLMAP's default focal (1.2 max(W, H)) when that minimum lies outside the swept range (templeRing:
296 px, at the wide edge of a flat curve), and the sweep stops early once two
hypotheses placing the most images so far converge to the same refined focal (within ``agree``): both
started in the basin of the one minimum the alignment finds there, and the ones further out, which only
add the wide (0.8 max(W, H)) and tele (4 max(W, H)) ends, are not run. (Until December 2026 the rule
asked for every image to be placed, which a sweep over 30 of a ring's pairs rarely does: templeRing ran
all five alignments, 512 / 768 / 1152 / 1728 / 2560 px -> 1367 / 1511 / 1511 / 1511 / 1511 px, 26 of 27
images each; now it stops after 768 and 1152.) Each hypothesis is aligned without the multi-view track
points (``SWEEP_ALIGN_CONF``): only the refined focal and the anchors' reprojection error are used.
Measured on templeRing (16 images, 42 pairs, GT focal 1520 px): starts 700 / 1000 / 1400-2000 / 2800 px
end at 1099 / 1386 / 1505-1512 / 1988 px with mean errors 0.132 / 0.118 / 0.116 / 0.144 px.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import pkgutil
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

import sfm3r.sfm.align as align_package
from sfm3r.errors import Sfm3rError
from sfm3r.sfm.align.alignment import AlignConf, OutputPoints, align_scene
from sfm3r.sfm.classic.sift import SiftFeatures
from sfm3r.sfm.classic.two_view import (
    DEFAULT_FOCAL_FACTOR,
    TwoViewConf,
    VerifyArgs,
    camera_prior,
    verify_keypoint_matches,
)
from sfm3r.types import ImageInfo, PairResult

logger = logging.getLogger(__name__)

__all__ = ["SWEEP_ALIGN_CONF", "SWEEP_FACTORS", "SweepResult", "multi_view_focal_sweep"]

# Focal hypotheses, as factors of max(W, H): 0.8 (wide) ... 4.0 (tele).
SWEEP_FACTORS = (0.8, 1.2, 1.8, 2.7, 4.0)
# The alignment of each hypothesis: the default one without track points (not used by the sweep).
SWEEP_ALIGN_CONF = AlignConf(points=OutputPoints.ANCHORS)


@dataclass(frozen=True)
class SweepResult:
    focal_px: float | None  # the chosen refined focal; None when no hypothesis could be aligned
    tried: tuple[float, ...]  # the starting focals aligned, in the order tried
    refined: tuple[float, ...]  # their refined focals (NaN where the alignment failed)


class _InfoAsDebug(logging.Filter):
    """Logs a trial alignment's INFO records at DEBUG: they describe a subset of the pairs, not the model (the
    run's log file keeps them, the console does not show them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


@contextmanager
def _trial_alignment_logs() -> Iterator[None]:
    """The loggers of the alignment's modules (sfm3r.sfm.align.*) report INFO at DEBUG while the block runs."""
    quiet = _InfoAsDebug()
    # every module's logger, also of the steps that align_scene imports on first use
    loggers = [logging.getLogger(f"{align_package.__name__}.{module.name}")
               for module in pkgutil.iter_modules(align_package.__path__)]  # fmt: skip
    for item in loggers:
        item.addFilter(quiet)
    try:
        yield
    finally:
        for item in loggers:
            item.removeFilter(quiet)


def multi_view_focal_sweep(
    ordered: Sequence[tuple[ImageInfo, ImageInfo]],
    putative: Mapping[tuple[str, str], np.ndarray],  # (name_i, name_j) -> (M, 2) putative matches
    features: Mapping[str, SiftFeatures],
    width: int,
    height: int,
    conf: TwoViewConf,
    *,
    guess_px: float | None = None,  # the pairwise cost curve's minimum: hypotheses nearest it go first
    factors: Sequence[float] = SWEEP_FACTORS,
    agree: float = 0.01,  # two refined focals this close (relative) end the sweep
    align_conf: AlignConf = SWEEP_ALIGN_CONF,
    verify_many: Callable[[Sequence[VerifyArgs]], Iterable[PairResult]] | None = None,  # e.g. in worker processes
) -> SweepResult:
    """Focal (pixels) of the images of size ``width`` x ``height`` in the pairs ``ordered`` (see module doc).

    ``verify_many`` verifies each hypothesis's pairs (the arguments of :func:`verify_keypoint_matches` per
    pair, results in the same order); None: here, one after the other. The alignments log at DEBUG (their
    steps and the images they leave out are about this subset of the pairs, not the model).
    """
    size = max(width, height)
    starts = [f * size for f in factors]
    inside = guess_px and min(starts) <= guess_px <= max(starts)  # outside: the flat curve's edge, no hint
    first = guess_px if inside else DEFAULT_FOCAL_FACTOR * size
    starts.sort(key=lambda f: abs(math.log(f / first)))
    infos = {info.name: info for pair in ordered for info in pair}
    best: tuple[int, float, float] | None = None  # (-registered, mean error, refined focal)
    most_placed = 0
    complete: list[float] = []  # refined focals of the hypotheses that placed `most_placed` images
    tried, refined_all = [], []
    for focal in starts:
        prior = camera_prior(width, height, focal)
        jobs = [
            (i.name, j.name, features[i.name].keypoints, features[j.name].keypoints, prior, prior,
             putative[(i.name, j.name)], conf)
            for i, j in ordered
        ]  # fmt: skip
        results = list(verify_many(jobs)) if verify_many else [verify_keypoint_matches(*job) for job in jobs]
        images = [dataclasses.replace(info, prior_focal_px=focal) for info in infos.values()]
        tried.append(focal)
        try:
            with _trial_alignment_logs():
                scene = align_scene(results, images, align_conf, report_left_out=False)
        except Sfm3rError:
            refined_all.append(float("nan"))
            continue
        errors = scene.points_error[np.isfinite(scene.points_error)]
        refined = float(np.median([camera.fx for camera in scene.cameras]))
        refined_all.append(refined)
        if errors.size == 0:
            continue
        candidate = (-scene.num_images, float(errors.mean()), refined)
        logger.debug("focal sweep: start %.0f px -> %.0f px, %d images, mean error %.3f px",
                     focal, refined, scene.num_images, candidate[1])  # fmt: skip
        if best is None or candidate[:2] < best[:2]:
            best = candidate
        if scene.num_images > most_placed:
            most_placed, complete = scene.num_images, []
        if scene.num_images == most_placed:
            if any(abs(math.log(refined / other)) < agree for other in complete):
                logger.debug("focal sweep: two starts converge to %.0f px; stopping after %d of %d",
                             refined, len(tried), len(starts))  # fmt: skip
                break
            complete.append(refined)
    return SweepResult(None if best is None else best[2], tuple(tried), tuple(refined_all))
