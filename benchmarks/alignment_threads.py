"""The alignment's time by torch intra-op threads: real sets (the cached pairs of a kept run) and synthetic rings.

Why: the alignment's torch steps are many small batched operations. With two OpenMP threads on a 2-core
machine that something else also uses, a thread that is descheduled stalls the other at every barrier
(herzjesu's alignment took 19-23 s with 2 threads vs 4.4-4.5 s with 1 while a test suite ran beside it).
This script measures the alignment alone, the threads interleaved (benchmarks/README.md §4). Since stop 26 a
problem of at most 50,000 matches aligns on numpy (``sfm.geometry.arrays``; herzjesu, small rings): torch's
threads do not apply to it, only to the larger sets (fountain, the temple ring's coarse step) and rings.

Real sets: each (set, threads, repeat) is a fresh process that deletes the kept run's cached scene and runs
``reconstruct`` again up to the alignment (features and pairs come from the cache), with torch's intra-op
threads set to the number measured. Synthetic: rings of N images (alignment_synthetic), in this
process, ``align_scene`` with ``torch.set_num_threads`` between the runs.

Usage: SFM3R_SHARED=/work/shared PYTHONPATH=src python benchmarks/alignment_threads.py --sets herzjesu fountain \
        temple --synthetic 50 200 --threads 1 2 --repeats 2 --work /tmp/align_threads
       (add --concurrent 2 to run two copies at once: two jobs sharing the machine)
Prints a table, writes benchmarks/results/alignment_threads.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "sfm"))
import accuracy  # noqa: E402  (the sets and their folders)

RESULTS = Path(__file__).resolve().parent / "results"


def _kept_run(name: str, work: Path) -> tuple[Path, Path]:
    """(images folder, a finished run folder of the set) — made once, then reused."""
    images = accuracy.DATA / accuracy.SETS[name][0]
    run = work / name
    if not (run / "run.json").exists():
        from sfm3r.pipelines.config import preset_conf
        from sfm3r.pipelines.reconstruct import reconstruct

        reconstruct(images, run, preset_conf("default", backend="classic", device="cpu", overwrite=True))
    return images, run


def _align_real(images: Path, run: Path, threads: int) -> float:
    """Worker: the alignment's seconds with `threads` torch threads, everything before it from the cache."""
    import torch

    from sfm3r.pipelines.config import preset_conf
    from sfm3r.pipelines.reconstruct import Stage, reconstruct

    torch.set_num_threads(threads)
    for stale in (run / "cache").glob("scene-alignment-*"):
        shutil.rmtree(stale)
    result = reconstruct(images, run, preset_conf("default", backend="classic", device="cpu"), stop_after=Stage.ALIGN)
    return result.timings["alignment"]


def _align_synthetic(num_images: int, threads: int) -> float:
    import torch
    from alignment_synthetic import make_pair_results, make_scene, neighbour_pairs

    from sfm3r.sfm.align.alignment import AlignConf, align_scene

    torch.set_num_threads(threads)
    scene = make_scene(num_images, num_points=max(2000, 20 * num_images), seed=1)
    pairs = make_pair_results(scene, neighbour_pairs(num_images, 5), max_matches=150 if num_images <= 200 else 80, seed=2)
    started = time.perf_counter()
    align_scene(pairs, scene.images, AlignConf())
    return time.perf_counter() - started


def _in_fresh_processes(kind: str, arg: str, threads: int, work: Path, copies: int = 1) -> list[float]:
    """The alignment's seconds in `copies` fresh processes run at the same time (copies > 1: a busy machine),
    each on its own kept run (work/copy<k>)."""
    code = (
        "import sys, json; sys.path.insert(0, %r); import alignment_threads as a; "
        "print('RESULT', json.dumps(a._worker(%r, %r, %d, %r)))"
    )
    here = str(Path(__file__).resolve().parent)
    runs = [subprocess.Popen([sys.executable, "-c", code % (here, kind, arg, threads, str(work / f"copy{k}"))],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for k in range(copies)]  # fmt: skip
    seconds = []
    for run in runs:
        out, err = run.communicate()
        found = [line for line in out.splitlines() if line.startswith("RESULT ")]
        if not found:
            raise RuntimeError(f"{kind} {arg} threads {threads} failed:\n{err[-3000:]}")
        seconds.append(float(json.loads(found[0][7:])))
    return seconds


def _worker(kind: str, arg: str, threads: int, work: str) -> float:
    if kind == "real":
        images, run = _kept_run(arg, Path(work))
        return _align_real(images, run, threads)
    return _align_synthetic(int(arg), threads)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", nargs="*", default=["herzjesu", "fountain", "temple"], choices=sorted(accuracy.SETS))
    ap.add_argument("--synthetic", nargs="*", type=int, default=[200], help="ring sizes (images)")
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path("/tmp/sfm3r_alignment_threads"))
    ap.add_argument("--concurrent", type=int, default=1, help="copies run at the same time (a busy machine)")
    args = ap.parse_args(argv)
    cases = [("real", name) for name in args.sets] + [("synthetic", str(n)) for n in args.synthetic]
    for kind, arg in cases:  # the kept runs first, outside the timings
        if kind == "real":
            for k in range(args.concurrent):
                _kept_run(arg, args.work / f"copy{k}")
    seconds: dict[tuple[str, int], list[float]] = {}
    for repeat in range(args.repeats):
        for kind, arg in cases:
            order = args.threads if repeat % 2 == 0 else list(reversed(args.threads))
            for threads in order:
                found = _in_fresh_processes(kind, arg, threads, args.work, args.concurrent)
                seconds.setdefault((arg, threads), []).extend(found)
                print(f"  {arg} threads {threads} rep {repeat}: {', '.join(f'{t:.2f}' for t in found)} s "
                      f"(load {os.getloadavg()[0]:.1f})", flush=True)
    rows = [{"case": arg, "threads": threads, "median_s": round(statistics.median(v), 2), "runs_s": [round(x, 2) for x in v]}
            for (arg, threads), v in seconds.items()]  # fmt: skip
    print("\n| case | torch threads | alignment s (median) | runs |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['case']} | {row['threads']} | {row['median_s']} | {row['runs_s']} |")
    RESULTS.mkdir(exist_ok=True)
    out = {"argv": sys.argv[1:], "load": os.getloadavg(), "concurrent": args.concurrent, "rows": rows}
    (RESULTS / "alignment_threads.json").write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
