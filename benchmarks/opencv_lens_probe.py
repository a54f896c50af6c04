"""Why the synthetic OPENCV lens costs ~5 AUC@3 points (benchmarks/README.md, issue 15): the herzjesu images
that ``distortion.py --lens opencv`` renders, reconstructed with variants of the estimated and of the known
lens.

- ``estimated``: ``--camera-model OPENCV`` as is; ``estimated-pp-fixed``: the lens BA keeps the alignment's
  principal point; ``estimated-no-realign``: the lens BA's poses (no second alignment on undistorted keypoints);
- ``known``: the true lens given (kept fixed); ``known-p2=0``, ``known-p=0``: with its tangential terms (p2,
  or p1 and p2) set to zero; ``known-p2=0-cx+3.5``: also its principal point moved 3.5 px right (where the
  estimated one lands).

    SFM3R_SHARED=/work/shared PYTHONPATH=src python benchmarks/opencv_lens_probe.py --work DIR
        [--variants estimated known known-p2=0 ...]

DIR is the ``--work`` folder of an earlier ``distortion.py --lens opencv`` run (its herzjesu_opencv/images
and true_lens_cameras.txt are read). Prints a table and writes benchmarks/results/opencv_lens_probe.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SFM3R_SHARED", REPO.parent / "shared"))
GT = SHARED / "data" / "strecha_herzjesu_P8" / "gt_1024"
KNOWN = {  # variant -> changes of the true cameras.txt line (token index: value or "+offset")
    "known": {},
    "known-p2=0": {11: 0.0},
    "known-p=0": {10: 0.0, 11: 0.0},
    "known-p2=0-cx+3.5": {6: "+3.5", 11: 0.0},
}
ESTIMATED = ("estimated", "estimated-pp-fixed", "estimated-no-realign")


def _conf(variant: str, case: Path, out: Path):
    from sfm3r.pipelines.config import preset_conf

    if variant in KNOWN:
        tokens = (case / "true_lens_cameras.txt").read_text().split()
        for index, value in KNOWN[variant].items():
            tokens[index] = repr(float(tokens[index]) + float(value[1:]) if isinstance(value, str) else value)
        path = out.parent / f"cameras_{variant}.txt"
        path.write_text(" ".join(tokens) + "\n")
        return preset_conf("default", device="cpu", camera_model="PINHOLE", known_intrinsics=path)
    conf = preset_conf("default", device="cpu", camera_model="OPENCV")
    align = conf.align
    if variant == "estimated-pp-fixed":
        align = dataclasses.replace(align, lens_ba=dataclasses.replace(align.lens_ba, refine_principal_point=False))
    if variant == "estimated-no-realign":
        align = dataclasses.replace(align, lens_realign=False)
    return dataclasses.replace(conf, align=align)


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, required=True, help="the --work folder of distortion.py --lens opencv")
    ap.add_argument("--variants", nargs="+", default=[*ESTIMATED, *KNOWN], choices=[*ESTIMATED, *KNOWN])
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO / "src"))
    import torch

    from sfm3r.io.colmap import read_colmap_model
    from sfm3r.pipelines.reconstruct import reconstruct
    from sfm3r.sfm.evaluation import evaluate_poses

    torch.set_num_threads(1)
    case = args.work / "herzjesu_opencv"
    out = args.work / "probe" / "run"  # one run folder: the features and matches are computed once
    out.parent.mkdir(parents=True, exist_ok=True)
    gt = read_colmap_model(GT)
    rows = []
    print("| variant | distortion | fx, fy | cx, cy | AUC@3 | AUC@5 | wall s |\n|---|---|---|---|---|---|---|")
    for variant in args.variants:
        t0 = time.perf_counter()
        reconstruct(case / "images", out, _conf(variant, case, out))
        distorted = out / "distorted" / "sparse" / "0"
        est = read_colmap_model(distorted if distorted.is_dir() else out / "sparse" / "0")
        m = evaluate_poses(est, gt)
        c = est.cameras[0]
        rows.append({"variant": variant, "distortion": list(c.distortion), "fx": c.fx, "fy": c.fy, "cx": c.cx,
                     "cy": c.cy, "AUC@3": m["AUC@3"], "AUC@5": m["AUC@5"], "wall_s": time.perf_counter() - t0})
        r = rows[-1]
        print(f"| {variant} | {', '.join(f'{v:.5f}' for v in r['distortion'])} | {r['fx']:.1f}, {r['fy']:.1f} | "
              f"{r['cx']:.1f}, {r['cy']:.1f} | {r['AUC@3']:.2f} | {r['AUC@5']:.2f} | {r['wall_s']:.0f} |", flush=True)
    results = REPO / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "opencv_lens_probe.json").write_text(json.dumps(
        {"command": " ".join(sys.argv), "loadavg": os.getloadavg(), "rows": rows}, indent=1))  # fmt: skip
    return rows


if __name__ == "__main__":
    main()
