"""What a cache commit costs, to choose how often the pairwise stages commit (kill -9 loses one batch).

Writes N classic-sized pair units (2000 matches, ~90 kB each) into a fresh store, committing every
unit, every 8 units, or once, and reports the wall and CPU time per unit and the time to index the
resulting shards on the next open (what a resume pays).

    PYTHONPATH=src python benchmarks/commit_interval.py [--units 64] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from sfm3r.io import cache
from sfm3r.types import PairResult


def _pair(rng: np.random.Generator, m: int) -> PairResult:
    return PairResult(
        name_i="a.jpg", name_j="b.jpg", backend="classic-sift",
        xy_i=rng.random((m, 2), np.float32), xy_j=rng.random((m, 2), np.float32),
        idx_i=np.arange(m), idx_j=np.arange(m), conf=rng.random(m, np.float32),
        pts_i=rng.random((m, 3), np.float32), pts_j=rng.random((m, 3), np.float32),
        verified=True, num_inliers=m, rel_rotation=np.eye(3), rel_translation=np.ones(3),
    )  # fmt: skip


def run(units: int, every: int, folder: Path) -> dict:
    rng = np.random.default_rng(0)
    results = [_pair(rng, 2000) for _ in range(units)]
    keys = [cache.pair_key(f"{k:064x}", f"{k + 1:064x}") for k in range(units)]
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        store = cache.open_store(Path(tmp), "pairs-bench", {"every": every})
        wall, cpu = time.perf_counter(), time.process_time()
        with store.writer(max_units=every, max_seconds=1e9) as writer:
            for key, result in zip(keys, results, strict=True):
                cache.write_pair_result(writer, key, result)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        shards = len(store.shard_files())
        store.close()
        start = time.perf_counter()
        reopened = cache.open_store(Path(tmp), "pairs-bench", {"every": every})
        index_s = time.perf_counter() - start
        assert len(reopened) == units
        reopened.close()
    return {"commit_every": every, "units": units, "shards": shards, "wall_ms_per_unit": 1e3 * wall / units,
            "cpu_ms_per_unit": 1e3 * cpu / units, "index_ms_on_open": 1e3 * index_s}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--units", type=int, default=64)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    rows = [run(args.units, every, args.dir) for every in (1, 8, args.units)]
    print(f"{'commit every':>12} {'shards':>6} {'wall ms/unit':>12} {'cpu ms/unit':>11} {'index ms':>9}")
    for r in rows:
        print(f"{r['commit_every']:>12} {r['shards']:>6} {r['wall_ms_per_unit']:>12.2f} "
              f"{r['cpu_ms_per_unit']:>11.2f} {r['index_ms_on_open']:>9.1f}")  # fmt: skip
    out = Path(__file__).resolve().parent / "results" / "commit_interval.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
