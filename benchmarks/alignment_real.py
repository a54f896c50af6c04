"""Global alignment on real photo sets with ground truth, classic SIFT backend, exhaustive pairs.

For each set: SIFT (sfm.classic.sift) -> exhaustive match_pairs (tests/sfm/two_view_helpers.py) -> align_scene with each refinement
option -> evaluate_poses against the GT (RRA/RTA@5, AUC@3/5/10, mAA@30, ATE, focal error). With --colmap
also runs pycolmap incremental mapping on the same images (SIFT + exhaustive matching + mapper) as the
reference. Prints a table and writes benchmarks/results/alignment_real.json.

Usage: PYTHONPATH=src python benchmarks/alignment_real.py [--sets fountain herzjesu temple] [--colmap]
       [--pair-cache DIR]  (pickled PairResults, to rerun the alignment without re-matching)
Reference (pycolmap 4.2.1 exhaustive SIFT, measured by the project): AUC@3 fountain 91.1, herzjesu 91.3,
templeRing 59.3.
"""

from __future__ import annotations

import argparse
import itertools
import json
import pickle
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pycolmap
import torch
from PIL import Image

from sfm3r.sfm.align.alignment import AlignConf, Refinement, align_scene
from sfm3r.sfm.evaluation import evaluate_poses
from sfm3r.types import Camera, ImageInfo

import os  # noqa: E402

_REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_REPO / "tests" / "sfm"))  # two_view_helpers (match_pairs)
DATA = Path(os.environ.get("SFM3R_SHARED", next(
    (p for p in (_REPO.parent / "shared", _REPO.parents[1] / "shared") if p.is_dir()), _REPO.parent / "shared"
))) / "data"
SETS = {
    "fountain": ("strecha_fountain_P11", "images_1024", "gt_1024"),
    "herzjesu": ("strecha_herzjesu_P8", "images_1024", "gt_1024"),
    "temple": ("middlebury_templeRing", "images", "gt"),
}
COLMAP_AUC3 = {"fountain": 91.1, "herzjesu": 91.3, "temple": 59.3}


class Poses:
    def __init__(self, names, R, t, cameras=None, coi=None):
        self.image_names, self.rotations, self.translations = tuple(names), np.asarray(R), np.asarray(t)
        self.cameras, self.camera_of_image = cameras, coi


def load_gt(gt_dir: Path) -> Poses:
    rec = pycolmap.Reconstruction(str(gt_dir))
    names, R, t, cams = [], [], [], []
    for im in sorted(rec.images.values(), key=lambda im: im.name):
        pose = im.cam_from_world() if callable(im.cam_from_world) else im.cam_from_world
        names.append(im.name)
        R.append(pose.rotation.matrix())
        t.append(pose.translation)
        c = rec.cameras[im.camera_id]
        fx, fy, cx, cy = c.params[:4] if len(c.params) >= 4 else (c.params[0], c.params[0], c.params[1], c.params[2])
        cams.append(Camera(c.width, c.height, float(fx), float(fy), float(cx), float(cy)))
    return Poses(names, R, t, tuple(cams))


def images_of(folder: Path, names) -> list[ImageInfo]:
    out = []
    for n in names:
        with Image.open(folder / n) as im:
            w, h = im.size
        out.append(ImageInfo(n, folder / n, "0" * 64, w, h))
    return out


def classic_pairs(images: list[ImageInfo], cache: Path | None, key: str):
    from sfm3r.sfm.classic.sift import SiftConf, extract_sift  # noqa: PLC0415 (classic branch)
    from sfm3r.sfm.classic.two_view import TwoViewConf, camera_prior  # noqa: PLC0415
    from two_view_helpers import match_pairs  # noqa: PLC0415 (tests/sfm, on sys.path)

    path = cache / f"{key}.pkl" if cache else None
    if path and path.exists():
        return pickle.loads(path.read_bytes()), {}
    t0 = time.perf_counter()
    feats = {im.name: extract_sift(np.asarray(Image.open(im.path).convert("RGB")), SiftConf(), device="cpu")
             for im in images}
    t1 = time.perf_counter()
    priors = {im.name: camera_prior(im.width, im.height) for im in images}
    pairs = list(itertools.combinations([im.name for im in images], 2))
    results = list(match_pairs(pairs, feats, priors, TwoViewConf()))
    t2 = time.perf_counter()
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps(results))
    return results, {"t_sift": t1 - t0, "t_match": t2 - t1}


def colmap_reference(folder: Path, names) -> tuple[Poses, float]:
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        db, img_dir, out = Path(tmp) / "db.db", Path(tmp) / "images", Path(tmp) / "sparse"
        img_dir.mkdir()
        for n in names:
            (img_dir / n).symlink_to(folder / n)
        out.mkdir()
        reader = pycolmap.ImageReaderOptions()
        reader.camera_model = "PINHOLE"
        pycolmap.extract_features(db, img_dir, camera_mode=pycolmap.CameraMode.SINGLE, reader_options=reader,
                                  device=pycolmap.Device.cpu)
        pycolmap.match_exhaustive(db, device=pycolmap.Device.cpu)
        recs = pycolmap.incremental_mapping(db, img_dir, out)
        rec = max(recs.values(), key=lambda r: r.num_reg_images())
        names_, R, t = [], [], []
        for im in rec.images.values():
            if not im.has_pose:
                continue
            pose = im.cam_from_world() if callable(im.cam_from_world) else im.cam_from_world
            names_.append(im.name)
            R.append(pose.rotation.matrix())
            t.append(pose.translation)
    return Poses(names_, R, t), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    ap.add_argument("--refine", nargs="+", default=[str(r) for r in Refinement])
    ap.add_argument("--colmap", action="store_true", help="also run pycolmap incremental mapping")
    ap.add_argument("--pair-cache", type=Path, default=None)
    ap.add_argument("--max-images", type=int, default=0, help="first N images only (0 = all)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for key in args.sets:
        dname, imgs, gtn = SETS[key]
        gt = load_gt(DATA / dname / gtn)
        names = gt.image_names[: args.max_images or None]
        if args.max_images:
            sel = [gt.image_names.index(n) for n in names]
            gt = Poses(names, gt.rotations[sel], gt.translations[sel], tuple(gt.cameras[k] for k in sel))
        images = images_of(DATA / dname / imgs, names)
        pairs, t_pairs = classic_pairs(images, args.pair_cache, f"{key}_{len(names)}")
        for ref in args.refine:
            t0 = time.perf_counter()
            try:
                scene = align_scene(pairs, images, AlignConf(refine=Refinement(ref)))
                m = evaluate_poses(scene, gt)
            except Exception as e:  # noqa: BLE001 (a benchmark reports failures and goes on)
                print(f"{key} {ref}: FAILED {e!r}", file=sys.stderr)
                m = {"error": repr(e)}
            rows.append({"set": key, "method": f"sfm3r/{ref}", "t_align": time.perf_counter() - t0, **t_pairs, **m})
            print(rows[-1], flush=True)
        if args.colmap:
            rec, t = colmap_reference(DATA / dname / imgs, names)
            rows.append({"set": key, "method": "pycolmap-incremental", "t_align": t, **evaluate_poses(rec, gt)})
            print(rows[-1], flush=True)
    keys = ["set", "method", "t_align", "registration_rate", "RRA@5", "RTA@5", "AUC@3", "AUC@5", "AUC@10", "mAA@30",
            "ATE", "focal_err_median"]
    print(" | ".join(f"{k:>16}" for k in keys))
    for r in rows:
        print(" | ".join(f"{r[k]:>16.4g}" if isinstance(r.get(k), float) else f"{r.get(k, '-')!s:>16}" for k in keys))
    print("COLMAP reference AUC@3 (project measurement):", COLMAP_AUC3)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "alignment_real.json").write_text(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()
