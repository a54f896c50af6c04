"""A second chance for images the alignment left out (classic backend): bridges from their weak links.

For each left-out component, every scene-graph pair between it and the model is matched again with a looser
ratio test (0.9, exact matcher) and verified with several RANSAC seeds at 2 px; sfm.align.bridging keeps
the solutions of at least two links that agree on the component's rotation, and the alignment runs again
with them. The new scene replaces the old one only when it registers more images, all of the old ones among
them. That alignment skips the coarse 3D step: with a component linked by ~50 matches, the coarse step
rotated it by 18° away from its (2° accurate) initial placement on the temple ring's subset, and the 2D
refinement could not bring it back (benchmarks/README.md §1).

Every verification is cached (namespace ``bridges-classic``, key: the pair's key and the seed), as is the
alignment, so a rerun computes nothing.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sfm3r.io import cache
from sfm3r.pipelines.alignment_stage import align_cached
from sfm3r.pipelines.classic import cache_order_pair
from sfm3r.sfm.align.alignment import AlignConf
from sfm3r.sfm.align.bridging import BridgeConf, component_rotations, select_bridges
from sfm3r.sfm.align.edge_verification import component_links
from sfm3r.sfm.classic.sift import SiftConf, SiftFeatures
from sfm3r.sfm.classic.two_view import MatcherType, TwoViewConf, camera_prior, match_descriptors, verify_keypoint_matches
from sfm3r.types import Camera, ImageInfo, PairResult, Scene

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BridgingConf:
    max_ratio: float = 0.9  # the looser ratio test of the second matching
    max_error: float = 2.0  # px, RANSAC threshold of the bridge solutions
    # RANSAC seeds per link (near-tied solutions differ by seed); a link whose first seed finds no solution
    # with ``select.min_inliers`` gets no others. Shorter runs (1,000 or 3,000 iterations instead of COLMAP's
    # 10,000) were tried on the temple subset: they miss the solutions that agree.
    seeds: int = 8
    select: BridgeConf = BridgeConf()


@dataclass
class BridgingResult:
    scene: Scene
    pair_results: list[PairResult]
    report: list[dict]  # per component: its images, the bridges kept and whether the alignment took them
    align_key: str | None  # the cache key of the scene's alignment (None: the first alignment is kept)


def bridge_left_out(
    scene: Scene,
    pair_results: Sequence[PairResult],
    images: Sequence[ImageInfo],
    features: Mapping[str, SiftFeatures],
    sift_conf: SiftConf,
    two_view_conf: TwoViewConf,
    align_conf: AlignConf,
    cache_dir: Path,
    conf: BridgingConf = BridgingConf(),
    *,
    known_cameras: Mapping[str, Camera] | None = None,
    progress: Callable[[str, float], None] | None = None,
) -> BridgingResult:
    """Bridges for the left-out components of `scene` (``scene.info["left_out"]``) and the alignment with
    them (the scene unchanged when no bridge was found or the alignment did not register more images)."""
    components = [list(c["images"]) for c in scene.info.get("left_out", ())]
    by_name = {info.name: info for info in images}
    model = {name: scene.rotations[k] for k, name in enumerate(scene.image_names)}
    loose = dataclasses.replace(two_view_conf, matcher=MatcherType.TORCH, max_ratio=conf.max_ratio,
                                max_error=conf.max_error, min_num_inliers=conf.select.min_inliers)  # fmt: skip
    namespace = {"sift": sift_conf, "two_view": loose,
                 "focals": {info.name: info.prior_focal_px for info in images}}  # fmt: skip
    bridges: list[PairResult] = []
    report = []
    with cache.open_store(cache_dir, "bridges-classic", namespace) as store:
        for members in components:
            rotations = component_rotations(pair_results, members)
            if rotations is None:
                continue
            links = component_links(pair_results, members, model)
            solutions, computed = [], []
            for done, link in enumerate(links):
                found, new = _solutions(store, by_name[link.name_i], by_name[link.name_j], features, loose, conf)
                solutions += found
                computed += new
                if progress:
                    progress("links", (done + 1) / len(links))
            if computed:
                with store.writer() as writer:  # one shard per component
                    for key, result in computed:
                        cache.write_pair_result(writer, key, result)
            chosen = select_bridges(solutions, rotations, model, conf.select)
            report.append({"images": members, "links": len(links), "registered": False,
                           "bridges": [{"pair": [b.name_i, b.name_j], "inliers": b.num_inliers} for b in chosen]})
            bridges += chosen
            logger.info("left-out %s: %d bridge(s) from %d links%s", ", ".join(members), len(chosen), len(links),
                        "".join(f"; {b.name_i} / {b.name_j}: {b.num_inliers} inliers" for b in chosen))
    if not bridges:
        return BridgingResult(scene, list(pair_results), report, None)
    replaced = {(b.name_i, b.name_j) for b in bridges}
    new_pairs = [p for p in pair_results if (p.name_i, p.name_j) not in replaced] + bridges
    again, _, key = align_cached(new_pairs, images, dataclasses.replace(align_conf, coarse_enabled=False), cache_dir,
                               known_cameras=known_cameras, progress=progress)  # fmt: skip
    # kept only with more images and every image of the first alignment still in
    taken = again.num_images > scene.num_images and set(scene.image_names) <= set(again.image_names)
    for entry in report:
        entry["registered"] = taken and bool(entry["bridges"]) and all(n in again.image_names for n in entry["images"])
    logger.info("bridged alignment: %d images registered (before: %d)%s", again.num_images, scene.num_images,
                "" if taken else "; the first alignment is kept")
    if not taken:
        return BridgingResult(scene, list(pair_results), report, None)
    return BridgingResult(again, new_pairs, report, key)


def _solutions(store, info_i: ImageInfo, info_j: ImageInfo, features, loose: TwoViewConf,
               conf: BridgingConf) -> tuple[list[PairResult], list[tuple[str, PairResult]]]:
    """The distinct verified solutions of the pair (i, j) over ``conf.seeds`` RANSAC seeds, in cache order
    (that of the pipeline's pair results), and the (key, result) of the seeds computed (not in the cache)."""
    first, second = cache_order_pair(info_i, info_j)
    base = cache.pair_key(first.sha256, second.sha256)
    matches = None
    results, new = [], []
    for seed in range(conf.seeds):
        key = f"{base}-{seed}"
        if store.has(key):
            result = cache.read_pair_result(store, key, name_i=first.name, name_j=second.name)
        else:
            a, b = features[first.name], features[second.name]
            if matches is None:
                matches = match_descriptors(a.descriptors, b.descriptors, loose)
            result = verify_keypoint_matches(
                first.name, second.name, a.keypoints, b.keypoints, camera_prior(first.width, first.height,
                first.prior_focal_px), camera_prior(second.width, second.height, second.prior_focal_px), matches,
                dataclasses.replace(loose, ransac_seed=seed),
            )  # fmt: skip
            new.append((key, result))
        results.append(result)
        if seed == 0 and not result.verified:  # no solution with enough support: a link without evidence
            break
    distinct: list[PairResult] = []
    for result in results:
        if result.verified and not any(np.allclose(result.rel_rotation, d.rel_rotation, atol=1e-9) for d in distinct):
            distinct.append(result)
    return distinct, new
