"""`reconstruct`: images -> pairs -> pairwise backend -> alignment -> COLMAP model + 3DGS folder.

Each stage reads and writes the run's cache (OUT/cache) and skips finished units, so rerunning the same
command after a crash or a kill resumes where it stopped. `stop_after` runs the pipeline only up to a
stage (the per-stage CLI commands); the earlier stages then resume from the cache.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib.metadata
import json
import logging
import platform
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import sfm3r
from sfm3r.errors import ImageReadError, InputError, ReconstructionError
from sfm3r.io.colmap import check_scene, check_text_names, model_file_names, write_colmap_model
from sfm3r.io.export import export_gaussian_splatting_scene, flat_name
from sfm3r.io.images import DecodedImages, load_image_infos
from sfm3r.io.pairs_file import write_pairs_file
from sfm3r.io.ply import write_ply
from sfm3r.io.preview import write_preview
from sfm3r.pipelines.alignment_stage import align_cached
from sfm3r.pipelines.classic import (
    extract_features,
    features_to_extract,
    match_classic,
    match_putative,
    self_calibrate_focals,
    stored_putative_counts,
)
from sfm3r.pipelines.colors import color_points
from sfm3r.pipelines.config import Backend, CameraModel, ReconstructConf, Workers, conf_to_dict
from sfm3r.pipelines.export import check_downscales_fit, remove_stale_export_files
from sfm3r.pipelines.scene_stats import describe_scene
from sfm3r.pipelines.torch_build import installed_torch_build
from sfm3r.pipelines.known_cameras import load_known_cameras
from sfm3r.pipelines.pairs import select_pairs, sift_similarity
from sfm3r.pipelines.process_pool import WorkerPool
from sfm3r.pipelines.run_folder import RunFolder, check_separate_from_inputs, prepare_run_folder, write_json_atomic
from sfm3r.pipelines.validation import validate_options
from sfm3r.sfm.align.alignment import alignment_steps, load_alignment_steps, needs_torch
from sfm3r.sfm.align.edge_verification import component_links
from sfm3r.sfm.classic.self_calibration import load_solvers
from sfm3r.types import ImageInfo, PairResult, Scene

logger = logging.getLogger(__name__)

# Decoded photos the point colours keep for the export's cropped or undistorted images (one decode, not two):
# 8 herzjesu photos at 3072x2048 hold 151 MB and took 1.0 s to decode; beyond the budget, decoded again.
_DECODED_IMAGES_BUDGET = 512 * 2**20  # bytes

# (stage, done, total): total 0 = the stage started, its size unknown; done == total > 0 = finished.
# "stage/detail" names a step inside a stage (the display shows it beside the stage's row).
Progress = Callable[[str, int, int], None]


class Stage(enum.StrEnum):
    PAIRS = "pairs"  # scene graph -> OUT/pairs.txt
    MATCH = "match"  # pairwise results -> OUT/cache
    ALIGN = "align"  # alignment -> OUT/sparse/0, OUT/points.ply, OUT/preview.png
    EXPORT = "export"  # + OUT/images/ (the 3DGS folder): the whole pipeline


@dataclass(eq=False)
class ReconstructResult:
    run: RunFolder
    images: list[ImageInfo]
    backend: Backend
    scene: Scene | None = None  # None when stopped before the alignment
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    counts: dict[str, Any] = field(default_factory=dict)


class _StageProgress:
    """The run's Progress callback that also announces each stage's start and end (for the stage list)."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.totals: dict[str, int] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        self.totals[stage.partition("/")[0]] = total
        if self.progress is not None:
            self.progress(stage, done, total)

    def start(self, stage: str) -> None:
        self(stage, 0, 0)

    def finish(self, stage: str) -> None:
        total = self.totals.get(stage) or 1
        self(stage, total, total)


@contextmanager
def _timed(timings: dict[str, float], stage: str, progress: _StageProgress | None = None) -> Iterator[None]:
    start = time.perf_counter()
    if progress is not None:
        progress.start(stage)
    try:
        yield
    finally:
        timings[stage] = round(time.perf_counter() - start, 3)
        if progress is not None:
            progress.finish(stage)


def load_images(images_dir: Path, conf: ReconstructConf) -> list[ImageInfo]:
    """The input images, identical duplicates removed (kept: the first name), at least two.

    Names that could not be exported (a '..' part once backslashes count as separators, bytes that are
    not UTF-8) are refused here, before any work, rather than at the export.
    """
    images_dir = Path(images_dir)
    try:
        infos = load_image_infos(images_dir, recursive=conf.recursive, skip_bad_images=conf.skip_bad_images)
    except ImageReadError as error:
        raise ImageReadError(f"{error}; or rerun with --skip-bad-images to go on without such files") from None
    for info in infos:
        try:
            flat_name(info.name)
        except InputError as error:
            raise InputError(f"{error}: rename the file {info.path}") from None
        try:
            info.name.encode("utf-8")  # COLMAP models, logs and run.json hold names as UTF-8
        except UnicodeEncodeError:
            raise InputError(
                f"image file name {info.name!r} in {str(images_dir)!r} is not valid UTF-8 (written by a system "
                "with another encoding); rename the file, e.g. with `convmv -f latin1 -t utf8 --notest`"
            ) from None
    if conf.write_text:
        check_text_names([info.name for info in infos])
    unique: dict[str, ImageInfo] = {}
    for info in infos:
        if info.sha256 in unique:
            logger.warning("skipping %s: identical to %s (same file content)", info.name, unique[info.sha256].name)
            continue
        unique[info.sha256] = info
    images = list(unique.values())
    if len(images) < 2:
        raise InputError(
            f"{images_dir} holds {len(images)} usable image(s); Structure-from-Motion needs at least two "
            "overlapping photos"
        )
    logger.info("images: %d in %s", len(images), images_dir)
    return images


def _check_finite(scene: Scene) -> None:
    """Refuse a model with NaN/inf poses, intrinsics or points before anything is written or coloured."""
    try:
        check_scene(scene)
    except ReconstructionError as error:
        raise ReconstructionError(
            f"the alignment gave an unusable model ({error}); nothing was written. Add photos taken from "
            "other positions with more overlap, or rerun with --verbose and report the log"
        ) from None


_MIN_BASELINE_TO_DEPTH = 0.05  # camera spread / point depth below this: a panorama (measured: 0.011 for a
# synthetic pure rotation, 0.25-0.30 for 3-4 views of fountain-P11)


def _warn_if_no_baseline(scene: Scene) -> None:
    """Warn when the cameras barely move relative to the scene depth (pure rotation, a tripod panorama):
    the poses are usable, the points' depths are not."""
    if scene.num_points == 0:
        return
    centres = scene.camera_centers()
    depth = float(np.median(np.linalg.norm(scene.points_xyz - centres.mean(0), axis=1)))
    spread = float(np.linalg.norm(centres - centres.mean(0), axis=1).max())
    if depth > 0 and spread < _MIN_BASELINE_TO_DEPTH * depth:
        logger.warning(
            "the cameras barely move (spread %.3g of the scene depth): a panorama or pure rotation? The "
            "rotations are usable, the points' depths are not; take photos from several positions", spread / depth
        )


def _write_pairs_txt(path: Path, pairs) -> None:
    """OUT/pairs.txt for the user (nothing reads it back). Names with spaces, common on phones ("IMG
    0001.jpg", "photo (1).jpg"), cannot be written in that format: then warn and go on without it."""
    try:
        write_pairs_file(path, pairs)
    except InputError as error:
        path.unlink(missing_ok=True)  # never leave the pairs of an earlier run
        logger.warning("%s not written (%s); the reconstruction goes on", path.name, str(error).split(": ", 1)[-1])


def _apply_camera_model(scene: Scene, model: CameraModel) -> Scene:
    """The written model of the cameras without lens distortion: SIMPLE_PINHOLE with one focal (the mean of
    fx and fy) when asked for, else PINHOLE (also when fx == fy, and for a lens model whose estimate was
    refused, e.g. AUTO keeping the pinhole). Cameras with distortion keep their model."""
    def apply(c):
        if c.has_distortion:
            return c
        if model == CameraModel.SIMPLE_PINHOLE:
            return dataclasses.replace(c, fx=(c.fx + c.fy) / 2, fy=(c.fx + c.fy) / 2, model="SIMPLE_PINHOLE",
                                       distortion=())
        return dataclasses.replace(c, model="PINHOLE", distortion=())

    return dataclasses.replace(scene, cameras=tuple(apply(c) for c in scene.cameras))


def _scene_counts(scene: Scene, num_images: int) -> dict[str, Any]:
    counts = {"images": num_images, "registered": scene.num_images, "unregistered": list(scene.unregistered)}
    return counts | describe_scene(scene)


def _left_out(
    scene: Scene,
    images: list[ImageInfo],
    pair_results: list[PairResult],
    conf: ReconstructConf,
    cache_dir: Path,
    backend: Backend,
    max_links: int = 3,
) -> list[dict]:
    """The alignment's left-out components (why images are not registered), for run.json. Classic runs rank
    the links to the model by their putative match count too (a pair with fewer putative matches than
    ``two_view.min_num_inliers`` never reaches RANSAC: 0 inliers) and report it."""
    components = [dict(c) for c in scene.info.get("left_out", ())]
    if not components or backend != Backend.CLASSIC:
        return components
    model = set(scene.image_names)
    for component in components:
        links = component_links(pair_results, component["images"], model)
        putative = stored_putative_counts(images, [(x.name_i, x.name_j) for x in links], conf.sift, conf.two_view,
                                          cache_dir)  # fmt: skip
        ranked = sorted(
            links, key=lambda x: (x.two_view_verified, x.num_inliers, putative.get((x.name_i, x.name_j), -1)),
            reverse=True,
        )  # fmt: skip
        component["links"] = [
            dataclasses.asdict(x) | {"putative_matches": putative.get((x.name_i, x.name_j))} for x in ranked[:max_links]
        ]
    return components


def _versions() -> dict[str, str]:
    torch_build = installed_torch_build()  # read, not imported: a cached rerun never needs torch
    return {
        "sfm3r": sfm3r.__version__,
        "python": platform.python_version(),
        "torch": torch_build.version if torch_build is not None else "unknown",
        "pycolmap": importlib.metadata.version("pycolmap"),  # read, not imported (~0.1 s): same string
        "numpy": np.__version__,
    }


def reconstruct(
    images_dir: Path,
    output_dir: Path,
    conf: ReconstructConf = ReconstructConf(),
    progress: Progress | None = None,
    stop_after: Stage = Stage.EXPORT,
) -> ReconstructResult:
    """Run the pipeline on the images in `images_dir`, writing everything into `output_dir` (DESIGN.md §4).

    With ``conf.workers == "ray"`` the per-image and per-pair stages run on a Ray cluster (pipelines/
    distributed.py), writing the same cache; everything else, and the result, is the same.
    """
    if conf.workers != Workers.RAY:
        with WorkerPool(conf.processes) as pool:  # started by the first stage that needs it (classic backend)
            return _reconstruct(images_dir, output_dir, conf, progress, stop_after, None, pool)
    from sfm3r.pipelines.distributed import RayRunner  # Ray loads only when asked for

    check_separate_from_inputs(output_dir, images_dir, recursive=conf.recursive)
    with RayRunner(conf.ray) as runner:
        return _reconstruct(images_dir, output_dir, conf, progress, stop_after, runner, None)


def _reconstruct(
    images_dir: Path,
    output_dir: Path,
    conf: ReconstructConf,
    progress: Progress | None,
    stop_after: Stage,
    runner,  # distributed.RayRunner or None
    pool: WorkerPool | None,  # local worker processes, kept for every stage of the run
) -> ReconstructResult:
    started = time.perf_counter()
    device = validate_options(images_dir, conf)  # every option and input file, before any work
    progress = _StageProgress(progress)
    check_separate_from_inputs(output_dir, images_dir, recursive=conf.recursive)
    run = prepare_run_folder(output_dir, overwrite=conf.overwrite, inputs=[images_dir])
    run.claim(run.cache_dir, folder=True)
    backend = conf.resolved_backend
    result = ReconstructResult(run=run, images=[], backend=backend)
    timings = result.timings
    logger.info("sfm3r %s: %s -> %s (backend %s, device %s)", sfm3r.__version__, images_dir, run.root, backend, device)

    with _timed(timings, "images", progress):
        images = result.images = load_images(images_dir, conf)
        check_downscales_fit(images, conf.downscales)  # now, not after the alignment
        known = load_known_cameras(conf.known_intrinsics, images) if conf.known_intrinsics else {}
        # known focals are the two-view priors of their images (as an EXIF focal would be)
        images = result.images = [
            dataclasses.replace(info, prior_focal_px=(known[info.name].fx + known[info.name].fy) / 2)
            if info.name in known else info
            for info in images
        ]  # fmt: skip

    features: dict = {}
    num_pairs: list[int] = []  # the scene graph's pair count, once known (a retrieval graph needs SIFT first)

    def sift_features() -> dict:
        """SIFT features of every image (classic backend, weight-free retrieval), extracted once."""
        if not features:
            features_progress = progress
            missing = features_to_extract(images, conf.sift, run.cache_dir)
            expected_pairs = num_pairs[0] if num_pairs else len(images) * (len(images) - 1) // 2  # at most
            if stop_after in (Stage.ALIGN, Stage.EXPORT) and missing and pool is not None and pool.size > 1:
                # A first run: the alignment's modules (networkx, scipy's solvers: ~0.5 s) load here while the
                # workers extract SIFT, once the first image is done, and torch too (~1.7 s of CPU) when the
                # scene is large enough for the alignment to run on it (a small one runs on numpy; fountain:
                # alignment -1.3 s, SIFT +0.7 s). Started with the workers, it doubled the SIFT time (their
                # start-up and the import competing); in a single process it would only wait for the GIL.
                # The self-calibration's optimisers too (~0.12 s, herzjesu: its stage 0.26 -> 0.15 s).
                with_torch = needs_torch(expected_pairs, device)
                calibrates = backend == Backend.CLASSIC and any(not info.prior_focal_px for info in images)
                first_extracted = threading.Event()

                def preload() -> None:
                    if first_extracted.wait(timeout=600):
                        if calibrates:
                            load_solvers()
                        load_alignment_steps(with_torch)

                _in_background(preload)

                def features_progress(stage: str, done: int, total: int) -> None:
                    if done > total - missing:
                        first_extracted.set()
                    progress(stage, done, total)

            with _timed(timings, "features", progress):
                found, counts = extract_features(
                    images, conf.sift, run.cache_dir, features_progress, runner=runner, processes=conf.processes,
                    pool=pool,
                )  # fmt: skip
            features.update(found)
            result.counts["features"] = dataclasses.asdict(counts)
        return features

    def similarity() -> np.ndarray:
        """Image similarity for retrieval graphs: the MASt3R retrieval head if given, else weight-free SIFT."""
        if conf.retrieval_checkpoint is None:
            return sift_similarity(images, sift_features(), run.cache_dir, device)
        from sfm3r.pipelines.mast3r import mast3r_similarity

        return mast3r_similarity(
            images, conf.checkpoint, conf.retrieval_checkpoint, conf.codebook, run.cache_dir,
            net_image_size=conf.net_image_size, device=device, progress=progress,
        )  # fmt: skip

    with _timed(timings, "pairs", progress):  # SIFT runs here only when a retrieval graph needs the similarity
        pairs, graph_report = select_pairs(images, conf, similarity=similarity)
        num_pairs.append(len(pairs))
        run.claim(run.root / "pairs.txt")
        _write_pairs_txt(run.root / "pairs.txt", pairs)
    result.counts["pairs"] = {
        "graph": graph_report.graph,
        "pairs": graph_report.num_pairs,
        "added_for_connectivity": graph_report.num_added,
    }
    if stop_after == Stage.PAIRS:
        return _finish(result, conf, started)
    if backend == Backend.CLASSIC:
        sift_features()

    dense_views = None
    if backend == Backend.CLASSIC and runner is None:  # on a cluster, each worker matches its own pairs
        with _timed(timings, "putative_matching", progress):
            putative_counts = match_putative(
                images, pairs, features, conf.sift, conf.two_view, run.cache_dir, device, progress
            )
        result.counts["putative_matching"] = dataclasses.asdict(putative_counts)
    if backend == Backend.CLASSIC:  # the MASt3R backend estimates focals itself
        with _timed(timings, "self_calibration", progress):
            calib_counts: dict[str, int] = {}
            images, calibrated = self_calibrate_focals(
                images, pairs, features, conf.sift, conf.two_view, run.cache_dir, skip=known, device=device,
                counts=calib_counts, progress=progress, pool=pool,
            )  # fmt: skip
        result.counts["self_calibration"] = calib_counts
        result.images = images  # same names and sha256; prior_focal_px set where self-calibrated
        result.counts["self_calibrated_focal"] = calibrated
    # given focals change the two-view results: part of the pair cache's namespace
    known_focals = {f"known:{info.name}": info.prior_focal_px for info in images if info.name in known}
    with _timed(timings, "matching", progress):
        if backend == Backend.CLASSIC:
            pair_results, match_counts = match_classic(
                images, pairs, features, conf.sift, conf.two_view, run.cache_dir, device, progress,
                self_calibrated=calibrated | known_focals, runner=runner, processes=conf.processes, pool=pool,
            )  # fmt: skip
        else:
            from sfm3r.pipelines.mast3r import match_mast3r  # the network code loads only when used

            pair_results, dense_views, match_counts = match_mast3r(
                images, pairs, conf.checkpoint, run.cache_dir, net_image_size=conf.net_image_size,
                batch_size=conf.batch_size, amp=conf.amp, device=device, progress=progress, runner=runner,
            )  # fmt: skip
    result.counts["matching"] = dataclasses.asdict(match_counts) | {
        "verified": int(sum(r.verified for r in pair_results))
    }
    if stop_after == Stage.MATCH:
        return _finish(result, conf, started)

    with _timed(timings, "alignment", progress):
        align_conf = dataclasses.replace(conf.align, device=device, lens=conf.lens)
        steps = alignment_steps(align_conf)
        scene, align_counts, align_key = align_cached(
            pair_results, images, align_conf, run.cache_dir, dense_views=dense_views, known_cameras=known,
            progress=lambda step, fraction, note="": progress(  # percent over all steps of the alignment
                f"alignment/{step}{f': {note}' if note else ''}",
                int(100 * (steps.index(step) + fraction) / len(steps)), 100,
            ),
        )  # fmt: skip
        result.counts["alignment"] = dataclasses.asdict(align_counts) | {"key": align_key}
    if backend == Backend.CLASSIC and runner is None and scene.info.get("left_out"):
        with _timed(timings, "bridging", progress):  # a second chance for the images left out
            from sfm3r.pipelines.bridging import bridge_left_out

            bridged = bridge_left_out(
                scene, pair_results, images, features, conf.sift, conf.two_view, align_conf, run.cache_dir,
                known_cameras=known,
                progress=lambda step, fraction, note="": progress(f"bridging/{step}", int(100 * fraction), 100),
            )  # fmt: skip
        scene, pair_results = bridged.scene, bridged.pair_results
        align_key = bridged.align_key or align_key
        result.counts["bridging"] = bridged.report
    _check_finite(scene)
    _warn_if_no_baseline(scene)
    with _timed(timings, "colors", progress):
        paths = {info.name: info.path for info in images}
        decoded = DecodedImages(_DECODED_IMAGES_BUDGET)
        scene = color_points(_apply_camera_model(scene, conf.camera_model), paths, decoded)
    result.scene = scene
    result.counts["scene"] = _scene_counts(scene, len(images))
    if "lens" in scene.info:
        result.counts["lens"] = scene.info["lens"]  # the distortion model chosen, and why
    if "points" in scene.info:
        result.counts["points"] = scene.info["points"]  # which points the model keeps (min_track_length)

    with _timed(timings, "export", progress):
        run.claim(run.preview_path)
        if stop_after == Stage.ALIGN:
            run.claim([run.sparse_dir / file for file in model_file_names()], run.ply_path)
            for stale in ("images", "distorted"):  # an earlier export's (cropped, undistorted) images and
                if run.remove_owned(stale):  # model no longer match sparse/0, the model of the photos
                    logger.warning("removed %s/ of an earlier export: sparse/0 now describes the original "
                                   "photos; run `sfm3r reconstruct` for the 3DGS folder", stale)
            remove_stale_export_files(run.manifest)  # images_<f>/, transforms.json: of the removed images/
            run.sparse_dir.mkdir(parents=True, exist_ok=True)
            write_colmap_model(scene, run.sparse_dir, binary=True, text=conf.write_text)
            write_ply(run.ply_path, scene.points_xyz, scene.points_rgb)
        else:
            try:  # images an earlier export wrote identically are kept (io.export, "Reruns")
                exported = export_gaussian_splatting_scene(
                    scene, images, run.root, text=conf.write_text, claim=run.claim, written=run.made_from,
                    downscales=conf.downscales, read_rgb=decoded,
                )  # fmt: skip
                remove_stale_export_files(run.manifest, exported, conf.downscales)
            finally:
                run.save_manifest()  # the records of the images written, also when a later one failed
            distorted_dir = run.root / "distorted" / "sparse" / "0"
            if any(camera.has_distortion for camera in scene.cameras):
                # the model of the original photos; sparse/0 holds the undistorted one (graphdeco's layout)
                run.claim([distorted_dir / file for file in model_file_names()])
                write_colmap_model(scene, distorted_dir, binary=True, text=conf.write_text)
            else:
                run.remove_owned("distorted")  # an earlier run's, no longer true
            result.counts["scene"] = _scene_counts(exported, len(images))  # what sparse/0 holds
        logger.debug("decoded images: %d reused by the export", decoded.reused)
        decoded.clear()
        if _preview_is_current(run, align_key, conf):
            logger.info("preview: %s is of this model already, kept", run.preview_path.name)
        else:
            write_preview(scene, run.preview_path)
    left_out = _left_out(scene, images, pair_results, conf, run.cache_dir, backend)
    if left_out:  # why images are not registered
        result.counts["scene"]["left_out"] = left_out
    return _finish(result, conf, started)


def _in_background(function: Callable[[], object]) -> None:
    """Run `function` in a daemon thread; a failure is only logged (the caller's own later use reports it)."""

    def run() -> None:
        try:
            function()
        except Exception as err:  # noqa: BLE001
            logger.debug("background preload failed: %s", err)

    threading.Thread(target=run, name="sfm3r-preload", daemon=True).start()


def _preview_is_current(run: RunFolder, align_key: str | None, conf: ReconstructConf) -> bool:
    """Whether OUT/preview.png was drawn from the same model: the previous run.json (still the last run's
    here) names the same alignment unit and camera model. Kept, the file keeps its mtime (a rerun of a
    finished run writes nothing), and drawing it again would cost a few tens of milliseconds."""
    if align_key is None or not run.preview_path.is_file() or not run.run_json.is_file():
        return False
    try:
        previous = json.loads(run.run_json.read_text())
        return (
            previous["counts"]["alignment"]["key"] == align_key
            and previous["config"]["camera_model"] == conf_to_dict(conf)["camera_model"]
        )
    except (ValueError, KeyError, TypeError, OSError):
        return False


_CACHED_STAGES = ("features", "putative_matching", "self_calibration", "matching", "alignment")


def _unit_totals(counts: dict[str, Any]) -> dict[str, int]:
    """Cache units computed vs reused over the cached stages (a rerun of a finished run: 0 computed)."""
    stages = [counts[name] for name in _CACHED_STAGES if isinstance(counts.get(name), dict) and "computed" in counts[name]]
    return {"computed": sum(c["computed"] for c in stages), "reused": sum(c["cached"] for c in stages)}


def _finish(result: ReconstructResult, conf: ReconstructConf, started: float) -> ReconstructResult:
    result.timings["total"] = round(time.perf_counter() - started, 3)
    result.run.claim(result.run.run_json)
    result.counts["units"] = _unit_totals(result.counts)
    logger.info(
        "cache units: %d computed, %d reused (%s)", result.counts["units"]["computed"], result.counts["units"]["reused"],
        ", ".join(f"{name}: {result.counts[name]['computed']} computed, {result.counts[name]['cached']} reused"
                  for name in _CACHED_STAGES if isinstance(result.counts.get(name), dict) and "computed" in result.counts[name]),
    )  # fmt: skip
    write_json_atomic(
        result.run.run_json,
        {
            "config": conf_to_dict(conf),
            "backend": result.backend.value,
            "versions": _versions(),
            "timings_s": result.timings,
            "counts": result.counts,
            "images": [{"name": i.name, "sha256": i.sha256, "width": i.width, "height": i.height} for i in result.images],
        },
    )
    logger.info("timings (s): %s", ", ".join(f"{k} {v:.1f}" for k, v in result.timings.items()))
    return result

