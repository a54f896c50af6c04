"""Edge verification: reject bad pairs and outlier matches before the global alignment.

Each pair's two point sets (the matches' 3D points in camera i and in camera j) must agree up to one
similarity transform, pts_j ≈ s·R·pts_i + t, found by the kernel's Sim(3) RANSAC (geometry.ransac: a match
is an inlier when its residual is below ``inlier_threshold`` times its distance from camera j). The pair is kept if the backend verified it and enough inliers remain; then the verified
graph is built with networkx and its largest connected component becomes the model.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import networkx as nx
import numpy as np

from sfm3r.sfm.geometry.ransac import sim3_ransac
from sfm3r.types import PairResult

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class VerifyConf:
    inlier_threshold: float = 0.05  # residual / depth below which a match is an inlier
    min_inliers: int = 15  # fewer inliers -> pair rejected
    min_inlier_ratio: float = 0.25  # lower inlier fraction -> pair rejected
    ransac_iters: int = 64  # hypotheses per pair (vectorised); 3-point samples need few at ≥ 25 % inliers
    min_conf: float = 0.0  # matches with conf <= min_conf are dropped first
    seed: int = 0


@dataclass(frozen=True, eq=False)
class VerifiedEdge:
    """One accepted pair: its inlier matches and the similarity pts_j ≈ scale·R·pts_i + t."""

    pair_index: int  # index into the input pair list
    inliers: np.ndarray  # (K,) int64 indices of the inlier matches of that PairResult
    scale: float
    rotation: np.ndarray  # (3, 3) float64, cam_j_from_cam_i
    translation: np.ndarray  # (3,) float64, at the scale of pts_j
    inlier_ratio: float
    median_residual: float  # median relative residual of the inliers

    @property
    def score(self) -> float:
        """Robust edge score for the spanning tree: inlier count × quality."""
        return float(self.inliers.size * self.inlier_ratio)


@dataclass(frozen=True, eq=False)
class VerifiedGraph:
    edges: tuple[VerifiedEdge, ...]  # edges inside the kept component
    component: tuple[str, ...]  # image names of the kept (largest) component, input order
    other_components: tuple[tuple[str, ...], ...]  # the other components (images without edges included)
    rejected_pairs: tuple[int, ...]  # indices of rejected input pairs


def verify_pair(pair: PairResult, conf: VerifyConf, rng: np.random.Generator) -> VerifiedEdge | None:
    """RANSAC similarity between ``pts_i`` and ``pts_j``; None when the pair fails."""
    pts_i = pair.pts_i.astype(np.float64)
    pts_j = pair.pts_j.astype(np.float64)
    cand = np.flatnonzero(
        (pair.conf > conf.min_conf)
        & np.isfinite(pts_i).all(1)
        & np.isfinite(pts_j).all(1)
        & (pts_i[:, 2] > 0)
        & (pts_j[:, 2] > 0)
    )
    if not pair.verified or cand.size < max(conf.min_inliers, 3):
        return None
    fit = sim3_ransac(pts_i[cand], pts_j[cand], pair.conf[cand], rng=rng, iters=conf.ransac_iters,
                      thr=conf.inlier_threshold)
    if fit is None:
        return None
    n = fit.num_inliers
    ratio = n / cand.size
    if n < conf.min_inliers or ratio < conf.min_inlier_ratio or not (fit.scale > 0 and np.isfinite(fit.scale)):
        return None
    return VerifiedEdge(
        pair_index=-1,
        inliers=cand[fit.inliers].astype(np.int64),
        scale=fit.scale,
        rotation=fit.rotation,
        translation=fit.translation,
        inlier_ratio=float(ratio),
        median_residual=float(np.median(fit.residuals[fit.inliers])),
    )


def verify_edges(
    pair_results: Sequence[PairResult], image_names: Sequence[str], conf: VerifyConf
) -> VerifiedGraph:
    """Verify every pair, build the verified match graph and keep its largest connected component.

    Images in ``image_names`` without a verified edge, or outside the largest component, are reported in
    ``other_components``. Ties between equally large components go to the one with more inliers.
    """
    rng = np.random.default_rng(conf.seed)
    known = set(image_names)
    graph = nx.Graph()
    graph.add_nodes_from(image_names)
    edges, rejected = [], []
    for k, pair in enumerate(pair_results):
        if pair.name_i not in known or pair.name_j not in known or pair.name_i == pair.name_j:
            rejected.append(k)
            continue
        e = verify_pair(pair, conf, rng)
        if e is None:
            rejected.append(k)
            continue
        e = VerifiedEdge(**{**e.__dict__, "pair_index": k})
        edges.append(e)
        graph.add_edge(pair.name_i, pair.name_j, score=e.score)
    comps = sorted(
        nx.connected_components(graph),
        key=lambda c: (len(c), graph.subgraph(c).size(weight="score")),
        reverse=True,
    )
    order = {n: k for k, n in enumerate(image_names)}
    main = comps[0] if comps else set()
    kept = tuple(
        e for e in edges if pair_results[e.pair_index].name_i in main
    )
    others = tuple(tuple(sorted(c, key=order.get)) for c in comps[1:])
    logger.info(
        "edge verification: %d/%d pairs kept, largest component %d/%d images, %d other components",
        len(edges), len(pair_results), len(main), len(image_names), len(others),
    )
    return VerifiedGraph(kept, tuple(sorted(main, key=order.get)), others, tuple(rejected))
