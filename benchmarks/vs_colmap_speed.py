"""Wall time per stage of sfm3r (classic, default settings) against COLMAP-best, interleaved and repeated.

Both methods see the same images (the Strecha 1024 px copies, the 640 px temple ring); each run is a fresh
subprocess of this file (``--worker``) writing into a fresh output folder, so nothing is reused between
runs. The order alternates per repeat (sfm3r first, then COLMAP first, ...) so that a load change on this
shared machine hits both alike. The number to move is the **ratio sfm3r / COLMAP**, the median over the
repeats, per stage and in total.

- ``sfm3r``: ``reconstruct`` with the ``default`` preset, classic backend, CPU, default scene graph
  (complete up to 40 images). Stages: features (image loading + SIFT + pairs), self-calibration, matching
  (match + verify + pairwise 3D), alignment (+ colours), export, total.
- ``colmap``: COLMAP-best: pycolmap SIFT extraction with the same max image size and feature count as
  sfm3r's SiftConf, one shared camera (``CameraMode.SINGLE``), exhaustive matching, incremental mapping with
  ``ba_refine_principal_point=True``, then COLMAP's image undistorter (``pycolmap.undistort_images``, as
  graphdeco's ``convert.py`` runs it: undistorted images and a PINHOLE model, the folder a 3DGS trainer reads).
  Stages: features, matching, alignment (= mapping), export (writing the model + undistortion), total.

"model" is the time to the sparse model (total minus export), "total" the time to a 3DGS-ready folder
(sfm3r's export writes sparse/0, points.ply, the cropped/undistorted images/, transforms.json and the
preview). Both ratios are reported: the first compares the SfM work alone, the second the same deliverable.

- ``colmap-seq`` (opt-in, an extra reference, **not** COLMAP-best): the same, with sequential matching
  (``match_sequential``, COLMAP's defaults: overlap 10, quadratic overlap, no loop detection) instead of
  exhaustive matching.

Sequences (``--sequence 25 50 100``, sets ``seq25`` ...): the first N frames of a rendered orbit around a
textured room scene with GT poses (``benchmarks/synthetic_sequence.py``: 640 × 480, 3.6° per frame, the
100th frame closes the loop), rendered once into ``--seq-data`` (default: a folder in the system temp
directory, reused by later runs). They measure how the ratio grows with N at a constant per-frame overlap:
sfm3r's default scene graph is complete up to 40 images and ``retrieval-20-10`` above (measured: 421 pairs
at N = 50, 706 at N = 100), COLMAP-best matches all N(N−1)/2 pairs. The table gives each run's graph and
pair count, the scaling summary the ratio per N.

The stage seconds and "total" are wall time inside the method's own calls (sfm3r: ``reconstruct``, which
imports torch when the alignment needs it, as in a user's run; COLMAP: pycolmap's calls); "process s" is the whole worker process as the parent saw it
(interpreter start, imports, the method, and the same pose scoring for both). CPU seconds are ``getrusage``
of the worker (self + children, all threads, imports included); peak RSS is the worker's. Poses are scored by ``sfm3r.sfm.evaluation.evaluate_poses`` against the GT (AUC@3 etc).

    SFM3R_SHARED=/work/shared PYTHONPATH=src python benchmarks/vs_colmap_speed.py [--sets fountain herzjesu temple]
        [--sequence 25 50 100] [--repeats 3] [--threads 2] [--methods sfm3r colmap [colmap-seq]] [--keep DIR]
        [--seq-data DIR]

Prints a table and writes benchmarks/results/vs_colmap_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accuracy  # (after the sys.path line) the sets, GT subsetting and evaluation are shared)
import synthetic_sequence

RESULTS = accuracy.RESULTS
SETS = {name: accuracy.SETS[name] for name in ("fountain", "herzjesu", "temple")}
_TORCH_FIRST = "VS_COLMAP_TORCH_FIRST"  # set by --torch-first, read by the sfm3r worker
STAGES = ("features", "self_calibration", "matching", "alignment", "model", "export", "total")
METHODS = ("sfm3r", "colmap", "colmap-seq")
SEQ_PREFIX = "seq"


# --------------------------------------------------------------------------------------------- workers
def _worker_sfm3r(images: Path, work: Path, threads: int) -> dict:
    import logging

    # sfm3r's own log (pairs, matches, self-calibration, alignment steps) goes to the run's log_sfm3r.txt
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    logging.getLogger("sfm3r").setLevel(logging.INFO)

    from sfm3r.pipelines.config import preset_conf
    from sfm3r.pipelines.reconstruct import reconstruct

    if threads != len(os.sched_getaffinity(0)) or os.environ.get(_TORCH_FIRST):  # torch's default: every core
        import torch  # before the timer: its import (~1 s) is then not in sfm3r's times

        torch.set_num_threads(threads)
    conf = preset_conf("default", backend="classic", device="cpu", processes=threads)  # cores: torch + workers
    steps = _StepClock()
    t0 = time.perf_counter()
    result = reconstruct(images, work / "run", conf, progress=steps)
    wall = time.perf_counter() - t0
    t = result.timings
    pairs = result.counts.get("pairs", {})
    stages, retrieval = sfm3r_stages(t, str(pairs.get("graph", "")), wall)
    sub = {k: v for k, v in steps.seconds().items() if "/" in k}  # top-level stages: raw_timings
    sub = {"sift": t.get("features", 0.0), "retrieval": retrieval} | sub
    graph = {"graph": pairs.get("graph"), "pairs": pairs.get("pairs"),
             "verified": result.counts.get("matching", {}).get("verified")}  # fmt: skip
    return {"model": str(work / "run" / "sparse" / "0"), "stages": stages, "raw_timings": t, "counts": result.counts,
            "graph": graph, "steps": sub}  # fmt: skip


def sfm3r_stages(t: dict[str, float], graph: str, wall: float) -> tuple[dict[str, float], float]:
    """sfm3r's run.json timings -> (the table's stages, the retrieval's seconds).

    A retrieval graph extracts SIFT inside the pairs stage (the similarity needs it): ``t["pairs"]`` then holds
    ``t["features"]``, and what is left of it is the retrieval (codebook + ASMK similarity).
    """
    nested = graph.startswith("retrieval")
    retrieval = max(t.get("pairs", 0.0) - t.get("features", 0.0), 0.0) if nested else 0.0
    features = t.get("pairs", 0.0) if nested else t.get("features", 0.0) + t.get("pairs", 0.0)
    stages = {
        "features": t.get("images", 0.0) + features,
        "self_calibration": t.get("self_calibration", 0.0),
        "matching": t.get("putative_matching", 0.0) + t.get("matching", 0.0),
        "alignment": t.get("alignment", 0.0) + t.get("colors", 0.0),
        "model": wall - t.get("export", 0.0),
        "export": t.get("export", 0.0),
        "total": wall,
    }
    return stages, retrieval


class _StepClock:
    """A progress callback that times the pipeline's sub-steps (``alignment/coarse`` …): the seconds from the first
    report of a step to the first report of the next, summed per step name (the part before ':'). A step that
    reports nothing (the retrieval) counts towards the one before it: only the ``stage/step`` names are kept."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, str]] = []

    def __call__(self, stage: str, done: int, total: int) -> None:
        key = stage.partition(":")[0].strip()
        if not self.marks or self.marks[-1][1] != key:
            self.marks.append((time.perf_counter(), key))

    def seconds(self) -> dict[str, float]:
        out: dict[str, float] = {}
        ends = [t for t, _ in self.marks[1:]] + [time.perf_counter()]
        for (t, key), end in zip(self.marks, ends, strict=True):
            out[key] = round(out.get(key, 0.0) + end - t, 3)
        return out


def _colmap_pairs(db: Path) -> dict:
    """Pairs COLMAP matched (rows of ``matches``) and verified (two-view geometries with inliers)."""
    import sqlite3

    with sqlite3.connect(db) as con:
        matched = con.execute("SELECT COUNT(*) FROM matches").fetchone()[0]
        verified = con.execute("SELECT COUNT(*) FROM two_view_geometries WHERE rows > 0").fetchone()[0]
    return {"pairs": int(matched), "verified": int(verified)}


def _worker_colmap(images: Path, work: Path, threads: int, sequential: bool = False) -> dict:
    import pycolmap

    from sfm3r.sfm.classic.sift import SiftConf

    sift = SiftConf()
    pycolmap.set_random_seed(0)
    db = work / "database.db"
    t0 = time.perf_counter()
    ext = pycolmap.FeatureExtractionOptions()
    ext.num_threads = threads
    ext.max_image_size = sift.max_image_size
    ext.sift.max_num_features = sift.max_num_features
    pycolmap.extract_features(
        db, images, camera_mode=pycolmap.CameraMode.SINGLE, extraction_options=ext, device=pycolmap.Device.cpu
    )
    t1 = time.perf_counter()
    mopts = pycolmap.FeatureMatchingOptions()
    mopts.num_threads = threads
    if sequential:
        pycolmap.match_sequential(db, matching_options=mopts, device=pycolmap.Device.cpu)
    else:
        pycolmap.match_exhaustive(db, matching_options=mopts, device=pycolmap.Device.cpu)
    t2 = time.perf_counter()
    out = work / "mapping"
    out.mkdir()
    opts = pycolmap.IncrementalPipelineOptions()
    opts.num_threads = threads
    opts.ba_refine_principal_point = True
    recs = pycolmap.incremental_mapping(db, images, out, options=opts)
    t3 = time.perf_counter()
    model = None
    if recs:
        key = max(recs, key=lambda k: recs[k].num_reg_images())
        model = out / "largest"
        model.mkdir()
        recs[key].write(model)
        # the 3DGS folder, as graphdeco's convert.py makes it (image_undistorter --output_type COLMAP)
        pycolmap.undistort_images(work / "undistorted", model, images, num_threads=threads)
    t4 = time.perf_counter()
    stages = {"features": t1 - t0, "self_calibration": 0.0, "matching": t2 - t1, "alignment": t3 - t2,
              "model": t3 - t0, "export": t4 - t3, "total": t4 - t0}  # fmt: skip
    graph = {"graph": "sequential" if sequential else "exhaustive"} | _colmap_pairs(db)
    return {"model": str(model) if model else None, "stages": stages, "counts": {"models": len(recs)}, "graph": graph}


def worker_main(kind: str, images: Path, work: Path, threads: int) -> None:
    work.mkdir(parents=True, exist_ok=True)
    try:
        if kind == "sfm3r":
            out = _worker_sfm3r(images, work, threads)
        else:
            out = _worker_colmap(images, work, threads, sequential=kind == "colmap-seq")
    except Exception as err:  # noqa: BLE001 (a failing method is a result, not a crash of the benchmark)
        out = {"error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}
    for thread in threading.enumerate():  # sfm3r's worker processes count in RUSAGE_CHILDREN once reaped
        if thread.name == "sfm3r-reap-workers":
            thread.join(timeout=60)
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    out["cpu_s"] = own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
    out["peak_rss_mb"] = max(own.ru_maxrss, kids.ru_maxrss) / 1024.0
    (work / f"result_{kind}.json").write_text(json.dumps(out, default=str))


# ------------------------------------------------------------------------------------------------ parent
def _run(kind: str, images: Path, work: Path, threads: int, timeout: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--images", str(images),
           "--work", str(work), "--threads", str(threads)]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(accuracy.REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    work.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    started = time.perf_counter()
    try:
        with (work / f"log_{kind}.txt").open("w") as fh:
            subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s", "load": load}
    process_s = time.perf_counter() - started  # the whole worker process: interpreter, imports, scoring too
    path = work / f"result_{kind}.json"
    if not path.exists():
        return {"error": "worker crashed: " + (work / f"log_{kind}.txt").read_text()[-400:], "load": load}
    return json.loads(path.read_text()) | {"load": load, "process_s": process_s}


def sequence_length(name: str) -> int | None:
    """N of a sequence set name ``seqN``, None for a real set."""
    rest = name[len(SEQ_PREFIX):]
    return int(rest) if name.startswith(SEQ_PREFIX) and rest.isdigit() else None


def default_seq_data() -> Path:
    """Where the rendered orbit is kept between runs: the system temp folder, keyed by the render settings."""
    return Path(tempfile.gettempdir()) / f"sfm3r_orbit_{synthetic_sequence.SequenceConf().key()}"


def set_source(name: str, seq_data: Path) -> tuple[Path, Path, list[str]]:
    """(images folder, GT model folder, image names) of a real set or of sequence ``seqN``."""
    n = sequence_length(name)
    if n is None:
        img_rel, gt_rel, _ = SETS[name]
        src = accuracy.DATA / img_rel
        return src, accuracy.DATA / gt_rel, accuracy._images_of(src)
    t0 = time.perf_counter()
    synthetic_sequence.render_sequence(seq_data, n, log=lambda msg: None)
    if time.perf_counter() - t0 > 1:
        print(f"  rendered the orbit's first {n} frames into {seq_data} in {time.perf_counter() - t0:.0f} s", flush=True)
    return seq_data / "images", seq_data / "gt", [synthetic_sequence.frame_name(i) for i in range(n)]


def run_set(
    name: str, methods: list[str], repeats: int, root: Path, threads: int, timeout: float, partial: Path | None = None,
    seq_data: Path | None = None,
) -> list[dict]:  # fmt: skip
    src, gt_dir, names = set_source(name, seq_data or default_seq_data())
    images = root / name / "images"
    images.mkdir(parents=True, exist_ok=True)
    for n in names:
        if not (images / n).exists():
            (images / n).symlink_to(src / n)
    gt = accuracy._subset_gt(gt_dir, names)
    rows = []
    for rep in range(repeats):
        order = methods if rep % 2 == 0 else methods[::-1]
        for method in order:
            work = root / name / f"{method}_{rep}"
            shutil.rmtree(work, ignore_errors=True)
            out = _run(method, images, work, threads, timeout)
            metrics = accuracy._evaluate(out.get("model") if not out.get("error") else None, gt)
            row = {"set": name, "images": len(names), "method": method, "repeat": rep, **out,
                   "AUC@3": metrics["AUC@3"], "registration_rate": metrics["registration_rate"], "metrics": metrics}  # fmt: skip
            rows.append(row)
            if partial is not None:  # every finished run on disk at once: a killed benchmark keeps them
                with partial.open("a") as fh:
                    fh.write(json.dumps(row, default=str) + "\n")
            st = out.get("stages", {})
            g = out.get("graph", {})
            print(f"  {name} (N={len(names)}) rep {rep} {method}: total {st.get('total', float('nan')):.1f} s ("
                  + ", ".join(f"{k} {st.get(k, 0.0):.1f}" for k in STAGES[:-1])
                  + f") CPU {out.get('cpu_s', float('nan')):.0f} s, RSS {out.get('peak_rss_mb', 0):.0f} MB, "
                  f"AUC@3 {metrics['AUC@3']:.1f}, registered {metrics['registration_rate']:.0f} %, "
                  f"graph {g.get('graph')} ({g.get('pairs')} pairs, {g.get('verified')} verified), "
                  f"load {out['load']:.1f} {out.get('error') or ''}", flush=True)
            if out.get("steps"):  # where sfm3r's time went, step by step
                print("    steps: " + ", ".join(f"{k} {v:.1f}" for k, v in out["steps"].items() if v >= 0.5), flush=True)
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Per set and method: the median of each stage over the repeats, and the ratio sfm3r / COLMAP."""
    out = []
    for name in dict.fromkeys(r["set"] for r in rows):
        med: dict[str, dict] = {}
        for method in dict.fromkeys(r["method"] for r in rows if r["set"] == name):
            runs = [r for r in rows if r["set"] == name and r["method"] == method and not r.get("error")]
            if not runs:
                continue
            med[method] = {k: statistics.median(r["stages"].get(k, 0.0) for r in runs) for k in STAGES}
            med[method] |= {
                "cpu_s": statistics.median(r["cpu_s"] for r in runs),
                "process_s": statistics.median(r.get("process_s", float("nan")) for r in runs),
                "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
                "AUC@3": statistics.median(r["AUC@3"] for r in runs),
                "registration_rate": statistics.median(r["registration_rate"] for r in runs),
                "graph": runs[0].get("graph", {}),
                "repeats": len(runs),
            }
        images = next(r["images"] for r in rows if r["set"] == name)
        entry = {"set": name, "images": images, "median": med}
        if "sfm3r" in med and "colmap" in med:
            # ratio of medians per stage; the total ratio is also given as the median of per-repeat ratios
            entry["ratio"] = {
                k: med["sfm3r"][k] / med["colmap"][k] if med["colmap"][k] > 0 else None
                for k in (*STAGES, "cpu_s", "process_s")
            }
            for stage in ("model", "total"):
                pairs = [
                    (a["stages"][stage], b["stages"][stage])
                    for a in rows for b in rows
                    if a["set"] == b["set"] == name and a["repeat"] == b["repeat"]
                    and a["method"] == "sfm3r" and b["method"] == "colmap" and not a.get("error") and not b.get("error")
                ]  # fmt: skip
                entry["ratio"][f"{stage}_per_repeat_median"] = statistics.median(a / b for a, b in pairs) if pairs else None
        out.append(entry)
    return out


def _graph_cell(g: dict) -> str:
    return f"{g.get('graph')}: {g.get('pairs')} pairs ({g.get('verified')} verified)" if g else ""


def table(summary: list[dict]) -> str:
    head = ("| set | N | method | " + " | ".join(f"{k} s" for k in STAGES)
            + " | process s | CPU s | peak RSS MB | AUC@3 | registered % | scene graph | repeats |")  # fmt: skip
    lines = [head, "|" + "---|" * (len(STAGES) + 10)]
    for entry in summary:
        n = entry.get("images", "")
        for method, m in entry["median"].items():
            lines.append(f"| {entry['set']} | {n} | {method} | " + " | ".join(f"{m[k]:.1f}" for k in STAGES)
                         + f" | {m['process_s']:.1f} | {m['cpu_s']:.0f} | {m['peak_rss_mb']:.0f} | {m['AUC@3']:.1f} | "
                         f"{m['registration_rate']:.0f} | {_graph_cell(m.get('graph', {}))} | {m['repeats']} |")  # fmt: skip
        if "ratio" in entry:
            r = entry["ratio"]
            lines.append(f"| {entry['set']} | {n} | **ratio** | " + " | ".join(
                "–" if r[k] is None else f"{r[k]:.2f}" for k in STAGES
            ) + f" | {r['process_s']:.2f} | {r['cpu_s']:.2f} | | | | | per-repeat: model {r['model_per_repeat_median']:.2f}, "
                f"total {r['total_per_repeat_median']:.2f} |")  # fmt: skip
    return "\n".join(lines)


def scaling(summary: list[dict]) -> dict:
    """Ratio sfm3r / COLMAP-best (wall and CPU) per sequence length N, and the largest N's over the smallest's."""
    per_n = {
        e["images"]: {"wall": e["ratio"]["total"], "cpu": e["ratio"]["cpu_s"], "model": e["ratio"]["model"],
                      "wall_per_repeat": e["ratio"]["total_per_repeat_median"]}
        for e in summary if sequence_length(e["set"]) is not None and "ratio" in e
    }  # fmt: skip
    out: dict = {"ratio_by_n": dict(sorted(per_n.items()))}
    if len(per_n) >= 2:
        lo, hi = min(per_n), max(per_n)
        out["growth_wall"] = per_n[hi]["wall"] / per_n[lo]["wall"]
        out["growth_cpu"] = per_n[hi]["cpu"] / per_n[lo]["cpu"]
        out["range"] = [lo, hi]
    return out


def scaling_text(sc: dict) -> str:
    if not sc["ratio_by_n"]:
        return ""
    lines = ["ratio sfm3r / COLMAP-best by sequence length (does not grow with N = the issue's target):"]
    lines += [f"  N = {n:3d}: wall {r['wall']:.2f} (to the model {r['model']:.2f}), CPU {r['cpu']:.2f}"
              for n, r in sc["ratio_by_n"].items()]
    if "range" in sc:
        lo, hi = sc["range"]
        lines.append(f"  N {hi} / N {lo}: wall ratio x{sc['growth_wall']:.2f}, CPU ratio x{sc['growth_cpu']:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", nargs="+", choices=list(SETS),
                    help="real sets (default: all three, unless --sequence is given)")  # fmt: skip
    ap.add_argument("--sequence", nargs="+", type=int, default=[], metavar="N",
                    help=f"synthetic orbit sequences of N frames (N <= {synthetic_sequence.LOOP_FRAMES})")  # fmt: skip
    ap.add_argument("--seq-data", type=Path, help="where the rendered orbit is kept (default: a temp folder, reused)")
    ap.add_argument("--methods", nargs="+", default=["sfm3r", "colmap"], choices=list(METHODS))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--torch-first", action="store_true",
                    help="import torch in sfm3r's worker before its timer (the method of measurements before "
                         "2026-12-07 01:50 UTC); by default sfm3r's times include the import, as a user's run does")  # fmt: skip
    ap.add_argument("--keep", type=Path, help="keep the run folders here (default: a temporary folder)")
    ap.add_argument("--output", type=Path, default=RESULTS / "vs_colmap_speed.json")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--images", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.torch_first:
        os.environ[_TORCH_FIRST] = "1"  # the workers inherit it
    if args.worker:
        worker_main(args.worker, args.images, args.work, args.threads)
        return {}
    bad = [n for n in args.sequence if not 2 <= n <= synthetic_sequence.LOOP_FRAMES]
    if bad:
        ap.error(f"--sequence: N must be in 2..{synthetic_sequence.LOOP_FRAMES}, got {bad}")
    sets = (args.sets or ([] if args.sequence else list(SETS))) + [f"{SEQ_PREFIX}{n}" for n in args.sequence]
    root = args.keep or Path(tempfile.mkdtemp(prefix="vs_colmap_"))
    t0 = time.time()
    rows = []
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.with_suffix(".partial.jsonl").unlink(missing_ok=True)
    try:
        for name in sets:
            rows += run_set(name, args.methods, args.repeats, root, args.threads, args.timeout,
                            partial=args.output.with_suffix(".partial.jsonl"), seq_data=args.seq_data)  # fmt: skip
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    summary = summarise(rows)
    sc = scaling(summary)
    print(table(summary))
    print(scaling_text(sc))
    info = {"machine": accuracy.machine(), "argv": sys.argv[1:], "started": t0, "wall_s": time.time() - t0,
            "summary": summary, "scaling": sc, "rows": rows}  # fmt: skip
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(info, indent=1, default=str))
    print(f"wrote {args.output}")
    return info


if __name__ == "__main__":
    main()
