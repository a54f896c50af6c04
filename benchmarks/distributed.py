"""Pairs/s of the pair stages in one process vs on a local Ray cluster of 1 and 2 CPU workers.

Rows:
  classic   SIFT matching + verification (pipelines/classic.py match_classic) on N real photos, all pairs;
            features extracted once beforehand (not timed)
  mast3r    the MASt3R pair stage (pipelines/mast3r.py match_mast3r) with a random-weight network of the
            tiny fixture architecture (shared/fixtures/mast3r_tiny/config.json) at 224 px; a Ray run
            includes starting its actors (each loads the network), reported apart
  no-op     round trip of an empty Ray task (the scheduler's own cost)
  commit    where a MASt3R pair's dense units (two 512x384 pointmaps + confidences, float16, 3 MB) are
            committed: by the worker (its own shard, only counts return) or by the driver (units returned
            through the object store, written by the driver)

The single-process baseline runs once with torch's default threads and --repeat times with one thread,
as a Ray worker of one CPU computes (Ray sets OMP_NUM_THREADS=1); speed-ups are against the latter.
Each Ray configuration runs in its own cluster (ray.init(num_cpus=W)), warmed up by one untimed run (worker
processes import torch and sfm3r once); the timed runs recompute every pair (the pairs namespace is deleted
before each). Wall times; the "task s" column is the sum of the tasks' own compute seconds; "overhead/task"
(1 worker) = (the stage's wall time - its tasks' seconds) / chunks: scheduling, transfers, and for MASt3R
starting the actor (importing torch, loading the network).

Usage: PYTHONPATH=src python benchmarks/distributed.py [--images DIR] [--num-images 8] [--repeat 2]
Writes benchmarks/results/distributed.json. No GPU here: the ViT-L on GPUs row of the issue is not measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "distributed.json"
SHARED = Path(os.environ.get("SFM3R_SHARED", ROOT.parent / "shared"))


def _ray_init(ray, num_cpus: int) -> None:
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH", "")) if p)}
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})


def _drop(cache_dir: Path, kinds: tuple[str, ...]) -> None:
    for kind in kinds:
        for folder in cache_dir.glob(f"{kind}-*"):
            shutil.rmtree(folder)


def _timed_stage(run, cache_dir: Path, kinds: tuple[str, ...], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        _drop(cache_dir, kinds)
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times


def bench_pairs(backend: str, images, pairs, cache_dir: Path, workers: list[int], repeat: int, ckpt: Path | None):
    """Rows {config, wall_s, pairs_per_s, chunks, task_s, actor_start_s} for local and each Ray worker count."""
    import ray

    from sfm3r.pipelines.classic import extract_features, match_classic
    from sfm3r.pipelines.config import RayConf
    from sfm3r.pipelines.distributed import RayRunner
    from sfm3r.pipelines.mast3r import match_mast3r
    from sfm3r.sfm.classic.sift import PRESETS as SIFT_PRESETS
    from sfm3r.sfm.classic.two_view import TwoViewConf

    sift = dataclasses.replace(SIFT_PRESETS["fast"], max_image_size=768)
    features = extract_features(images, sift, cache_dir)[0] if backend == "classic" else None
    kinds = ("pairs-classic",) if backend == "classic" else ("pairs-mast3r", "dense-mast3r")

    def stage(runner=None):
        if backend == "classic":
            return match_classic(images, pairs, features, sift, TwoViewConf(), cache_dir, runner=runner)
        return match_mast3r(images, pairs, ckpt, cache_dir, net_image_size=224, runner=runner)

    import torch

    rows = []
    threads = torch.get_num_threads()
    times = _timed_stage(lambda: stage(), cache_dir, kinds, 1)
    rows.append({"config": f"1 process, {threads} thr", "wall_s": times, "pairs_per_s": len(pairs.pairs) / min(times)})
    torch.set_num_threads(1)  # as in a Ray worker of 1 CPU (Ray sets OMP_NUM_THREADS=1)
    try:
        times = _timed_stage(lambda: stage(), cache_dir, kinds, repeat)
    finally:
        torch.set_num_threads(threads)
    rows.append({"config": "1 process, 1 thr", "wall_s": times, "pairs_per_s": len(pairs.pairs) / min(times)})
    for w in workers:
        _ray_init(ray, w)
        try:
            with RayRunner(RayConf()) as runner:
                _timed_stage(lambda: stage(runner), cache_dir, kinds, 1)  # warm-up: workers import the stack
                stats = []

                def run(runner=runner, stats=stats):
                    stage(runner)
                    stats.append(dict(runner.stats))

                times = _timed_stage(run, cache_dir, kinds, repeat)
        finally:
            ray.shutdown()
        best = int(np.argmin(times))
        row = {"config": f"ray, {w} worker{'s' * (w > 1)}", "wall_s": times,
               "pairs_per_s": len(pairs.pairs) / times[best], "chunks": stats[best]["chunks"],
               "task_s": stats[best]["task_seconds"], "stage_wall_s": stats[best]["wall_seconds"],
               "encoded": stats[best]["encoded"]}  # fmt: skip
        rows.append(row)
    return rows


def bench_noop(num_tasks: int = 200) -> dict:
    import ray

    _ray_init(ray, 2)
    try:
        noop = ray.remote(num_cpus=1)(lambda: None)
        ray.get([noop.remote() for _ in range(20)])  # warm
        start = time.perf_counter()
        for _ in range(num_tasks // 4):  # sequential round trips
            ray.get(noop.remote())
        sequential = (time.perf_counter() - start) / (num_tasks // 4)
        start = time.perf_counter()
        ray.get([noop.remote() for _ in range(num_tasks)])
        batch = (time.perf_counter() - start) / num_tasks
    finally:
        ray.shutdown()
    return {"round_trip_ms": 1e3 * sequential, "throughput_ms_per_task": 1e3 * batch}


def bench_commit(tmp: Path, units: int = 96, chunk: int = 4) -> dict:
    """Dense MASt3R units (3 MB each) committed by 2 workers vs returned to the driver and committed there."""
    import ray

    from sfm3r.io import cache
    from sfm3r.pipelines.distributed import StoreRef

    def make_unit(k: int) -> cache.Unit:  # cheap to make: the run measures moving and writing, not making
        arrays = {f"{a}_{s}": np.full(shape, k % 1000, np.float16)
                  for s in "ij" for a, shape in (("pts", (384, 512, 3)), ("conf", (384, 512)))}  # fmt: skip
        return cache.Unit("dense", arrays, {})

    def worker_writes(ref: StoreRef, keys: list[str]) -> int:
        store = ref.open()
        with store.writer() as writer:
            for key in keys:
                writer.add(key, make_unit(int(key[1:])))
        return len(keys)

    def driver_writes(keys: list[str]) -> list[tuple[str, cache.Unit]]:
        return [(key, make_unit(int(key[1:]))) for key in keys]

    keys = [f"k{k}" for k in range(units)]
    chunks = [keys[k : k + chunk] for k in range(0, units, chunk)]
    out = {"units": units, "unit_mb": make_unit(0).nbytes / 2**20}
    _ray_init(ray, 2)
    try:
        w_task = ray.remote(num_cpus=1)(worker_writes)
        d_task = ray.remote(num_cpus=1)(driver_writes)
        for run, mode in enumerate(("worker", "driver") * 3):  # the first two: warm-up
            root = tmp / f"commit-{mode}"
            shutil.rmtree(root, ignore_errors=True)
            store = cache.open_store(root, "dense-bench", {"mode": mode})
            start = time.perf_counter()
            if mode == "worker":
                ref = StoreRef.of(store)
                ray.get([w_task.remote(ref, c) for c in chunks])
                store.refresh()
            else:
                pending = [d_task.remote(c) for c in chunks]
                busy = 0.0  # the driver's own time: fetching units and writing them (serial, one process)
                with store.writer() as writer:
                    while pending:
                        [ready], pending = ray.wait(pending, num_returns=1)
                        t0 = time.perf_counter()
                        for key, unit in ray.get(ready):
                            writer.add(key, unit)
                        busy += time.perf_counter() - t0
                    t0 = time.perf_counter()
                busy += time.perf_counter() - t0  # the last commit
                if run >= 2:
                    out.setdefault("driver_busy_ms_per_unit", []).append(1e3 * busy / units)
            seconds = time.perf_counter() - start
            assert len(store) == units
            store.close()
            if run >= 2:
                out.setdefault(mode, []).append(seconds)
    finally:
        ray.shutdown()
    return out


def _images(folder: Path, count: int):
    from sfm3r.io.images import load_image_infos

    return load_image_infos(folder)[:count]


def _complete(images):
    from sfm3r.types import Pairs

    names = [info.name for info in images]
    chosen = [(a, b) for k, a in enumerate(names) for b in names[k + 1 :]]
    return Pairs(names=tuple(names), pairs=tuple(chosen), scores=np.ones(len(chosen), np.float32),
                 sources=("complete",) * len(chosen))  # fmt: skip


def _tiny_checkpoint(path: Path) -> Path:
    import torch

    from sfm3r.sfm.mast3r.network import Mast3rNetwork

    model_str = json.loads((SHARED / "fixtures" / "mast3r_tiny" / "config.json").read_text())["model_str"]
    torch.manual_seed(0)
    model = Mast3rNetwork.from_model_string(model_str)
    torch.save({"model": model.state_dict(), "args": argparse.Namespace(model=model_str)}, path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=SHARED / "data" / "strecha_fountain_P11" / "images_1024")
    parser.add_argument("--num-images", type=int, default=6, help="classic: first N photos, complete graph")
    parser.add_argument("--mast3r-images", type=Path, default=ROOT / "sample" / "images")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--skip", nargs="*", default=[], choices=["classic", "mast3r", "noop", "commit"])
    args = parser.parse_args()
    import ray

    result: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "ray": ray.__version__,
                                "load_avg_start": os.getloadavg()}}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="sfm3r-distributed-") as tmp:
        tmp = Path(tmp)
        if "classic" not in args.skip:
            images = _images(args.images, args.num_images)
            result["classic"] = bench_pairs("classic", images, _complete(images), tmp / "classic", [1, 2],
                                            args.repeat, None)  # fmt: skip
        if "mast3r" not in args.skip:
            images = _images(args.mast3r_images, 6)
            ckpt = _tiny_checkpoint(tmp / "tiny.pth")
            result["mast3r"] = bench_pairs("mast3r", images, _complete(images), tmp / "mast3r", [1, 2],
                                           args.repeat, ckpt)  # fmt: skip
        if "noop" not in args.skip:
            result["noop"] = bench_noop()
        if "commit" not in args.skip:
            result["commit"] = bench_commit(tmp)
    result["machine"]["load_avg_end"] = os.getloadavg()
    _print(result)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


def _print(result: dict) -> None:
    for backend in ("classic", "mast3r"):
        rows = result.get(backend)
        if not rows:
            continue
        print(f"\n{backend}: pairs/s (best of the runs; wall s of each run; speed-up vs 1 process, 1 torch thread)")
        print(f"{'config':<16} {'pairs/s':>8} {'speed-up':>9} {'chunks':>7} {'task s':>7} {'overhead/task ms':>17}  runs")
        base = rows[1]["pairs_per_s"]  # one process, one torch thread: what a 1-CPU worker runs
        for row in rows:
            chunks = row.get("chunks")
            overhead = ""
            if chunks and row["config"].startswith("ray, 1"):  # one worker: the stage's wall minus its tasks' time
                overhead = f"{1e3 * (row['stage_wall_s'] - row['task_s']) / chunks:17.0f}"
            print(f"{row['config']:<16} {row['pairs_per_s']:8.2f} {row['pairs_per_s'] / base:9.2f} "
                  f"{chunks if chunks else '':>7} {row.get('task_s', 0):7.1f} {overhead:>17}  "
                  f"{', '.join(f'{t:.1f}' for t in row['wall_s'])}")  # fmt: skip
    if "noop" in result:
        n = result["noop"]
        print(f"\nno-op task: {n['round_trip_ms']:.1f} ms round trip, {n['throughput_ms_per_task']:.2f} ms/task in a batch")
    if "commit" in result:
        c = result["commit"]
        print(f"\ncommit of {c['units']} dense units of {c['unit_mb']:.1f} MB by 2 workers (s per run):")
        for mode in ("worker", "driver"):
            print(f"  {mode + ' commits':<16} {', '.join(f'{t:.2f}' for t in c[mode])}")
        busy = ", ".join(f"{t:.1f}" for t in c["driver_busy_ms_per_unit"])
        print(f"  driver's own time per unit when it commits: {busy} ms (a ceiling of 1000/that units/s)")
    print(f"\nload average start {result['machine']['load_avg_start']}, end {result['machine']['load_avg_end']}")


if __name__ == "__main__":
    sys.exit(main())
