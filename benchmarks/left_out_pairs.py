"""Why images stayed out of a model: the pairs between each left-out component and the model, against GT.

Reads a finished classic run folder (its run.json and cache: features, putative matches, pair results; nothing
is extracted again) and the GT model of its images, and for every pair between a left-out component
(run.json ``counts.scene.left_out``, else ``counts.scene.unregistered``) and the registered images reports:

- ``put 0.8``: the putative matches the run had (default ratio test 0.8, the run's matcher, from the cache);
  ``GT 0.8``: how many of those agree with the GT epipolar geometry (Sampson error < 1 px);
- ``put 0.9`` / ``GT 0.9``: the same with a looser ratio test (0.9, exact matcher), i.e. how much a second
  matching pass could recover;
- ``RANSAC``: the calibrated two-view check of the 0.9 matches (the run's focal, 2 px, at least 8 inliers)
  with seeds 0-5: ``inliers:rotation error vs GT`` of each solution. Solutions of about
  the same support but different rotation mean the data do not determine the pair's geometry.

    SFM3R_SHARED=/work/shared PYTHONPATH=src python benchmarks/left_out_pairs.py RUN_FOLDER GT_FOLDER \
        [--min-putative 40]

Prints a markdown table (the pairs with >= 5 GT-consistent 0.9 matches or a RANSAC solution of >= 12 inliers)
and writes every pair to benchmarks/results/left_out_pairs.json. Example: the temple ring's
sparse subset, kept by ``accuracy.py --sets temple --variants sparse --methods sfm3r --keep DIR``, then
``left_out_pairs.py DIR/temple_sparse/run $SFM3R_SHARED/data/middlebury_templeRing/gt``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from sfm3r.io.colmap import read_colmap_model
from sfm3r.pipelines.classic import extract_features, stored_putative_counts
from sfm3r.sfm.classic.sift import SiftConf
from sfm3r.sfm.classic.two_view import TwoViewConf, camera_prior, match_descriptors, verify_keypoint_matches
from sfm3r.sfm.evaluation import rotation_angle_deg
from sfm3r.types import ImageInfo

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def _conf_from(data: dict, cls):
    """A config dataclass from run.json's dict of it (enum fields accept their values)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


def _sampson(xy_i, xy_j, K_i, K_j, R, t) -> np.ndarray:
    """(M,) Sampson distances in pixels of matches under the relative pose x_j = R x_i + t."""
    tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
    F = np.linalg.inv(K_j).T @ tx @ R @ np.linalg.inv(K_i)
    a = np.c_[xy_i, np.ones(len(xy_i))]
    b = np.c_[xy_j, np.ones(len(xy_j))]
    Fa, Fb = a @ F.T, b @ F
    return np.abs(np.sum(b * Fa, 1)) / np.sqrt(Fa[:, 0] ** 2 + Fa[:, 1] ** 2 + Fb[:, 0] ** 2 + Fb[:, 1] ** 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("gt", type=Path)
    ap.add_argument("--min-putative", type=int, default=40, help="pairs with fewer 0.9 matches are not listed")
    ap.add_argument("--seeds", type=int, default=6, help="RANSAC seeds tried per pair")
    ap.add_argument("--output", type=Path, default=RESULTS / "left_out_pairs.json")
    args = ap.parse_args()

    run = json.loads((args.run / "run.json").read_text())
    config, scene = run["config"], run["counts"]["scene"]
    sift, two_view = _conf_from(config["sift"], SiftConf), _conf_from(config["two_view"], TwoViewConf)
    focals = run["counts"].get("self_calibrated_focal", {})
    images = [
        ImageInfo(name=i["name"], path=args.run / i["name"], sha256=i["sha256"], width=i["width"], height=i["height"],
                  prior_focal_px=focals.get(f"{i['width']}x{i['height']}") or focals.get(i["name"]))
        for i in run["images"]
    ]  # fmt: skip
    by_name = {info.name: info for info in images}
    features, counts = extract_features(images, sift, args.run / "cache")
    if counts.computed:
        raise SystemExit(f"{counts.computed} images had no cached features: not the run folder of this config")
    components = [c["images"] for c in scene.get("left_out", ())] or [scene["unregistered"]]
    left = {n for c in components for n in c}
    model = [info.name for info in images if info.name not in left]
    gt = read_colmap_model(args.gt)
    gpos = {n: k for k, n in enumerate(gt.image_names)}
    K = {n: gt.cameras[gt.camera_of_image[gpos[n]]].matrix() for n in gpos}

    def gt_rel(a: str, b: str) -> tuple[np.ndarray, np.ndarray]:
        Ra, ta = gt.rotations[gpos[a]], gt.translations[gpos[a]]
        Rb, tb = gt.rotations[gpos[b]], gt.translations[gpos[b]]
        return Rb @ Ra.T, tb - Rb @ Ra.T @ ta

    loose = dataclasses.replace(two_view, matcher="torch", max_ratio=0.9, max_error=2.0, min_num_inliers=8)
    cached = stored_putative_counts(images, [(u, m) for u in left for m in model], sift, two_view, args.run / "cache")
    rows = []
    for component in components:
        for u in component:
            for m in model:
                matches = match_descriptors(features[u].descriptors, features[m].descriptors, loose)
                if len(matches) < args.min_putative:
                    continue
                R, t = gt_rel(u, m)
                xy_u, xy_m = features[u].keypoints[matches[:, 0]], features[m].keypoints[matches[:, 1]]
                gt_ok = int((_sampson(xy_u, xy_m, K[u], K[m], R, t) < 1.0).sum())
                strict = match_descriptors(features[u].descriptors, features[m].descriptors, two_view)
                s_u, s_m = features[u].keypoints[strict[:, 0]], features[m].keypoints[strict[:, 1]]
                gt_strict = int((_sampson(s_u, s_m, K[u], K[m], R, t) < 1.0).sum()) if len(strict) else 0
                solutions = []
                cam_u = camera_prior(by_name[u].width, by_name[u].height, by_name[u].prior_focal_px)
                cam_m = camera_prior(by_name[m].width, by_name[m].height, by_name[m].prior_focal_px)
                for seed in range(args.seeds):
                    conf = dataclasses.replace(loose, ransac_seed=seed)
                    r = verify_keypoint_matches(u, m, features[u].keypoints, features[m].keypoints, cam_u, cam_m,
                                                matches, conf)  # fmt: skip
                    err = float(rotation_angle_deg(r.rel_rotation @ R.T)) if r.verified else None
                    solutions.append((r.num_inliers, err))
                rows.append({
                    "left_out": u, "model": m, "putative_0.8": cached.get((u, m)), "gt_0.8": gt_strict,
                    "putative_0.9": len(matches), "gt_0.9": gt_ok, "ransac": solutions,
                })  # fmt: skip
    rows.sort(key=lambda r: -r["gt_0.9"])
    print("| left out | model image | put 0.8 | GT 0.8 | put 0.9 | GT 0.9 | RANSAC 0.9, 2 px: inliers:rotation error (deg) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if r["gt_0.9"] < 5 and max(n for n, _ in r["ransac"]) < 12:  # no real link, no strong spurious one
            continue
        sols = " ".join(f"{n}:{'-' if e is None else f'{e:.1f}'}" for n, e in r["ransac"])
        print(f"| {r['left_out']} | {r['model']} | {r['putative_0.8']} | {r['gt_0.8']} | {r['putative_0.9']} "
              f"| {r['gt_0.9']} | {sols} |")  # fmt: skip
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"run": str(args.run), "components": components, "rows": rows}, indent=1))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
