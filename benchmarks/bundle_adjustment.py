"""Benchmark: build_tracks + refine_scene on synthetic ring scenes of 50, 200 and 1,000 images.

Each size runs in its own subprocess so that the peak resident memory (ru_maxrss) is per size.
Cameras on a circle looking out at a wall of points (tests/sfm/ba_synthetic.py, layout "ring"), whose
circumference grows with N, so points per image (~800) and track lengths stay constant; 6 neighbour
pairs per image, 0.5 px noise, 10 % outlier matches; poses perturbed by 1° and 0.05 units (a tenth
of the camera spacing), focal by 3 %.

Run from the repository root:  PYTHONPATH=src python benchmarks/bundle_adjustment.py [--sizes 50 200 1000]
Writes benchmarks/results/bundle_adjustment.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
POINTS_PER_IMAGE_FACTOR = 80  # scene points per image: ~800 visible per image


def run_one(n: int) -> dict:
    sys.path.insert(0, str(ROOT / "tests" / "sfm"))
    from ba_synthetic import make_scene, perturb, rotation_angle_deg

    from sfm3r.sfm.align.bundle_adjustment import BundleAdjustmentConf, refine_scene
    from sfm3r.sfm.geometry.similarity import apply_similarity as apply_sim3, fit_similarity as umeyama_sim3
    from sfm3r.sfm.align.tracks import build_tracks

    t0 = time.perf_counter()
    sc = make_scene(n, layout="ring", num_points=POINTS_PER_IMAGE_FACTOR * n, outlier_frac=0.1, neighbours=6, seed=0)
    t_gen = time.perf_counter() - t0
    centers_gt = -np.einsum("nji,nj->ni", sc.rotations, sc.translations)
    extent = float(np.linalg.norm(centers_gt.max(0) - centers_gt.min(0)))
    cams, rots, trans = perturb(sc, rot_deg=1.0, trans_frac=0.05 / extent, focal_frac=0.03, seed=1)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    t0 = time.perf_counter()
    tracks = build_tracks(sc.pairs, sc.names)
    t_tracks = time.perf_counter() - t0
    t0 = time.perf_counter()
    scene = refine_scene(tracks, sc.names, cams, np.arange(n), rots, trans, BundleAdjustmentConf())
    t_refine = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    s, R, t = umeyama_sim3(scene.camera_centers(), centers_gt)
    rot_err = rotation_angle_deg(np.einsum("nij,kj->nik", scene.rotations, R), sc.rotations)
    ctr_err = np.linalg.norm(apply_sim3(s, R, t, scene.camera_centers()) - centers_gt, axis=1)
    return dict(
        images=n, pairs=len(sc.pairs), matches=int(sum(p.num_matches for p in sc.pairs)),
        mean_visible_per_image=float(np.mean([v.size for v in sc.visible])),
        tracks=tracks.num_tracks, track_observations=tracks.num_observations,
        points_out=scene.num_points, observations_out=int(scene.obs_point.size),
        error_before_px=scene.info["mean_reproj_error_before"], error_after_px=scene.info["mean_reproj_error_after"],
        ba_iterations=scene.info["ba_iterations"], rounds=len(scene.info["rounds"]),
        time_ceres_s=float(sum(r["ba_solve_time_s"] for r in scene.info["rounds"])),
        rot_err_deg_max=float(rot_err.max()), center_err_rel_max=float(ctr_err.max() / extent),
        time_generate_s=t_gen, time_build_tracks_s=t_tracks, time_refine_scene_s=t_refine,
        peak_rss_mb=peak, rss_before_mb=rss_before,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[50, 200, 1000])
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one)))
        return
    rows = []
    for n in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--one", str(n)], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{n:5d} images: tracks {r['time_build_tracks_s']:.2f} s, refine {r['time_refine_scene_s']:.1f} s, "
              f"peak {r['peak_rss_mb']:.0f} MB", flush=True)
    cols = ["images", "matches", "tracks", "track_observations", "points_out", "observations_out",
            "time_build_tracks_s", "time_refine_scene_s", "time_ceres_s", "ba_iterations", "peak_rss_mb", "error_after_px",
            "rot_err_deg_max", "center_err_rel_max"]
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(f"{r[c]:.3g}" if isinstance(r[c], float) else str(r[c]) for c in cols))
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        k = b["observations_out"] / a["observations_out"]
        print(f"observations x{k:.1f}: build_tracks x{b['time_build_tracks_s'] / a['time_build_tracks_s']:.1f}, "
              f"refine_scene x{b['time_refine_scene_s'] / a['time_refine_scene_s']:.1f}")
    res_dir = ROOT / "benchmarks" / "results"
    res_dir.mkdir(parents=True, exist_ok=True)
    meta = dict(python=platform.python_version(), machine=platform.machine(), cpus=os.cpu_count(),
                load_average_1min=os.getloadavg()[0])
    (res_dir / "bundle_adjustment.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=2))


if __name__ == "__main__":
    main()
