"""The pair-selection stage: which image pairs get matched (a scene graph, or the user's pairs file).

Retrieval graphs need an image similarity. Without a MASt3R retrieval checkpoint it comes from ASMK on the
images' own SIFT descriptors with a codebook trained on the set (weight-free); both the codebook and the
similarity are cached under the hash of the image set.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from sfm3r.io import cache
from sfm3r.io.pairs_file import read_pairs_file
from sfm3r.pipelines.config import COMPLETE_GRAPH_MAX_IMAGES, DEFAULT_RETRIEVAL_GRAPH, ReconstructConf
from sfm3r.sfm.graph.scene_graph import GraphReport, build_scene_graph, ensure_connected
from sfm3r.sfm.classic.sift import SiftFeatures
from sfm3r.types import ImageInfo, Pairs

logger = logging.getLogger(__name__)


def resolve_graph(graph: str, num_images: int) -> str:
    """The graph string to use: "auto" becomes `complete` for small sets and retrieval beyond."""
    if graph != "auto":
        return graph
    return "complete" if num_images <= COMPLETE_GRAPH_MAX_IMAGES else DEFAULT_RETRIEVAL_GRAPH


def needs_similarity(graph: str) -> bool:
    return graph.startswith("retrieval")


def sift_similarity(
    images: Sequence[ImageInfo], features: Mapping[str, SiftFeatures], cache_dir: Path, device: str = "cpu"
) -> np.ndarray:
    """(N, N) ASMK similarity from the images' SIFT descriptors (weight-free retrieval), cached.

    pycolmap's uint8 descriptors are round(512 · RootSIFT): divided by 512 and L2-normalised they are
    RootSIFT again.
    """
    image_set = hashlib.sha256("\n".join(info.sha256 for info in images).encode()).hexdigest()
    store = cache.open_store(cache_dir, "retrieval-sift", {"descriptor": "rootsift-u8", "n": len(images)})
    if store.has(image_set):
        similarity = store.read(image_set).arrays["similarity"]
        store.close()
        logger.info("retrieval: similarity of %d images read from the cache", len(images))
        return similarity
    descriptors = []
    for info in images:
        d = features[info.name].descriptors.astype(np.float32)
        d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
        descriptors.append(d)
    logger.info("retrieval: ASMK over %d images (%d descriptors)", len(images), sum(len(d) for d in descriptors))
    from sfm3r.sfm.graph.retrieval import sift_retrieval  # torch loads only when the similarity is computed

    result = sift_retrieval(descriptors, device=device)
    with store.writer() as writer:
        writer.add(image_set, cache.Unit("retrieval", {"similarity": result.similarity, "codebook": result.codebook}, {}))
    store.close()
    return result.similarity


def select_pairs(
    images: Sequence[ImageInfo],
    conf: ReconstructConf,
    similarity: Callable[[], np.ndarray] | None = None,
) -> tuple[Pairs, GraphReport]:
    """The connected pairs to match, and a report (pair count, degrees, connectivity fixes).

    `similarity` is called only when the graph needs one (retrieval graphs, or a pairs file that leaves
    the graph disconnected).
    """
    names = [info.name for info in images]
    if conf.pairs_file is not None:
        given = read_pairs_file(conf.pairs_file, names)
        pairs, added = ensure_connected(given, None)
        report = _file_report(pairs, str(conf.pairs_file), added)
        logger.info("pairs: %d from %s, %d added to connect the graph", len(given), conf.pairs_file, len(added))
        return pairs, report
    graph = resolve_graph(conf.scene_graph, len(names))
    sim = similarity() if needs_similarity(graph) and similarity is not None else None
    pairs, report = build_scene_graph(names, graph, sim)
    logger.info(
        "pairs: %d (%s), degree %d-%d (mean %.1f), %d added for connectivity",
        report.num_pairs, graph, report.degree_min, report.degree_max, report.degree_mean, report.num_added,
    )  # fmt: skip
    return pairs, report


def _file_report(pairs: Pairs, path: str, added: tuple[tuple[str, str], ...]) -> GraphReport:
    """The GraphReport of a user-given pairs file (after the connectivity fix)."""
    degree = np.zeros(len(pairs.names), np.int64)
    index = {name: k for k, name in enumerate(pairs.names)}
    for a, b in pairs.pairs:
        degree[index[a]] += 1
        degree[index[b]] += 1
    sources: dict[str, int] = {}
    for source in pairs.sources:
        sources[source] = sources.get(source, 0) + 1
    return GraphReport(
        graph=f"file:{path}",
        num_images=len(pairs.names),
        num_pairs=len(pairs),
        degree_min=int(degree.min(initial=0)),
        degree_mean=float(degree.mean()) if len(degree) else 0.0,
        degree_max=int(degree.max(initial=0)),
        components_before=len(added) + 1,
        added=added,
        pairs_by_source=sources,
    )
