"""Classic (SIFT) backend: per-stage time and relative-rotation accuracy against ground truth.

Sets: strecha_fountain_P11 (the 1024 px copies, all 55 pairs) and middlebury_templeRing (47 images; pairs
(i, j) with 1 <= j - i <= WINDOW in name order, default 3: 135 pairs. The ring has jumps in name order,
so some of these pairs do not overlap and must fail; those count as "failed", not as errors).

Each pair is verified twice from the same putative matches: with the GT intrinsics as camera prior (what an
exact EXIF focal gives) and with the default prior (1.2 * max(W, H), no EXIF). Stages timed: SIFT extraction
(per image), descriptor matching (per pair), verification + triangulation (per pair, GT prior).

    PYTHONPATH=src python benchmarks/classic_backend.py [--sets fountain temple] [--window 3]
        [--max-image-size 1600] [--max-num-features 8192] [--max-error 1.0] [--threads -1]

SiftConf defaults were chosen on the full-resolution fountain images (slow: ~10-30 s per image), e.g.

    PYTHONPATH=src python benchmarks/classic_backend.py --sets fountain_full --threads 1 \
        --images 0000.jpg 0002.jpg 0004.jpg 0006.jpg --max-image-size 3200 --out /tmp/sift_3200.json

Prints a table and writes benchmarks/results/classic_backend.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import pycolmap
import torch
from PIL import Image

from sfm3r.sfm.classic.sift import SiftConf, extract_sift
from sfm3r.sfm.classic.two_view import TwoViewConf, camera_prior, match_descriptors, verify_matches
from sfm3r.types import Camera

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SFM3R_SHARED", REPO.parent / "shared"))
if not SHARED.is_dir():
    SHARED = Path("/work/shared")
DATA = SHARED / "data"
SETS = {
    "fountain": (DATA / "strecha_fountain_P11" / "images_1024", DATA / "strecha_fountain_P11" / "gt_1024"),
    "temple": (DATA / "middlebury_templeRing" / "images", DATA / "middlebury_templeRing" / "gt"),
    # Full-resolution originals (3072x2048), for choosing SiftConf.max_image_size; slow, not run by default.
    "fountain_full": (DATA / "strecha_fountain_P11" / "images", DATA / "strecha_fountain_P11" / "gt"),
}


def load_gt(gt_dir: Path) -> tuple[dict, dict]:
    rec = pycolmap.Reconstruction(str(gt_dir))
    poses, cameras = {}, {}
    for image in rec.images.values():
        pose = image.cam_from_world()
        poses[image.name] = (pose.rotation.matrix(), np.asarray(pose.translation))
        fx, fy, cx, cy = rec.cameras[image.camera_id].params
        cameras[image.name] = Camera(image.camera.width, image.camera.height, fx, fy, cx, cy)
    return poses, cameras


def pose_errors(res, poses) -> tuple[float, float]:
    (ri, ti), (rj, tj) = poses[res.name_i], poses[res.name_j]
    rot = rj @ ri.T
    trans = tj - rot @ ti
    cos_r = (np.trace(res.rel_rotation @ rot.T) - 1) / 2
    cos_t = res.rel_translation @ trans / max(np.linalg.norm(trans), 1e-12)
    return float(np.degrees(np.arccos(np.clip(cos_r, -1, 1)))), float(np.degrees(np.arccos(np.clip(cos_t, -1, 1))))


def summarise(errors: list[tuple[float, float]], num_pairs: int) -> dict:
    e = np.array(errors).reshape(-1, 2)
    rot, trans = e[:, 0], e[:, 1]
    return {
        "pairs": num_pairs,
        "verified": len(e),
        "failed": num_pairs - len(e),
        "rot_median_deg": float(np.median(rot)) if len(e) else None,
        "rot_frac_lt_1deg": float(np.mean(rot < 1)) if len(e) else None,
        "rot_frac_lt_5deg": float(np.mean(rot < 5)) if len(e) else None,
        "rot_max_deg": float(rot.max()) if len(e) else None,
        "trans_median_deg": float(np.median(trans)) if len(e) else None,
    }


def run_set(name: str, sift_conf: SiftConf, tv_conf: TwoViewConf, window: int, threads: int,
            only: list[str] | None) -> dict:
    image_dir, gt_dir = SETS[name]
    poses, gt_cameras = load_gt(gt_dir)
    names = sorted(n for n in poses if not only or n in only)
    t0 = time.perf_counter()
    features = {n: extract_sift(np.asarray(Image.open(image_dir / n).convert("RGB")), sift_conf, num_threads=threads)
                for n in names}
    t_extract = time.perf_counter() - t0
    if name == "temple":
        pairs = [(names[i], names[j]) for i in range(len(names)) for j in range(i + 1, min(i + 1 + window, len(names)))]
    else:
        pairs = list(itertools.combinations(names, 2))

    t_match = t_verify = 0.0
    errors = {"gt_prior": [], "default_prior": []}
    failed = {"gt_prior": [], "default_prior": []}
    for a, b in pairs:
        t0 = time.perf_counter()
        matches = match_descriptors(features[a].descriptors, features[b].descriptors, tv_conf)
        t1 = time.perf_counter()
        res = verify_matches(a, b, features[a], features[b], gt_cameras[a], gt_cameras[b], matches, tv_conf)
        t_match += t1 - t0
        t_verify += time.perf_counter() - t1
        if res.verified:
            errors["gt_prior"].append(pose_errors(res, poses))
        else:
            failed["gt_prior"].append(f"{a} {b} ({len(matches)} matches, {res.num_inliers} inliers)")
        prior_a = camera_prior(features[a].width, features[a].height)
        prior_b = camera_prior(features[b].width, features[b].height)
        res = verify_matches(a, b, features[a], features[b], prior_a, prior_b, matches, tv_conf)
        if res.verified:
            errors["default_prior"].append(pose_errors(res, poses))
        else:
            failed["default_prior"].append(f"{a} {b} ({len(matches)} matches, {res.num_inliers} inliers)")
    return {
        "images": len(names),
        "pairs": len(pairs),
        "pair_selection": "all pairs" if name != "temple" else f"name-order window {window}",
        "image_size": [features[names[0]].width, features[names[0]].height],
        "mean_keypoints": float(np.mean([len(f) for f in features.values()])),
        "time_extract_per_image_s": t_extract / len(names),
        "time_match_per_pair_s": t_match / len(pairs),
        "time_verify_triangulate_per_pair_s": t_verify / len(pairs),
        "accuracy": {k: summarise(v, len(pairs)) | {"failed_pairs": failed[k]} for k, v in errors.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=["fountain", "temple"], choices=list(SETS))
    parser.add_argument("--images", nargs="+", help="only these image names (e.g. a subset of fountain_full)")
    parser.add_argument("--window", type=int, default=3, help="templeRing: pairs (i, j) with j - i <= WINDOW")
    parser.add_argument("--max-image-size", type=int, default=SiftConf().max_image_size)
    parser.add_argument("--max-num-features", type=int, default=SiftConf().max_num_features)
    parser.add_argument("--max-error", type=float, default=TwoViewConf().max_error)
    parser.add_argument("--threads", type=int, default=-1, help="pycolmap SIFT threads (-1: all cores)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "classic_backend.json")
    args = parser.parse_args()
    sift_conf = SiftConf(max_image_size=args.max_image_size, max_num_features=args.max_num_features)
    tv_conf = TwoViewConf(max_error=args.max_error)

    results = {name: run_set(name, sift_conf, tv_conf, args.window, args.threads, args.images) for name in args.sets}
    header = f"{'set':9} {'prior':8} {'pairs':>5} {'fail':>4} {'kp/img':>6} {'extr s/img':>10} {'match s/pr':>10} " \
             f"{'verif s/pr':>10} {'R med°':>7} {'R<1°':>5} {'R<5°':>5} {'t med°':>7}"
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        for prior, acc in r["accuracy"].items():
            fmt = lambda v, spec: "   -" if v is None else format(v, spec)  # noqa: E731
            print(f"{name:9} {prior.split('_')[0]:8} {r['pairs']:5d} {acc['failed']:4d} {r['mean_keypoints']:6.0f} "
                  f"{r['time_extract_per_image_s']:10.2f} {r['time_match_per_pair_s']:10.3f} "
                  f"{r['time_verify_triangulate_per_pair_s']:10.3f} {fmt(acc['rot_median_deg'], '7.3f')} "
                  f"{fmt(acc['rot_frac_lt_1deg'], '5.2f')} {fmt(acc['rot_frac_lt_5deg'], '5.2f')} "
                  f"{fmt(acc['trans_median_deg'], '7.3f')}")
    report = {
        "sift_conf": vars(sift_conf),
        "two_view_conf": {k: str(v) for k, v in vars(tv_conf).items()},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "pycolmap": pycolmap.__version__, "pycolmap_cuda": pycolmap.has_cuda},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
