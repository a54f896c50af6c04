"""The classic pairwise backend as pipeline stages: SIFT features per image, then matched and verified pairs.

Before the matching, :func:`self_calibrate_focals` estimates one focal per image size for the images
with neither an EXIF focal nor known intrinsics (sfm/classic/self_calibration.py, from fundamental matrices of
up to ``max_pairs`` scene-graph pairs), then one focal per image for those left over (alone in their
size, e.g. internet photos, or of a size whose estimate was refused) from the pairs across sizes. The
estimate becomes those images' ``ImageInfo.prior_focal_px`` (reconstruct.py swaps the ImageInfos), so the
calibrated verification of every pair and the alignment both start from it instead of the 1.2 * max(W, H)
default; it is also part of the ``pairs-classic`` namespace config (the pair results depend on it),
quantised to 0.5 % steps so that a rerun, or a slightly changed image set, reuses the cached pairs. The
estimates themselves are cached (namespace ``self-calibration``, key: the hash of the pairs used, plus the
fixed focals for the per-image estimate) and deterministic (seeded RANSAC).

All stages resume from the cache: a unit (an image's features, a pair's result) whose key is already
stored is read, not recomputed. Keys are content hashes (io/cache.py), the namespaces carry the options.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import shutil
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sfm3r.io import cache
from sfm3r.pipelines.classic_jobs import fundamental_job, sift_of_file, verify_job
from sfm3r.pipelines.process_pool import WorkerPool, map_in_processes
from sfm3r.sfm.classic.focal_sweep import multi_view_focal_sweep
from sfm3r.sfm.classic.self_calibration import (
    SelfCalibConf,
    choose_per_image_pairs,
    estimate_camera_focals,
    estimate_focal,
)
from sfm3r.sfm.classic.sift import SiftConf, SiftFeatures
from sfm3r.sfm.classic.two_view import (
    DEFAULT_FOCAL_FACTOR,
    TwoViewConf,
    camera_prior,
    match_descriptor_pairs,
    match_descriptors,
)
from sfm3r.types import ImageInfo, PairResult, Pairs

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (stage, done, total)

BACKEND_ID = "classic-sift"
_COMMIT_SECONDS = 2.0  # a kill loses at most this much finished work (plus the unit in flight); a commit
# costs ~13 ms wall, 1.5 ms CPU (fsync), i.e. <1 %; see benchmarks/commit_interval.py and docs/robustness.md


@dataclass(frozen=True)
class StageCounts:
    total: int
    cached: int
    computed: int


def _feature_fields(features: SiftFeatures | cache.Features) -> dict:
    """The fields SiftFeatures and the cache's Features share (the same arrays under the same names)."""
    names = ("keypoints", "descriptors", "width", "height", "scales", "orientations")
    return {name: getattr(features, name) for name in names}


def features_store_config(conf: SiftConf) -> dict:
    """The config of the ``features-sift`` namespace (what the features depend on)."""
    return {"sift": conf}


def _features_store(cache_dir: Path, conf: SiftConf) -> cache.Store:
    return cache.open_store(cache_dir, "features-sift", features_store_config(conf))


def features_to_extract(images: Sequence[ImageInfo], conf: SiftConf, cache_dir: Path) -> int:
    """How many of `images` have no SIFT features with these options in the cache yet."""
    with _features_store(cache_dir, conf) as store:
        return sum(not store.has(info.sha256) for info in images)


def progress_ticker(progress: Progress | None, stage: str, done: int, total: int) -> Callable[[int], None]:
    """A callback adding n finished units to `stage`'s progress (units finished by any worker)."""
    count = [done]

    def tick(n: int) -> None:
        count[0] += n
        if progress:
            progress(stage, count[0], total)

    return tick


def extract_features(
    images: Sequence[ImageInfo],
    conf: SiftConf,
    cache_dir: Path,
    progress: Progress | None = None,
    runner=None,  # a distributed.RayRunner: extract on its cluster; None: in this process
    processes: int | None = None,  # local worker processes (process_pool.map_in_processes); None: one per core
    pool: WorkerPool | None = None,  # the run's worker processes (then `processes` is the pool's)
) -> tuple[dict[str, SiftFeatures], StageCounts]:
    """SIFT features of every image, from the cache where present. Returns {name: features}, counts."""
    store = _features_store(cache_dir, conf)
    todo = [info for info in images if not store.has(info.sha256)]
    logger.info("features: %d images, %d cached, %d to extract", len(images), len(images) - len(todo), len(todo))
    done = len(images) - len(todo)
    if progress:
        progress("features", done, len(images))
    if runner is not None and todo:  # extracted and committed by the cluster's workers
        runner.classic_features(store, todo, conf, on_done=progress_ticker(progress, "features", done, len(images)))
        store.refresh()
        todo_here: Sequence[ImageInfo] = []
    else:
        todo_here = todo
    with store.writer(max_seconds=_COMMIT_SECONDS) as writer:
        jobs = [(info.path, conf) for info in todo_here]
        extracted = map_in_processes(sift_of_file, jobs, workers=processes, pool=pool)
        for info, features in zip(todo_here, extracted, strict=True):
            cache.write_features(writer, info.sha256, cache.Features(**_feature_fields(features)))
            done += 1
            if progress:
                progress("features", done, len(images))
    result = {info.name: SiftFeatures(**_feature_fields(cache.read_features(store, info.sha256))) for info in images}
    store.close()
    return result, StageCounts(len(images), len(images) - len(todo), len(todo))


def cache_order_pair(info_a: ImageInfo, info_b: ImageInfo) -> tuple[ImageInfo, ImageInfo]:
    """The orientation in which a pair is computed and cached: the image whose sha256 sorts first is i."""
    return (info_a, info_b) if info_a.sha256 <= info_b.sha256 else (info_b, info_a)


def _matches_store_config(sift_conf: SiftConf, conf: TwoViewConf) -> dict:
    """The config of the ``matches-sift`` namespace (the putative matches depend on the matching fields only)."""
    matching = {f: getattr(conf, f) for f in ("matcher", "max_ratio", "max_distance", "cross_check")}
    return {"sift": sift_conf, "matching": matching}


def stored_putative_counts(
    images: Sequence[ImageInfo],
    name_pairs: Collection[tuple[str, str]],
    sift_conf: SiftConf,
    conf: TwoViewConf,
    cache_dir: Path,
) -> dict[tuple[str, str], int]:
    """How many putative matches the ``matches-sift`` store holds for each of `name_pairs` (either order);
    pairs it does not hold are left out (nothing is matched here)."""
    by_name = {info.name: info for info in images}
    found: dict[tuple[str, str], int] = {}
    with cache.open_store(cache_dir, "matches-sift", _matches_store_config(sift_conf, conf), readonly=True) as store:
        for a, b in name_pairs:
            if a not in by_name or b not in by_name:
                continue
            info_i, info_j = cache_order_pair(by_name[a], by_name[b])
            key = cache.pair_key(info_i.sha256, info_j.sha256)
            if store.has(key):
                found[(a, b)] = int(store.read(key).arrays["matches"].shape[0])
    return found


class PutativeMatches:
    """Putative (descriptor) matches of image pairs, computed once per run folder: the self-calibration
    matches its pairs here and stores them (namespace ``matches-sift``, key: the canonical pair key,
    unit ``matches`` (M, 2) int32), so that :func:`match_classic` verifies those pairs without matching
    them again. Call with a canonical pair (:func:`cache_order_pair`) -> (M, 2) int64 matches.
    """

    def __init__(
        self,
        cache_dir: Path,
        sift_conf: SiftConf,
        conf: TwoViewConf,
        features: Mapping[str, SiftFeatures],
        device: str,
        *,
        store_new: bool = True,  # False: read what is stored, compute the rest without storing it
    ) -> None:
        self.store = cache.open_store(cache_dir, "matches-sift", _matches_store_config(sift_conf, conf))
        self.conf, self.features, self.device, self.store_new = conf, features, device, store_new
        self.cache_dir = Path(cache_dir)
        self._writer: cache.Writer | None = None
        self._new: dict[str, np.ndarray] = {}  # computed in this session (not readable from the store yet)
        self.computed = self.reused = 0

    def __enter__(self) -> PutativeMatches:
        if self.store_new:
            self._writer = self.store.writer(max_seconds=_COMMIT_SECONDS).__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._writer is not None:
            self._writer.__exit__(*exc)
        self.store.close()

    def prefetch(self, ordered: Sequence[tuple[ImageInfo, ImageInfo]], progress: Progress | None = None) -> None:
        """Match every canonical pair of `ordered` that is not stored yet, in one batch (COLMAP's matcher
        indexes each image once and uses every core); later calls for these pairs are lookups."""
        todo: dict[str, tuple[ImageInfo, ImageInfo]] = {}
        for info_i, info_j in ordered:
            key = cache.pair_key(info_i.sha256, info_j.sha256)
            if key not in self._new and key not in todo and not self.store.has(key):
                todo[key] = (info_i, info_j)
        if not todo:
            return
        names = {info.name for pair in todo.values() for info in pair}
        for leftover in self.cache_dir.glob("sfm3r-match-*"):  # the database of a run killed mid-matching
            shutil.rmtree(leftover, ignore_errors=True)
        total = len(todo)
        tick = (lambda done: progress("putative_matching", done, total)) if progress else None  # the stage's row
        found = match_descriptor_pairs(
            {name: self.features[name].descriptors for name in names},
            [(info_i.name, info_j.name) for info_i, info_j in todo.values()], self.conf, device=self.device,
            on_done=tick, scratch_dir=self.cache_dir,  # COLMAP's temporary database: beside the cache, not /tmp
        )  # fmt: skip
        for key, matches in zip(todo, found, strict=True):
            self.computed += 1
            self._new[key] = matches
            if self._writer is not None:
                self._writer.add(key, cache.Unit("matches", {"matches": matches.astype(np.int32)}))

    def __call__(self, info_i: ImageInfo, info_j: ImageInfo) -> np.ndarray:
        key = cache.pair_key(info_i.sha256, info_j.sha256)
        if key in self._new:
            return self._new[key]
        if self.store.has(key):
            self.reused += 1
            return self.store.read(key).arrays["matches"].astype(np.int64).reshape(-1, 2)
        feats_i, feats_j = self.features[info_i.name], self.features[info_j.name]
        matches = match_descriptors(feats_i.descriptors, feats_j.descriptors, self.conf, device=self.device)
        self.computed += 1
        if self._writer is not None:
            self._writer.add(key, cache.Unit("matches", {"matches": matches.astype(np.int32)}))
            self._new[key] = matches
        return matches


def match_putative(
    images: Sequence[ImageInfo],
    pairs: Pairs,
    features: Mapping[str, SiftFeatures],
    sift_conf: SiftConf,
    conf: TwoViewConf,
    cache_dir: Path,
    device: str = "cpu",
    progress: Progress | None = None,
) -> StageCounts:
    """Putative (descriptor) matches of every scene-graph pair, in one batch, stored for the self-calibration
    and the verification (namespace ``matches-sift``); pairs stored already are not matched again."""
    by_name = {info.name: info for info in images}
    ordered = [cache_order_pair(by_name[a], by_name[b]) for a, b in pairs.pairs]
    with PutativeMatches(cache_dir, sift_conf, conf, features, device) as matches_for:
        matches_for.prefetch(ordered, progress)
        computed = matches_for.computed
    logger.info("putative matching: %d pairs, %d matched now", len(ordered), computed)
    return StageCounts(len(ordered), len(ordered) - computed, computed)


SELF_CALIB_MAX_PAIRS = 30  # scene-graph pairs (highest scores first) whose F feed the self-calibration
SELF_CALIB_PAIRS_PER_IMAGE = 10  # ... of an image calibrated on its own (from pairs with any image)
_SELF_CALIB_MIN_INLIERS = 30  # F-RANSAC inliers below this: the pair is not used
_F_RANSAC_MAX_ERROR = 3.0  # pixels; F is only a means to the focal, a loose threshold keeps more pairs
# F-RANSAC (minimum trials, confidence). A camera shared by an image-size group gets its focal from up to 30
# F at once: COLMAP's two-view settings do (herzjesu: the same 919 px, 5x faster than pycolmap's bare
# 1,000 / 0.9999; herzjesu, fountain, temple AUC@3 unchanged). An image calibrated alone depends on its few
# F: the thorough setting stays (Sacré-Cœur's per-image focals with 100 / 0.999: AUC@3 90.2 -> 88.2).
_F_RANSAC_GROUP = (100, 0.999)
_F_RANSAC_PER_IMAGE = (1000, 0.9999)
_FOCAL_STEP = 1.005  # the estimate is rounded to a power of this (0.5 % steps): stable cache namespaces


def _quantise_focal(focal: float) -> float:
    return round(_FOCAL_STEP ** round(math.log(focal) / math.log(_FOCAL_STEP)), 1)


def self_calibrate_focals(
    images: Sequence[ImageInfo],
    pairs: Pairs,
    features: Mapping[str, SiftFeatures],
    sift_conf: SiftConf,
    conf: TwoViewConf,
    cache_dir: Path,
    *,
    skip: Collection[str] = (),  # names with known intrinsics: never self-calibrated
    device: str = "cpu",
    max_pairs: int = SELF_CALIB_MAX_PAIRS,
    max_pairs_per_image: int = SELF_CALIB_PAIRS_PER_IMAGE,
    calib_conf: SelfCalibConf = SelfCalibConf(),
    counts: dict[str, int] | None = None,  # filled with the cache units: total, cached, computed
    progress: Progress | None = None,
    pool: WorkerPool | None = None,  # the run's worker processes for the F-RANSAC; None: in this process
) -> tuple[list[ImageInfo], dict[str, float]]:
    """Focal self-calibration of the images without a focal prior: one focal per image size, else per image.

    First every image size with several such images gets one focal from the pairs within it (up to
    ``max_pairs``). The images left over (alone in their size, or a size whose estimate was refused, e.g.
    internet photos) then get one focal each from the pairs between any images (up to
    ``max_pairs_per_image`` per image, sfm/classic/self_calibration.py::estimate_camera_focals), with the focals of
    EXIF, known and group-calibrated images held fixed.

    Returns the images (those calibrated with ``prior_focal_px`` set, the others unchanged, same order)
    and ``{"WxH": focal_px}`` of the sizes calibrated plus ``{image name: focal_px}`` of the images
    calibrated one by one (empty when none: then nothing changed). A size or image whose fundamental
    matrices do not determine the focal keeps the default prior, with a warning.
    """
    tally = counts if counts is not None else {}
    tally.update(total=0, cached=0, computed=0)
    groups: dict[tuple[int, int], list[ImageInfo]] = {}
    for info in images:
        if not info.prior_focal_px and info.name not in skip:
            groups.setdefault((info.width, info.height), []).append(info)
    if not groups:
        return list(images), {}
    by_name = {info.name: info for info in images}
    scores = np.nan_to_num(np.asarray(pairs.scores, np.float64), nan=-np.inf)
    order = np.argsort(-scores, kind="stable")
    config = {
        "sift": sift_conf, "two_view": conf, "self_calibration": calib_conf, "max_pairs": max_pairs,
        "min_inliers": _SELF_CALIB_MIN_INLIERS, "f_ransac_max_error": _F_RANSAC_MAX_ERROR,
        "f_ransac_group": list(_F_RANSAC_GROUP),
    }  # fmt: skip
    store = cache.open_store(cache_dir, "self-calibration", config)
    with PutativeMatches(cache_dir, sift_conf, conf, features, device) as matches_for:
        updated, calibrated = _self_calibrate(
            images, groups, by_name, pairs, order, store, matches_for, tally, skip, conf, calib_conf, max_pairs,
            max_pairs_per_image, progress, pool=pool,
        )  # fmt: skip
    store.close()
    return updated, calibrated


def _self_calibrate(
    images: Sequence[ImageInfo],
    groups: Mapping[tuple[int, int], list[ImageInfo]],
    by_name: Mapping[str, ImageInfo],
    pairs: Pairs,
    order: np.ndarray,
    store: cache.Store,
    matches_for: PutativeMatches,
    tally: dict[str, int],
    skip: Collection[str],
    conf: TwoViewConf,
    calib_conf: SelfCalibConf,
    max_pairs: int,
    max_pairs_per_image: int,
    progress: Progress | None = None,
    *,
    pool: WorkerPool | None = None,
) -> tuple[list[ImageInfo], dict[str, float]]:
    """The body of :func:`self_calibrate_focals` (groups first, then the images left over)."""
    calibrated: dict[str, float] = {}
    focal_of: dict[str, float] = {}
    leftover: list[ImageInfo] = []  # not calibrated by their size group: per-image focals from any pairs
    for (width, height), group in groups.items():
        members = {info.name for info in group}
        chosen = [pairs.pairs[k] for k in order if pairs.pairs[k][0] in members and pairs.pairs[k][1] in members]
        ordered = [cache_order_pair(by_name[a], by_name[b]) for a, b in chosen[:max_pairs]]
        size = f"{width}x{height}"
        default = DEFAULT_FOCAL_FACTOR * max(width, height)
        if not ordered:
            leftover += group
            continue
        key = hashlib.sha256(" ".join(cache.pair_key(i.sha256, j.sha256) for i, j in ordered).encode()).hexdigest()
        _count(tally, store.has(key))
        if not store.has(key):
            with store.writer() as writer:
                tick = (lambda k, n=len(ordered), size=size: progress(f"self_calibration/{size}", k, n)) if progress else None
                writer.add(key, _self_calibration_unit(ordered, matches_for, width, height, conf, calib_conf, tick, pool))
            store.refresh()
        attrs = store.read(key).attrs
        if attrs["focal_px"] is None:
            logger.warning(
                "self-calibration: no focal for the %d images of %s (%s, %d pairs); keeping the default prior "
                "%.0f px. Give the focal with --known-intrinsics if the poses come out wrong",
                len(group), size, attrs["reason"], attrs["num_pairs"], default,
            )  # fmt: skip
            leftover += group
            continue
        focal = _quantise_focal(float(attrs["focal_px"]))
        logger.info(
            "self-calibration: focal %.0f px for %d images of %s (prior %.0f; %d pairs, flatness %.2f%s)",
            focal, len(group), size, default, attrs["num_pairs"], attrs["flatness"],
            "; pairwise cost flat, from the multi-view sweep" if "sweep" in str(attrs["reason"]) else "",
        )  # fmt: skip
        calibrated[size] = focal
        focal_of.update(dict.fromkeys(members, focal))
    if leftover:
        per_image = _calibrate_per_image(
            leftover, images, pairs, order, matches_for, focal_of, skip, store, calib_conf, max_pairs_per_image, tally,
            progress, pool=pool,
        )  # fmt: skip
        calibrated.update(per_image)
        focal_of.update(per_image)
    updated = [
        dataclasses.replace(info, prior_focal_px=focal_of[info.name]) if info.name in focal_of else info
        for info in images
    ]
    return updated, calibrated


def _count(tally: dict[str, int], cached: bool) -> None:
    tally["total"] += 1
    tally["cached" if cached else "computed"] += 1


def _self_calibration_unit(
    ordered: Sequence[tuple[ImageInfo, ImageInfo]],
    matches_for: PutativeMatches,
    width: int,
    height: int,
    conf: TwoViewConf,
    calib_conf: SelfCalibConf,
    tick: Callable[[int], None] | None = None,  # called with the number of pairs done
    pool: WorkerPool | None = None,
) -> cache.Unit:
    """Match the pairs, F by seeded LO-RANSAC, focal by estimate_focal -> a cache unit."""
    fundamentals, weights, _, putative = _fundamentals(ordered, matches_for, _F_RANSAC_GROUP, tick, pool)
    est = estimate_focal(np.asarray(fundamentals).reshape(-1, 3, 3), width, height, weights, calib_conf)
    attrs = {
        "focal_px": est.focal_px, "best_focal_px": est.best_focal_px, "flatness": est.flatness,
        "num_pairs": est.num_pairs, "reason": est.reason,
    }  # fmt: skip
    if est.focal_px is None and est.num_pairs >= 3:
        swept = multi_view_focal_sweep(
            ordered, putative, matches_for.features, width, height, conf, guess_px=est.best_focal_px or None,
            verify_many=(lambda jobs: pool.map(verify_job, jobs)) if pool is not None else None,
        )  # fmt: skip
        logger.info(
            "self-calibration: multi-view focal sweep of %s aligned %d hypotheses (%s px -> %s px)",
            f"{width}x{height}", len(swept.tried), ", ".join(f"{f:.0f}" for f in swept.tried),
            ", ".join(f"{f:.0f}" for f in swept.refined),
        )  # fmt: skip
        if swept.focal_px is not None:
            attrs["focal_px"] = swept.focal_px
            attrs["reason"] = f"{est.reason}; multi-view sweep"
    return cache.Unit("self-calibration", {"focals": est.focals, "costs": est.costs}, attrs)


def _fundamentals(
    ordered: Sequence[tuple[ImageInfo, ImageInfo]],
    matches_for: PutativeMatches,
    ransac: tuple[int, float],  # F-RANSAC (minimum trials, confidence)
    tick: Callable[[int], None] | None = None,  # called with the number of pairs done
    pool: WorkerPool | None = None,  # the run's worker processes (pycolmap's RANSAC holds the GIL)
) -> tuple[list[np.ndarray], list[float], list[int], dict[tuple[str, str], np.ndarray]]:
    """F (x_j^T F x_i = 0) of each pair (i, j) with enough F-RANSAC inliers (seeded LO-RANSAC).

    Returns the F (3, 3) and their inlier counts, the indices into `ordered` they belong to, and the
    putative matches of every pair.
    """
    putative: dict[tuple[str, str], np.ndarray] = {}
    jobs, tried = [], []
    for k, (info_i, info_j) in enumerate(ordered):
        matches = putative[(info_i.name, info_j.name)] = matches_for(info_i, info_j)
        if len(matches) >= _SELF_CALIB_MIN_INLIERS:
            xy_i = np.asarray(matches_for.features[info_i.name].keypoints[matches[:, 0]], np.float64)
            xy_j = np.asarray(matches_for.features[info_j.name].keypoints[matches[:, 1]], np.float64)
            jobs.append((xy_i, xy_j, _F_RANSAC_MAX_ERROR, *ransac))
            tried.append(k)
    found_all = pool.map(fundamental_job, jobs) if pool else map(fundamental_job, jobs)
    fundamentals, weights, used = [], [], []
    for done, (k, found) in enumerate(zip(tried, found_all, strict=True)):
        if tick is not None:
            tick(done)
        if found is None or found[1] < _SELF_CALIB_MIN_INLIERS:
            continue
        fundamentals.append(found[0])
        weights.append(float(found[1]))
        used.append(k)
    return fundamentals, weights, used, putative


def _calibrate_per_image(
    leftover: Sequence[ImageInfo],
    images: Sequence[ImageInfo],
    pairs: Pairs,
    order: np.ndarray,  # (P,) pair indices, best score first
    matches_for: PutativeMatches,
    focal_of: Mapping[str, float],  # group-calibrated focals
    skip: Collection[str],
    store: cache.Store,
    calib_conf: SelfCalibConf,
    max_pairs_per_image: int,
    tally: dict[str, int],
    progress: Progress | None = None,
    *,
    pool: WorkerPool | None = None,
) -> dict[str, float]:
    """One focal per image of `leftover`, jointly from the best pairs of each with any image -> {name: focal}.

    Images with an EXIF focal, known intrinsics (when `skip` maps names to cameras) or a group-calibrated
    focal are held fixed at it; images in `skip` without a known focal are left out. Cached in `store`
    (key: the pairs used and the fixed focals).
    """
    by_name = {info.name: info for info in images}
    unknown = {info.name for info in leftover}
    fixed: dict[str, float] = {name: float(focal) for name, focal in focal_of.items()}
    for info in images:
        if info.name in skip and isinstance(skip, Mapping) and hasattr(skip[info.name], "fx"):
            fixed[info.name] = float((skip[info.name].fx + skip[info.name].fy) / 2)
        elif info.prior_focal_px and info.name not in unknown:
            fixed[info.name] = float(info.prior_focal_px)
    ranked = [tuple(pairs.pairs[k]) for k in order]
    chosen = [
        cache_order_pair(by_name[a], by_name[b])
        for a, b in choose_per_image_pairs(ranked, unknown, fixed, max_pairs_per_image)
    ]
    if not chosen:
        for info in leftover:
            logger.warning("self-calibration: no pair for %s; keeping the default prior focal", info.name)
        return {}
    cameras = sorted({info.name for pair in chosen for info in pair}, key=lambda n: by_name[n].sha256)
    known_text = " ".join(f"{by_name[n].sha256}={fixed[n]:.3f}" for n in cameras if n in fixed)
    pair_text = " ".join(cache.pair_key(i.sha256, j.sha256) for i, j in chosen)
    key = hashlib.sha256(f"per-image {pair_text} known {known_text}".encode()).hexdigest()
    _count(tally, store.has(key))
    if not store.has(key):
        tick = (lambda k, n=len(chosen): progress("self_calibration/per image", k, n)) if progress else None
        fundamentals, weights, used, _ = _fundamentals(chosen, matches_for, _F_RANSAC_PER_IMAGE, tick, pool)
        index = {name: c for c, name in enumerate(cameras)}
        pair_cameras = np.array([[index[chosen[k][0].name], index[chosen[k][1].name]] for k in used], np.int64)
        est = estimate_camera_focals(
            np.asarray(fundamentals, np.float64).reshape(-1, 3, 3), pair_cameras.reshape(-1, 2),
            np.array([[by_name[n].width, by_name[n].height] for n in cameras], np.float64),
            np.array([fixed.get(n, np.nan) for n in cameras]), weights, calib_conf,
        )  # fmt: skip
        attrs = {
            "sha256": [by_name[n].sha256 for n in cameras],
            "focal_px": [None if not np.isfinite(f) else float(f) for f in est.focal_px],
            "best_focal_px": [float(f) for f in est.best_focal_px],
            "flatness": [None if not np.isfinite(f) else float(f) for f in est.flatness],
            "num_pairs": [int(n) for n in est.num_pairs],
            "reason": list(est.reasons),
        }
        with store.writer() as writer:
            writer.add(key, cache.Unit("self-calibration-per-image", {"pair_cameras": pair_cameras}, attrs))
        store.refresh()
    attrs = store.read(key).attrs
    name_of = {by_name[n].sha256: n for n in cameras}
    found: dict[str, float] = {}
    for c, sha in enumerate(attrs["sha256"]):
        name = name_of[sha]
        if name not in unknown:
            continue
        info = by_name[name]
        default = DEFAULT_FOCAL_FACTOR * max(info.width, info.height)
        if attrs["focal_px"][c] is None:
            logger.warning(
                "self-calibration: no focal for %s (%s, %d pairs); keeping the default prior %.0f px. Give the "
                "focal with --known-intrinsics if the poses come out wrong",
                name, attrs["reason"][c], attrs["num_pairs"][c], default,
            )  # fmt: skip
            continue
        found[name] = _quantise_focal(float(attrs["focal_px"][c]))
        logger.info(
            "self-calibration: focal %.0f px for %s (prior %.0f; %d pairs, flatness %.2f)",
            found[name], name, default, attrs["num_pairs"][c], attrs["flatness"][c],
        )  # fmt: skip
    for name in unknown - {name_of[sha] for sha in attrs["sha256"]}:
        logger.warning("self-calibration: no usable pair for %s; keeping the default prior focal", name)
    return found


def match_classic(
    images: Sequence[ImageInfo],
    pairs: Pairs,
    features: dict[str, SiftFeatures],
    sift_conf: SiftConf,
    conf: TwoViewConf,
    cache_dir: Path,
    device: str = "cpu",
    progress: Progress | None = None,
    self_calibrated: Mapping[str, float] | None = None,
    runner=None,  # a distributed.RayRunner: compute the pairs on its cluster; None: in this process
    processes: int | None = None,  # local worker processes for the verification; None: one per core
    pool: WorkerPool | None = None,  # the run's worker processes (then `processes` is the pool's)
) -> tuple[list[PairResult], StageCounts]:
    """Match, verify and triangulate every pair of the scene graph, from the cache where present.

    Failed pairs are returned too (``verified=False``); the alignment decides what to use.
    ``self_calibrated``: the ``{"WxH" or image name: focal}`` of :func:`self_calibrate_focals`, whose focals
    the images already carry as ``prior_focal_px``; it is part of the cache namespace.
    """
    by_name = {info.name: info for info in images}
    namespace = {"sift": sift_conf, "two_view": conf}
    if self_calibrated:  # absent otherwise: the namespaces of EXIF-only runs stay as they were
        namespace["self_calibrated_focal"] = dict(sorted(self_calibrated.items()))
    store = cache.open_store(cache_dir, "pairs-classic", namespace)
    ordered = [cache_order_pair(by_name[a], by_name[b]) for a, b in pairs.pairs]
    keys = [cache.pair_key(i.sha256, j.sha256) for i, j in ordered]
    todo = [k for k, key in enumerate(keys) if not store.has(key)]
    logger.info("matching: %d pairs, %d cached, %d to compute", len(keys), len(keys) - len(todo), len(todo))
    done = len(keys) - len(todo)
    if progress:
        progress("matching", done, len(keys))
    priors = {info.name: camera_prior(info.width, info.height, info.prior_focal_px) for info in images}
    todo_here = todo
    if runner is not None and todo:  # computed and committed by the cluster's workers (pipelines/distributed.py)
        items = [(keys[k], *ordered[k]) for k in todo]
        runner.classic_pairs(store, items, features_store_config(sift_conf), conf, device,
                             on_done=progress_ticker(progress, "matching", done, len(keys)))  # fmt: skip
        store.refresh()
        todo_here = []
    with (
        store.writer(max_seconds=_COMMIT_SECONDS) as writer,
        PutativeMatches(cache_dir, sift_conf, conf, features, device, store_new=False) as matches_for,
    ):
        matches_for.prefetch([ordered[k] for k in todo_here])  # what match_putative did not store
        jobs = [
            (info_i.name, info_j.name, features[info_i.name].keypoints, features[info_j.name].keypoints,
             priors[info_i.name], priors[info_j.name], matches_for(info_i, info_j), conf)
            for info_i, info_j in (ordered[k] for k in todo_here)
        ]  # fmt: skip
        # pycolmap's RANSAC holds the GIL: worker processes, not threads
        results_here = map_in_processes(verify_job, jobs, workers=processes, pool=pool)
        for k, result in zip(todo_here, results_here, strict=True):
            cache.write_pair_result(writer, keys[k], result)
            done += 1
            if progress:
                progress("matching", done, len(keys))
    if todo:
        logger.info("matching: %d pairs matched, %d matched already by the self-calibration",
                    matches_for.computed, matches_for.reused)  # fmt: skip
    results = [
        cache.read_pair_result(store, key, name_i=info_i.name, name_j=info_j.name)
        for key, (info_i, info_j) in zip(keys, ordered, strict=True)
    ]
    store.close()
    verified = sum(r.verified for r in results)
    logger.info("matching: %d of %d pairs verified", verified, len(results))
    return results, StageCounts(len(keys), len(keys) - len(todo), len(todo))
