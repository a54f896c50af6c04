"""Bridges to a left-out component: two-view solutions of its weak links that agree on where it sits.

A component of images the alignment left out (no verified pair to the model) may still share some true
matches with the model, too few for one pair's two-view geometry to be trusted: on the temple ring's
16-image subset the two real links have 21-28 inliers, and RANSAC returns solutions 1-30° apart with the same
support, while pairs with no true match reach 14-17 inliers (benchmarks/README.md §1). One link cannot tell
them apart; two links can. Each solution of a link (u in the component, m in the model) says how the whole
component is rotated relative to the model:

    Q = R_u,componentᵀ · R_umᵀ · R_m,world      (cam_from_world rotations, R_um = cam_m from cam_u)

Solutions of different links that put the component in the same place (their Q within ``max_angle_deg``)
are unlikely to agree by chance; wrong solutions scatter. :func:`select_bridges` keeps the best-supported
set of agreeing solutions from at least ``min_links`` links, one solution per link.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from sfm3r.sfm.evaluation import rotation_angle_deg
from sfm3r.types import PairResult


@dataclass(frozen=True)
class BridgeConf:
    min_inliers: int = 20  # a solution needs this many (spurious links reach 14-17 on the temple subset)
    max_angle_deg: float = 3.0  # solutions agree when their component rotations Q are this close
    min_links: int = 2  # distinct (component image, model image) pairs that must agree


def component_rotations(pairs: Sequence[PairResult], members: Sequence[str]) -> dict[str, np.ndarray] | None:
    """(3, 3) cam_from_component rotation of each member, chained from the verified pairs among them along
    a breadth-first tree from ``members[0]`` (identity); None when they are not connected."""
    edges: dict[str, list[tuple[str, np.ndarray]]] = {name: [] for name in members}
    for pair in pairs:
        if pair.verified and pair.rel_rotation is not None and pair.name_i in edges and pair.name_j in edges:
            rotation = np.asarray(pair.rel_rotation, np.float64)  # cam_j from cam_i
            edges[pair.name_i].append((pair.name_j, rotation))
            edges[pair.name_j].append((pair.name_i, rotation.T))
    rotations = {members[0]: np.eye(3)}
    queue = deque([members[0]])
    while queue:
        name = queue.popleft()
        for other, relative in edges[name]:
            if other not in rotations:
                rotations[other] = relative @ rotations[name]
                queue.append(other)
    return rotations if len(rotations) == len(members) else None


def component_rotation(
    pair: PairResult,
    members: Mapping[str, np.ndarray],  # cam_from_component rotation of each component image
    model: Mapping[str, np.ndarray],  # cam_from_world rotation of each model image
) -> np.ndarray:
    """(3, 3) component_from_world rotation Q that the two-view solution `pair` implies."""
    rotation = np.asarray(pair.rel_rotation, np.float64)  # cam_j from cam_i
    if pair.name_i in members:  # u = i, m = j: cam_u from cam_m = R_ijᵀ
        u, m, u_from_m = pair.name_i, pair.name_j, rotation.T
    else:
        u, m, u_from_m = pair.name_j, pair.name_i, rotation
    return members[u].T @ u_from_m @ model[m]


def select_bridges(
    solutions: Sequence[PairResult],  # verified two-view solutions of the links (several per link allowed)
    members: Mapping[str, np.ndarray],
    model: Mapping[str, np.ndarray],
    conf: BridgeConf = BridgeConf(),
) -> list[PairResult]:
    """The best-supported set of agreeing solutions, one per link, from at least ``conf.min_links`` links
    (most inliers in total); [] when no such set exists."""
    usable = [s for s in solutions if s.verified and s.rel_rotation is not None and s.num_inliers >= conf.min_inliers]
    rotations = np.array([component_rotation(s, members, model) for s in usable]).reshape(-1, 3, 3)  # (S, 3, 3)
    apart = rotation_angle_deg(rotations[:, None] @ rotations[None].transpose(0, 1, 3, 2))  # (S, S) degrees
    best: list[PairResult] = []
    best_support = 0
    for centre in range(len(usable)):  # each solution as the centre of a set
        per_link: dict[tuple[str, str], int] = {}
        for k, solution in enumerate(usable):
            if apart[k, centre] > conf.max_angle_deg:
                continue
            link = (solution.name_i, solution.name_j)
            if link not in per_link or solution.num_inliers > usable[per_link[link]].num_inliers:
                per_link[link] = k
        chosen = [usable[k] for k in per_link.values()]
        support = sum(s.num_inliers for s in chosen)
        if len(chosen) >= conf.min_links and support > best_support:
            best, best_support = chosen, support
    return best
