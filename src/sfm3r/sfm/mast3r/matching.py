"""Fast reciprocal nearest-neighbour matching of dense descriptor maps (MASt3R-SfM §3.1-3.2).

A *walk* starts at a seed pixel ``a`` of map A and alternates nearest-neighbour hops
``b <- NN_B(A[a])`` and ``a <- NN_A(B[b])``. A walk stops ("converges") as soon as a hop returns the
pixel it already held; its current ``(a, b)`` is then a mutual nearest-neighbour pair. Walks still moving
after ``max_iter`` hop pairs are dropped. Equivalent to ``mast3r.fast_nn.fast_reciprocal_NNs`` (same
seeds, same stopping rule, same merge order), pinned bit for bit by ``shared/fixtures/fast_nn``.

What differs from the official code is the cost structure, not the result:

- everything stays on the device of the descriptors: the walk state, the similarity search and the
  merge are torch ops; the only device-to-host traffic is a handful of scalars per hop (how many walks
  are active, how many queries are new) that size the next batch;
- only the row-wise argmax is computed (the official search also computes an unused column argmax);
- every nearest-neighbour answer is memoised per (query map, database map) direction, so a pixel is
  searched at most once, even when several walks, or the two walks of one decoder pass (A->B seeded on A,
  B->A seeded on B), pass through it;
- the search runs in tiles of at most ``block_size**2`` similarities (bounded memory), batched over all
  directions of the same shape (e.g. the four directions of one pair, or of many pairs).

Similarity: ``dist="dot"`` (descriptors, largest dot product; ties go to the lowest database index) or
``dist="l2"`` (smallest Euclidean distance through ``scipy.spatial.cKDTree`` on the host: the variant the
official code uses for 3D points on CPU).

Pixel indices are *network* pixels: flat index ``y * W + x``; xy outputs are integer ``(x, y)``.

The pipeline uses :func:`symmetric_correspondences` (and its batched form). The walk engine also supports
what the official single-direction calls offer (explicit seeds with ``pixel_tol``, ``dist="l2"``); the
mirrors of those calls, used only to check this module against the official fixtures, live in
``tests/sfm/matching_official_api.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import torch

logger = logging.getLogger(__name__)

__all__ = [
    "Dist",
    "PairDescriptors",
    "symmetric_correspondences",
    "symmetric_correspondences_batch",
]

DEFAULT_BLOCK_SIZE = 8192  # tile edge of the similarity search: at most 8192**2 similarities in memory
DEFAULT_MAX_ITER = 10  # hop pairs per walk for grid seeds (official value)
# On CPU, tiles larger than this edge spill out of the last-level cache (measured on a 32 MiB L3:
# 2048 is ~30 % faster than 8192); the GPU uses the full block_size.
_CPU_TILE_EDGE = 2048

Tensorish = torch.Tensor | np.ndarray


class Dist(StrEnum):
    """Nearest-neighbour criterion."""

    DOT = "dot"  # largest dot product (MASt3R descriptors); brute force on the device
    L2 = "l2"  # smallest Euclidean distance; scipy cKDTree on the host (float64)


# ----------------------------------------------------------------------------------------------------
# Input checking


def _as_tensor(x: Tensorish, device: torch.device | None) -> torch.Tensor:
    t = torch.as_tensor(x)
    return t if device is None else t.to(device)


def _check_desc(name: str, desc: torch.Tensor) -> None:
    if desc.ndim != 3:
        raise ValueError(f"{name} must be a (H, W, D) descriptor map, got shape {tuple(desc.shape)}")
    if not desc.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {desc.dtype}")


def _check_conf(name: str, conf: torch.Tensor, desc_name: str, desc: torch.Tensor) -> None:
    if tuple(conf.shape) != tuple(desc.shape[:2]):
        raise ValueError(
            f"{name} must be (H, W) = {tuple(desc.shape[:2])} like {desc_name}, got {tuple(conf.shape)}"
        )


def _default_device(*xs: Tensorish) -> torch.device:
    for x in xs:
        if isinstance(x, torch.Tensor):
            return x.device
    return torch.device("cpu")


def _grid_seeds(height: int, width: int, subsample: int, device: torch.device) -> torch.Tensor:
    """Flat indices of the cell centres ``y = S//2, S//2+S, ...``, ``x = S//2, ...`` (sorted, int64)."""
    if subsample < 1:
        raise ValueError(f"subsample must be >= 1, got {subsample}")
    ys = torch.tensor(range(subsample // 2, height, subsample), dtype=torch.int64, device=device)
    xs = torch.tensor(range(subsample // 2, width, subsample), dtype=torch.int64, device=device)
    return (ys[:, None] * width + xs[None, :]).reshape(-1)


# ----------------------------------------------------------------------------------------------------
# Memoised nearest-neighbour search over several directions


class _NearestIndex:
    """Nearest neighbours for a set of directions ``d = (query map, database map)``, memoised.

    ``maps`` are flattened descriptor maps (N_m, D) on one device. Directions with the same
    (N_query, N_database) shape are searched together in one batched, tiled matmul.
    """

    def __init__(
        self,
        maps: Sequence[torch.Tensor],
        directions: Sequence[tuple[int, int]],
        block_size: int,
        dist: Dist,
    ) -> None:
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.maps = maps
        self.directions = list(directions)
        self.block_size = block_size
        self.dist = dist
        device = maps[0].device
        sizes = [maps[q].shape[0] for q, _ in self.directions]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.offsets = torch.as_tensor(offsets, device=device)
        self.cache = torch.full((int(offsets[-1]),), -1, dtype=torch.int64, device=device)
        # group directions by shape; inside a group, directions keep increasing global order
        groups: dict[tuple[int, int], list[int]] = {}
        for d, (q, b) in enumerate(self.directions):
            groups.setdefault((maps[q].shape[0], maps[b].shape[0]), []).append(d)
        self.groups = list(groups.values())
        group_of = np.zeros(len(self.directions), dtype=np.int64)
        local_of = np.zeros(len(self.directions), dtype=np.int64)
        for g, members in enumerate(self.groups):
            group_of[members] = g
            local_of[members] = np.arange(len(members))
        self.group_of = torch.as_tensor(group_of, device=device)
        self.local_of = torch.as_tensor(local_of, device=device)
        self._stacks: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._trees: dict[int, object] = {}

    def lookup(self, direction: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Nearest database pixel of query pixels ``idx`` (Q,) along ``direction`` (Q,) -> (Q,) int64."""
        keys = self.offsets[direction] + idx
        found = self.cache[keys]
        missing = keys[found < 0]
        if missing.numel() > 0:
            self._fill(torch.unique(missing))
            found = self.cache[keys]
        return found

    def _fill(self, keys: torch.Tensor) -> None:
        """Search the sorted unique cache ``keys`` and store the answers."""
        direction = torch.searchsorted(self.offsets, keys, right=True) - 1
        idx = keys - self.offsets[direction]
        group = self.group_of[direction]
        for g in range(len(self.groups)):
            sel = None if len(self.groups) == 1 else (group == g).nonzero().squeeze(1)
            if sel is not None and sel.numel() == 0:
                continue
            k, d, i = (keys, direction, idx) if sel is None else (keys[sel], direction[sel], idx[sel])
            if self.dist is Dist.L2:
                self.cache[k] = self._search_kdtree(d, i)
            else:
                self.cache[k] = self._search_dot(g, self.local_of[d], i)

    def _stack(self, g: int) -> tuple[torch.Tensor, torch.Tensor]:
        if g not in self._stacks:
            members = [self.directions[d] for d in self.groups[g]]
            queries = torch.stack([self.maps[q] for q, _ in members])
            database = torch.stack([self.maps[b] for _, b in members])
            self._stacks[g] = (queries, database)
        return self._stacks[g]

    def _search_dot(self, g: int, local: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Rows ``idx`` of the group's query maps (sorted by ``local`` direction) -> argmax dot product."""
        queries, database = self._stack(g)
        n_dir = queries.shape[0]
        counts = torch.bincount(local, minlength=n_dir)
        width = int(counts.max())
        start = torch.cumsum(counts, 0) - counts
        pos = torch.arange(local.numel(), device=local.device) - start[local]
        padded = torch.zeros((n_dir, width), dtype=torch.int64, device=local.device)
        padded[local, pos] = idx
        rows = torch.gather(queries, 1, padded[..., None].expand(-1, -1, queries.shape[2]))
        best = _blocked_argmax_dot(rows, database, self.block_size)
        return best[local, pos]

    def _search_kdtree(self, direction: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        from scipy.spatial import cKDTree

        out = torch.empty_like(idx)
        dirs = direction.cpu().numpy()
        rows = idx.cpu().numpy()
        for d in np.unique(dirs):
            q, b = self.directions[int(d)]
            if int(d) not in self._trees:
                self._trees[int(d)] = cKDTree(self.maps[b].detach().cpu().numpy())
            sel = np.nonzero(dirs == d)[0]
            query = self.maps[q].detach().cpu().numpy()[rows[sel]]
            _, nn = self._trees[int(d)].query(query)
            out[torch.as_tensor(sel, device=out.device)] = torch.as_tensor(nn, device=out.device)
        return out


def _blocked_argmax_dot(queries: torch.Tensor, database: torch.Tensor, block_size: int) -> torch.Tensor:
    """argmax_n <queries[g, k], database[g, n]> for (G, K, D) x (G, N, D) -> (G, K) int64.

    Tiles hold at most ``block_size**2`` similarities. Exact ties go to the lowest database index
    (torch's argmax picks the first maximum inside a tile; later tiles must be strictly larger).
    """
    n_dir, n_query, _ = queries.shape
    n_db = database.shape[1]
    if queries.device.type == "cpu":
        block_size = min(block_size, _CPU_TILE_EDGE)
    db_step = min(n_db, block_size)
    q_step = max(1, (block_size * block_size) // (n_dir * db_step))
    out = torch.empty((n_dir, n_query), dtype=torch.int64, device=queries.device)
    for q0 in range(0, n_query, q_step):
        q = queries[:, q0 : q0 + q_step]
        best_val = best_idx = None
        for b0 in range(0, n_db, db_step):
            sim = torch.bmm(q, database[:, b0 : b0 + db_step].transpose(1, 2))
            val, arg = sim.max(dim=2)
            if best_val is None:
                best_val, best_idx = val, arg
            else:
                better = val > best_val
                best_val = torch.where(better, val, best_val)
                best_idx = torch.where(better, arg + b0, best_idx)
        out[:, q0 : q0 + q_step] = best_idx
    return out


# ----------------------------------------------------------------------------------------------------
# The walk


@dataclass(frozen=True)
class _Run:
    """One reciprocal walk set: seeds on map ``a`` (flat indices), matched against map ``b``."""

    a: int  # index into the map list
    b: int
    seeds: torch.Tensor  # (S,) int64 flat indices into map a
    width_a: int  # for pixel_tol distances


def _walk_runs(
    maps: Sequence[torch.Tensor],
    runs: Sequence[_Run],
    *,
    max_iter: int,
    pixel_tol: float,
    block_size: int,
    dist: Dist,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run every walk of every run together.

    Returns ``(run_id, idx_a, idx_b)``, each (M,) int64, for the walks kept (converged, or with
    ``pixel_tol > 0`` those returning within ``pixel_tol`` of their seed, reported at the seed), in run
    order (not deduplicated).
    """
    device = maps[0].device
    direction_ids: dict[tuple[int, int], int] = {}
    for run in runs:
        direction_ids.setdefault((run.a, run.b), len(direction_ids))
        direction_ids.setdefault((run.b, run.a), len(direction_ids))
    index = _NearestIndex(maps, list(direction_ids), block_size, dist)

    # a walk needs somewhere to go: runs against an empty map have no walks
    runs = [r if maps[r.b].shape[0] > 0 else _Run(r.a, r.b, r.seeds[:0], r.width_a) for r in runs]
    sizes = [int(run.seeds.numel()) for run in runs]
    run_id = torch.repeat_interleave(
        torch.arange(len(runs), device=device), torch.as_tensor(sizes, device=device)
    )
    fwd = torch.as_tensor([direction_ids[(r.a, r.b)] for r in runs], device=device)[run_id]
    bwd = torch.as_tensor([direction_ids[(r.b, r.a)] for r in runs], device=device)[run_id]
    seeds = torch.cat([run.seeds for run in runs]) if runs else torch.zeros(0, dtype=torch.int64)
    cur_a = seeds.clone()
    cur_b = torch.full_like(seeds, -1)
    active = torch.ones_like(seeds, dtype=torch.bool)

    for _ in range(max_iter):
        walking = active.nonzero().squeeze(1)
        if walking.numel() == 0:
            break
        new_b = index.lookup(fwd[walking], cur_a[walking])
        moved = new_b != cur_b[walking]
        cur_b[walking] = new_b
        walking = walking[moved]
        new_a = index.lookup(bwd[walking], cur_b[walking])
        moved = new_a != cur_a[walking]
        cur_a[walking] = new_a
        active = torch.zeros_like(active)
        active[walking[moved]] = True

    if pixel_tol > 0:
        width = torch.as_tensor([r.width_a for r in runs], device=device)[run_id]
        dy = (cur_a // width - seeds // width).double()
        dx = (cur_a % width - seeds % width).double()
        keep = torch.sqrt(dx * dx + dy * dy) < pixel_tol
        return run_id[keep], seeds[keep], cur_b[keep]
    keep = ~active
    return run_id[keep], cur_a[keep], cur_b[keep]


def _unique_pairs(
    idx_a: torch.Tensor, idx_b: torch.Tensor, n_b: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unique (a, b) sorted by a then b, with the position of each pair's first occurrence."""
    keys = idx_a * n_b + idx_b
    uniq, inverse = torch.unique(keys, sorted=True, return_inverse=True)
    first = torch.full((uniq.numel(),), keys.numel(), dtype=torch.int64, device=keys.device)
    first.scatter_reduce_(0, inverse, torch.arange(keys.numel(), device=keys.device), reduce="amin")
    return uniq // n_b, uniq % n_b, first


def _geometric_mean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sqrt(a * b), correctly rounded in the dtype of the product.

    torch's vectorised float32 sqrt on CPU is not always correctly rounded (it can differ from
    numpy's by one ulp); a float64 sqrt of the float32 product, rounded once to float32, is.
    """
    prod = a * b
    return torch.sqrt(prod.double()).to(prod.dtype)


def _to_xy(idx: torch.Tensor, width: int) -> torch.Tensor:
    """Flat indices (M,) -> (M, 2) int64 (x, y)."""
    return torch.stack([idx % width, idx // width], dim=1)


# ----------------------------------------------------------------------------------------------------
# Public API


@dataclass(frozen=True)
class PairDescriptors:
    """The four descriptor maps and ``desc_conf`` maps of one unordered pair (i, j), both passes.

    Pass i->j (decoder run with i as view 1) gives ``desc_ii``/``conf_ii`` (image i) and
    ``desc_ji``/``conf_ji`` (image j); pass j->i gives ``desc_jj``/``conf_jj`` (image j) and
    ``desc_ij``/``conf_ij`` (image i). The first letter is the image the map belongs to.
    Shapes: image i maps (H_i, W_i, D) and (H_i, W_i); image j maps (H_j, W_j, D) and (H_j, W_j).
    """

    desc_ii: Tensorish
    desc_ji: Tensorish
    desc_jj: Tensorish
    desc_ij: Tensorish
    conf_ii: Tensorish
    conf_ji: Tensorish
    conf_jj: Tensorish
    conf_ij: Tensorish


def symmetric_correspondences(
    desc_ii: Tensorish,  # (H_i, W_i, D) image i, pass i->j
    desc_ji: Tensorish,  # (H_j, W_j, D) image j, pass i->j
    desc_jj: Tensorish,  # (H_j, W_j, D) image j, pass j->i
    desc_ij: Tensorish,  # (H_i, W_i, D) image i, pass j->i
    conf_ii: Tensorish,  # (H_i, W_i) desc_conf, image i, pass i->j
    conf_ji: Tensorish,  # (H_j, W_j) desc_conf, image j, pass i->j
    conf_jj: Tensorish,  # (H_j, W_j) desc_conf, image j, pass j->i
    conf_ij: Tensorish,  # (H_i, W_i) desc_conf, image i, pass j->i
    *,
    subsample: int = 8,
    block_size: int = DEFAULT_BLOCK_SIZE,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Matches of one unordered pair as MASt3R-SfM computes them (official ``sparse_ga.extract_correspondences``).

    Four walk sets, in this order: pass i->j seeded on i (desc_ii -> desc_ji) and on j
    (desc_ji -> desc_ii), then pass j->i seeded on i (desc_ij -> desc_jj) and on j (desc_jj -> desc_ij).
    All matches are merged as (pixel of i, pixel of j); a match found by several walk sets takes the
    confidence ``sqrt(q_i * q_j)`` of the *first* of them, with the ``desc_conf`` maps of that pass.
    No confidence threshold.

    Returns:
        ``xy_i (M, 2)``, ``xy_j (M, 2)`` int64 ``(x, y)`` network pixels, ``conf (M,)``; sorted by i's
        flat index then j's.
    """
    item = PairDescriptors(desc_ii, desc_ji, desc_jj, desc_ij, conf_ii, conf_ji, conf_jj, conf_ij)
    return symmetric_correspondences_batch(
        [item], subsample=subsample, block_size=block_size, device=device
    )[0]


def symmetric_correspondences_batch(
    pairs: Sequence[PairDescriptors],
    *,
    subsample: int = 8,
    block_size: int = DEFAULT_BLOCK_SIZE,
    device: torch.device | str | None = None,
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """:func:`symmetric_correspondences` for many pairs at once (one batched search; same results).

    Worth it on a GPU, where one pair does not fill the device; all maps of the batch are held in
    memory at once (4 maps of H*W*D floats per pair).
    """
    if not pairs:
        return []
    dev = torch.device(device) if device is not None else _default_device(pairs[0].desc_ii)
    maps: list[torch.Tensor] = []
    runs: list[_Run] = []
    shapes: list[tuple[int, int, int, int]] = []
    confs: list[tuple[torch.Tensor, ...]] = []
    for p, item in enumerate(pairs):
        d = {k: _as_tensor(getattr(item, k), dev) for k in ("desc_ii", "desc_ji", "desc_jj", "desc_ij")}
        c = {k: _as_tensor(getattr(item, k), dev) for k in ("conf_ii", "conf_ji", "conf_jj", "conf_ij")}
        for k, v in d.items():
            _check_desc(f"pairs[{p}].{k}", v)
        hi, wi = d["desc_ii"].shape[:2]
        hj, wj = d["desc_jj"].shape[:2]
        for k, (h, w) in (("ij", (hi, wi)), ("ji", (hj, wj))):
            if tuple(d[f"desc_{k}"].shape[:2]) != (h, w):
                raise ValueError(
                    f"pairs[{p}].desc_{k} must be ({h}, {w}, D) like desc_{k[0] * 2}, "
                    f"got {tuple(d[f'desc_{k}'].shape)}"
                )
        for k in c:
            _check_conf(f"pairs[{p}].{k}", c[k], f"desc_{k[5:]}", d[f"desc_{k[5:]}"])
        base = len(maps)
        ii, ji, jj, ij = base, base + 1, base + 2, base + 3
        maps += [d[k].reshape(-1, d[k].shape[2]) for k in ("desc_ii", "desc_ji", "desc_jj", "desc_ij")]
        seeds_i = _grid_seeds(hi, wi, subsample, dev)
        seeds_j = _grid_seeds(hj, wj, subsample, dev)
        runs += [_Run(ii, ji, seeds_i, wi), _Run(ji, ii, seeds_j, wj)]
        runs += [_Run(ij, jj, seeds_i, wi), _Run(jj, ij, seeds_j, wj)]
        shapes.append((hi, wi, hj, wj))
        confs.append(tuple(c[k].reshape(-1) for k in ("conf_ii", "conf_ji", "conf_ij", "conf_jj")))
    if len({m.shape[1] for m in maps}) > 1:
        raise ValueError("all descriptor maps must have the same descriptor size D")

    run_id, p_idx, q_idx = _walk_runs(
        maps, runs, max_iter=DEFAULT_MAX_ITER, pixel_tol=0.0, block_size=block_size, dist=Dist.DOT
    )
    seeded_on_j = (run_id % 2) == 1
    idx_i = torch.where(seeded_on_j, q_idx, p_idx)
    idx_j = torch.where(seeded_on_j, p_idx, q_idx)
    pair_id = run_id // 4
    second_pass = (run_id % 4) >= 2

    # walks come out in run order, so each pair's matches are one contiguous slice
    counts = torch.bincount(pair_id, minlength=len(pairs)).tolist()
    pieces = zip(*(torch.split(t, counts) for t in (idx_i, idx_j, second_pass)))
    out = []
    for (hi, wi, hj, wj), (q_ii, q_ji, q_ij, q_jj), (p_i, p_j, p_second) in zip(shapes, confs, pieces):
        ui, uj, first = _unique_pairs(p_i, p_j, hj * wj)
        src_i, src_j, in_second = p_i[first], p_j[first], p_second[first]
        qi = torch.where(in_second, q_ij[src_i], q_ii[src_i])
        qj = torch.where(in_second, q_jj[src_j], q_ji[src_j])
        out.append((_to_xy(ui, wi), _to_xy(uj, wj), _geometric_mean(qi, qj)))
    return out
