"""Multi-view tracks from pairwise matches: vectorised union-find with conflict splitting.

A *node* is one keypoint of one image, ``(image index, keypoint id)`` (keypoint ids are the
``PairResult.idx_i`` / ``idx_j``, stable across all pairs of an image). Every match of a kept pair is an
edge between two nodes; a *track* is a connected component of that graph.

Conflicts. A component holding two different keypoints of the same image cannot be one 3D point; it
arises when an outlier match bridges two true tracks. Conflicting components are split in three steps,
all vectorised (scipy connected components, no Python loop over nodes or edges):

1. *Strong edges.* An edge (a, b) is strong when a third node c is matched to both a and b (the edge
   closes a triangle of matches). Random outlier matches almost never close triangles, true multi-view
   matches almost always do. Inside conflicting components the strong edges alone form groups.
2. *Support peeling.* Groups that still conflict keep, per image, the keypoint with the most support
   (sum of the confidences of its strong edges; ties: smaller keypoint id). The other keypoints leave
   and are re-grouped, over the strong edges among themselves, in the next round (at most
   ``_MAX_PEEL_ROUNDS`` rounds; what still conflicts after that is dropped).
3. *Weak edges back, group by group.* The remaining edges link step-2 groups; a link between two groups
   that share an image is rejected. Links that would still chain into a conflict are added greedily by
   total confidence, heaviest first (a Python union-find over only those groups, usually few).

Components that never conflicted are returned unchanged. Tracks shorter than ``min_length`` images are
dropped. ``obs_xy`` of a node is the keypoint's pixel from the first pair that mentions it (identical
across pairs for both backends).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from sfm3r.errors import InputError
from sfm3r.types import PairResult

logger = logging.getLogger(__name__)

_MAX_PEEL_ROUNDS = 6  # support-peeling rounds for components that still conflict after step 1

__all__ = ["Tracks", "build_tracks"]


@dataclass(frozen=True, eq=False)
class Tracks:
    """K observations of T multi-view tracks, as a flat table sorted by (track, image).

    Every track has at most one observation per image.
    """

    obs_track: np.ndarray  # (K,) int64 track id in [0, T)
    obs_image: np.ndarray  # (K,) int64 index into image_names
    obs_keypoint: np.ndarray  # (K,) int64 keypoint id (PairResult.idx_i / idx_j)
    obs_xy: np.ndarray  # (K, 2) float64 original pixels, COLMAP convention
    num_tracks: int

    @property
    def num_observations(self) -> int:
        return int(self.obs_track.shape[0])

    def track_lengths(self) -> np.ndarray:
        """(T,) int64 number of observations (= images) of each track."""
        return np.bincount(self.obs_track, minlength=self.num_tracks).astype(np.int64)


def build_tracks(
    pair_results: Iterable[PairResult],
    image_names: Sequence[str],
    *,
    min_length: int = 2,
    verified_only: bool = True,
    min_conf: float = 0.0,
) -> Tracks:
    """Group the matches of many image pairs into conflict-free multi-view tracks.

    Args:
        pair_results: the pairs (any backend). Pairs naming an image outside ``image_names`` raise.
        image_names: (N,) the images; ``obs_image`` indexes into it.
        min_length: drop tracks seen in fewer images.
        verified_only: ignore pairs whose ``verified`` flag is False.
        min_conf: ignore matches with ``conf < min_conf``.

    Returns:
        Tracks sorted by (track, image); track ids are 0..T-1 (deterministic order, no meaning).
    """
    if min_length < 1:
        raise InputError(f"build_tracks: min_length must be >= 1, got {min_length}")
    index = {name: i for i, name in enumerate(image_names)}
    if len(index) != len(image_names):
        raise InputError("build_tracks: image_names contains duplicates; image names must be unique")

    img_a, kp_a, xy_a, img_b, kp_b, xy_b, conf = _collect_edges(pair_results, index, verified_only, min_conf)
    if img_a.size == 0:
        logger.warning("build_tracks: no matches left after filtering (verified_only=%s, min_conf=%s)",
                       verified_only, min_conf)
        return _empty_tracks()

    # Nodes: unique (image, keypoint) keys.
    num_images = len(image_names)
    keys = np.concatenate([kp_a * num_images + img_a, kp_b * num_images + img_b])
    if np.any(np.concatenate([kp_a, kp_b]) < 0):
        raise InputError("build_tracks: negative keypoint ids in PairResult.idx_i/idx_j")
    node_keys, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    num_nodes = node_keys.size
    node_image = node_keys % num_images
    node_kp = node_keys // num_images
    node_xy = np.concatenate([xy_a, xy_b])[first]
    num_edges = img_a.size
    ea, eb = inverse[:num_edges], inverse[num_edges:]
    keep = ea != eb
    ea, eb, conf = ea[keep], eb[keep], conf[keep]

    labels = _split_conflicts(ea, eb, conf, node_image, num_nodes)

    # Drop short tracks and unassigned nodes, renumber tracks 0..T-1.
    assigned = labels >= 0
    lengths = np.bincount(labels[assigned], minlength=int(labels.max()) + 1 if assigned.any() else 0)
    good = assigned.copy()
    good[assigned] = lengths[labels[assigned]] >= min_length
    nodes = np.flatnonzero(good)
    _, track = np.unique(labels[nodes], return_inverse=True)
    order = np.lexsort((node_image[nodes], track))
    nodes, track = nodes[order], track[order]
    num_tracks = int(track.max()) + 1 if track.size else 0
    logger.info("build_tracks: %d matches over %d nodes -> %d tracks, %d observations",
                num_edges, num_nodes, num_tracks, nodes.size)
    return Tracks(
        obs_track=track.astype(np.int64),
        obs_image=node_image[nodes].astype(np.int64),
        obs_keypoint=node_kp[nodes].astype(np.int64),
        obs_xy=node_xy[nodes].astype(np.float64),
        num_tracks=num_tracks,
    )


def _empty_tracks() -> Tracks:
    e = np.zeros(0, np.int64)
    return Tracks(obs_track=e, obs_image=e.copy(), obs_keypoint=e.copy(), obs_xy=np.zeros((0, 2)), num_tracks=0)


def _collect_edges(pair_results, index, verified_only, min_conf):
    """Concatenate the kept matches of all pairs: image/keypoint/xy of both ends and confidence."""
    parts: list[tuple] = []
    for pr in pair_results:
        if verified_only and not pr.verified:
            continue
        for name in (pr.name_i, pr.name_j):
            if name not in index:
                raise InputError(f"build_tracks: pair ({pr.name_i}, {pr.name_j}) names image {name!r} "
                                 "which is not in image_names; pass every image of the pairs")
        i, j = index[pr.name_i], index[pr.name_j]
        if i == j:
            logger.warning("build_tracks: skipping pair of image %s with itself", pr.name_i)
            continue
        m = pr.num_matches
        if m == 0:
            continue
        conf = np.asarray(pr.conf, np.float64).reshape(-1)
        idx_i = np.asarray(pr.idx_i, np.int64).reshape(-1)
        idx_j = np.asarray(pr.idx_j, np.int64).reshape(-1)
        if conf.shape[0] != m or idx_i.shape[0] != m or idx_j.shape[0] != m:
            raise InputError(f"build_tracks: pair ({pr.name_i}, {pr.name_j}) has {m} matches but "
                             f"conf/idx_i/idx_j have {conf.shape[0]}/{idx_i.shape[0]}/{idx_j.shape[0]} entries")
        sel = conf >= min_conf
        parts.append((np.full(int(sel.sum()), i, np.int64), idx_i[sel], np.asarray(pr.xy_i, np.float64)[sel],
                      np.full(int(sel.sum()), j, np.int64), idx_j[sel], np.asarray(pr.xy_j, np.float64)[sel],
                      conf[sel]))
    if not parts:
        e = np.zeros(0, np.int64)
        return e, e, np.zeros((0, 2)), e, e, np.zeros((0, 2)), np.zeros(0)
    return tuple(np.concatenate(col) for col in zip(*parts))


def _components(ea: np.ndarray, eb: np.ndarray, num_nodes: int) -> np.ndarray:
    """(num_nodes,) int64 connected-component label of every node (isolated nodes get their own)."""
    from scipy.sparse import coo_matrix  # here, not at import: a cached rerun never loads scipy.sparse
    from scipy.sparse.csgraph import connected_components
    graph = coo_matrix((np.ones(ea.size, np.int8), (ea, eb)), shape=(num_nodes, num_nodes)).tocsr()
    _, labels = connected_components(graph, directed=True, connection="weak")
    return labels.astype(np.int64)


def _conflicting(labels: np.ndarray, node_image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(C,) bool per label: the component (restricted to ``mask`` nodes) has two nodes in one image."""
    num_labels = int(labels.max()) + 1 if labels.size else 0
    nodes = np.flatnonzero(mask)
    stride = int(node_image.max()) + 1 if node_image.size else 1
    pairs = _distinct(labels[nodes] * stride + node_image[nodes])
    n_img = np.bincount(pairs // stride, minlength=num_labels)
    n_nodes = np.bincount(labels[nodes], minlength=num_labels)
    return n_nodes > n_img


def _distinct(x: np.ndarray) -> np.ndarray:
    """Sorted distinct values (sort-based: numpy's hash-based ``np.unique`` is slower on large int64)."""
    x = np.sort(x)
    keep = np.ones(x.size, bool)
    keep[1:] = x[1:] != x[:-1]
    return x[keep]


def _strong_edges(ea: np.ndarray, eb: np.ndarray, num_nodes: int) -> np.ndarray:
    """(E,) bool: the edge closes at least one triangle (a common neighbour of both ends)."""
    import scipy.sparse as sp  # here: see _components
    if ea.size == 0:
        return np.zeros(0, bool)
    adj = sp.coo_matrix((np.ones(2 * ea.size, np.float32), (np.r_[ea, eb], np.r_[eb, ea])),
                        shape=(num_nodes, num_nodes)).tocsr()
    adj.data[:] = 1.0  # duplicate edges count once
    common = np.asarray(adj[ea].multiply(adj[eb]).sum(axis=1)).ravel()
    return common > 0


def _split_conflicts(ea, eb, conf, node_image, num_nodes) -> np.ndarray:
    """(num_nodes,) int64 track label per node, -1 for dropped nodes. See the module docstring."""
    labels = _components(ea, eb, num_nodes)
    bad_label = _conflicting(labels, node_image, np.ones(num_nodes, bool))
    if not bad_label.any():
        return labels
    bad_node = bad_label[labels]
    in_bad = bad_node[ea]  # both ends share a component
    logger.info("build_tracks: %d of %d components conflict (%d nodes); splitting",
                int(bad_label.sum()), bad_label.size, int(bad_node.sum()))

    # Step 1: inside conflicting components keep only edges that close a triangle.
    ba, bb, bc = ea[in_bad], eb[in_bad], conf[in_bad]
    strong = _strong_edges(ba, bb, num_nodes)

    # Step 2: peel the strong-edge components by support until conflict-free.
    out = np.where(bad_node, -1, labels)
    offset = int(labels.max()) + 1
    no_priority = np.zeros(num_nodes)
    offset = _peel(ba[strong], bb[strong], bc[strong], no_priority, node_image, bad_node.copy(), out, offset)

    # Step 3: weak edges back, merging step-2 groups whose image sets are disjoint.
    return _merge_groups(ba[~strong], bb[~strong], bc[~strong], out, node_image)


def _merge_groups(wa, wb, wc, out, node_image) -> np.ndarray:
    """Merge the groups ``out`` (labels, -1 = dropped) along edges (wa, wb) without creating conflicts.

    Group links whose image sets overlap are rejected. Where the remaining links still chain into a
    conflict, links are added greedily by total confidence (a short Python union-find over those groups).
    """
    import scipy.sparse as sp  # here: see _components
    use = (out[wa] >= 0) & (out[wb] >= 0) & (out[wa] != out[wb])
    if not use.any():
        return out
    assigned = out >= 0
    labels, compact = np.unique(out[assigned], return_inverse=True)
    num_g = labels.size
    group = np.full(out.size, -1, np.int64)
    group[assigned] = compact
    num_images = int(node_image.max()) + 1
    gmat = sp.csr_matrix((np.ones(compact.size, np.float32), (compact, node_image[assigned])),
                         shape=(num_g, num_images))
    ga, gb = group[wa[use]], group[wb[use]]
    lo, hi = np.minimum(ga, gb), np.maximum(ga, gb)
    link_key, inv = np.unique(lo * num_g + hi, return_inverse=True)
    link_w = np.bincount(inv, wc[use])
    la, lb = link_key // num_g, link_key % num_g
    disjoint = np.asarray(gmat[la].multiply(gmat[lb]).sum(axis=1)).ravel() == 0
    la, lb, link_w = la[disjoint], lb[disjoint], link_w[disjoint]
    merged = _components(la, lb, num_g)
    node_merged = np.where(assigned, merged[np.maximum(group, 0)], -1)
    bad = _conflicting(np.maximum(node_merged, 0), node_image, assigned)
    final = merged.copy()  # group -> final label
    bad_links = bad[merged[la]]
    if bad_links.any():
        final = _greedy_merge(la[bad_links], lb[bad_links], link_w[bad_links], merged, bad, gmat)
    new = np.full(out.size, -1, np.int64)
    new[assigned] = final[compact]
    return new


def _greedy_merge(la, lb, w, merged, bad, gmat) -> np.ndarray:
    """Greedy conflict-free union of groups along links (heaviest first); groups of conflict-free merged
    components keep their merged label. Returns (G,) final label per group."""
    final = merged.copy()
    parent = {}
    images = {}
    gcsr = gmat.tocsr()
    for g in np.flatnonzero(bad[merged]).tolist():
        parent[g] = g
        bits = 0
        for im in gcsr.indices[gcsr.indptr[g]:gcsr.indptr[g + 1]].tolist():
            bits |= 1 << im
        images[g] = bits

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for k in np.argsort(-w, kind="stable").tolist():
        ra, rb = find(int(la[k])), find(int(lb[k]))
        if ra == rb or images[ra] & images[rb]:
            continue
        parent[rb] = ra
        images[ra] |= images[rb]
    base = int(merged.max()) + 1
    for g in parent:
        final[g] = base + find(g)
    return final


def _peel(ea, eb, conf, priority, node_image, active, out, offset) -> int:
    """Label the ``active`` nodes conflict-free in ``out`` (in place) using edges (ea, eb, conf).

    Each round: components over the edges among active nodes; conflict-free ones are final; in the
    others every (component, image) keeps its node of highest (priority, support, -node id), the winners
    become tracks (components over edges among winners) and the losers go to the next round.
    Returns the next free label.
    """
    num_nodes = node_image.size
    for _ in range(_MAX_PEEL_ROUNDS):
        use = active[ea] & active[eb]
        ra, rb, rc = ea[use], eb[use], conf[use]
        sub = _components(ra, rb, num_nodes)
        bad_sub = _conflicting(sub, node_image, active)
        ok_nodes = active & ~bad_sub[sub]
        out[ok_nodes] = sub[ok_nodes] + offset
        offset += num_nodes
        active &= ~ok_nodes
        if not active.any():
            return offset
        support = np.bincount(ra, rc, minlength=num_nodes) + np.bincount(rb, rc, minlength=num_nodes)
        nodes = np.flatnonzero(active)
        order = np.lexsort((nodes, -support[nodes], -priority[nodes], node_image[nodes], sub[nodes]))
        nodes = nodes[order]
        grp = sub[nodes] * (int(node_image.max()) + 1) + node_image[nodes]
        first = np.ones(nodes.size, bool)
        first[1:] = grp[1:] != grp[:-1]
        winners = nodes[first]
        win = np.zeros(num_nodes, bool)
        win[winners] = True
        use_w = win[ra] & win[rb]
        wsub = _components(ra[use_w], rb[use_w], num_nodes)
        out[winners] = wsub[winners] + offset
        offset += num_nodes
        active[winners] = False
    if active.any():
        logger.info("build_tracks: dropping %d nodes still in conflict after %d rounds",
                    int(active.sum()), _MAX_PEEL_ROUNDS)
    return offset
