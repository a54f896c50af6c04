"""The alignment as a cached stage: a rerun with the same pairwise results, images and options reads the
Scene from OUT/cache instead of aligning again.

Namespace ``scene-alignment`` (config: the AlignConf and the versions of sfm3r and pycolmap, so that an
upgrade aligns again instead of reading a scene the older code made); one unit per distinct input, key =
sha256 of every input of :func:`~sfm3r.sfm.align.alignment.align_scene`: each pair result's arrays and flags
(in order), each image's name, content hash, size and focal prior, and the known cameras. The alignment is
deterministic given those, so the cached Scene is the one it would compute. MASt3R runs with dense views stream those
into the alignment; they are not hashed here, so such runs are not cached (always computed).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
from collections.abc import Callable, Mapping, Sequence

import numpy as np

import sfm3r
from sfm3r.io import cache
from sfm3r.pipelines.classic import StageCounts
from sfm3r.sfm.align.alignment import AlignConf, align_scene
from sfm3r.sfm.align.canonical import DenseViewSource
from sfm3r.types import Camera, ImageInfo, PairResult, Scene

logger = logging.getLogger(__name__)

_PAIR_ARRAYS = ("xy_i", "xy_j", "idx_i", "idx_j", "conf", "pts_i", "pts_j", "rel_rotation", "rel_translation")


def alignment_key(
    pair_results: Sequence[PairResult], images: Sequence[ImageInfo], known_cameras: Mapping[str, Camera]
) -> str:
    """sha256 (hex) of every input of the alignment but its options (those name the namespace)."""
    digest = hashlib.sha256()
    for info in images:
        digest.update(f"image {info.name}|{info.sha256}|{info.width}|{info.height}|{info.prior_focal_px!r}\n".encode())
    for name in sorted(known_cameras):
        digest.update(f"known {name}|{known_cameras[name]!r}\n".encode())
    for result in pair_results:
        digest.update(f"pair {result.name_i}|{result.name_j}|{result.backend}|{result.verified}|{result.num_inliers}\n".encode())
        for field in _PAIR_ARRAYS:
            value = getattr(result, field)
            if value is None:
                digest.update(b"none")
            else:
                value = np.ascontiguousarray(value)
                digest.update(f"{value.dtype.str}{value.shape}".encode())
                digest.update(value.data)
    return digest.hexdigest()


def alignment_store_config(conf: AlignConf) -> dict:
    """What a cached scene depends on besides its inputs: the options, and the code that aligned (the versions)."""
    # pycolmap's version read from its metadata (the same string as pycolmap.__version__), not imported: ~0.1 s
    pycolmap_version = importlib.metadata.version("pycolmap")
    return {"align": conf, "code": {"sfm3r": sfm3r.__version__, "pycolmap": pycolmap_version}}


def align_cached(
    pair_results: Sequence[PairResult],
    images: Sequence[ImageInfo],
    conf: AlignConf,
    cache_dir,
    *,
    dense_views: DenseViewSource | None = None,
    known_cameras: Mapping[str, Camera] | None = None,
    progress: Callable[[str, float], None] | None = None,
) -> tuple[Scene, StageCounts, str | None]:
    """:func:`align_scene` with its result cached in ``cache_dir`` -> (scene, counts of 1 unit, the unit's
    key; None when not cached)."""
    known = dict(known_cameras or {})
    if dense_views is not None:
        scene = align_scene(pair_results, images, conf, dense_views=dense_views, known_cameras=known, progress=progress)
        return scene, StageCounts(1, 0, 1), None
    key = alignment_key(pair_results, images, known)
    with cache.open_store(cache_dir, "scene-alignment", alignment_store_config(conf)) as store:
        if store.has(key):
            logger.info("alignment: reused from the cache (inputs and options unchanged)")
            return cache.read_scene(store, key), StageCounts(1, 1, 0), key
        scene = align_scene(pair_results, images, conf, known_cameras=known, progress=progress)
        with store.writer() as writer:
            cache.write_scene(writer, key, scene)
    return scene, StageCounts(1, 0, 1), key
