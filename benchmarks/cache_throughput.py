"""Throughput of the HDF5 result cache (sfm3r.io.cache): write, index and read realistic units.

Workloads (synthetic, realistic sizes):
  pairs-mast3r   PairResult with M = 5,000 matches at network pixel centres of a 512x384 grid (~290 KB)
  pairs-classic  PairResult with M = 1,000 sub-pixel SIFT matches (~60 KB)
  tokens-mast3r  encoder tokens (768, 1024) float16 of a 512x384 image (1.5 MB)
Writer settings: batched (default, 256 units per shard) with and without fsync, and one unit per shard.
A last table compares HDF5 compression filters on the same units (why the cache stores uncompressed).
Reads come from the page cache (files just written): they measure the library, not the disk.

Usage: PYTHONPATH=src python benchmarks/cache_throughput.py [--pairs 500] [--tokens 100] [--dir /tmp]
Writes benchmarks/results/cache_throughput.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from sfm3r.io import cache
from sfm3r.types import PairResult

RESULTS = Path(__file__).parent / "results" / "cache_throughput.json"


def sha(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


def mast3r_pair(rng: np.random.Generator, m: int = 5000) -> PairResult:
    width, height, scale = 512, 384, 4032 / 512
    pix = [rng.choice(width * height, m, replace=False) for _ in range(2)]
    xy = [np.stack([(p % width + 0.5) * scale, (p // width + 0.5) * scale], 1).astype(np.float32) for p in pix]
    pts_i = (rng.normal(size=(m, 3)) + [0, 0, 5]).astype(np.float32)
    return PairResult("a.jpg", "b.jpg", "mast3r", xy[0], xy[1], pix[0], pix[1],
                      (1 + rng.gamma(2.0, 3.0, m)).astype(np.float32), pts_i,
                      (pts_i + rng.normal(scale=0.01, size=(m, 3))).astype(np.float32),
                      verified=True, num_inliers=m, rel_rotation=np.eye(3), rel_translation=np.ones(3))  # fmt: skip


def classic_pair(rng: np.random.Generator, m: int = 1000) -> PairResult:
    xy = rng.uniform(0, 4000, (2, m, 2)).astype(np.float32)
    pts = rng.normal(size=(2, m, 3)).astype(np.float32)
    return PairResult("a.jpg", "b.jpg", "classic-sift", xy[0], xy[1], rng.integers(0, 8000, m),
                      rng.integers(0, 8000, m), rng.uniform(0, 1, m).astype(np.float32), pts[0], pts[1],
                      verified=True, num_inliers=m)  # fmt: skip


def nbytes_of(unit: cache.Unit) -> int:
    return unit.nbytes


def run_case(folder: Path, name: str, units: list[tuple[str, cache.Unit]], reader, **writer_kw) -> dict:
    shutil.rmtree(folder, ignore_errors=True)
    store = cache.open_store(folder, name.split("/")[0], {"bench": name})
    total = sum(nbytes_of(u) for _, u in units)
    t0, c0 = time.perf_counter(), time.process_time()
    with store.writer(**writer_kw) as w:
        for key, unit in units:
            w.add(key, unit)
    t_write, c_write = time.perf_counter() - t0, time.process_time() - c0
    t0 = time.perf_counter()
    fresh = cache.open_store(folder, name.split("/")[0], {"bench": name})
    t_index = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    for key, _ in units:
        reader(fresh, key)
    t_read, c_read = time.perf_counter() - t0, time.process_time() - c0
    fresh.close()
    files = list(fresh.path.rglob("*.h5"))
    n = len(units)
    return {
        "case": name, "units": n, "unit_kb": total / n / 1e3,
        "write_mb_s": total / t_write / 1e6, "write_units_s": n / t_write, "write_cpu_ms_unit": c_write / n * 1e3,
        "index_s": t_index,
        "read_mb_s": total / t_read / 1e6, "read_units_s": n / t_read, "read_cpu_ms_unit": c_read / n * 1e3,
        "files": len(files), "disk_mb": sum(f.stat().st_size for f in files) / 1e6, "raw_mb": total / 1e6,
    }  # fmt: skip


def compression_table(folder: Path, units: dict[str, cache.Unit], repeats: int = 10) -> list[dict]:
    rows = []
    for label, unit in units.items():
        for filt, opts in [(None, None), ("lzf", None), ("gzip", 1), ("gzip", 4)]:
            path = folder / "comp.h5"
            t0 = time.perf_counter()
            with h5py.File(path, "w") as f:
                for r in range(repeats):
                    g = f.create_group(str(r))
                    for k, a in unit.arrays.items():
                        kw = {} if filt is None or a.size == 0 else {"compression": filt, "compression_opts": opts}
                        g.create_dataset(k, data=a, **kw)
            t_write = time.perf_counter() - t0
            t0 = time.perf_counter()
            with h5py.File(path, "r") as f:
                for r in range(repeats):
                    _ = [ds[()] for ds in f[str(r)].values()]
            t_read = time.perf_counter() - t0
            raw = unit.nbytes * repeats
            rows.append({"unit": label, "filter": f"{filt}{'' if opts is None else '-' + str(opts)}",
                         "size_ratio": path.stat().st_size / raw, "write_mb_s": raw / t_write / 1e6,
                         "read_mb_s": raw / t_read / 1e6})  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=500)
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--dir", type=Path, default=None, help="scratch folder (default: system temp)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    # A few distinct payloads reused under distinct keys: generation cost stays out of the timings.
    mast3r = [cache.pair_unit(mast3r_pair(rng)) for _ in range(8)]
    classic = [cache.pair_unit(classic_pair(rng)) for _ in range(8)]
    tokens = [rng.normal(size=(768, 1024)).astype(np.float16) for _ in range(4)]
    tok_units = [cache.Unit("tokens", {"tokens": t}, {"net_height": 384, "net_width": 512, "patch_size": 16})
                 for t in tokens]  # fmt: skip
    keyed = {
        "pairs-mast3r": [(cache.pair_key(sha(i), sha(i + 1)), mast3r[i % 8]) for i in range(args.pairs)],
        "pairs-classic": [(cache.pair_key(sha(i), sha(i + 1)), classic[i % 8]) for i in range(args.pairs)],
        "tokens-mast3r": [(sha(i), tok_units[i % 4]) for i in range(args.tokens)],
    }
    readers = {"pairs-mast3r": cache.read_pair_result, "pairs-classic": cache.read_pair_result,
               "tokens-mast3r": lambda store, key: store.read(key)}  # fmt: skip
    settings = {"batched": {}, "batched-nofsync": {"durable": False}, "unit-per-shard": {"max_units": 1}}
    rows = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for kind, units in keyed.items():
            for label, kw in settings.items():
                rows.append(run_case(Path(tmp) / "c", f"{kind}/{label}", units, readers[kind], **kw))
                print(f"done {rows[-1]['case']}", flush=True)
        comp = compression_table(Path(tmp), {"pair-mast3r": mast3r[0], "pair-classic": classic[0],
                                             "tokens-f16": tok_units[0]})  # fmt: skip
    print(f"{'case':30s} {'units':>5s} {'KB/unit':>7s} | {'write MB/s':>10s} {'units/s':>7s} {'cpu ms':>6s} | "
          f"{'index s':>7s} | {'read MB/s':>9s} {'units/s':>7s} {'cpu ms':>6s} | {'files':>5s} {'disk MB':>7s}")
    for r in rows:
        print(f"{r['case']:30s} {r['units']:5d} {r['unit_kb']:7.0f} | {r['write_mb_s']:10.0f} {r['write_units_s']:7.0f} "
              f"{r['write_cpu_ms_unit']:6.2f} | {r['index_s']:7.3f} | {r['read_mb_s']:9.0f} {r['read_units_s']:7.0f} "
              f"{r['read_cpu_ms_unit']:6.2f} | {r['files']:5d} {r['disk_mb']:7.1f}")
    print(f"\n{'unit':14s} {'filter':8s} {'size/raw':>8s} {'write MB/s':>10s} {'read MB/s':>9s}")
    for r in comp:
        print(f"{r['unit']:14s} {r['filter']:8s} {r['size_ratio']:8.2f} {r['write_mb_s']:10.0f} {r['read_mb_s']:9.0f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    meta = {"python": platform.python_version(), "h5py": h5py.__version__, "hdf5": h5py.version.hdf5_version,
            "machine": platform.machine(), "args": {"pairs": args.pairs, "tokens": args.tokens}}  # fmt: skip
    RESULTS.write_text(json.dumps({"meta": meta, "cache": rows, "compression": comp}, indent=2) + "\n")
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
