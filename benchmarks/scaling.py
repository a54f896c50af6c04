"""Scaling of the weight-free pipeline with the number of images N: time and peak memory per stage.

A synthetic scene of N cameras on a ring (``tests/sfm/alignment_synthetic.py``) goes through:

1. ``retrieval``: ASMK similarity (``sfm.graph.retrieval.sift_retrieval``, codebook trained on the set) of
   synthetic RootSIFT-like descriptors: every scene point has a random descriptor; an image sees the
   descriptors of (up to ``--features``) of its visible points plus noise, so images that share points
   share visual words, as with real SIFT;
2. ``scene_graph``: ``build_scene_graph(names, "retrieval-20-10", similarity)`` (the default graph above
   40 images);
3. ``pairwise`` (synthetic, not our code's cost): the PairResults a backend would produce for those pairs
   (``make_pair_results``: 150 matches per pair, 0.5 px noise, 1 % depth noise, 20 % outliers, ±5 % backend focal error);
4. ``alignment``: ``align_scene`` with the default AlignConf (verification, canonical, init, coarse 3D,
   2D reprojection refinement);
5. ``writers``: ``io.colmap.write_colmap_model`` (binary) of the result.

Each N runs in its own subprocess. Times are wall-clock; "CPU s" is the process CPU time (all threads), which
is less sensitive to load from other processes. Memory: a sampler thread reads the process RSS every 5 ms; a stage's
"peak MB" is the highest RSS during the stage minus the RSS when it started (its own working memory), and
"RSS MB" is the process's absolute peak at the end of the stage. Accuracy of the alignment (AUC@3, ATE) is
reported as a sanity check.

    PYTHONPATH=src python benchmarks/scaling.py [--sizes 100 300 1000] [--threads 2] [--timeout 1500]

Prints a table, writes benchmarks/results/scaling.json and benchmarks/results/scaling.png (time vs N).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "sfm"))  # alignment_synthetic (test and benchmark code)
RESULTS = REPO / "benchmarks" / "results"
STAGES = ["retrieval", "scene_graph", "pairwise", "alignment", "writers"]
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * _PAGE


class RssSampler:
    """Background thread tracking the peak RSS since the last :meth:`reset`."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.peak = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(self.interval)

    def reset(self) -> int:
        now = _rss_bytes()
        self.peak = now
        return now

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def synthetic_descriptors(scene, max_features: int, seed: int = 0) -> list:
    """Per image (n_i, 128) float32 unit-norm non-negative descriptors of its visible points (+ noise)."""
    import numpy as np

    from alignment_synthetic import project

    rng = np.random.default_rng(seed)
    point_desc = np.abs(rng.normal(size=(scene.points.shape[0], 128))).astype(np.float32)
    out = []
    for k in range(len(scene.images)):
        _, _, vis = project(scene, k)
        ids = np.flatnonzero(vis)
        if ids.size > max_features:
            ids = rng.choice(ids, max_features, replace=False)
        d = point_desc[ids] + 0.15 * np.abs(rng.normal(size=(ids.size, 128))).astype(np.float32)
        out.append((d / np.linalg.norm(d, axis=1, keepdims=True)).astype(np.float32))
    return out


def worker(n: int, threads: int, max_features: int, max_matches: int) -> dict:
    import torch

    from sfm3r.io.colmap import write_colmap_model
    from sfm3r.sfm.align.alignment import AlignConf, align_scene
    from alignment_synthetic import make_pair_results, make_scene
    from sfm3r.sfm.evaluation import evaluate_poses
    from sfm3r.sfm.graph.retrieval import sift_retrieval
    from sfm3r.sfm.graph.scene_graph import build_scene_graph

    torch.set_num_threads(threads)
    scene = make_scene(n, num_points=max(3000, 20 * n), radius=6.0, seed=0)
    descs = synthetic_descriptors(scene, max_features, seed=1)
    names = list(scene.image_names)
    sampler = RssSampler()
    row: dict = {"images": n}

    def stage(name, fn):
        start = sampler.reset()
        t0, c0 = time.perf_counter(), time.process_time()
        value = fn()
        row[f"t_{name}"] = time.perf_counter() - t0
        row[f"cpu_{name}"] = time.process_time() - c0
        row[f"peak_{name}_MB"] = (sampler.peak - start) / 2**20
        row[f"rss_{name}_MB"] = sampler.peak / 2**20
        return value

    sim = stage("retrieval", lambda: sift_retrieval(descs).similarity)
    pairs, report = stage("scene_graph", lambda: build_scene_graph(names, "retrieval-20-10", sim))
    index = {name: i for i, name in enumerate(names)}
    ij = [(index[a], index[b]) for a, b in pairs.pairs]
    results = stage("pairwise", lambda: make_pair_results(scene, ij, backend_focal_error=0.05,
                                                           max_matches=max_matches, seed=2))
    out = stage("alignment", lambda: align_scene(results, scene.images, AlignConf()))
    with tempfile.TemporaryDirectory() as tmp:
        stage("writers", lambda: write_colmap_model(out, Path(tmp) / "sparse"))
    sampler.stop()
    m = evaluate_poses(out, scene)
    row.update({
        "pairs": len(pairs), "matches": int(sum(r.num_matches for r in results)),
        "covisible_pairs": int(sum(r.num_matches >= 20 for r in results)),
        "registered": out.num_images, "points": out.num_points,
        "align_timings": {k: round(v, 3) for k, v in out.info.get("timings", {}).items()},
        "AUC@3": m["AUC@3"], "ATE": m.get("ATE"), "total_s": sum(row[f"t_{s}"] for s in STAGES),
        "ours_total_s": sum(row[f"t_{s}"] for s in STAGES if s != "pairwise"),
        "ours_cpu_s": sum(row[f"cpu_{s}"] for s in STAGES if s != "pairwise"),
    })
    return row


def _table(rows: list[dict]) -> str:
    head = "| N | pairs | matches | " + " | ".join(f"{s} s" for s in STAGES) + " | total s (ours) | CPU s (ours) | " + \
        " | ".join(f"{s} peak MB" for s in STAGES) + " | process RSS MB | AUC@3 | ATE |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['images']} | failed: {r['error']} |")
            continue
        lines.append(
            f"| {r['images']} | {r['pairs']} | {r['matches']} | "
            + " | ".join(f"{r[f't_{s}']:.2f}" for s in STAGES) + f" | {r['ours_total_s']:.1f} | {r['ours_cpu_s']:.1f} | "
            + " | ".join(f"{r[f'peak_{s}_MB']:.0f}" for s in STAGES)
            + f" | {max(r[f'rss_{s}_MB'] for s in STAGES):.0f} | {r['AUC@3']:.1f} | {r['ATE']:.4f} |"
        )
    return "\n".join(lines)


def _plot(rows: list[dict], path: Path) -> None:
    try:
        import matplotlib
    except ImportError:  # not a runtime dependency of sfm3r: `pip install -e ".[bench]"`
        print(f"matplotlib is not installed (pip install -e '.[bench]'): no plot {path}")
        return

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if "error" not in r]
    if not ok:
        return
    ns = [r["images"] for r in ok]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for s in STAGES:
        ax1.plot(ns, [r[f"t_{s}"] for r in ok], "o-", label=s + (" (synthetic)" if s == "pairwise" else ""))
        ax2.plot(ns, [r[f"peak_{s}_MB"] for r in ok], "o-", label=s)
    ax1.plot(ns, [r["ours_total_s"] for r in ok], "k--", label="total (ours)")
    for ax, label in ((ax1, "time (s)"), (ax2, "stage peak memory (MB above its start)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("images N")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    ax1.legend(fontsize=8)
    ax1.set_title("time per stage vs N")
    ax2.set_title("memory per stage vs N")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _write(path: Path, rows: list[dict], args: argparse.Namespace) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": args.threads,
            "max_matches": args.max_matches, "features": args.features,
            "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()]}
    path.write_text(json.dumps({"machine": info, "command": " ".join(sys.argv), "rows": rows}, indent=1))
    _plot(rows, path.with_suffix(".png"))


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", nargs="+", type=int, default=[100, 300, 1000])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--features", type=int, default=1000, help="synthetic descriptors per image")
    ap.add_argument("--max-matches", type=int, default=150, help="matches per synthetic pair")
    ap.add_argument("--timeout", type=float, default=1500.0, help="seconds per size")
    ap.add_argument("--output", type=Path, default=RESULTS / "scaling.json")
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker is not None:
        print("RESULT " + json.dumps(worker(args.worker, args.threads, args.features, args.max_matches)))
        return []
    rows = []
    env = dict(os.environ, PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for n in args.sizes:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(n), "--threads", str(args.threads),
               "--features", str(args.features), "--max-matches", str(args.max_matches)]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout, check=False)
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            row = json.loads(line[-1][7:]) if line else {"images": n, "error": (proc.stderr or "")[-300:]}
        except subprocess.TimeoutExpired:
            row = {"images": n, "error": f"timeout after {args.timeout:.0f} s"}
        row["process_wall_s"] = time.perf_counter() - t0
        rows.append(row)
        _write(args.output, rows, args)  # after every size: an interrupted run keeps what it measured
        print(f"N={n}: " + (f"total {row['ours_total_s']:.1f} s (ours), alignment {row['t_alignment']:.1f} s"
                            if "error" not in row else f"FAILED {row['error']}"), flush=True)
    print(_table(rows))
    print(f"wrote {args.output} and {args.output.with_suffix('.png')}")
    return rows


if __name__ == "__main__":
    main()
