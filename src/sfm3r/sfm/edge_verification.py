"""Edge verification: reject bad pairs and outlier matches before the global alignment.

Each pair's two point sets (the matches' 3D points in camera i and in camera j) must agree up to one
similarity transform, pts_j ≈ s·R·pts_i + t. A RANSAC over minimal 3-point Umeyama fits finds it; a match
is an inlier when its residual is below ``inlier_threshold`` times its depth in camera j (pointmaps are
noisier far away). The pair is kept if the backend verified it and enough inliers remain; then the verified
graph is built with networkx and its largest connected component becomes the model.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import networkx as nx
import numpy as np

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


def weighted_umeyama(
    src: np.ndarray, dst: np.ndarray, w: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batched weighted similarity fit dst ≈ s·R·src + t.

    Args: src, dst (B, M, 3); w (B, M) non-negative weights.
    Returns: s (B,), R (B, 3, 3) with det +1, t (B, 3).
    """
    w = w / np.maximum(w.sum(-1, keepdims=True), 1e-12)
    mu_s = np.einsum("bm,bmk->bk", w, src)
    mu_d = np.einsum("bm,bmk->bk", w, dst)
    xs = src - mu_s[:, None]
    xd = dst - mu_d[:, None]
    cov = np.einsum("bm,bmk,bml->bkl", w, xd, xs)
    var_s = np.einsum("bm,bmk,bmk->b", w, xs, xs)
    u, d, vt = np.linalg.svd(cov)
    sgn = np.sign(np.linalg.det(u @ vt))
    sgn[sgn == 0] = 1.0
    e = np.ones((src.shape[0], 3))
    e[:, 2] = sgn
    R = np.einsum("bij,bj,bjk->bik", u, e, vt)
    s = (d * e).sum(-1) / np.maximum(var_s, 1e-12)
    t = mu_d - s[:, None] * np.einsum("bij,bj->bi", R, mu_s)
    return s, R, t


def _relative_residual(pts_i, pts_j, s, R, t):
    """(B, M) |pts_j − (s R pts_i + t)| / depth_j."""
    d = s[:, None, None] * (pts_i[None] @ R.transpose(0, 2, 1)) + (t[:, None] - pts_j[None])
    depth = np.maximum(np.sqrt((pts_j * pts_j).sum(-1)), 1e-9)
    return np.sqrt((d * d).sum(-1)) / depth[None]


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
    pi, pj, w = pts_i[cand], pts_j[cand], pair.conf[cand].astype(np.float64)
    samples = np.argsort(rng.random((conf.ransac_iters, cand.size)), axis=1)[:, :3]
    s, R, t = weighted_umeyama(pi[samples], pj[samples], np.ones(samples.shape))
    res = _relative_residual(pi, pj, s, R, t)
    counts = (res < conf.inlier_threshold).sum(1)
    best = int(np.argmax(counts))
    inl = res[best] < conf.inlier_threshold
    for _ in range(3):  # local optimisation: refit on inliers
        if inl.sum() < 3:
            return None
        s, R, t = weighted_umeyama(pi[None, inl], pj[None, inl], w[None, inl])
        res = _relative_residual(pi, pj, s, R, t)[0]
        inl = res < conf.inlier_threshold
    n = int(inl.sum())
    ratio = n / cand.size
    if n < conf.min_inliers or ratio < conf.min_inlier_ratio or not (s[0] > 0 and np.isfinite(s[0])):
        return None
    return VerifiedEdge(
        pair_index=-1,
        inliers=cand[inl].astype(np.int64),
        scale=float(s[0]),
        rotation=R[0],
        translation=t[0],
        inlier_ratio=float(ratio),
        median_residual=float(np.median(res[inl])),
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
