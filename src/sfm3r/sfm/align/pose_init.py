"""Closed-form pose initialisation: per-edge similarities chained along a maximum spanning tree.

Each verified edge gives pts_j ≈ s·R·pts_i + t in its pair units (edge_verification). With per-image scales
λ (world = λ × canonical camera coordinates) and canonical = σ × pair units, the edge means
λ_j = λ_i·σ_i / (σ_j·s), cam_j_from_cam_i = (R, λ_j·σ_j·t). Chaining these from the root of a maximum
spanning tree of the edge scores (inlier count × inlier ratio) places every image; the root is the tree's
centre (fewest hops to every leaf), which keeps chains short. Optionally the rotations are then refined by
chordal rotation averaging over all verified edges (IRLS with L1 weights), and the camera centres are
re-chained along the tree with the averaged rotations.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sfm3r.sfm.align.canonical import CanonicalData
from sfm3r.sfm.align.edge_verification import VerifiedEdge

if TYPE_CHECKING:
    import networkx as nx

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class InitialPoses:
    rotations: np.ndarray  # (N, 3, 3) float64 cam_from_world
    centres: np.ndarray  # (N, 3) float64 camera centres in world
    scales: np.ndarray  # (N,) float64 λ: world units per canonical depth unit
    root: int
    tree_edges: tuple[tuple[int, int, int], ...]  # (parent, child, edge index) in BFS order


def project_so3(m: np.ndarray) -> np.ndarray:
    """Nearest rotation(s) (..., 3, 3) to matrices m (..., 3, 3) in the Frobenius norm."""
    u, _, vt = np.linalg.svd(m)
    d = np.sign(np.linalg.det(u @ vt))
    u = u.copy()
    u[..., :, 2] *= d[..., None]
    return u @ vt


def _tree_centre(tree: nx.Graph) -> int:
    import networkx as nx

    a = next(iter(tree.nodes))
    far = lambda s: max(nx.single_source_shortest_path_length(tree, s).items(), key=lambda kv: kv[1])[0]  # noqa: E731
    a = far(a)
    b = far(a)
    path = nx.shortest_path(tree, a, b)
    return path[len(path) // 2]


def _directed(edge: VerifiedEdge, canon: CanonicalData, k: int, forward: bool):
    """(s, R, t, σ_src, σ_dst) of the edge as dst ≈ s R src + t, from src to dst."""
    s, R, t = edge.scale, edge.rotation, edge.translation
    si, sj = canon.edge_scale_i[k], canon.edge_scale_j[k]
    if forward:
        return s, R, t, si, sj
    return 1.0 / s, R.T, -R.T @ t / s, sj, si


def rotation_averaging(
    rotations: np.ndarray,
    edge_i: np.ndarray,
    edge_j: np.ndarray,
    rel: np.ndarray,
    weights: np.ndarray,
    iters: int = 30,
) -> np.ndarray:
    """Chordal rotation averaging by IRLS (L1-type weights), Jacobi updates.

    rotations (N, 3, 3) initial cam_from_world; rel (E, 3, 3) cam_j_from_cam_i of edges (edge_i, edge_j);
    weights (E,) prior edge weights. Minimises Σ w ρ(‖R_j − rel R_i‖_F); returns (N, 3, 3).
    """
    R = rotations.copy()
    N = R.shape[0]
    for _ in range(iters):
        res = np.linalg.norm(R[edge_j] - rel @ R[edge_i], axis=(1, 2))
        w = weights / np.maximum(res, 1e-3)
        acc = np.zeros((N, 3, 3))
        np.add.at(acc, edge_j, w[:, None, None] * (rel @ R[edge_i]))
        np.add.at(acc, edge_i, w[:, None, None] * (np.transpose(rel, (0, 2, 1)) @ R[edge_j]))
        has = np.abs(acc).sum((1, 2)) > 0
        R_new = R.copy()
        R_new[has] = project_so3(acc[has])
        # fix the gauge: keep image 0's rotation
        R_new = R_new @ (R_new[0].T @ R[0])
        if np.max(np.abs(R_new - R)) < 1e-10:
            R = R_new
            break
        R = R_new
    return R


def initial_poses(
    canon: CanonicalData, edges: Sequence[VerifiedEdge], average_rotations: bool = True
) -> InitialPoses:
    """Poses of all images of `canon` from the verified edges (the edge graph must be connected)."""
    import networkx as nx  # here, not at the top: a cached rerun imports this module but never aligns (~0.1 s)

    N = len(canon.image_names)
    g = nx.Graph()
    g.add_nodes_from(range(N))
    for k, e in enumerate(edges):
        i, j = int(canon.edge_i[k]), int(canon.edge_j[k])
        if not g.has_edge(i, j) or g[i][j]["score"] < e.score:
            g.add_edge(i, j, score=e.score, k=k)
    tree = nx.maximum_spanning_tree(g, weight="score")
    root = _tree_centre(tree) if N > 1 else 0
    R = np.zeros((N, 3, 3))
    R[root] = np.eye(3)
    C = np.zeros((N, 3))
    lam = np.zeros(N)
    lam[root] = 1.0
    t_rel = {}
    order = []
    for parent, child in nx.bfs_edges(tree, root):
        k = tree[parent][child]["k"]
        s, Rr, t, s_src, s_dst = _directed(edges[k], canon, k, forward=int(canon.edge_i[k]) == parent)
        lam[child] = lam[parent] * s_src / (s_dst * s)
        t_ji = lam[child] * s_dst * t
        R[child] = Rr @ R[parent]
        C[child] = C[parent] - R[child].T @ t_ji
        t_rel[child] = (parent, t_ji)
        order.append((parent, child, k))
    if average_rotations and len(edges) > N - 1:
        rel = np.stack([e.rotation for e in edges])
        w = np.array([e.score for e in edges])
        R = rotation_averaging(R, canon.edge_i, canon.edge_j, rel, w)
        for parent, child, _ in order:
            C[child] = C[parent] - R[child].T @ t_rel[child][1]
    return InitialPoses(R, C, lam, root, tuple(order))
