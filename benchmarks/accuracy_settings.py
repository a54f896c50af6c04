"""AUC@3 of named setting changes on the kept run folders of `accuracy.py --keep DIR` (issue 15).

Each case folder DIR/<set>_<variant> holds `images/` (links to the photos) and `run/` (sfm3r's run folder
with its cache; without it the case starts from nothing: a hand-made subset, e.g. DIR/herzjesu_first3/images). This script copies `run/` once to WORK/<set>_<variant> and reruns `reconstruct` there up to
the alignment (stop_after=ALIGN) with each named setting: settings that only change the alignment reuse the
cached features and pairs (seconds); SIFT or two-view changes compute new ones in their own cache namespace
(minutes). Each model is scored against the GT of its images as in accuracy.py. Prints a table of AUC@3
per case and setting and writes benchmarks/results/accuracy_settings.json.

Usage: SFM3R_SHARED=/work/shared PYTHONPATH=src python benchmarks/accuracy_settings.py --keep DIR \
           --work WORK [--cases herzjesu_all fountain_sparse ...] [--settings default accurate ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accuracy  # the sets, GT subsets and scoring of the accuracy benchmark

from sfm3r.pipelines.config import ReconstructConf, preset_conf
from sfm3r.sfm.align.alignment import CameraMode, Refinement

RESULTS = Path(__file__).resolve().parent / "results"


def _align(conf: ReconstructConf, **fields) -> ReconstructConf:
    return dataclasses.replace(conf, align=dataclasses.replace(conf.align, **fields))


def _reproj(conf: ReconstructConf, **fields) -> ReconstructConf:
    return _align(conf, reprojection=dataclasses.replace(conf.align.reprojection, **fields))


def _coarse(conf: ReconstructConf, **fields) -> ReconstructConf:
    return _align(conf, coarse=dataclasses.replace(conf.align.coarse, **fields))


def _verify(conf: ReconstructConf, **fields) -> ReconstructConf:
    return _align(conf, verify=dataclasses.replace(conf.align.verify, **fields))


def _sift(conf: ReconstructConf, **fields) -> ReconstructConf:
    return dataclasses.replace(conf, sift=dataclasses.replace(conf.sift, **fields))


def _two_view(conf: ReconstructConf, **fields) -> ReconstructConf:
    return dataclasses.replace(conf, two_view=dataclasses.replace(conf.two_view, **fields))


# name -> the change to the default configuration (no strings are evaluated)
SETTINGS: dict[str, Callable[[ReconstructConf], ReconstructConf]] = {
    "default": lambda c: c,
    "accurate-align": lambda c: _align(c, refine=Refinement.REPROJECTION_BA),
    "cauchy-0.3px": lambda c: _reproj(c, robust_scale_px=0.3),
    "cauchy-0.4px": lambda c: _reproj(c, robust_scale_px=0.4),
    "cauchy-0.5px": lambda c: _reproj(c, robust_scale_px=0.5),
    "cauchy-0.7px": lambda c: _reproj(c, robust_scale_px=0.7),
    "cauchy-1.5px": lambda c: _reproj(c, robust_scale_px=1.5),
    "cauchy-2px": lambda c: _reproj(c, robust_scale_px=2.0),
    "outlier-3px": lambda c: _reproj(c, outlier_px=3.0),
    "outlier-4px": lambda c: _reproj(c, outlier_px=4.0),
    "outlier-10px": lambda c: _reproj(c, outlier_px=10.0),
    "pp-min-2": lambda c: _reproj(c, min_images_for_pp=2),
    "pp-min-3": lambda c: _reproj(c, min_images_for_pp=3),
    "pp-min-4": lambda c: _reproj(c, min_images_for_pp=4),
    "tol-1e-6": lambda c: _reproj(c, tolerance=1e-6, max_iters=60),
    "tol-3e-4": lambda c: _reproj(c, tolerance=3e-4),
    "tol-1e-3": lambda c: _reproj(c, tolerance=1e-3),
    "coarse-outlier-0.1": lambda c: _coarse(c, outlier_threshold=0.1),
    "coarse-tol-1e-4": lambda c: _coarse(c, tolerance=1e-4),
    "coarse-outlier-0.5": lambda c: _coarse(c, outlier_threshold=0.5),
    "no-coarse": lambda c: _align(c, coarse_enabled=False),
    "no-rotavg": lambda c: _align(c, rotation_averaging=False),
    "verify-0.02": lambda c: _verify(c, inlier_threshold=0.02),
    "verify-0.1": lambda c: _verify(c, inlier_threshold=0.1),
    "single-camera": lambda c: _align(c, camera_mode=CameraMode.SINGLE),
    "lens-simple-radial": lambda c: dataclasses.replace(c, camera_model="SIMPLE_RADIAL"),
    "lens-auto": lambda c: dataclasses.replace(c, camera_model="AUTO"),
    # feature / pair changes: new SIFT or two-view results (minutes per case)
    "ransac-0.75px": lambda c: _two_view(c, max_error=0.75),
    "ransac-0.5px": lambda c: _two_view(c, max_error=0.5),
    "ransac-0.75px+cauchy-0.5px": lambda c: _reproj(_two_view(c, max_error=0.75), robust_scale_px=0.5),
    "ransac-1.5px": lambda c: _two_view(c, max_error=1.5),
    "ransac-2px": lambda c: _two_view(c, max_error=2.0),
    "min-inliers-15": lambda c: _two_view(c, min_num_inliers=15),
    "ratio-0.9": lambda c: _two_view(c, max_ratio=0.9),
    "reproj-4px": lambda c: _two_view(c, max_reproj_error=4.0),
    "angle-scale-1deg": lambda c: _two_view(c, angle_scale_deg=1.0),
    "angle-scale-4deg": lambda c: _two_view(c, angle_scale_deg=4.0),
    "min-tri-angle-1deg": lambda c: _two_view(c, min_tri_angle_deg=1.0),
    "dsp-sift": lambda c: _sift(c, domain_size_pooling=True),
    "sift-16k": lambda c: _sift(c, max_num_features=16384),
    "sift-peak-0.004": lambda c: _sift(c, peak_threshold=0.004),
    "sift-octave-0": lambda c: _sift(c, first_octave=0),
    "sift-1-orientation": lambda c: _sift(c, max_num_orientations=1),
}


def run_setting(case_dir: Path, work: Path, setting: str, threads: int) -> dict:
    import torch

    from sfm3r.pipelines.reconstruct import Stage, reconstruct

    torch.set_num_threads(threads)
    set_name = case_dir.name.rsplit("_", 1)[0]
    run = work / case_dir.name
    if not run.exists() and (case_dir / "run").is_dir():  # else: a new case, everything computed here
        shutil.copytree(case_dir / "run", run, symlinks=True)
    base = preset_conf("default", scene_graph="complete", backend="classic", device="cpu")
    conf = SETTINGS[setting](base)
    t0 = time.perf_counter()
    result = reconstruct(case_dir / "images", run, conf, stop_after=Stage.ALIGN)
    wall = time.perf_counter() - t0
    names = accuracy._images_of(case_dir / "images")
    gt = accuracy._subset_gt(accuracy.DATA / accuracy.SETS[set_name][1], names)
    from sfm3r.sfm.evaluation import evaluate_poses

    metrics = evaluate_poses(result.scene, gt)
    return {"case": case_dir.name, "setting": setting, "wall_s": wall, **metrics,
            "lens": result.scene.info.get("lens", {}).get("chosen") if result.scene.info.get("lens") else None}


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keep", type=Path, required=True, help="the --keep folder of an accuracy.py run")
    ap.add_argument("--work", type=Path, required=True, help="where the copies of the run folders go")
    ap.add_argument("--cases", nargs="+", default=None, help="<set>_<variant> folders of --keep (default: all)")
    ap.add_argument("--settings", nargs="+", default=["default"], choices=list(SETTINGS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--output", type=Path, default=RESULTS / "accuracy_settings.json")
    args = ap.parse_args(argv)
    cases = args.cases or sorted(p.name for p in args.keep.iterdir() if (p / "images").is_dir())
    rows = []
    for case in cases:
        for setting in args.settings:
            try:
                row = run_setting(args.keep / case, args.work, setting, args.threads)
            except Exception as err:  # noqa: BLE001 (a failing setting is a result)
                row = {"case": case, "setting": setting, "error": f"{type(err).__name__}: {err}"}
            rows.append(row)
            print(f"{case:18s} {setting:20s} reg {row.get('registration_rate', 0):5.1f} "
                  f"AUC@3 {row.get('AUC@3', float('nan')):6.2f} AUC@5 {row.get('AUC@5', float('nan')):6.2f} "
                  f"{row.get('wall_s', 0):6.1f} s {row.get('error') or ''}", flush=True)
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps(rows, indent=1, default=str))
    return rows


if __name__ == "__main__":
    main()
