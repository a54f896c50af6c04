"""Global alignment benchmark on synthetic scenes: per-stage time, peak memory, accuracy.

Part 1 (scaling): rings of 50, 200 and 1,000 images, sliding-window pairs (5 neighbours each side),
20 % outlier matches, backend focal error ±5 %, refinement "none" (init + coarse) / "reprojection" (default).
Part 2 (refinement comparison): 50 images, refine = none / reprojection (a) / ba (b) / reprojection+ba,
and the initialisation alone with / without rotation averaging.

Memory: "peak_numpy_MB" is tracemalloc's peak (Python/numpy allocations only, not torch's), "peak_rss_MB" the
highest process RSS sampled every 5 ms during the run (absolute, includes the scene and the earlier runs' heap),
"maxrss_MB" the process's peak so far (getrusage).

Usage: PYTHONPATH=src python benchmarks/alignment.py [--sizes 50 200 1000] [--threads 1] [--skip-compare]
Writes benchmarks/results/alignment.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import resource
import time
import tracemalloc
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "sfm"))  # alignment_synthetic
from alignment_synthetic import make_pair_results, make_scene, neighbour_pairs  # noqa: E402

from sfm3r.sfm.align.alignment import AlignConf, Refinement, align_scene
from sfm3r.sfm.evaluation import evaluate_poses

from scaling import RssSampler  # benchmarks/scaling.py (this script's folder is on sys.path)


class _GT:
    def __init__(self, s):
        self.image_names, self.rotations, self.translations = s.image_names, s.rotations, s.translations
        self.cameras, self.camera_of_image = s.cameras, None


def run(n: int, refine: Refinement, max_matches: int, window: int = 5, seed: int = 0, **conf) -> dict:
    scene = make_scene(n, num_points=max(2000, 30 * n), radius=6.0, seed=seed)
    pairs = make_pair_results(scene, neighbour_pairs(n, window), backend_focal_error=0.05,
                              max_matches=max_matches, seed=seed + 1)
    sampler = RssSampler()
    tracemalloc.start()
    t0 = time.perf_counter()
    out = align_scene(pairs, scene.images, AlignConf(refine=refine, **conf))
    total = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    sampler.stop()
    peak_rss = sampler.peak
    m = evaluate_poses(out, _GT(scene))
    row = {
        "images": n, "pairs": len(pairs), "matches": int(sum(p.num_matches for p in pairs)),
        "refine": str(refine) + "".join(f" {k}={v}" for k, v in conf.items()), "total_s": total, "peak_numpy_MB": peak / 2**20,
        "peak_rss_MB": peak_rss / 2**20, "maxrss_MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        **{f"t_{k}": v for k, v in out.info["timings"].items()},
        **{k: m[k] for k in ("AUC@3", "rot_err_max_deg", "ATE", "focal_err_max")},
    }
    return row


def _table(rows: list[dict], keys: list[str]) -> str:
    lines = [" | ".join(f"{k:>12}" for k in keys)]
    for r in rows:
        lines.append(" | ".join(f"{r.get(k, float('nan')):>12.4g}" if isinstance(r.get(k), float) else f"{r.get(k, '-')!s:>12}" for k in keys))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[50, 200, 1000])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core box)")
    ap.add_argument("--compare-size", type=int, default=50)
    ap.add_argument("--scaling-refine", nargs="+", default=["none", "reprojection"])
    ap.add_argument("--refine-max-images", type=int, default=1000, help="larger scenes: init + coarse only")
    ap.add_argument("--skip-compare", action="store_true", help="only the scaling part")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    scaling = []
    for n in args.sizes:
        for refine in map(Refinement, args.scaling_refine):
            if n > args.refine_max_images and refine != Refinement.NONE:
                continue
            scaling.append(run(n, refine, max_matches=150 if n <= 200 else 80))
            print(scaling[-1], flush=True)
    compare = []
    if not args.skip_compare:
        compare = [run(args.compare_size, r, max_matches=300) for r in Refinement]
        # initialisation alone, with and without rotation averaging
        for ra in (False, True):
            compare.append(run(args.compare_size, Refinement.NONE, 300, coarse_enabled=False, rotation_averaging=ra))
    keys_s = ["images", "pairs", "matches", "refine", "total_s", "t_verify", "t_canonical", "t_init", "t_coarse",
              "t_reprojection", "peak_numpy_MB", "peak_rss_MB", "maxrss_MB", "rot_err_max_deg", "ATE"]
    keys_c = ["refine", "total_s", "t_coarse", "t_reprojection", "t_ba", "AUC@3", "rot_err_max_deg", "ATE", "focal_err_max"]
    print("\nScaling (synthetic ring, window 5):\n" + _table(scaling, keys_s))
    if compare:
        print(f"\nRefinement comparison ({args.compare_size} images):\n" + _table(compare, keys_c))
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    name = "alignment.json" if compare else "alignment_scaling.json"
    (out / name).write_text(json.dumps({"load": os.getloadavg(), "scaling": scaling, "compare": compare}, indent=1))


if __name__ == "__main__":
    main()
