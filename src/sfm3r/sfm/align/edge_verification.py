"""Edge verification: reject bad pairs and outlier matches before the global alignment.

Each pair's two point sets (the matches' 3D points in camera i and in camera j) must agree up to one
similarity transform, pts_j ≈ s·R·pts_i + t, found by the kernel's Sim(3) RANSAC (geometry.ransac: a match
is an inlier when its residual is below ``inlier_threshold`` times its distance from camera j). The pair is kept if the backend verified it and enough inliers remain; then the verified
graph is built with networkx and its largest connected component becomes the model. The images left out
are described by :func:`describe_left_out` (their components and strongest links to the model), so that a
run can say why they were not registered.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass

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
    import networkx as nx  # here, not at the top: a cached rerun imports this module but never verifies (~0.1 s)

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


@dataclass(frozen=True, kw_only=True)
class PairLink:
    """One input pair between a left-out component and the model, as the backend left it."""

    name_i: str
    name_j: str
    two_view_verified: bool  # the backend verified it (then the Sim(3) edge check above rejected it)
    num_inliers: int  # the backend's inlier count (classic: 0 when too few putative matches to run RANSAC)


@dataclass(frozen=True, kw_only=True)
class LeftOutComponent:
    """Images of one verified component other than the model's, and why they stay apart."""

    images: tuple[str, ...]  # input order
    internal_pairs: int  # pairs inside it that passed the edge check
    link_pairs: int  # input pairs between it and the model (0: the scene graph offered none)
    links: tuple[PairLink, ...]  # the strongest of those, most inliers first


def component_links(
    pair_results: Sequence[PairResult],
    members: Collection[str],
    model: Collection[str],
) -> list[PairLink]:
    """Every input pair between the images `members` and the images `model`, strongest first (verified by
    the backend first, then most inliers)."""
    members, model = set(members), set(model)
    links = [
        PairLink(name_i=p.name_i, name_j=p.name_j, two_view_verified=bool(p.verified), num_inliers=int(p.num_inliers))
        for p in pair_results
        if (p.name_i in members and p.name_j in model) or (p.name_j in members and p.name_i in model)
    ]
    links.sort(key=lambda link: (link.two_view_verified, link.num_inliers), reverse=True)
    return links


def describe_left_out(
    pair_results: Sequence[PairResult], graph: VerifiedGraph, max_links: int = 3
) -> tuple[LeftOutComponent, ...]:
    """Each component of ``graph.other_components`` with its strongest links to the kept component.

    A left-out component has, by construction, no pair to the model that passed both the backend's check
    and the edge check; its links say which of the two failed and with how many inliers.
    """
    rejected = set(graph.rejected_pairs)
    main = set(graph.component)
    out = []
    for images in graph.other_components:
        members = set(images)
        internal = sum(
            1 for k, p in enumerate(pair_results) if k not in rejected and p.name_i in members and p.name_j in members
        )
        links = component_links(pair_results, members, main)
        out.append(LeftOutComponent(
            images=tuple(images), internal_pairs=internal, link_pairs=len(links), links=tuple(links[:max_links])
        ))  # fmt: skip
    return tuple(out)


def left_out_message(component: LeftOutComponent) -> str:
    """One log line saying why a component was left out of the model."""
    names = ", ".join(component.images)
    head = (
        f"{len(component.images)} image(s) not registered ({names}): "
        f"{component.internal_pairs} verified pair(s) among them, none to the model"
    )
    if not component.link_pairs:
        return f"{head}; the scene graph has no pair between them and the model (add pairs)"
    useful = [link for link in component.links if link.two_view_verified or link.num_inliers > 0]
    if not useful:
        return f"{head}; none of its {component.link_pairs} pairs to the model has an inlier (too few matches)"
    strongest = "; ".join(
        f"{link.name_i} / {link.name_j}: "
        + (f"verified with {link.num_inliers} inliers, rejected by the edge check" if link.two_view_verified
           else f"{link.num_inliers} inliers, not verified")
        for link in useful
    )  # fmt: skip
    return f"{head}; strongest of its {component.link_pairs} pairs to the model: {strongest}"
