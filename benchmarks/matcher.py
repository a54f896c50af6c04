"""Pairs per second of the four-way symmetric matcher: sfm3r vs the official cost structure.

Per pair: MASt3R-SfM's ``extract_correspondences`` (four reciprocal-walk sets over the descriptor maps of
both decoder passes, joint merge, sqrt(q_i q_j) confidences) at 512x384 with D = 24.

- ``sfm3r``: :func:`sfm3r.sfm.mast3r.matching.symmetric_correspondences` (device-resident walk, memoised row
  argmax, tiled batched search).
- ``official-structure``: written here to reproduce the *cost structure* of the official code (not its
  text): one walk set at a time, walk state in NumPy, a host round trip per hop (indices to NumPy and
  back), a blocked search of 8192x8192 tiles that also computes the column-wise argmax it never uses,
  NumPy merges. Its outputs are checked equal to ours.

Inputs are random smooth descriptor fields (bicubic upsampled noise plus 5 % noise, unit norm); image
j is a shifted crop of the same field and the second pass a perturbed copy, so matches exist.

    PYTHONPATH=src python benchmarks/matcher.py [--pairs 1] [--height 384 --width 512] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sfm3r.sfm.mast3r.matching import symmetric_correspondences

RESULTS = Path(__file__).resolve().parent / "results" / "matcher.json"


# ----------------------------------------------------------------------------------------------------
# Inputs


def make_pair(height: int, width: int, dim: int, seed: int) -> dict[str, torch.Tensor]:
    """Four unit-norm (H, W, D) descriptor maps and four desc_conf maps of one synthetic pair."""
    gen = torch.Generator().manual_seed(seed)
    pad_y, pad_x = height // 8, width // 8
    base = torch.randn(1, dim, max(2, height // 16), max(2, width // 16), generator=gen)
    field = F.interpolate(base, size=(height + pad_y, width + pad_x), mode="bicubic", align_corners=False)
    field = field[0].permute(1, 2, 0)

    def crop(y: int, x: int, noise: float) -> torch.Tensor:
        d = field[y : y + height, x : x + width] + noise * torch.randn(height, width, dim, generator=gen)
        return F.normalize(d, dim=-1).contiguous()

    out = {
        "desc_ii": crop(0, 0, 0.05),
        "desc_ij": crop(0, 0, 0.06),
        "desc_ji": crop(pad_y, pad_x, 0.05),
        "desc_jj": crop(pad_y, pad_x, 0.06),
    }
    for k in ("conf_ii", "conf_ji", "conf_jj", "conf_ij"):
        out[k] = 1.0 + 2.0 * torch.rand(height, width, generator=gen)
    return out


# ----------------------------------------------------------------------------------------------------
# The official cost structure, re-implemented for timing


def _search_both_ways(queries: torch.Tensor, database: torch.Tensor, block: int = 8192) -> np.ndarray:
    """Best database row per query by dot product, tiled, also computing the (unused) column argmax."""
    n_q, n_db = len(queries), len(database)
    if n_q == 0:
        return np.zeros(0, dtype=np.int64)
    if n_q * n_db <= block * block:
        sim = queries @ database.T
        row = sim.max(dim=1).indices
        sim.max(dim=0)  # the column argmax the walk never reads
        return row.cpu().numpy()
    best_row = torch.full((n_q,), -math.inf)
    arg_row = torch.full((n_q,), -1, dtype=torch.int64)
    best_col = torch.full((n_db,), -math.inf)
    arg_col = torch.full((n_db,), -1, dtype=torch.int64)
    for q0 in range(0, n_q, block):
        for d0 in range(0, n_db, block):
            sim = queries[q0 : q0 + block] @ database[d0 : d0 + block].T
            v_row, a_row = sim.max(dim=1)
            v_col, a_col = sim.max(dim=0)
            upd = v_row > best_row[q0 : q0 + block]
            best_row[q0 : q0 + block][upd] = v_row[upd]
            arg_row[q0 : q0 + block][upd] = a_row[upd] + d0
            upd = v_col > best_col[d0 : d0 + block]
            best_col[d0 : d0 + block][upd] = v_col[upd]
            arg_col[d0 : d0 + block][upd] = a_col[upd] + q0
    return arg_row.cpu().numpy()  # host round trip, as every hop of the official walk does


def _walk_official_structure(a: torch.Tensor, b: torch.Tensor, subsample: int = 8, max_iter: int = 10):
    """One walk set, NumPy state, one search and one host transfer per hop -> (idx_a, idx_b) int32."""
    h1, w1, dim = a.shape
    fa, fb = a.reshape(-1, dim), b.reshape(-1, dim)
    ys, xs = np.mgrid[subsample // 2 : h1 : subsample, subsample // 2 : w1 : subsample].reshape(2, -1)
    cur_a = np.unique(xs + w1 * ys).astype(np.int32)
    cur_b = np.full_like(cur_a, -1)
    prev_a, prev_b = cur_a.copy(), cur_b.copy()
    active = np.ones(len(cur_a), dtype=bool)
    for _ in range(max_iter):
        if not active.any():
            break
        cur_b[active] = _search_both_ways(fa[torch.from_numpy(cur_a[active])], fb)
        active &= prev_b != cur_b
        cur_a[active] = _search_both_ways(fb[torch.from_numpy(cur_b[active])], fa)
        active &= prev_a != cur_a
        prev_a[:], prev_b[:] = cur_a, cur_b
    keep = ~active
    return cur_a[keep], cur_b[keep]


def official_structure_symmetric(p: dict[str, torch.Tensor]):
    """Four walk sets one after the other, NumPy merge; same outputs as ``symmetric_correspondences``."""
    idx_i, idx_j, q_i, q_j = [], [], [], []
    for a, b, qa, qb in [
        (p["desc_ii"], p["desc_ji"], p["conf_ii"], p["conf_ji"]),
        (p["desc_ij"], p["desc_jj"], p["conf_ij"], p["conf_jj"]),
    ]:
        ia, ib = _walk_official_structure(a, b)
        jb, ja = _walk_official_structure(b, a)
        ii, jj = np.r_[ia, ja], np.r_[ib, jb]
        idx_i.append(ii)
        idx_j.append(jj)
        q_i.append(qa.reshape(-1).numpy()[ii])
        q_j.append(qb.reshape(-1).numpy()[jj])
    wi, wj = p["desc_ii"].shape[1], p["desc_jj"].shape[1]
    nj = p["desc_jj"].shape[0] * wj
    ii, jj = np.concatenate(idx_i).astype(np.int64), np.concatenate(idx_j).astype(np.int64)
    keys, first = np.unique(ii * nj + jj, return_index=True)
    ui, uj = keys // nj, keys % nj
    conf = np.sqrt(np.concatenate(q_i)[first] * np.concatenate(q_j)[first])
    return np.stack([ui % wi, ui // wi], 1), np.stack([uj % wj, uj // wj], 1), conf


# ----------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=1, help="pairs timed per method")
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--dim", type=int, default=24)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    pairs = [make_pair(args.height, args.width, args.dim, seed) for seed in range(args.pairs)]
    rows = []
    outputs = {}
    for name, fn in [
        ("sfm3r", lambda p: tuple(t.numpy() for t in symmetric_correspondences(**p))),
        ("official-structure", official_structure_symmetric),
    ]:
        start = time.perf_counter()
        outputs[name] = [fn(p) for p in pairs]
        seconds = (time.perf_counter() - start) / len(pairs)
        matches = float(np.mean([len(o[2]) for o in outputs[name]]))
        rows.append({"method": name, "seconds_per_pair": seconds, "pairs_per_s": 1 / seconds, "matches": matches})

    same = all(
        all(np.array_equal(a, b) for a, b in zip(x, y))
        for x, y in zip(outputs["sfm3r"], outputs["official-structure"])
    )
    speedup = rows[1]["seconds_per_pair"] / rows[0]["seconds_per_pair"]
    print(f"{args.width}x{args.height}, D={args.dim}, {args.pairs} pair(s), CPU {args.threads} threads")
    print(f"{'method':20s} {'s/pair':>9s} {'pairs/s':>9s} {'matches':>9s}")
    for r in rows:
        print(f"{r['method']:20s} {r['seconds_per_pair']:9.2f} {r['pairs_per_s']:9.4f} {r['matches']:9.0f}")
    print(f"speed-up {speedup:.2f}x; identical outputs: {same}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "matcher",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "size_wh": [args.width, args.height],
        "desc_dim": args.dim,
        "pairs": args.pairs,
        "device": "cpu",
        "threads": args.threads,
        "results": rows,
        "speedup": speedup,
        "identical_outputs": same,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "load_average_1min": os.getloadavg()[0],
    }
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
