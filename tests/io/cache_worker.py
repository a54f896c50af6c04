"""A cache writer run as a subprocess by tests/io/test_cache.py (killed with -9, or run side by side).

Usage: python cache_worker.py ROOT FIRST COUNT MAX_UNITS
Writes the pair units FIRST .. FIRST+COUNT-1 of `unit_keys()` (content from `make_pair`) and prints
"PENDING <n>" after each add and "COMMITTED <key> <key> ..." after each committed shard, so the
parent knows when a batch is half written and what must survive a kill.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np

from sfm3r.io import cache
from sfm3r.types import PairResult

KIND = "pairs-test"
CONFIG = {"checkpoint_sha256": "0" * 64, "resolution": 512, "backend": "test"}


def unit_keys(count: int) -> list[str]:
    """Pair keys of a deterministic sequence of image pairs (image k with image k+1)."""
    shas = [hashlib.sha256(f"image {k}".encode()).hexdigest() for k in range(count + 1)]
    return [cache.pair_key(*sorted((shas[k], shas[k + 1]))) for k in range(count)]


def make_pair(key: str, num_matches: int = 3000) -> PairResult:
    """Deterministic content for `key`, so any process can check what it reads back."""
    rng = np.random.default_rng(int(hashlib.sha256(key.encode()).hexdigest()[:8], 16))
    m = num_matches
    return PairResult(
        name_i=f"{key[:8]}.jpg",
        name_j=f"{key[-8:]}.jpg",
        backend="test",
        xy_i=rng.uniform(0, 1000, (m, 2)).astype(np.float32),
        xy_j=rng.uniform(0, 1000, (m, 2)).astype(np.float32),
        idx_i=rng.integers(0, 100_000, m),
        idx_j=rng.integers(0, 100_000, m),
        conf=rng.uniform(1, 10, m).astype(np.float32),
        pts_i=rng.normal(size=(m, 3)).astype(np.float32),
        pts_j=rng.normal(size=(m, 3)).astype(np.float32),
        verified=True,
        num_inliers=m,
        rel_rotation=np.eye(3),
        rel_translation=rng.normal(size=3),
    )


def main(root: str, first: int, count: int, max_units: int) -> None:
    store = cache.open_store(Path(root), KIND, CONFIG)
    added: list[str] = []
    with store.writer(max_units=max_units, max_seconds=3600) as writer:
        for key in unit_keys(first + count)[first:]:
            if store.has(key):
                continue
            cache.write_pair_result(writer, key, make_pair(key))
            added.append(key)
            print("PENDING", writer.pending, flush=True)
            if writer.pending == 0:  # this add committed a shard
                print("COMMITTED", *added, flush=True)
                added.clear()
    print("COMMITTED", *added, flush=True)
    print("DONE", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
