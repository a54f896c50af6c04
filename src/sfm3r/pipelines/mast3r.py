"""The MASt3R pairwise backend as a pipeline stage: network inference (each image encoded once), reciprocal
matching, PairResults and DenseViews, all cached per pair so that a rerun resumes.

Cache namespaces (io/cache.py), both keyed by the pair's content key and configured by the checkpoint's
sha256, the network resolution and the matcher settings:
- ``pairs-mast3r``: one PairResult per unordered pair;
- ``dense-mast3r``: per pair, each image's own-frame pointmap and confidence at network resolution
  (float16 ``pts_i`` (H_i, W_i, 3), ``conf_i`` (H_i, W_i), same for j), streamed into the canonical depths.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from sfm3r.io import cache
from sfm3r.io.images import preprocess_for_network, read_image
from sfm3r.pipelines.classic import StageCounts, cache_order_pair, progress_ticker
from sfm3r.sfm.mast3r.checkpoint import load_mast3r
from sfm3r.sfm.mast3r.inference import PairInference
from sfm3r.sfm.mast3r.pairs import Mast3rPairConf, mast3r_pair_result
from sfm3r.types import DenseView, ImageInfo, NetView, PairResult, Pairs

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
_COMMIT_SECONDS = 5.0  # a crash loses at most this much finished work (plus the pair in flight)


def file_sha256(path: Path, chunk: int = 8 << 20) -> str:
    """sha256 of a (possibly multi-GB) file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def resolve_amp(amp: str, device: str) -> str | None:
    """"auto" -> bf16 on CUDA, None on CPU; "off" -> None."""
    if amp == "off" or not device.startswith("cuda"):
        return None
    return "bf16" if amp == "auto" else amp


def match_mast3r(
    images: Sequence[ImageInfo],
    pairs: Pairs,
    checkpoint: Path,
    cache_dir: Path,
    *,
    net_image_size: int = 512,
    batch_size: int = 4,
    amp: str = "auto",
    device: str = "cpu",
    pair_conf: Mast3rPairConf = Mast3rPairConf(),
    progress: Progress | None = None,
    runner=None,  # a distributed.RayRunner: compute the pairs on its cluster; None: in this process
) -> tuple[list[PairResult], Callable[[str], Iterator[DenseView]], StageCounts]:
    """PairResults of every pair (from the cache where present) and a DenseView source for the alignment."""
    by_name = {info.name: info for info in images}
    config = {"checkpoint_sha256": file_sha256(checkpoint), "net_image_size": net_image_size, "pairs": pair_conf}
    pair_store = cache.open_store(cache_dir, "pairs-mast3r", config)
    dense_store = cache.open_store(cache_dir, "dense-mast3r", config)
    ordered = [cache_order_pair(by_name[a], by_name[b]) for a, b in pairs.pairs]
    keys = [cache.pair_key(i.sha256, j.sha256) for i, j in ordered]
    todo = [k for k, key in enumerate(keys) if not (pair_store.has(key) and dense_store.has(key))]
    logger.info("matching: %d pairs, %d cached, %d to compute", len(keys), len(keys) - len(todo), len(todo))
    done = len(keys) - len(todo)
    if progress:
        progress("matching", done, len(keys))
    items = [(keys[k], *ordered[k]) for k in todo]  # (key, image i, image j)
    if todo and runner is not None:  # computed and committed by the cluster's workers (pipelines/distributed.py)
        runner.mast3r_pairs(
            pair_store, dense_store, items, checkpoint, net_image_size=net_image_size, batch_size=batch_size,
            amp=amp, device=device, pair_conf=pair_conf, on_done=progress_ticker(progress, "matching", done, len(keys)),
        )  # fmt: skip
        pair_store.refresh()
    elif todo:
        model = load_mast3r(checkpoint, device=device)
        with pair_store.writer(max_seconds=_COMMIT_SECONDS) as pair_writer, dense_store.writer(
            max_seconds=_COMMIT_SECONDS
        ) as dense_writer:
            encoded = compute_pairs(
                model, items, pair_writer, dense_writer, net_image_size=net_image_size, batch_size=batch_size,
                amp=amp, device=device, pair_conf=pair_conf, on_done=progress_ticker(progress, "matching", done, len(keys)),
            )  # fmt: skip
        needed = {info.name for item in items for info in item[1:]}
        logger.info("matching: encoder ran %d times for %d images", encoded, len(needed))
    results = [
        cache.read_pair_result(pair_store, key, name_i=i.name, name_j=j.name)
        for key, (i, j) in zip(keys, ordered, strict=True)
    ]
    pair_store.close()
    dense_source = _dense_source(cache_dir, config, ordered, keys)
    return results, dense_source, StageCounts(len(keys), len(keys) - len(todo), len(todo))


def compute_pairs(
    model,
    items: Sequence[tuple[str, ImageInfo, ImageInfo]],  # (pair key, image i, image j) in canonical order
    pair_writer: cache.Writer,
    dense_writer: cache.Writer,
    *,
    net_image_size: int,
    batch_size: int,
    amp: str,
    device: str,
    pair_conf: Mast3rPairConf,
    token_store=None,  # a PairInference token store kept across calls (a Ray actor's), or None
    on_done: Callable[[int], None] | None = None,  # called with 1 after each pair is added to the writers
) -> int:
    """Infer, match and write the given pairs (each image encoded once); returns the encoder passes run.

    The one computation of a MASt3R pair, shared by the single-process stage and the Ray actors, so both
    write the same cache units.
    """
    needed = sorted({info.name: info for it in items for info in it[1:]}.items())
    net_inputs: dict[str, tuple] = {}
    views: dict[str, NetView] = {}
    for name, info in needed:
        tensor, view = preprocess_for_network(read_image(info.path), size=net_image_size)
        net_inputs[name] = (tensor, np.array([[view.net_height, view.net_width]], np.int32))
        views[name] = view
    engine = PairInference(
        model,
        device,
        batch_size=batch_size,
        amp=resolve_amp(amp, device),
        store=token_store,
        image_source=net_inputs.__getitem__,
        view2_points=False,  # SfM reads only view 2's descriptors: skip its DPT
    )
    engine.encode(net_inputs)
    key_of = {(i.name, j.name): key for key, i, j in items}
    for name_i, name_j, out_ij, out_ji in engine.run_pairs(list(key_of)):
        result = mast3r_pair_result(name_i, name_j, out_ij, out_ji, views[name_i], views[name_j], pair_conf, device=device)
        key = key_of[(name_i, name_j)]
        # Dense first: a pair counts as done only when both units are committed.
        dense_writer.add(key, _dense_unit(result.dense_i, result.dense_j))
        cache.write_pair_result(pair_writer, key, result.pair)
        if on_done:
            on_done(1)
    return engine.num_encoded


def _dense_unit(dense_i: DenseView, dense_j: DenseView) -> cache.Unit:
    arrays = {
        "pts_i": dense_i.net_pts3d.astype(np.float16),
        "conf_i": dense_i.net_conf.astype(np.float16),
        "pts_j": dense_j.net_pts3d.astype(np.float16),
        "conf_j": dense_j.net_conf.astype(np.float16),
    }
    return cache.Unit("dense", arrays, {})


def _dense_source(
    cache_dir: Path, config: dict, ordered: list[tuple[ImageInfo, ImageInfo]], keys: list[str]
) -> Callable[[str], Iterator[DenseView]]:
    """name -> the image's DenseViews, read one at a time from the cache (streaming, bounded memory)."""
    sides: dict[str, list[tuple[str, str, str]]] = {}
    for key, (info_i, info_j) in zip(keys, ordered, strict=True):
        sides.setdefault(info_i.name, []).append((key, "i", info_j.name))
        sides.setdefault(info_j.name, []).append((key, "j", info_i.name))

    def views_of(name: str) -> Iterator[DenseView]:
        store = cache.open_store(cache_dir, "dense-mast3r", config, readonly=True)
        try:
            for key, side, partner in sides.get(name, []):
                arrays = store.read(key).arrays
                yield DenseView(
                    name=name,
                    partner=partner,
                    net_pts3d=arrays[f"pts_{side}"].astype(np.float32),
                    net_conf=arrays[f"conf_{side}"].astype(np.float32),
                )
        finally:
            store.close()

    return views_of



def mast3r_similarity(
    images: Sequence[ImageInfo],
    checkpoint: Path,
    retrieval_checkpoint: Path,
    codebook: Path | None,
    cache_dir: Path,
    *,
    net_image_size: int = 512,
    device: str = "cpu",
    progress: Progress | None = None,
) -> np.ndarray:
    """(N, N) ASMK similarity from the MASt3R retrieval head's local features (MASt3R-SfM's retrieval), cached.

    The head runs on the MASt3R encoder of `checkpoint`; the codebook defaults to the file the official
    release puts beside the retrieval model (``*_retrieval_codebook.pkl``).
    """
    from sfm3r.sfm.mast3r.checkpoint import checkpoint_args, read_torch_pickle
    from sfm3r.sfm.mast3r.retrieval import codebook_path, load_retrieval, read_codebook
    from sfm3r.sfm.graph.retrieval import asmk_similarity

    codebook = Path(codebook) if codebook is not None else codebook_path(retrieval_checkpoint)
    config = {
        "checkpoint_sha256": file_sha256(checkpoint),
        "retrieval_sha256": file_sha256(retrieval_checkpoint),
        "codebook_sha256": file_sha256(codebook) if codebook.is_file() else "",
        "net_image_size": net_image_size,
    }
    image_set = hashlib.sha256("\n".join(info.sha256 for info in images).encode()).hexdigest()
    store = cache.open_store(cache_dir, "retrieval-mast3r", config)
    if store.has(image_set):
        similarity = store.read(image_set).arrays["similarity"]
        store.close()
        logger.info("retrieval: similarity of %d images read from the cache", len(images))
        return similarity
    model = load_retrieval(retrieval_checkpoint, load_mast3r(checkpoint, device=device))
    raw = read_torch_pickle(retrieval_checkpoint)
    nclusters = checkpoint_args(raw.get("args")).get("nclusters") if isinstance(raw, dict) else None
    centroids = read_codebook(codebook, nclusters=nclusters)
    features = []
    for k, info in enumerate(images):
        tensor, _ = preprocess_for_network(read_image(info.path), size=net_image_size)
        features.append(model.local_features(tensor).feat)
        if progress:
            progress("retrieval", k + 1, len(images))
    similarity = asmk_similarity(features, centroids, device=device)
    with store.writer() as writer:
        writer.add(image_set, cache.Unit("retrieval", {"similarity": similarity}, {}))
    store.close()
    return similarity
