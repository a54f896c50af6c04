"""Global alignment: pairwise results from any backend -> one consistent scene (cameras, poses, points).

Stages (each its own module):
1. ``edge_verification``: robust Sim(3) RANSAC per pair, verified match graph, largest component kept;
2. ``canonical``: per-image anchor keypoints with canonical depths (streaming over MASt3R DenseViews
   when given) and focal estimates;
3. ``pose_init``: per-edge similarities chained along a maximum spanning tree, optional rotation averaging;
4. ``coarse_alignment``: 3D matching objective (poses + per-image scales), robust LM;
5. ``reprojection_refinement``: 2D reprojection objective on anchor depths, focals and poses, robust LM;
6. the output points: multi-view tracks (sfm.align.tracks) triangulated on the final poses with a points-only
   pycolmap BA (``points="tracks"``, default), or the pairwise anchors (``points="anchors"``); or a full
   tracks + bundle adjustment refinement (``refine="ba"``, sfm.align.bundle_adjustment); track points seen
   in fewer than ``min_track_length`` (3) images are dropped at the end (``keep_long_tracks``);
7. optional lens distortion (``lens``): a final BA of poses, points, intrinsics and distortion on the tracks,
   then, when a lens is kept, the whole alignment again on keypoints undistorted with it (``_estimate_lens``);
   ``Lens.AUTO`` chooses the model from held-out tracks (sfm.align.lens_selection).
   Known cameras with distortion are handled the same way: keypoints undistorted first, observations
   distorted back at the end.

Default refinement = (a) "reprojection": measured best on real data (classic backend, full pipeline, AUC@3
fountain / herzjesu / temple ring: (a) 96.98 / 98.20 / 91.73, (b) "ba" 88.61 / 91.03 / 69.53 (its principal
point stays centred), (a)+(b) 96.99 / 98.32 / 89.97; benchmarks/README.md §1); on synthetic scenes with a
centred principal point (b) is marginally more accurate. Steps 4 and 5 run on numpy for small problems on the CPU
and on torch otherwise (``sfm.geometry.arrays``): torch's import costs as much as a small scene's whole alignment.

Intrinsics: known cameras (fixed, or as a starting point with ``known_intrinsics="prior"``) > EXIF prior >
the backend's focal (Weiszfeld fit of its pointmaps) > ``default_focal_factor``·max(W, H). Principal
points stay at the image centre unless known. ``camera_mode`` says which images share one camera
(``sfm.align.camera_groups``: by default those of one size and focal prior).
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum

import numpy as np

from sfm3r.errors import InputError, ReconstructionError
from sfm3r.sfm.align.bundle_adjustment import CameraModel as BACameraModel
from sfm3r.sfm.align.bundle_adjustment import BundleAdjustmentConf, refine_scene
from sfm3r.sfm.align.camera_groups import CameraMode, camera_groups
from sfm3r.sfm.align.canonical import CanonicalData, DenseViewSource, build_canonical
from sfm3r.sfm.geometry.distortion import distort_pixels, undistort_pixels
from sfm3r.sfm.align.edge_verification import (
    VerifiedEdge,
    VerifyConf,
    describe_left_out,
    left_out_message,
    verify_edges,
)
from sfm3r.sfm.geometry.camera_model import DEFAULT_FOCAL_FACTOR
from sfm3r.sfm.geometry.projection import project_pinhole
from sfm3r.sfm.align.lens_selection import lens_name, select_lens
from sfm3r.sfm.align.pose_init import initial_poses
from sfm3r.sfm.align.step_confs import CoarseConf, ReprojectionConf
from sfm3r.sfm.align.tracks import build_tracks
from sfm3r.sfm.geometry.arrays import NUMPY_MAX_MATCHES
from sfm3r.types import Camera, ImageInfo, PairResult, Scene

logger = logging.getLogger(__name__)


class Refinement(StrEnum):
    NONE = "none"  # coarse 3D alignment only
    REPROJECTION = "reprojection"  # (a): 2D reprojection refinement on anchor depths
    BA = "ba"  # (b): tracks + triangulation + pycolmap bundle adjustment
    REPROJECTION_BA = "reprojection+ba"  # (a) then (b)


class OutputPoints(StrEnum):
    TRACKS = "tracks"  # multi-view tracks (union-find over the kept matches), triangulated from all views
    ANCHORS = "anchors"  # one point per kept match, observed in its two images (the 2D refinement's own)


class Lens(StrEnum):
    NONE = "none"  # pinhole cameras
    SIMPLE_RADIAL = "simple_radial"  # one radial term k, estimated in a final bundle adjustment
    RADIAL = "radial"  # k1, k2
    OPENCV = "opencv"  # fx, fy, k1, k2, p1, p2
    AUTO = "auto"  # the ladder pinhole -> SIMPLE_RADIAL -> RADIAL -> OPENCV, as far as held-out data supports it


class KnownIntrinsics(StrEnum):
    FIXED = "fixed"  # known cameras are kept as given
    PRIOR = "prior"  # known cameras are the starting point; focals are refined


@dataclass(frozen=True, kw_only=True)
class AlignConf:
    verify: VerifyConf = field(default_factory=VerifyConf)
    rotation_averaging: bool = True
    coarse: CoarseConf = field(default_factory=CoarseConf)
    coarse_enabled: bool = True
    refine: Refinement = Refinement.REPROJECTION  # measured best on real data (benchmarks/alignment_real.py)
    reprojection: ReprojectionConf = field(default_factory=ReprojectionConf)
    ba: BundleAdjustmentConf = field(default_factory=BundleAdjustmentConf)
    points: OutputPoints = OutputPoints.TRACKS  # what the model's points are (see _track_points)
    # Track points after (a): poses and cameras of the refinement stay as they are (a full BA after (a)
    # measured worse on the temple ring, module docstring); the matches' tracks are triangulated from
    # all their views and refined by a points-only BA. One round at the final 4 px threshold, since the poses
    # are final: a first round at 1 % of the image size, as before, changed 5 of herzjesu's 29,450
    # observations (and 6 of the 25-frame orbit's 80,300) for 0.1 s (0.4 s) more.
    track_points: BundleAdjustmentConf = field(default_factory=lambda: BundleAdjustmentConf(
        refine_focal=False, refine_poses=False, camera_model=BACameraModel.PINHOLE, initial_max_error_frac=0.0, rounds=1,
    ))
    # Track points need this many views (COLMAP's mapper ignores two-view tracks as well: < 0.3 % of its
    # points on the Strecha sets have two). A two-view point has no third view to confirm its match; without
    # them the points and track lengths match COLMAP's (benchmarks/README.md §1). An image that would keep
    # fewer than `min_image_observations` observations keeps its shorter tracks too (two-image scenes, images
    # that overlap one other image only). 2 = every triangulated track (more points for a 3DGS start).
    min_track_length: int = 3
    min_image_observations: int = 100
    lens: Lens = Lens.NONE  # lens distortion estimated after the track points (_estimate_lens)
    # The final BA of a lens model: poses, points, focal, principal point and distortion on the tracks.
    lens_ba: BundleAdjustmentConf = field(default_factory=lambda: BundleAdjustmentConf(
        refine_principal_point=True, initial_max_error_frac=0.01,
    ))
    lens_realign: bool = True  # with a lens chosen, align again on undistorted keypoints (_realign_with_lens)
    camera_mode: CameraMode = CameraMode.AUTO  # which images share a camera (sfm.align.camera_groups)
    known_intrinsics: KnownIntrinsics = KnownIntrinsics.FIXED
    default_focal_factor: float = DEFAULT_FOCAL_FACTOR  # focal = factor·max(W, H) when nothing better is known
    focal_sanity: tuple[float, float] = (0.25, 6.0)  # backend focal estimates outside ·max(W,H) are ignored
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.min_track_length < 2 or self.min_image_observations < 0:
            raise InputError(
                f"min_track_length must be >= 2 and min_image_observations >= 0, got {self.min_track_length} "
                f"and {self.min_image_observations}"
            )


PRESETS: dict[str, AlignConf] = {
    "fast": AlignConf(refine=Refinement.NONE, rotation_averaging=False),
    "default": AlignConf(),
    # (a) then (b): marginally better than (a) on the Strecha sets (AUC@3 +0.01 / +0.12) and on 50-image
    # synthetic scenes, worse on the temple ring (89.97 vs 91.73); about twice the alignment time.
    "accurate": AlignConf(refine=Refinement.REPROJECTION_BA),
    # One physical camera for all photos (its principal point is refined, as in the default).
    "shared-camera": AlignConf(camera_mode=CameraMode.SINGLE),
}


# A refined principal point farther than this fraction of max(W, H) from where it started is rejected (real
# lenses are within ~2 %; larger values mean the capture cannot separate it from the rotations).
PP_MAX_SHIFT = 0.05


def _principal_point_shift(images: Sequence[ImageInfo], before: np.ndarray, after: np.ndarray) -> float:
    """Largest principal point move, as a fraction of the image's max(W, H)."""
    size = np.array([max(im.width, im.height) for im in images], np.float64)
    return float((np.linalg.norm(after - before, axis=1) / size).max(initial=0.0))


def get_conf(name: str) -> AlignConf:
    if name not in PRESETS:
        raise InputError(f"unknown alignment preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]


def _initial_intrinsics(
    images: Sequence[ImageInfo],
    canon: CanonicalData,
    known: Mapping[str, Camera],
    groups: np.ndarray,  # (N,) camera group of each image
    conf: AlignConf,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """focal (N,), pp (N, 2), fixed (N,) bool, source per image; equal within a camera group.

    A group with a known (fixed) camera takes it; otherwise its focal starts at the median of its images'.
    """
    N = len(images)
    focal = np.zeros(N)
    pp = np.zeros((N, 2))
    fixed = np.zeros(N, bool)
    source = []
    for k, im in enumerate(images):
        size = max(im.width, im.height)
        pp[k] = (im.width / 2, im.height / 2)
        est = canon.focal[k]
        if im.name in known:
            cam = known[im.name]
            focal[k] = (cam.fx + cam.fy) / 2
            pp[k] = (cam.cx, cam.cy)
            fixed[k] = conf.known_intrinsics == KnownIntrinsics.FIXED
            source.append("known")
        elif im.prior_focal_px:
            focal[k] = im.prior_focal_px
            source.append("exif")
        elif np.isfinite(est) and conf.focal_sanity[0] * size < est < conf.focal_sanity[1] * size:
            focal[k] = est
            source.append("backend")
        else:
            focal[k] = conf.default_focal_factor * size
            source.append("default")
    for g in np.unique(groups):
        members = np.flatnonzero(groups == g)
        if members.size == 1:
            continue
        k_fixed = members[fixed[members]]
        lead = k_fixed[0] if k_fixed.size else members[0]
        focal[members] = focal[lead] if k_fixed.size else float(np.median(focal[members]))
        pp[members] = pp[lead]
        fixed[members] = bool(k_fixed.size)
    return focal, pp, fixed, source


def mean_reprojection_errors(
    points: np.ndarray,  # (P, 3) world points
    obs_point: np.ndarray,  # (K,) point of each observation
    obs_image: np.ndarray,  # (K,) image of each observation
    obs_xy: np.ndarray,  # (K, 2) observed pixels
    rotations: np.ndarray,  # (N, 3, 3) cam_from_world
    translations: np.ndarray,  # (N, 3)
    calibration: np.ndarray,  # (N, 3, 3) K per image (pinhole, no skew)
) -> np.ndarray:
    """(P,) mean reprojection error in pixels of each point over its observations (inf behind a camera)."""
    cam = np.einsum("kij,kj->ki", rotations[obs_image], points[obs_point]) + translations[obs_image]
    K = calibration[obs_image]
    with np.errstate(divide="ignore", invalid="ignore"):
        xy, depth = project_pinhole(cam, K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2])
        err = np.linalg.norm(xy - obs_xy, axis=1)
    err = np.where(depth > 0, err, np.inf)
    total = np.bincount(obs_point, weights=err, minlength=len(points))
    count = np.bincount(obs_point, minlength=len(points))
    return total / np.maximum(count, 1)


def _scene_from_anchors(
    canon: CanonicalData,
    images: Sequence[ImageInfo],
    rotations: np.ndarray,
    centres: np.ndarray,
    depth: np.ndarray,  # (A,) world-unit anchor depths
    focal: np.ndarray,
    pp: np.ndarray,
    groups: np.ndarray,  # (N,) camera group of each image
    fixed_cameras: Mapping[str, Camera],  # name -> known camera kept fixed: written exactly as given
    keep: np.ndarray,  # (K,) bool matches to output as points
    unregistered: tuple[str, ...],
    info: dict,
) -> Scene:
    """One point per kept match (mean of its two anchors' world points), observed in both images."""
    from sfm3r.sfm.align.coarse_alignment import anchor_rays

    X = rotations.transpose(0, 2, 1)[canon.anchor_image] @ (anchor_rays(canon, focal, pp) * depth[:, None])[..., None]
    X = X[..., 0] + centres[canon.anchor_image]
    a, b = canon.match_a[keep], canon.match_b[keep]
    pts = 0.5 * (X[a] + X[b])
    P = pts.shape[0]
    _, first = np.unique(groups, return_index=True)  # first image of each group (groups are 0..G-1)
    cams = tuple(
        fixed_cameras.get(images[k].name)
        or Camera(images[k].width, images[k].height, focal[k], focal[k], pp[k, 0], pp[k, 1])
        for k in first.tolist()
    )
    coi = groups.astype(np.int64)
    t = -np.einsum("nij,nj->ni", rotations, centres)
    obs_point = np.repeat(np.arange(P), 2)
    obs_image = np.stack([canon.anchor_image[a], canon.anchor_image[b]], 1).reshape(-1)
    obs_xy = np.stack([canon.anchor_xy[a], canon.anchor_xy[b]], 1).reshape(-1, 2)
    calibration = np.stack([cams[c].matrix() for c in coi])
    errors = mean_reprojection_errors(pts, obs_point, obs_image, obs_xy, rotations, t, calibration)
    return Scene(
        image_names=tuple(im.name for im in images),
        cameras=cams,
        camera_of_image=coi,
        rotations=rotations,
        translations=t,
        points_xyz=pts,
        points_rgb=np.full((P, 3), 128, np.uint8),
        points_error=errors,
        obs_point=obs_point,
        obs_image=obs_image,
        obs_xy=obs_xy,
        unregistered=unregistered,
        info=info,
    )


def alignment_steps(conf: AlignConf) -> tuple[str, ...]:
    """The steps align_scene runs under `conf`, in order: the names it passes to its progress callback."""
    steps = ["verify", "canonical", "init"]
    if conf.coarse_enabled:
        steps.append("coarse")
    if conf.refine in (Refinement.REPROJECTION, Refinement.REPROJECTION_BA):
        steps.append("reprojection")
    if conf.refine in (Refinement.BA, Refinement.REPROJECTION_BA):
        steps.append("ba")
    elif conf.points == OutputPoints.TRACKS:
        steps.append("tracks")
    if conf.lens != Lens.NONE and conf.refine in (Refinement.NONE, Refinement.REPROJECTION):
        steps.append("lens")
    return tuple(steps)


# Verified matches per image pair that predict a problem's size before matching (Strecha sets, 1,024 px:
# 1,100-1,300): see needs_torch.
EXPECTED_MATCHES_PER_PAIR = 1_000


def needs_torch(num_pairs: int, device: str = "cpu") -> bool:
    """Whether an alignment of `num_pairs` image pairs will likely run on torch (geometry.arrays), predicted
    from the pair count before any matching: a pipeline may then import torch (~1.5 s of CPU) in the
    background while other work runs (load_alignment_steps). A wrong guess costs time only: the backend is
    chosen by the actual size."""
    return str(device) != "cpu" or num_pairs * EXPECTED_MATCHES_PER_PAIR > NUMPY_MAX_MATCHES


def load_alignment_steps(with_torch: bool) -> None:
    """Import the alignment's graph library and least-squares steps now (networkx and scipy's solvers, ~0.5 s of
    CPU) and, `with_torch`, torch (~1.5 s of CPU): a pipeline may call this in a background thread while other
    work runs, so that the alignment does not wait for them."""
    modules = ["networkx", "sfm3r.sfm.align.coarse_alignment", "sfm3r.sfm.align.reprojection_refinement"]
    for module in ["torch", *modules] if with_torch else modules:
        importlib.import_module(module)


def align_scene(
    pair_results: Sequence[PairResult],
    images: Sequence[ImageInfo],
    conf: AlignConf = AlignConf(),
    dense_views: DenseViewSource | None = None,
    known_cameras: Mapping[str, Camera] | None = None,
    progress: Callable[[str, float, str], None] | None = None,  # (step, fraction of it done, note)
    *,
    report_left_out: bool = True,  # a warning per group of images left out (False: a caller's trial alignment)
) -> Scene:
    """Align all pairwise results into one scene (cameras at original resolution, cam_from_world poses).

    Images outside the largest verified component are listed in ``Scene.unregistered``. Raises
    ReconstructionError when fewer than two images can be placed.
    """
    # the steps load here, not at import: building an AlignConf (a cached rerun) imports nothing it does not need
    from sfm3r.sfm.align.coarse_alignment import coarse_align
    from sfm3r.sfm.align.reprojection_refinement import refine_reprojection

    known = dict(known_cameras or {})
    names = [im.name for im in images]
    if len(set(names)) != len(names):
        raise InputError("image names given to align_scene are not unique")
    for im in images:
        cam = known.get(im.name)
        if cam is not None and (cam.width, cam.height) != (im.width, im.height):
            raise InputError(
                f"known camera of {im.name} is {cam.width}x{cam.height} but the image is "
                f"{im.width}x{im.height}; give intrinsics at the original image resolution"
            )
    report = progress or (lambda step, fraction, note="": None)

    def iterations(step: str) -> Callable[[int, int, float], None]:
        return lambda it, max_iters, cost: report(step, it / max(max_iters, 1), f"iteration {it + 1}, cost {cost:.4g}")

    timings: dict[str, float] = {}
    lens = {name: cam for name, cam in known.items() if cam.has_distortion}
    if lens:  # the alignment works on pinhole pixels; observations are distorted back at the end
        pair_results = [_undistort_pair(p, lens) for p in pair_results]
    t0 = time.perf_counter()
    report("verify", 0.0, "")
    graph = verify_edges(pair_results, names, conf.verify)
    timings["verify"] = time.perf_counter() - t0
    if len(graph.component) < 2:
        raise ReconstructionError(
            f"no two images could be aligned: {len(graph.edges)} of {len(pair_results)} pairs passed the "
            "geometric check; add more overlapping images or pairs"
        )
    report("verify", 1.0, "")
    model_images = [im for im in images if im.name in set(graph.component)]
    unregistered = tuple(n for c in graph.other_components for n in c)
    left_out = describe_left_out(pair_results, graph)
    for component in left_out:
        logger.log(logging.WARNING if report_left_out else logging.DEBUG, "alignment: %s", left_out_message(component))
    t0 = time.perf_counter()
    report("canonical", 0.0, "")
    canon = build_canonical(pair_results, graph.edges, model_images, dense_views)
    groups = camera_groups(model_images, conf.camera_mode, known)
    focal, pp, fixed, source = _initial_intrinsics(model_images, canon, known, groups, conf)
    timings["canonical"] = time.perf_counter() - t0
    report("canonical", 1.0, "")
    t0 = time.perf_counter()
    report("init", 0.0, "")
    init = initial_poses(canon, graph.edges, average_rotations=conf.rotation_averaging)
    R, C, lam = init.rotations, init.centres, init.scales
    timings["init"] = time.perf_counter() - t0
    report("init", 1.0, "")
    keep = np.ones(canon.match_a.size, bool)
    info: dict = {"focal_source": dict(zip(canon.image_names, source, strict=True)), "timings": timings}
    if left_out:  # why those images are not in the model (run.json, counts.scene.left_out)
        info["left_out"] = [asdict(component) for component in left_out]
    if conf.coarse_enabled:
        t0 = time.perf_counter()
        report("coarse", 0.0, "")
        res = coarse_align(canon, R, C, lam, focal, pp, init.root, conf.coarse, conf.device, iterations("coarse"))
        R, C, lam, keep = res.rotations, res.centres, res.scales, res.inlier_matches
        info["coarse_cost"] = res.cost_history
        timings["coarse"] = time.perf_counter() - t0
        report("coarse", 1.0, "")
    depth = canon.anchor_depth * lam[canon.anchor_image]
    if conf.refine in (Refinement.REPROJECTION, Refinement.REPROJECTION_BA):
        t0 = time.perf_counter()
        report("reprojection", 0.0, "")
        res2 = refine_reprojection(
            canon, R, C, depth, focal, pp, keep, fixed, init.root, conf.reprojection,
            groups=groups, device=conf.device, on_iteration=iterations("reprojection"),
        )
        shift = _principal_point_shift(model_images, pp, res2.pp)
        if shift > PP_MAX_SHIFT:
            logger.warning(
                "the refined principal point moved %.0f %% of the image size from its start; that is not a "
                "real lens: refining again with it fixed", 100 * shift,
            )  # fmt: skip
            res2 = refine_reprojection(
                canon, R, C, depth, focal, pp, keep, fixed, init.root, replace(conf.reprojection, optimise_pp=False),
                groups=groups, device=conf.device, on_iteration=iterations("reprojection"),
            )
        info["principal_point_shift"] = round(float(shift), 5)
        R, C, depth, focal, pp, keep = res2.rotations, res2.centres, res2.depths, res2.focal, res2.pp, res2.inlier_matches
        info["reprojection_cost"] = res2.cost_history
        timings["reprojection"] = time.perf_counter() - t0
        report("reprojection", 1.0, "")
    if not (np.isfinite(R).all() and np.isfinite(C).all() and np.isfinite(focal).all()):
        raise ReconstructionError("the alignment diverged (non-finite poses); check the pairwise results")
    # a fixed known camera is written as given (the alignment itself uses one focal, (fx + fy) / 2)
    fixed_cameras = {im.name: known[im.name] for k, im in enumerate(model_images) if fixed[k] and im.name in known}
    scene = _scene_from_anchors(
        canon, model_images, R, C, depth, focal, pp, groups, fixed_cameras, keep, unregistered, info
    )
    if conf.refine in (Refinement.BA, Refinement.REPROJECTION_BA):
        t0 = time.perf_counter()
        report("ba", 0.0, "")
        pairs = _filtered_pairs(pair_results, graph.edges, canon, keep)
        scene = _refine_with_ba(scene, pairs, conf, fixed)
        timings["ba"] = time.perf_counter() - t0
        report("ba", 1.0, "")
    elif conf.points == OutputPoints.TRACKS:
        t0 = time.perf_counter()
        report("tracks", 0.0, "")
        pairs = _filtered_pairs(pair_results, graph.edges, canon, keep)
        scene = _track_points(scene, pairs, conf)
        timings["tracks"] = time.perf_counter() - t0
        report("tracks", 1.0, "")
    if lens:
        scene = _with_known_distortion(scene, lens)
    elif conf.lens != Lens.NONE and conf.refine in (Refinement.NONE, Refinement.REPROJECTION):
        t0 = time.perf_counter()
        report("lens", 0.0, "")
        if fixed.any():
            logger.warning("lens distortion is not estimated when known cameras are kept fixed")
        else:
            scene = _estimate_lens(scene, _filtered_pairs(pair_results, graph.edges, canon, keep), conf)
            if conf.lens_realign and scene.info["lens"]["chosen"] != "none":
                scene = _realign_with_lens(scene, pair_results, images, conf, dense_views, progress)
        timings["lens"] = time.perf_counter() - t0
        report("lens", 1.0, "")
    if conf.points == OutputPoints.TRACKS or conf.refine in (Refinement.BA, Refinement.REPROJECTION_BA):
        scene = keep_long_tracks(scene, conf.min_track_length, conf.min_image_observations)
    return scene


def keep_long_tracks(scene: Scene, min_length: int, min_image_observations: int) -> Scene:
    """The scene without its points seen in fewer than ``min_length`` images, except the points of images
    that would keep fewer than ``min_image_observations`` observations: those images keep every point.

    Reports the choice in ``scene.info["points"]`` (logged at INFO when points were dropped).
    """
    lengths = np.bincount(scene.obs_point, minlength=scene.num_points)  # (P,)
    long = lengths >= min_length
    seen_long = np.bincount(scene.obs_image[long[scene.obs_point]], minlength=scene.num_images)  # (N,)
    sparse_images = seen_long < min_image_observations
    keep = long.copy()
    keep[scene.obs_point[sparse_images[scene.obs_image]]] = True
    kept_lengths = lengths[keep]
    info = {
        "min_track_length": int(min_length),
        "dropped": int((~keep).sum()),
        "short_kept": int((keep & ~long).sum()),  # in the sparsely seen images
        "sparse_images": [scene.image_names[k] for k in np.flatnonzero(sparse_images)],
        "mean_track_length": float(kept_lengths.mean()) if kept_lengths.size else 0.0,
    }
    if info["dropped"]:
        logger.info("points: %d of %d kept (seen in %d or more images), mean track length %.2f",
                    int(keep.sum()), scene.num_points, min_length, info["mean_track_length"])
    if keep.all():
        return replace(scene, info={**scene.info, "points": info})
    new_index = np.cumsum(keep) - 1  # (P,) index among the kept points
    obs = keep[scene.obs_point]
    return replace(
        scene, points_xyz=scene.points_xyz[keep], points_rgb=scene.points_rgb[keep],
        points_error=scene.points_error[keep], obs_point=new_index[scene.obs_point[obs]],
        obs_image=scene.obs_image[obs], obs_xy=scene.obs_xy[obs], info={**scene.info, "points": info},
    )  # fmt: skip


def _realign_with_lens(scene, pair_results, images, conf, dense_views, progress) -> Scene:
    """Align again with the estimated lens as known cameras (a prior: focals and principal points are
    refined again): the keypoints are undistorted before the 2D refinement, whose poses measured more
    accurate than the lens bundle adjustment's (benchmarks/README.md). The lens report is kept."""
    lens = {name: scene.cameras[int(c)] for name, c in zip(scene.image_names, scene.camera_of_image)}
    again = align_scene(
        pair_results, images, replace(conf, lens=Lens.NONE, known_intrinsics=KnownIntrinsics.PRIOR), dense_views,
        known_cameras=lens, progress=progress,
    )  # fmt: skip
    return replace(again, info={**again.info, "lens": {**scene.info["lens"], "realigned": True}})


def _estimate_lens(scene: Scene, pairs: Sequence[PairResult], conf: AlignConf) -> Scene:
    """A final BA on the tracks with the lens model ``conf.lens`` (poses, points, focal, principal point
    and distortion refined per camera group). ``Lens.AUTO`` climbs the ladder pinhole -> SIMPLE_RADIAL ->
    RADIAL -> OPENCV per camera group and keeps a richer model only where that group's held-out tracks
    support it (sfm.align.lens_selection); with pinhole chosen everywhere the scene is returned unchanged.
    The choice and every candidate's numbers are in ``info["lens"]`` (``chosen``: the model, or "mixed"
    with ``chosen_per_camera`` when the groups differ)."""
    tracks = build_tracks(pairs, list(scene.image_names), min_length=2)
    pinhole_cameras = [c.pinhole() for c in scene.cameras]
    try:
        if conf.lens == Lens.AUTO:
            choice = select_lens(tracks, list(scene.image_names), pinhole_cameras, scene.camera_of_image,
                                 scene.rotations, scene.translations, conf.lens_ba)  # fmt: skip
            report = {"asked": conf.lens.value, **choice.report}
            if not choice.has_lens or choice.fit is None:
                logger.info("lens: pinhole kept")
                return replace(scene, info={**scene.info, "lens": report | {"chosen": "none"}})
            models = choice.models
            # the chosen fit saw 80 % of the tracks: enough for the lens when the alignment is redone with it,
            # else the models are fitted again on all tracks for the output
            out = choice.fit if conf.lens_realign else _lens_ba(scene, tracks, pinhole_cameras, models, conf)
            report["error_px"] = choice.fit.info["mean_reproj_error_after"]
        else:
            models = (BACameraModel(conf.lens.value),) * len(scene.cameras)
            out = _lens_ba(scene, tracks, pinhole_cameras, models, conf)
            report = {"asked": conf.lens.value, "error_px": out.info["mean_reproj_error_after"]}
    except ReconstructionError as error:
        logger.warning("lens distortion not estimated (%s); cameras stay pinhole", error)
        return replace(scene, info={**scene.info, "lens": {"asked": conf.lens.value, "chosen": "none"}})
    if out.unregistered:
        logger.warning("lens estimation lost images %s; cameras stay pinhole", out.unregistered)
        return replace(scene, info={**scene.info, "lens": {"asked": conf.lens.value, "chosen": "none"}})
    names = [lens_name(m) for m in models]
    report["chosen"] = names[0] if len(set(names)) == 1 else "mixed"
    if len(models) > 1:
        report["chosen_per_camera"] = names
    report["distortion"] = [list(c.distortion) for c in out.cameras]
    logger.info("lens: %s, distortion %s, error %.3f px", names, report["distortion"], report["error_px"])
    lengths = np.bincount(out.obs_point, minlength=out.num_points)
    tracks_info = {**out.info, "mean_track_length": float(lengths.mean()) if lengths.size else 0.0}
    return replace(out, unregistered=scene.unregistered,
                   info={**scene.info, "lens": report, "tracks": tracks_info})  # fmt: skip


def _lens_ba(scene: Scene, tracks, cameras: Sequence[Camera], models: Sequence[BACameraModel],
             conf: AlignConf) -> Scene:
    """The lens BA of `scene`'s poses on all `tracks`, from pinhole `cameras`, each camera with its model
    of `models` (C,)."""
    per_camera = None if len(set(models)) == 1 else list(models)
    return refine_scene(tracks, list(scene.image_names), list(cameras), scene.camera_of_image, scene.rotations,
                        scene.translations, replace(conf.lens_ba, camera_model=models[0]),
                        camera_models=per_camera)  # fmt: skip


def _undistort_pair(pair: PairResult, lens: Mapping[str, Camera]) -> PairResult:
    """`pair` with the keypoints of images whose known camera has distortion moved to pinhole pixels."""
    changes = {}
    for name, field_name in ((pair.name_i, "xy_i"), (pair.name_j, "xy_j")):
        if name in lens:
            xy = undistort_pixels(getattr(pair, field_name), lens[name])
            changes[field_name] = xy.astype(np.asarray(getattr(pair, field_name)).dtype)
    return replace(pair, **changes) if changes else pair


def _with_known_distortion(scene: Scene, lens: Mapping[str, Camera]) -> Scene:
    """The cameras of images with a known distorted camera take its model and distortion (their refined
    pinhole part stays), and their observations go back to the photo's pixels."""
    cameras = list(scene.cameras)
    obs_xy = np.asarray(scene.obs_xy, np.float64).copy()
    obs_camera = scene.camera_of_image[scene.obs_image]
    for c in range(len(cameras)):
        members = [scene.image_names[i] for i in np.flatnonzero(scene.camera_of_image == c)]
        source = next((lens[n] for n in members if n in lens), None)
        if source is None:
            continue
        cameras[c] = replace(cameras[c], model=source.model, distortion=source.distortion)
        sel = obs_camera == c
        obs_xy[sel] = distort_pixels(obs_xy[sel], cameras[c])
    return replace(scene, cameras=tuple(cameras), obs_xy=obs_xy)


def _filtered_pairs(
    pair_results: Sequence[PairResult], edges: Sequence[VerifiedEdge], canon: CanonicalData, keep: np.ndarray
) -> list[PairResult]:
    """The verified pairs reduced to their kept matches (inliers of every stage so far)."""
    out, start = [], 0
    for e in edges:
        k = e.inliers[keep[start : start + e.inliers.size]]
        start += e.inliers.size
        p = pair_results[e.pair_index]
        fields = ("xy_i", "xy_j", "idx_i", "idx_j", "conf", "pts_i", "pts_j")
        out.append(replace(p, **{f: getattr(p, f)[k] for f in fields}, num_inliers=int(k.size)))
    return out


_NO_BASELINE = 0.05  # camera spread / anchor depth below this: a panorama, no triangulation (pipelines warn too)


def _track_points(scene: Scene, pairs: Sequence[PairResult], conf: AlignConf) -> Scene:
    """The anchor scene's poses and cameras with multi-view track points (``conf.track_points``).

    Falls back to the anchor points (with a warning) when no track can be triangulated.
    """
    centres = scene.camera_centers()
    spread = float(np.linalg.norm(centres - centres.mean(0), axis=1).max())
    depth = float(np.median(np.linalg.norm(scene.points_xyz - centres.mean(0), axis=1))) if scene.num_points else 0.0
    if spread < _NO_BASELINE * depth:
        logger.warning("the cameras barely move (spread %.3g of the scene depth): points cannot be triangulated "
                       "from the views; writing the pairwise anchor points", spread / depth)
        return scene
    tracks = build_tracks(pairs, list(scene.image_names), min_length=2)
    try:
        out = refine_scene(
            tracks, list(scene.image_names), list(scene.cameras), scene.camera_of_image,
            scene.rotations, scene.translations, conf.track_points,
        )  # fmt: skip
    except ReconstructionError as error:
        logger.warning("no multi-view tracks (%s); writing the pairwise anchor points instead", error)
        return scene
    if out.unregistered:  # a non-finite pose cannot come from a points-only BA; keep the anchor scene
        logger.warning("track triangulation lost images %s; writing the pairwise anchor points", out.unregistered)
        return scene
    lengths = np.bincount(out.obs_point, minlength=out.num_points)
    info = {**out.info, "mean_track_length": float(lengths.mean()) if lengths.size else 0.0}
    logger.info("tracks: %d points, mean track length %.2f, mean reprojection error %.3f px",
                out.num_points, info["mean_track_length"], info["mean_reproj_error_after"])
    return replace(
        scene, points_xyz=out.points_xyz, points_rgb=out.points_rgb, points_error=out.points_error,
        obs_point=out.obs_point, obs_image=out.obs_image, obs_xy=out.obs_xy, info={**scene.info, "tracks": info},
    )  # fmt: skip


def _refine_with_ba(scene: Scene, pairs: Sequence[PairResult], conf: AlignConf, fixed_focal: np.ndarray) -> Scene:
    """(b): tracks + triangulation + pycolmap BA (sfm.align.tracks, sfm.align.bundle_adjustment)."""
    tracks = build_tracks(pairs, list(scene.image_names), min_length=2)
    ba_conf = replace(
        conf.ba,
        shared_intrinsics=False,  # the scene's cameras already follow conf.camera_mode
        refine_focal=conf.ba.refine_focal and not bool(fixed_focal.all()),
    )
    out = refine_scene(
        tracks, list(scene.image_names), list(scene.cameras), scene.camera_of_image,
        scene.rotations, scene.translations, ba_conf,
    )
    return replace(
        out, unregistered=tuple(scene.unregistered) + tuple(out.unregistered), info={**scene.info, "ba": out.info}
    )
