"""The classic pairwise backend as pipeline stages: SIFT features per image, then matched and verified pairs.

Both stages resume from the cache: a unit (an image's features, a pair's result) whose key is already
stored is read, not recomputed. Keys are content hashes (io/cache.py), the namespaces carry the options.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sfm3r.io import cache
from sfm3r.io.images import read_image
from sfm3r.sfm.sift import SiftConf, SiftFeatures, extract_sift
from sfm3r.sfm.two_view import TwoViewConf, camera_prior, match_pair
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


def _features_store(cache_dir: Path, conf: SiftConf) -> cache.Store:
    return cache.open_store(cache_dir, "features-sift", {"sift": conf})


def extract_features(
    images: Sequence[ImageInfo], conf: SiftConf, cache_dir: Path, progress: Progress | None = None
) -> tuple[dict[str, SiftFeatures], StageCounts]:
    """SIFT features of every image, from the cache where present. Returns {name: features}, counts."""
    store = _features_store(cache_dir, conf)
    todo = [info for info in images if not store.has(info.sha256)]
    logger.info("features: %d images, %d cached, %d to extract", len(images), len(images) - len(todo), len(todo))
    done = len(images) - len(todo)
    if progress:
        progress("features", done, len(images))
    with store.writer(max_seconds=_COMMIT_SECONDS) as writer:
        for info in todo:
            features = extract_sift(read_image(info.path), conf)
            cache.write_features(writer, info.sha256, cache.Features(**_feature_fields(features)))
            done += 1
            if progress:
                progress("features", done, len(images))
    result = {info.name: SiftFeatures(**_feature_fields(cache.read_features(store, info.sha256))) for info in images}
    store.close()
    return result, StageCounts(len(images), len(images) - len(todo), len(todo))


def canonical_pair(info_a: ImageInfo, info_b: ImageInfo) -> tuple[ImageInfo, ImageInfo]:
    """The orientation in which a pair is computed and cached: the image whose sha256 sorts first is i."""
    return (info_a, info_b) if info_a.sha256 <= info_b.sha256 else (info_b, info_a)


def match_classic(
    images: Sequence[ImageInfo],
    pairs: Pairs,
    features: dict[str, SiftFeatures],
    sift_conf: SiftConf,
    conf: TwoViewConf,
    cache_dir: Path,
    device: str = "cpu",
    progress: Progress | None = None,
) -> tuple[list[PairResult], StageCounts]:
    """Match, verify and triangulate every pair of the scene graph, from the cache where present.

    Failed pairs are returned too (``verified=False``); the alignment decides what to use.
    """
    by_name = {info.name: info for info in images}
    store = cache.open_store(cache_dir, "pairs-classic", {"sift": sift_conf, "two_view": conf})
    ordered = [canonical_pair(by_name[a], by_name[b]) for a, b in pairs.pairs]
    keys = [cache.pair_key(i.sha256, j.sha256) for i, j in ordered]
    todo = [k for k, key in enumerate(keys) if not store.has(key)]
    logger.info("matching: %d pairs, %d cached, %d to compute", len(keys), len(keys) - len(todo), len(todo))
    done = len(keys) - len(todo)
    if progress:
        progress("matching", done, len(keys))
    priors = {info.name: camera_prior(info.width, info.height, info.prior_focal_px) for info in images}
    with store.writer(max_seconds=_COMMIT_SECONDS) as writer:
        for k in todo:
            info_i, info_j = ordered[k]
            result = match_pair(
                info_i.name, info_j.name, features[info_i.name], features[info_j.name],
                priors[info_i.name], priors[info_j.name], conf, device=device,
            )  # fmt: skip
            cache.write_pair_result(writer, keys[k], result)
            done += 1
            if progress:
                progress("matching", done, len(keys))
    results = [
        cache.read_pair_result(store, key, name_i=info_i.name, name_j=info_j.name)
        for key, (info_i, info_j) in zip(keys, ordered, strict=True)
    ]
    store.close()
    verified = sum(r.verified for r in results)
    logger.info("matching: %d of %d pairs verified", verified, len(results))
    return results, StageCounts(len(keys), len(keys) - len(todo), len(todo))
