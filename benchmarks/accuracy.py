"""Accuracy and cost of sfm3r (classic backend) against pycolmap's incremental and global mappers.

For every photo set with ground truth in $SFM3R_SHARED/data, and for a sparse-view variant of it (every
2nd image; every 3rd for the 47-image temple ring), the same images go through:

- ``sfm3r``: ``reconstruct`` with the default preset, classic (SIFT) backend, complete scene graph;
- ``colmap-inc``: pycolmap SIFT extraction + exhaustive matching + ``incremental_mapping``;
- ``colmap-glob``: the same database + ``global_mapping`` (GLOMAP, merged into COLMAP 4);
- ``colmap-best``: COLMAP as a careful user configures it for these photos (one physical camera):
  extraction with ``CameraMode.SINGLE`` (one shared SIMPLE_RADIAL camera, its own database), exhaustive
  matching, ``incremental_mapping`` with ``ba_refine_principal_point = True``. The Strecha sets are the
  1024 px copies already.

COLMAP runs with its own defaults, as a user would run it (SIMPLE_RADIAL camera, focal from EXIF or
1.2·max(W, H), refined; SIFT up to 3200 px and 8192 features; camera mode AUTO). sfm3r runs with its
defaults too (SIFT up to 1600 px, 8192 features, per-image pinhole cameras). Neither gets the GT intrinsics.
Extraction + matching run once per set for both COLMAP mappers (their totals both include that cost).

Times are wall-clock inside each step (interpreter start-up and imports excluded); "CPU s" is the CPU time
of the method's processes (all threads; includes imports), less sensitive to load from other processes.
Every step runs in its own subprocess (this file with ``--worker``), so peak RSS is the step's own
(getrusage of that process); a method's peak is the max over its steps. Every model is evaluated against
the GT of exactly its input images with the same code (``sfm3r.sfm.evaluation.evaluate_poses``); COLMAP
runs that yield several models are scored on the largest one (the others count as unregistered).

    SFM3R_SHARED=/work/shared PYTHONPATH=src python benchmarks/accuracy.py [--sets fountain temple ...]
        [--variants all sparse] [--methods sfm3r colmap-inc colmap-glob] [--quick] [--keep DIR]

Prints a markdown table and writes benchmarks/results/accuracy.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SFM3R_SHARED", REPO.parent / "shared"))
if not (SHARED / "data").is_dir():
    SHARED = Path("/work/shared")
DATA = SHARED / "data"
RESULTS = REPO / "benchmarks" / "results"

# name -> (images folder, GT model folder, sparse-view step)
SETS = {
    "fountain": ("strecha_fountain_P11/images_1024", "strecha_fountain_P11/gt_1024", 2),
    "herzjesu": ("strecha_herzjesu_P8/images_1024", "strecha_herzjesu_P8/gt_1024", 2),
    "temple": ("middlebury_templeRing/images", "middlebury_templeRing/gt", 3),
    "sacre_coeur": ("sacre_coeur/images", "sacre_coeur/gt", 2),
    # full resolution (3072x2048): opt-in, several times slower for every method
    "fountain_full": ("strecha_fountain_P11/images", "strecha_fountain_P11/gt", 2),
    "herzjesu_full": ("strecha_herzjesu_P8/images", "strecha_herzjesu_P8/gt", 2),
}
DEFAULT_SETS = ["fountain", "herzjesu", "temple", "sacre_coeur"]
METHODS = ["sfm3r", "colmap-inc", "colmap-glob", "colmap-best"]
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".tif", ".tiff"}


# --------------------------------------------------------------------------------------------- workers
def _peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024.0  # Linux: kilobytes


def _worker_sfm3r(images: Path, work: Path, threads: int) -> dict:
    import torch

    from sfm3r.pipelines.config import preset_conf
    from sfm3r.pipelines.reconstruct import reconstruct

    torch.set_num_threads(threads)
    conf = preset_conf("default", scene_graph="complete", backend="classic", device="cpu", overwrite=True)
    t0 = time.perf_counter()
    result = reconstruct(images, work / "run", conf)
    wall = time.perf_counter() - t0
    t = result.timings
    stages = {
        "features": t.get("images", 0.0) + t.get("features", 0.0) + t.get("pairs", 0.0),
        "matching": t.get("matching", 0.0),
        "mapping": t.get("alignment", 0.0) + t.get("colors", 0.0),
        "export": t.get("export", 0.0),
    }
    return {"model": str(work / "run" / "sparse" / "0"), "stages": stages, "raw_timings": t, "total": wall,
            "counts": result.counts}


def _worker_colmap_features(images: Path, work: Path, threads: int, single_camera: bool = False) -> dict:
    import pycolmap

    pycolmap.set_random_seed(0)
    db = work / ("database_single.db" if single_camera else "database.db")
    if db.exists():
        db.unlink()
    ext = pycolmap.FeatureExtractionOptions()
    ext.num_threads = threads
    mode = pycolmap.CameraMode.SINGLE if single_camera else pycolmap.CameraMode.AUTO
    t0 = time.perf_counter()
    pycolmap.extract_features(db, images, camera_mode=mode, extraction_options=ext, device=pycolmap.Device.cpu)
    t1 = time.perf_counter()
    mopts = pycolmap.FeatureMatchingOptions()
    mopts.num_threads = threads
    pycolmap.match_exhaustive(db, matching_options=mopts, device=pycolmap.Device.cpu)
    t2 = time.perf_counter()
    with pycolmap.Database.open(db) as d:
        counts = {"images": d.num_images(), "keypoints": d.num_keypoints(), "verified_pairs": d.num_verified_image_pairs(),
                  "inlier_matches": d.num_inlier_matches()}
    return {"stages": {"features": t1 - t0, "matching": t2 - t1}, "total": t2 - t0, "counts": counts}


def _worker_colmap_mapper(images: Path, work: Path, threads: int, kind: str) -> dict:
    import pycolmap

    pycolmap.set_random_seed(0)
    out = work / kind
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    db = out / "database.db"
    source = work / ("database_single.db" if kind == "colmap-best" else "database.db")
    shutil.copy(source, db)  # the mappers may write to the DB; each gets its own copy
    t0 = time.perf_counter()
    if kind in ("colmap-inc", "colmap-best"):
        opts = pycolmap.IncrementalPipelineOptions()
        opts.num_threads = threads
        opts.ba_refine_principal_point = kind == "colmap-best"
        recs = pycolmap.incremental_mapping(db, images, out, options=opts)
    else:
        opts = pycolmap.GlobalPipelineOptions()
        opts.num_threads = threads
        recs = pycolmap.global_mapping(db, images, out, options=opts)
    wall = time.perf_counter() - t0
    if not recs:
        return {"model": None, "stages": {"mapping": wall}, "total": wall, "counts": {"models": 0}}
    key = max(recs, key=lambda k: recs[k].num_reg_images())
    model = out / "largest"
    model.mkdir()
    recs[key].write(model)
    return {"model": str(model), "stages": {"mapping": wall}, "total": wall,
            "counts": {"models": len(recs), "registered_per_model": [r.num_reg_images() for r in recs.values()],
                       "points": recs[key].num_points3D()}}


def worker_main(kind: str, images: Path, work: Path, threads: int) -> None:
    work.mkdir(parents=True, exist_ok=True)
    try:
        if kind == "sfm3r":
            out = _worker_sfm3r(images, work, threads)
        elif kind in ("colmap-features", "colmap-features-single"):
            out = _worker_colmap_features(images, work, threads, single_camera=kind == "colmap-features-single")
        else:
            out = _worker_colmap_mapper(images, work, threads, kind)
    except Exception as err:  # noqa: BLE001 (a failing method is a result, not a crash of the benchmark)
        out = {"error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}
    out["peak_rss_mb"] = _peak_rss_mb()
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    out["cpu_s"] = own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
    (work / f"result_{kind}.json").write_text(json.dumps(out, default=str))


# ------------------------------------------------------------------------------------------------ parent
def _run_step(kind: str, images: Path, work: Path, threads: int, timeout: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--images", str(images),
           "--work", str(work), "--threads", str(threads)]
    env = dict(os.environ, PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    log = work / f"log_{kind}.txt"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        with log.open("w") as fh:
            subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s", "process_wall": time.perf_counter() - t0}
    res_path = work / f"result_{kind}.json"
    if not res_path.exists():
        tail = log.read_text()[-400:] if log.exists() else ""
        return {"error": f"worker crashed: {tail}", "process_wall": time.perf_counter() - t0}
    out = json.loads(res_path.read_text())
    out["process_wall"] = time.perf_counter() - t0
    return out


def _subset_gt(gt_dir: Path, names: list[str]):
    import numpy as np

    from sfm3r.io.colmap import read_colmap_model

    gt = read_colmap_model(gt_dir)
    pos = {n: k for k, n in enumerate(gt.image_names)}
    missing = [n for n in names if n not in pos]
    if missing:
        raise SystemExit(f"GT {gt_dir} lacks images {missing[:3]}...")
    sel = np.array([pos[n] for n in names])
    return SimpleNamespace(image_names=tuple(names), rotations=gt.rotations[sel], translations=gt.translations[sel],
                           cameras=gt.cameras, camera_of_image=gt.camera_of_image[sel])


def _evaluate(model: str | None, gt) -> dict:
    import numpy as np

    from sfm3r.io.colmap import read_colmap_model
    from sfm3r.sfm.evaluation import evaluate_poses

    import pycolmap

    if model is not None and Path(model).is_dir():
        est = read_colmap_model(Path(model))
        rec = pycolmap.Reconstruction(str(model))
        quality = {"mean_track_length": rec.compute_mean_track_length(),
                   "mean_reproj_error_px": rec.compute_mean_reprojection_error(), "points": rec.num_points3D(),
                   "camera_models": sorted({c.model.name for c in rec.cameras.values()})}
    else:  # nothing registered
        est = SimpleNamespace(image_names=(), rotations=np.zeros((0, 3, 3)), translations=np.zeros((0, 3)),
                              cameras=None, camera_of_image=None)
        quality = {}
    return evaluate_poses(est, gt) | quality


def _images_of(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)


def run_case(set_name: str, variant: str, methods: list[str], root: Path, threads: int, timeout: float,
             max_images: int = 0) -> list[dict]:
    img_rel, gt_rel, step = SETS[set_name]
    src = DATA / img_rel
    names = _images_of(src)
    if variant == "sparse":
        names = names[::step]
    if max_images:
        names = names[:max_images]
    case = root / f"{set_name}_{variant}"
    images = case / "images"
    shutil.rmtree(case, ignore_errors=True)
    images.mkdir(parents=True)
    for n in names:
        (images / n).symlink_to(src / n)
    gt = _subset_gt(DATA / gt_rel, names)
    rows = []
    extracted: dict[str, dict] = {}
    for method in methods:
        if method.startswith("colmap"):
            kind = "colmap-features-single" if method == "colmap-best" else "colmap-features"
            if kind not in extracted:
                extracted[kind] = _run_step(kind, images, case, threads, timeout)
            features = extracted[kind]
        step_out = _run_step(method, images, case, threads, timeout)
        if method.startswith("colmap"):
            stages = {**features.get("stages", {}), **step_out.get("stages", {})}
            total = features.get("total", float("nan")) + step_out.get("total", float("nan"))
            peak = max(features.get("peak_rss_mb", 0.0), step_out.get("peak_rss_mb", 0.0))
            cpu = features.get("cpu_s", float("nan")) + step_out.get("cpu_s", float("nan"))
            error = features.get("error") or step_out.get("error")
            counts = {"features": features.get("counts"), "mapper": step_out.get("counts")}
        else:
            stages, total = step_out.get("stages", {}), step_out.get("total", float("nan"))
            peak, error, counts = step_out.get("peak_rss_mb", 0.0), step_out.get("error"), step_out.get("counts")
            cpu = step_out.get("cpu_s", float("nan"))
        metrics = _evaluate(step_out.get("model") if not error else None, gt)
        row = {"set": set_name, "variant": variant, "images": len(names), "method": method, "error": error,
               "time_total_s": total, **{f"time_{k}_s": v for k, v in stages.items()}, "cpu_s": cpu, "peak_rss_mb": peak,
               **metrics, "counts": counts}
        rows.append(row)
        print(f"  {set_name}/{variant} {method}: reg {metrics['registration_rate']:.0f}% AUC@3 {metrics['AUC@3']:.1f} "
              f"total {total:.1f} s peak {peak:.0f} MB {('ERROR ' + error) if error else ''}", flush=True)
    return rows


def _fmt(v, spec: str) -> str:
    if v is None:
        return "-"
    try:
        return format(v, spec)
    except (TypeError, ValueError):
        return str(v)


def markdown_table(rows: list[dict]) -> str:
    head = ("| set | variant | N | method | reg % | RRA@5 | RTA@5 | AUC@3 | AUC@5 | AUC@10 | ATE | focal err | "
            "track len | reproj px | features s | matching s | mapping s | total s | CPU s | peak RSS MB |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['set']} | {r['variant']} | {r['images']} | {r['method']}{' (failed)' if r.get('error') else ''} | "
            f"{_fmt(r.get('registration_rate'), '.0f')} | {_fmt(r.get('RRA@5'), '.1f')} | {_fmt(r.get('RTA@5'), '.1f')} | "
            f"{_fmt(r.get('AUC@3'), '.1f')} | {_fmt(r.get('AUC@5'), '.1f')} | {_fmt(r.get('AUC@10'), '.1f')} | "
            f"{_fmt(r.get('ATE'), '.4f')} | {_fmt(r.get('focal_err_median'), '.4f')} | "
            f"{_fmt(r.get('mean_track_length'), '.2f')} | {_fmt(r.get('mean_reproj_error_px'), '.2f')} | "
            f"{_fmt(r.get('time_features_s'), '.1f')} | {_fmt(r.get('time_matching_s'), '.1f')} | "
            f"{_fmt(r.get('time_mapping_s'), '.1f')} | {_fmt(r.get('time_total_s'), '.1f')} | {_fmt(r.get('cpu_s'), '.0f')} | "
            f"{_fmt(r.get('peak_rss_mb'), '.0f')} |"
        )
    return "\n".join(lines)


def machine() -> dict:
    load = os.getloadavg()
    return {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(), "loadavg_1_5_15": [round(x, 2) for x in load]}


def _write(path: Path, info: dict, rows: list[dict], t0: float) -> None:
    info = dict(info, loadavg_end=[round(x, 2) for x in os.getloadavg()], benchmark_wall_s=time.perf_counter() - t0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"machine": info, "command": " ".join(sys.argv), "rows": rows}, indent=1, default=str))


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", nargs="+", default=None, choices=list(SETS))
    ap.add_argument("--variants", nargs="+", default=["all", "sparse"], choices=["all", "sparse"])
    ap.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    ap.add_argument("--quick", action="store_true",
                    help="fountain's sparse variant (6 images) and 8 images of the temple ring's sparse variant only")
    ap.add_argument("--max-images", type=int, default=0, help="first N images of each case only (0 = all)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per subprocess")
    ap.add_argument("--keep", type=Path, default=None, help="keep the work folders (models, logs) here")
    ap.add_argument("--output", type=Path, default=RESULTS / "accuracy.json")
    # internal: one measured step in its own process
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--images", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker_main(args.worker, args.images, args.work, args.threads)
        return []

    if args.quick:  # (set, variant, max images): about 3-5 minutes on an idle 2-core machine
        cases = [("fountain", "sparse", 0), ("temple", "sparse", 8)]
    else:  # smaller cases first, so that an interrupted run still has them
        cases = [(s, v, args.max_images) for v in reversed(args.variants) for s in (args.sets or DEFAULT_SETS)]
        cases.sort(key=lambda c: (c[1] != "sparse", len(_images_of(DATA / SETS[c[0]][0])) // SETS[c[0]][2] ** (c[1] == "sparse")))
    info = machine()
    print(f"accuracy benchmark: {len(cases)} case(s), methods {args.methods}, threads {args.threads}, "
          f"load {info['loadavg_1_5_15']}", flush=True)
    t0 = time.perf_counter()
    root = args.keep or Path(tempfile.mkdtemp(prefix="sfm3r_accuracy_"))
    rows = []
    try:
        for set_name, variant, max_images in cases:
            rows += run_case(set_name, variant, args.methods, root, args.threads, args.timeout, max_images)
            _write(args.output, info, rows, t0)  # after every case: an interrupted run keeps what it measured
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    print(markdown_table(rows))
    print(f"wrote {args.output}")
    return rows


if __name__ == "__main__":
    main()
