"""Second-order finish: triangulate tracks with given cameras and poses, then robust bundle adjustment.

``refine_scene`` runs a few rounds of

1. **robust triangulation** of every track with the current cameras and poses (vectorised over all
   tracks, no Python loop per track): a few two-view hypotheses per track (random observation pairs),
   scored by MSAC over all its observations (reprojection error, cheirality); the best one is refined
   by an iteratively reweighted linear least-squares fit to the inlier rays (weights 1/depth², so the
   cost approximates the reprojection error). Observations are inliers below the round's threshold;
   tracks need ``min_track_length`` inliers and a triangulation angle of at least ``min_tri_angle``.
   Re-triangulating every track from scratch each round also *completes* tracks: observations rejected
   under the rough input poses come back once the poses are good.
2. **bundle adjustment** (pycolmap / Ceres, robust loss) of poses, points and optionally focal lengths
   on an in-memory ``pycolmap.Reconstruction``; the gauge is fixed with ``TWO_CAMS_FROM_WORLD``, so the
   result stays in the frame (and scale) of the input poses. When only the points move (poses and pinhole
   cameras fixed, as for the track points of the default alignment) every point is its own 3-parameter
   problem, solved for all points at once in numpy (``_refine_points``: the same optimum, ~10x faster).

The inlier threshold starts loose (``initial_max_error_frac`` of the image size: the input poses come from
a coarse alignment and can be tens of pixels off), then shrinks to ``outlier_sigmas`` robust standard
deviations of the residuals, never below ``max_reproj_error``. Rounds stop early when the mean
reprojection error changes by less than ``stop_rel_change``. A final filter drops observations above
``max_reproj_error`` and points that lost their angle or length.

Cameras. The Scene holds PINHOLE cameras. Inside BA a camera whose fx and fy agree within 1 % (or any
camera when ``camera_model="simple_pinhole"``) is a SIMPLE_PINHOLE starting at the mean focal: one focal
per camera, square pixels (the differences between fx and fy of network-derived intrinsics are resize
rounding, not a property of the lens). Otherwise PINHOLE (fx, fy refined separately). Principal points
stay fixed by default (graphdeco 3DGS ignores them). ``shared_intrinsics=True`` merges all cameras of the
same image size into one; otherwise the input grouping (``camera_of_image``) is kept.

Colours. ``points_rgb`` is 128 grey: the pipeline colours the points from the images afterwards.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

import numpy as np

from sfm3r.errors import InputError, ReconstructionError
from sfm3r.types import Camera, Scene
from sfm3r.sfm.geometry.camera_model import CameraModel
from sfm3r.sfm.geometry.projection import project_pinhole
from sfm3r.sfm.geometry.triangulation import ray_least_squares, two_ray_midpoint
from sfm3r.sfm.align.tracks import Tracks

if TYPE_CHECKING:  # imported where used: a cached rerun needs no pycolmap (~0.1 s)
    import pycolmap

logger = logging.getLogger(__name__)

__all__ = ["LossType", "CameraModel", "BundleAdjustmentConf", "refine_scene"]

_SQUARE_PIXEL_TOL = 0.01  # fx, fy within 1 % -> one focal (SIMPLE_PINHOLE) in "auto" mode
_MIN_POINT_DEPTH = 1e-9  # camera-frame depth at or below which a point is behind its observer
# Points-only LM (_refine_points): damping of each point's first step, and the damping at which a point whose
# steps keep failing is left where it is
_LM_INITIAL_DAMPING = 1e-4
_LM_MAX_DAMPING = 1e8
_GREY = 128


class LossType(StrEnum):
    TRIVIAL = "trivial"
    HUBER = "huber"
    SOFT_L1 = "soft_l1"
    CAUCHY = "cauchy"


_COLMAP_NAME = {CameraModel.SIMPLE_PINHOLE: "SIMPLE_PINHOLE", CameraModel.PINHOLE: "PINHOLE",
                CameraModel.SIMPLE_RADIAL: "SIMPLE_RADIAL", CameraModel.RADIAL: "RADIAL", CameraModel.OPENCV: "OPENCV"}
_NUM_EXTRA = {"SIMPLE_PINHOLE": 0, "PINHOLE": 0, "SIMPLE_RADIAL": 1, "RADIAL": 2, "OPENCV": 4}
_ONE_FOCAL = ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL")


@dataclass(frozen=True, kw_only=True)
class BundleAdjustmentConf:
    max_reproj_error: float = 4.0  # px: final observation filter, and the floor of every round's threshold
    initial_max_error_frac: float = 0.05  # round-0 inlier threshold, fraction of the image's larger side
    outlier_sigmas: float = 3.0  # later rounds: threshold = this many robust sigmas of the residuals
    min_tri_angle: float = 1.5  # deg, a point's largest ray angle (approx., see _tri_angles)
    min_track_length: int = 2  # inlier observations a point needs
    loss: LossType = LossType.CAUCHY
    loss_scale: float = 2.0  # px; round 0 uses max(this, robust sigma) since its residuals are large
    rounds: int = 4  # triangulate + BA rounds (at most)
    stop_rel_change: float = 0.01  # stop when the mean reprojection error changes less than this fraction
    max_ba_iterations: int = 100  # Ceres iterations per BA
    function_tolerance: float = 1e-6  # Ceres relative cost change to stop (pycolmap's default 0 crawls)
    refine_focal: bool = True
    refine_principal_point: bool = False
    refine_extra_params: bool = True  # distortion parameters of SIMPLE_RADIAL / RADIAL / OPENCV cameras
    refine_poses: bool = True
    shared_intrinsics: bool = False  # one camera per image size instead of the input grouping
    camera_model: CameraModel = CameraModel.AUTO
    num_hypotheses: int = 8  # two-view triangulation hypotheses per track
    num_threads: int = -1  # Ceres threads; -1 = all cores
    seed: int = 0


def refine_scene(
    tracks: Tracks,
    image_names: Sequence[str],  # (N,)
    cameras: Sequence[Camera],  # (C,)
    camera_of_image: np.ndarray,  # (N,) int index into cameras
    rotations: np.ndarray,  # (N, 3, 3) float64 cam_from_world
    translations: np.ndarray,  # (N, 3) float64 cam_from_world
    conf: BundleAdjustmentConf = BundleAdjustmentConf(),
    *,
    camera_models: Sequence[CameraModel] | None = None,  # (C,) a model per input camera (None: conf's)
) -> Scene:
    """Triangulate ``tracks`` and bundle-adjust poses, points and intrinsics (see module docstring).

    ``camera_models`` gives each input camera its own model instead of ``conf.camera_model`` (as when
    one camera's lens model is tested with the others at another, sfm.align.lens_selection).

    Returns:
        Scene with every input image registered (unless its refined pose became non-finite: then it is
        listed in ``unregistered`` with a warning), PINHOLE cameras, points with at least
        ``min_track_length`` observations under ``max_reproj_error``, grey colours, and ``info`` keys:
        tracks_in, observations_in, points_out, observations_out, mean_reproj_error_before (px, first
        triangulation with the input poses, its inliers), mean_reproj_error_after (px, returned
        observations), ba_iterations (total Ceres iterations), rounds (per-round list: points,
        observations, threshold_px, error_px, ba_iterations, ba_solve_time_s), images_without_observations
        (names), camera_models (BA model per camera), time_s.

    Raises:
        InputError: inconsistent shapes or indices.
        ReconstructionError: no track could be triangulated, or BA produced unusable intrinsics.
    """
    t_start = time.perf_counter()
    n = len(image_names)
    cam_of_img, rot, trans = _check_inputs(tracks, image_names, cameras, camera_of_image, rotations, translations,
                                         conf)
    order = np.lexsort((tracks.obs_image, tracks.obs_track))
    obs_track = tracks.obs_track[order]
    obs_image = tracks.obs_image[order]
    obs_xy = np.asarray(tracks.obs_xy, np.float64)[order]

    group_of_img, params = _initial_intrinsics(cameras, cam_of_img, conf, camera_models)
    sizes = np.array([[cameras[c].width, cameras[c].height] for c in cam_of_img], np.float64).reshape(n, 2)
    rng = np.random.default_rng(conf.seed)

    thr = np.maximum(conf.max_reproj_error, conf.initial_max_error_frac * sizes.max(axis=1))[obs_image]
    loss_scale = conf.loss_scale
    rounds: list[dict] = []
    err_before = None
    prev_err = None
    ba_iterations = 0
    state = None
    for r in range(conf.rounds):
        K = _intrinsics_per_image(params, group_of_img)
        obs_und = _undistort_obs(obs_xy, obs_image, group_of_img, params)
        tri = _triangulate(obs_track, obs_image, obs_und, tracks.num_tracks, K, rot, trans, thr, conf, rng)
        if tri.num_points == 0:
            raise ReconstructionError(
                f"refine_scene: no track could be triangulated in round {r} ({tracks.num_tracks} tracks, "
                f"{obs_track.size} observations); are the poses and cameras consistent with the matches?")
        if err_before is None:
            err_before = float(tri.errors[tri.obs_keep].mean())
        if r == 0:
            sigma0 = 1.4826 * float(np.median(tri.errors[tri.obs_keep]))
            loss_scale = max(conf.loss_scale, sigma0)
        state = _bundle_adjust(tri, obs_track, obs_image, obs_xy, image_names, group_of_img, params, rot, trans,
                               conf, loss_scale)
        rot, trans, params = state.rot, state.trans, state.params
        ba_iterations += state.iterations
        res = state.errors
        err = float(res.mean())
        sigma = 1.4826 * float(np.median(res))
        rounds.append({"points": tri.num_points, "observations": int(tri.obs_keep.sum()),
                       "threshold_px": float(np.max(thr)), "error_px": err, "ba_iterations": state.iterations,
                       "ba_solve_time_s": state.solve_time_s})
        logger.info("refine_scene round %d: %d points, %d obs, thr %.1f px, BA %d it, error %.3f px",
                    r, tri.num_points, int(tri.obs_keep.sum()), float(np.max(thr)), state.iterations, err)
        thr = np.full(obs_track.size, max(conf.max_reproj_error, min(float(np.max(thr)), conf.outlier_sigmas * sigma)))
        loss_scale = conf.loss_scale
        if prev_err is not None and abs(prev_err - err) <= conf.stop_rel_change * prev_err:
            break
        prev_err = err

    scene = _final_scene(state, obs_track, obs_image, obs_xy, image_names, group_of_img, conf, dict(
        tracks_in=int(tracks.num_tracks),
        observations_in=int(obs_track.size),
        mean_reproj_error_before=err_before,
        ba_iterations=int(ba_iterations),
        rounds=rounds,
    ))
    scene.info["time_s"] = time.perf_counter() - t_start
    info = scene.info
    logger.info("refine_scene: %d tracks -> %d points, %d obs, error %.3f -> %.3f px in %.1f s",
                tracks.num_tracks, scene.num_points, scene.obs_point.size, err_before,
                info["mean_reproj_error_after"], info["time_s"])
    return scene


# ----------------------------------------------------------------------------------------------------
# inputs and intrinsics


def _check_inputs(tracks, image_names, cameras, camera_of_image, rotations, translations, conf):
    n = len(image_names)
    if conf.rounds < 1 or conf.max_reproj_error <= 0 or conf.num_hypotheses < 1:
        raise InputError(f"refine_scene: need rounds >= 1, max_reproj_error > 0, num_hypotheses >= 1; got {conf}")
    cam_of_img = np.asarray(camera_of_image, np.int64).reshape(-1)
    rot = np.asarray(rotations, np.float64)
    trans = np.asarray(translations, np.float64)
    if rot.shape != (n, 3, 3) or trans.shape != (n, 3) or cam_of_img.shape != (n,):
        raise InputError(f"refine_scene: expected rotations (N,3,3), translations (N,3), camera_of_image (N,) "
                         f"for N={n} images, got {rot.shape}, {trans.shape}, {cam_of_img.shape}")
    if n and (cam_of_img.min() < 0 or cam_of_img.max() >= len(cameras)):
        raise InputError(f"refine_scene: camera_of_image indexes outside the {len(cameras)} cameras")
    if not (np.all(np.isfinite(rot)) and np.all(np.isfinite(trans))):
        raise InputError("refine_scene: input poses contain NaN or inf")
    k = tracks.obs_track.shape[0]
    if tracks.obs_image.shape != (k,) or tracks.obs_xy.shape != (k, 2):
        raise InputError("refine_scene: Tracks arrays disagree in length")
    if k and (tracks.obs_image.min() < 0 or tracks.obs_image.max() >= n):
        raise InputError(f"refine_scene: Tracks.obs_image indexes outside the {n} images")
    if k and (tracks.obs_track.min() < 0 or tracks.obs_track.max() >= tracks.num_tracks):
        raise InputError("refine_scene: Tracks.obs_track outside [0, num_tracks)")
    for c in cameras:
        if not (c.fx > 0 and c.fy > 0 and np.isfinite([c.fx, c.fy, c.cx, c.cy]).all()):
            raise InputError(f"refine_scene: camera {c} has a non-positive or non-finite focal length")
    return cam_of_img, rot, trans


def _initial_intrinsics(cameras, cam_of_img, conf, camera_models=None):
    """Camera groups of the BA and their parameters (`camera_models`: (C,) a model per input camera).

    Returns:
        group_of_img (N,) int64, params list of dicts {model, width, height, fx, fy, cx, cy}.
    """
    if camera_models is not None and len(camera_models) != len(cameras):
        raise InputError(f"refine_scene: {len(camera_models)} camera_models for {len(cameras)} cameras")
    if conf.shared_intrinsics:
        sizes = [(cameras[c].width, cameras[c].height) for c in cam_of_img]
        uniq = sorted(set(sizes))
        if len(uniq) > 1:
            logger.warning("refine_scene: shared_intrinsics with %d different image sizes: sharing one camera "
                           "per size", len(uniq))
        group_of_img = np.array([uniq.index(s) for s in sizes], np.int64)
        members = [np.unique(cam_of_img[group_of_img == g]) for g in range(len(uniq))]
    else:
        used, group_of_img = np.unique(cam_of_img, return_inverse=True)
        members = [np.array([c]) for c in used]
    params = []
    for mem in members:
        cams = [cameras[c] for c in mem]
        fx = float(np.mean([c.fx for c in cams]))
        fy = float(np.mean([c.fy for c in cams]))
        square = abs(fx - fy) <= _SQUARE_PIXEL_TOL * 0.5 * (fx + fy)
        lens = cams[0] if cams[0].has_distortion else None
        asked = CameraModel(conf.camera_model if camera_models is None else camera_models[mem[0]])
        if asked == CameraModel.AUTO:
            model = lens.model if lens is not None else "SIMPLE_PINHOLE" if square else "PINHOLE"
        else:
            model = _COLMAP_NAME[asked]
        if model in _ONE_FOCAL:
            fx = fy = 0.5 * (fx + fy)
        extra = list(lens.distortion) if lens is not None and lens.model == model else [0.0] * _NUM_EXTRA[model]
        params.append(dict(model=model, width=cams[0].width, height=cams[0].height, fx=fx, fy=fy,
                           cx=float(np.mean([c.cx for c in cams])), cy=float(np.mean([c.cy for c in cams])),
                           extra=extra))
    return group_of_img.astype(np.int64), params


def _intrinsics_per_image(params, group_of_img) -> np.ndarray:
    """(N, 4) float64 fx, fy, cx, cy of each image."""
    table = np.array([[p["fx"], p["fy"], p["cx"], p["cy"]] for p in params], np.float64)
    return table[group_of_img]


# ----------------------------------------------------------------------------------------------------
# vectorised robust triangulation


@dataclass(frozen=True, eq=False)
class _Triangulation:
    point_of_track: np.ndarray  # (T,) int64 point index or -1
    xyz: np.ndarray  # (P, 3)
    obs_keep: np.ndarray  # (K,) bool observation is an inlier of a kept point
    errors: np.ndarray  # (K,) reprojection error to its track's point (inf for dropped tracks)

    @property
    def num_points(self) -> int:
        return int(self.xyz.shape[0])


def _project(xyz, K, rot, trans, obs_image):
    """Per observation: (K, 2) pixel and (K,) depth of points xyz (K, 3) in the observing image."""
    R = rot[obs_image]
    pc = np.einsum("kij,kj->ki", R, xyz) + trans[obs_image]
    z = pc[:, 2]
    pc_safe = pc.copy()
    pc_safe[:, 2] = np.where(np.abs(z) > 1e-12, z, 1e-12)  # |z| <= 1e-12 -> 1e-12 (finite pixels)
    k = K[obs_image]
    uv, _ = project_pinhole(pc_safe, k[:, 0], k[:, 1], k[:, 2], k[:, 3])
    return uv, z


def _reproj_errors(xyz_obs, obs_xy, K, rot, trans, obs_image):
    uv, z = _project(xyz_obs, K, rot, trans, obs_image)
    err = np.linalg.norm(uv - obs_xy, axis=1)
    return np.where((z > 1e-9) & np.isfinite(err), err, np.inf)


def _rays(obs_xy, K, rot, trans, obs_image):
    """World-frame camera centres (K, 3) and unit ray directions (K, 3) of the observations."""
    k = K[obs_image]
    d_cam = np.stack([(obs_xy[:, 0] - k[:, 2]) / k[:, 0], (obs_xy[:, 1] - k[:, 3]) / k[:, 1],
                      np.ones(obs_xy.shape[0])], axis=1)
    R = rot[obs_image]
    d = np.einsum("kji,kj->ki", R, d_cam)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    centers = -np.einsum("kji,kj->ki", R, trans[obs_image])
    return centers, d


def _tri_angles(xyz_obs, centers, obs_track, num_tracks, mask):
    """(T,) deg: twice the largest angle between a kept ray and the track's mean ray (exact for 2 views)."""
    v = xyz_obs - centers
    v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-300)
    mean = np.stack([np.bincount(obs_track[mask], v[mask, c], minlength=num_tracks) for c in range(3)], 1).astype(float)
    mean /= np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-300)
    cosang = np.clip(np.sum(v * mean[obs_track], axis=1), -1.0, 1.0)
    dev = np.where(mask, np.degrees(np.arccos(cosang)), 0.0)
    out = np.zeros(num_tracks)
    np.maximum.at(out, obs_track, dev)
    return 2.0 * out


def _triangulate(obs_track, obs_image, obs_xy, num_tracks, K, rot, trans, thr, conf, rng) -> _Triangulation:
    """Robust multi-view triangulation of every track (see module docstring). obs sorted by track."""
    k_total = obs_track.size
    lengths = np.bincount(obs_track, minlength=num_tracks)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    tri_tracks = np.flatnonzero(lengths >= 2)
    centers, dirs = _rays(obs_xy, K, rot, trans, obs_image)
    thr2 = thr * thr

    best_cost = np.full(num_tracks, np.inf)
    best_X = np.full((num_tracks, 3), np.nan)
    L = lengths[tri_tracks]
    s = starts[tri_tracks]
    for h in range(conf.num_hypotheses):
        a = rng.integers(0, L)
        b = (a + 1 + rng.integers(0, np.maximum(L - 1, 1))) % L
        if h == 0:  # deterministic first hypothesis: first and last observation
            a, b = np.zeros_like(L), L - 1
        ia, ib = s + a, s + b
        Xh = np.full((num_tracks, 3), np.nan)
        Xh[tri_tracks] = two_ray_midpoint(centers[ia], dirs[ia], centers[ib], dirs[ib])
        err = _reproj_errors(Xh[obs_track], obs_xy, K, rot, trans, obs_image)
        cost = np.bincount(obs_track, np.minimum(err * err, thr2), minlength=num_tracks)
        better = cost < best_cost
        best_cost[better] = cost[better]
        best_X[better] = Xh[better]

    X = best_X
    for _ in range(3):  # reweighted least squares on the inliers
        err = _reproj_errors(X[obs_track], obs_xy, K, rot, trans, obs_image)
        inl = err < thr
        _, depth = _project(X[obs_track], K, rot, trans, obs_image)
        w = np.where(inl, 1.0 / np.maximum(depth, 1e-12) ** 2, 0.0)
        n_inl = np.bincount(obs_track, inl, minlength=num_tracks)
        Xn = ray_least_squares(centers, dirs, w, obs_track, num_tracks)
        upd = (n_inl >= 2) & np.all(np.isfinite(Xn), axis=1)
        X = np.where(upd[:, None], Xn, X)
    err = _reproj_errors(X[obs_track], obs_xy, K, rot, trans, obs_image)
    inl = err < thr
    n_inl = np.bincount(obs_track, inl, minlength=num_tracks)
    angle = _tri_angles(X[obs_track], centers, obs_track, num_tracks, inl)
    keep_track = (n_inl >= max(conf.min_track_length, 2)) & (angle >= conf.min_tri_angle) & np.all(np.isfinite(X), 1)
    point_of_track = np.full(num_tracks, -1, np.int64)
    point_of_track[keep_track] = np.arange(int(keep_track.sum()))
    obs_keep = inl & keep_track[obs_track]
    logger.debug("triangulation: %d of %d tracks kept, %d of %d obs", int(keep_track.sum()), num_tracks,
                 int(obs_keep.sum()), k_total)
    return _Triangulation(point_of_track=point_of_track, xyz=X[keep_track], obs_keep=obs_keep,
                          errors=np.where(keep_track[obs_track], err, np.inf))


# ----------------------------------------------------------------------------------------------------
# bundle adjustment with pycolmap


@dataclass(frozen=True, eq=False)
class _BAState:
    rot: np.ndarray  # (N, 3, 3)
    trans: np.ndarray  # (N, 3)
    params: list  # camera group parameters (dicts)
    xyz: np.ndarray  # (P, 3) points after BA
    point_of_track: np.ndarray  # (T,) int64
    obs_keep: np.ndarray  # (K,) bool observations used in the BA
    errors: np.ndarray  # (obs_keep.sum(),) reprojection errors after BA
    iterations: int
    solve_time_s: float  # Ceres time


def _camera_params(p) -> list[float]:
    if p["model"] in _ONE_FOCAL:
        return [p["fx"], p["cx"], p["cy"], *p["extra"]]
    return [p["fx"], p["fy"], p["cx"], p["cy"], *p["extra"]]


def _pycolmap_camera(p) -> pycolmap.Camera:
    import pycolmap

    return pycolmap.Camera(model=p["model"], width=int(p["width"]), height=int(p["height"]),
                           params=_camera_params(p))


def _undistort_obs(obs_xy, obs_image, group_of_img, params) -> np.ndarray:
    """(K, 2) observations moved to pinhole pixels of their camera (same fx, fy, cx, cy): the numpy
    triangulation and error code are pinhole; unchanged for cameras without distortion."""
    out = np.asarray(obs_xy, np.float64).copy()
    obs_group = group_of_img[obs_image]
    for g, p in enumerate(params):
        if not any(v != 0.0 for v in p["extra"]):
            continue
        sel = obs_group == g
        if sel.any():
            out[sel] = _pycolmap_camera(p).cam_from_img(out[sel]) * [p["fx"], p["fy"]] + [p["cx"], p["cy"]]
    return out


def _loss_type(loss: LossType):
    import pycolmap

    return {LossType.TRIVIAL: pycolmap.LossFunctionType.TRIVIAL, LossType.HUBER: pycolmap.LossFunctionType.HUBER,
            LossType.SOFT_L1: pycolmap.LossFunctionType.SOFT_L1,
            LossType.CAUCHY: pycolmap.LossFunctionType.CAUCHY}[LossType(loss)]


def _bundle_adjust(tri, obs_track, obs_image, obs_xy, image_names, group_of_img, params, rot, trans, conf,
                   loss_scale) -> _BAState:
    """BA of the kept observations: pycolmap, or the per-point solver when only points move."""
    if _points_only(conf, params):
        return _refine_points(tri, obs_track, obs_image, obs_xy, group_of_img, params, rot, trans, conf, loss_scale)
    return _bundle_adjust_colmap(tri, obs_track, obs_image, obs_xy, image_names, group_of_img, params, rot, trans,
                                 conf, loss_scale)


def _points_only(conf: BundleAdjustmentConf, params) -> bool:
    """True when the BA moves the points alone: poses and pinhole intrinsics fixed (conf.track_points)."""
    fixed_cameras = not (conf.refine_poses or conf.refine_focal or conf.refine_principal_point)
    return fixed_cameras and all(_NUM_EXTRA[p["model"]] == 0 for p in params)


def _robust_loss(s: np.ndarray, loss: LossType, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Ceres's robust loss of squared residual norms s (K,) with scale a (px): (ρ(s), ρ'(s))."""
    b = scale * scale
    loss = LossType(loss)
    if loss == LossType.TRIVIAL:
        return s, np.ones_like(s)
    if loss == LossType.HUBER:
        root = np.sqrt(np.maximum(s, 1e-300))
        inside = s <= b
        return np.where(inside, s, 2.0 * scale * root - b), np.where(inside, 1.0, scale / root)
    if loss == LossType.SOFT_L1:
        root = np.sqrt(1.0 + s / b)
        return 2.0 * b * (root - 1.0), 1.0 / root
    return b * np.log1p(s / b), 1.0 / (1.0 + s / b)


def _refine_points(tri, obs_track, obs_image, obs_xy, group_of_img, params, rot, trans, conf, loss_scale) -> _BAState:
    """The points-only BA (poses and pinhole cameras fixed): each point alone minimises Σ ρ(|π(X) − x|²) over
    its kept observations, by Levenberg–Marquardt on its 3 coordinates, all points at once.

    Stops as Ceres does: when an iteration lowers the total cost by at most ``conf.function_tolerance`` of it
    (or after ``conf.max_ba_iterations``); a point whose own cost stops falling leaves the iterations earlier.
    The same optimum as pycolmap's BA with every camera and pose constant (test_bundle_adjustment checks it),
    without building a Reconstruction.
    """
    t0 = time.perf_counter()
    kept = np.flatnonzero(tri.obs_keep)
    pt = tri.point_of_track[obs_track[kept]]  # (k,) point of each kept observation
    img = obs_image[kept]
    x = np.asarray(obs_xy, np.float64)[kept]
    K = _intrinsics_per_image(params, group_of_img)[img]  # (k, 4) fx, fy, cx, cy
    R, t = rot[img], trans[img]
    num_points = tri.num_points

    def evaluate(xyz: np.ndarray, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """At the observations `obs`: camera-frame points (n, 3), residuals (n, 2) px, ρ (n,) (inf behind
        the camera), ρ' (n,)."""
        pc = np.einsum("kij,kj->ki", R[obs], xyz[pt[obs]]) + t[obs]
        z = pc[:, 2]
        in_front = z > _MIN_POINT_DEPTH
        r = K[obs, :2] * pc[:, :2] / np.where(in_front, z, 1.0)[:, None] + K[obs, 2:] - x[obs]
        rho, weight = _robust_loss((r * r).sum(1), conf.loss, loss_scale)
        return pc, r, np.where(in_front, rho, np.inf), weight

    def per_point(values: np.ndarray, obs: np.ndarray) -> np.ndarray:
        """Sums over each point's observations: (n,) or (n, c) -> (P,) or (P, c)."""
        if values.ndim == 1:
            return np.bincount(pt[obs], values, minlength=num_points)
        return np.stack([np.bincount(pt[obs], v, minlength=num_points) for v in values.T], 1)

    xyz = tri.xyz.astype(np.float64).copy()
    everything = np.arange(kept.size)
    pc, r, rho, weight = evaluate(xyz, everything)
    cost = per_point(rho, everything)
    mu = np.full(num_points, _LM_INITIAL_DAMPING)
    active = np.isfinite(cost)
    iterations = 0
    while active.any() and iterations < conf.max_ba_iterations:
        iterations += 1
        obs = np.flatnonzero(active[pt])
        pts = np.flatnonzero(active)
        # J (n, 2, 3) = d(pixel) / d(camera-frame point) · R; each point's normal equations by bincount
        z = pc[obs, 2]
        D = np.zeros((obs.size, 2, 3))
        D[:, 0, 0] = K[obs, 0] / z
        D[:, 1, 1] = K[obs, 1] / z
        D[:, :, 2] = -K[obs, :2] * pc[obs, :2] / (z * z)[:, None]
        J = D @ R[obs]
        JtW = J.transpose(0, 2, 1) * weight[obs, None, None]
        H = per_point((JtW @ J).reshape(-1, 9), obs)[pts].reshape(-1, 3, 3)
        g = per_point((JtW @ r[obs, :, None])[..., 0], obs)[pts]
        diag = np.diagonal(H, axis1=1, axis2=2)
        H = H + (mu[pts, None] * diag + 1e-12 * (diag.sum(1, keepdims=True) + 1.0))[:, :, None] * np.eye(3)
        trial = xyz.copy()
        trial[pts] += np.linalg.solve(H, -g[..., None])[..., 0]
        pc_n, r_n, rho_n, weight_n = evaluate(trial, obs)
        new_cost = per_point(rho_n, obs)
        better = active & (new_cost < cost)
        decrease = float(np.sum((cost - new_cost)[better]))
        before = float(cost[np.isfinite(cost)].sum())
        take = better[pt[obs]]
        xyz[better] = trial[better]
        pc[obs[take]], r[obs[take]], weight[obs[take]] = pc_n[take], r_n[take], weight_n[take]
        small = better & ((cost - new_cost) <= conf.function_tolerance * cost)
        cost[better] = new_cost[better]
        mu = np.where(better, np.maximum(mu / 3.0, 1e-9), np.where(active, mu * 10.0, mu))
        active &= ~small & (mu < _LM_MAX_DAMPING)
        if decrease <= conf.function_tolerance * before:
            break
    errors = _reproj_errors(xyz[pt], x, _intrinsics_per_image(params, group_of_img), rot, trans, img)
    return _BAState(rot=rot, trans=trans, params=params, xyz=xyz, point_of_track=tri.point_of_track,
                    obs_keep=tri.obs_keep, errors=errors, iterations=iterations,
                    solve_time_s=time.perf_counter() - t0)


def _bundle_adjust_colmap(tri, obs_track, obs_image, obs_xy, image_names, group_of_img, params, rot, trans, conf,
                          loss_scale) -> _BAState:
    """Build a pycolmap Reconstruction from the kept observations, run BA, read everything back."""
    import pycolmap

    n = len(image_names)
    kept = np.flatnonzero(tri.obs_keep)
    k_img = obs_image[kept]
    # point2D index of each kept observation inside its image's keypoint list
    by_img = np.lexsort((kept, k_img))
    p2d = np.empty(kept.size, np.int64)
    counts = np.bincount(k_img, minlength=n)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    p2d[by_img] = np.arange(kept.size) - first[k_img[by_img]]

    rec = pycolmap.Reconstruction()
    for g, p in enumerate(params):
        cam = pycolmap.Camera(camera_id=g + 1, model=p["model"], width=int(p["width"]), height=int(p["height"]),
                              params=_camera_params(p))
        rec.add_camera_with_trivial_rig(cam)
    sorted_kept = kept[by_img]
    for i in range(n):
        kp = obs_xy[sorted_kept[first[i]:first[i] + counts[i]]]
        img = pycolmap.Image(name=str(image_names[i]), keypoints=np.ascontiguousarray(kp, np.float64),
                             camera_id=int(group_of_img[i]) + 1, image_id=i + 1)
        rec.add_image_with_trivial_frame(img, pycolmap.Rigid3d(pycolmap.Rotation3d(rot[i]), trans[i]))

    point_ids = np.zeros(tri.num_points, np.int64)
    # kept observations are grouped by track (obs sorted by track); split per point
    pt_of_kept = tri.point_of_track[obs_track[kept]]
    bounds = np.flatnonzero(np.diff(pt_of_kept)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [kept.size]])
    grey = np.full(3, _GREY, np.uint8)
    img_ids = (k_img + 1).tolist()
    p2d_l = p2d.tolist()
    for s, e in zip(starts.tolist(), ends.tolist()):
        pt = int(pt_of_kept[s])
        track = pycolmap.Track([pycolmap.TrackElement(img_ids[k], p2d_l[k]) for k in range(s, e)])
        point_ids[pt] = rec.add_point3D(tri.xyz[pt], track, grey)

    opts = pycolmap.BundleAdjustmentOptions()
    opts.print_summary = False
    opts.refine_focal_length = bool(conf.refine_focal)
    opts.refine_principal_point = bool(conf.refine_principal_point)
    opts.refine_extra_params = bool(conf.refine_extra_params)
    opts.refine_rig_from_world = bool(conf.refine_poses)
    opts.refine_sensor_from_rig = False
    opts.ceres.loss_function_type = _loss_type(conf.loss)
    opts.ceres.loss_function_scale = float(loss_scale)
    so = opts.ceres.solver_options
    so.max_num_iterations = int(conf.max_ba_iterations)
    so.function_tolerance = float(conf.function_tolerance)
    so.num_threads = int(conf.num_threads if conf.num_threads > 0 else (os.cpu_count() or 1))
    cfg = pycolmap.BundleAdjustmentConfig()
    has_obs = counts > 0
    for i in np.flatnonzero(has_obs):
        cfg.add_image(int(i) + 1)
    if conf.refine_poses and has_obs.sum() >= 2:
        cfg.fix_gauge(pycolmap.BundleAdjustmentGauge.TWO_CAMS_FROM_WORLD)
    summary = pycolmap.create_default_bundle_adjuster(opts, cfg, rec).solve()
    logger.debug("BA: %s", summary.brief_report())
    iterations = _num_iterations(summary)
    solve_time = float(getattr(getattr(summary, "ceres_summary", None), "total_time_in_seconds", float("nan")))
    if not summary.is_solution_usable():
        logger.warning("refine_scene: bundle adjustment reports an unusable solution (%s); keeping the input",
                       summary.termination_type)
        xyz = tri.xyz.copy()
    else:
        xyz = np.array([rec.point3D(int(pid)).xyz for pid in point_ids]).reshape(-1, 3)
        rot = rot.copy()
        trans = trans.copy()
        for i in range(n):
            T = rec.image(i + 1).cam_from_world()
            rot[i] = T.rotation.matrix()
            trans[i] = T.translation
        params = [dict(p) for p in params]
        for g, p in enumerate(params):
            v = np.asarray(rec.camera(g + 1).params, np.float64)
            if p["model"] in _ONE_FOCAL:
                p["fx"] = p["fy"] = float(v[0])
                p["cx"], p["cy"] = float(v[1]), float(v[2])
                p["extra"] = [float(x) for x in v[3:]]
            else:
                p["fx"], p["fy"], p["cx"], p["cy"] = map(float, v[:4])
                p["extra"] = [float(x) for x in v[4:]]
    K = _intrinsics_per_image(params, group_of_img)
    pt = tri.point_of_track[obs_track[kept]]
    und = _undistort_obs(obs_xy[kept], obs_image[kept], group_of_img, params)
    errors = _reproj_errors(xyz[pt], und, K, rot, trans, obs_image[kept])
    return _BAState(rot=rot, trans=trans, params=params, xyz=xyz, point_of_track=tri.point_of_track,
                    obs_keep=tri.obs_keep, errors=errors, iterations=iterations,
                    solve_time_s=solve_time)


def _num_iterations(summary) -> int:
    """Ceres iterations of a BA summary (successful + unsuccessful steps), 0 if unavailable."""
    cs = getattr(summary, "ceres_summary", None)
    if cs is None:
        return 0
    steps = getattr(cs, "num_successful_steps", 0) + getattr(cs, "num_unsuccessful_steps", 0)
    if steps:
        return int(steps)
    return len(getattr(cs, "iterations", []) or [])


# ----------------------------------------------------------------------------------------------------
# final filter and Scene


def _scene_camera(p) -> Camera:
    """The Scene camera of BA parameters: pinhole models as plain Cameras, distortion models with their
    model and parameters."""
    lens = dict(model=p["model"], distortion=tuple(p["extra"])) if _NUM_EXTRA[p["model"]] else {}
    return Camera(width=int(p["width"]), height=int(p["height"]), fx=p["fx"], fy=p["fy"], cx=p["cx"], cy=p["cy"],
                  **lens)


def _final_scene(state: _BAState, obs_track, obs_image, obs_xy, image_names, group_of_img, conf,
                 info: dict) -> Scene:
    """Filter the last BA's observations and points, check finiteness, and package a Scene."""
    n = len(image_names)
    kept = np.flatnonzero(state.obs_keep)
    pt = state.point_of_track[obs_track[kept]]
    finite_img = np.all(np.isfinite(state.rot.reshape(n, 9)), axis=1) & np.all(np.isfinite(state.trans), axis=1)
    for p in state.params:
        if not (np.isfinite([p["fx"], p["fy"], p["cx"], p["cy"]]).all() and p["fx"] > 0 and p["fy"] > 0):
            raise ReconstructionError(f"refine_scene: bundle adjustment produced invalid intrinsics {p}; "
                                      "try refine_focal=False or better initial cameras")
    if not finite_img.all():
        logger.warning("refine_scene: %d images got non-finite poses and are left unregistered: %s",
                       int((~finite_img).sum()), [image_names[i] for i in np.flatnonzero(~finite_img)])
    good = (state.errors <= conf.max_reproj_error) & finite_img[obs_image[kept]]
    good &= np.all(np.isfinite(state.xyz), axis=1)[pt]
    kept, pt = kept[good], pt[good]
    # points keep >= min_track_length observations and their triangulation angle
    num_pts = state.xyz.shape[0]
    n_obs = np.bincount(pt, minlength=num_pts)
    K = _intrinsics_per_image(state.params, group_of_img)
    und = _undistort_obs(obs_xy[kept], obs_image[kept], group_of_img, state.params)
    centers, _ = _rays(und, K, state.rot, state.trans, obs_image[kept])
    angle = _tri_angles(state.xyz[pt], centers, pt, num_pts, np.ones(pt.size, bool))
    keep_pt = (n_obs >= max(conf.min_track_length, 2)) & (angle >= conf.min_tri_angle)
    sel = keep_pt[pt]
    kept, pt = kept[sel], pt[sel]
    new_index = np.cumsum(keep_pt) - 1
    obs_point = new_index[pt].astype(np.int64)
    xyz = state.xyz[keep_pt]
    errors = state.errors[good][sel]
    num_out = int(keep_pt.sum())
    points_error = np.bincount(obs_point, errors, minlength=num_out) / np.maximum(
        np.bincount(obs_point, minlength=num_out), 1)

    # drop non-finite images (their observations were already removed above)
    reg = np.flatnonzero(finite_img)
    remap = np.full(n, -1, np.int64)
    remap[reg] = np.arange(reg.size)
    obs_img_out = remap[obs_image[kept]]
    groups_used, cam_index = np.unique(group_of_img[reg], return_inverse=True)
    cameras = tuple(_scene_camera(state.params[g]) for g in groups_used)
    obs_per_image = np.bincount(obs_img_out, minlength=reg.size)
    no_obs = [image_names[reg[i]] for i in np.flatnonzero(obs_per_image == 0)]
    if no_obs:
        logger.warning("refine_scene: %d registered images have no observations left: %s", len(no_obs),
                       no_obs[:10])
    info.update(
        points_out=num_out,
        observations_out=int(kept.size),
        mean_reproj_error_after=float(errors.mean()) if errors.size else float("nan"),
        images_without_observations=no_obs,
        camera_models=[p["model"] for p in state.params],
    )
    return Scene(
        image_names=tuple(image_names[i] for i in reg),
        cameras=cameras,
        camera_of_image=cam_index.astype(np.int64),
        rotations=state.rot[reg].copy(),
        translations=state.trans[reg].copy(),
        points_xyz=xyz.astype(np.float64),
        points_rgb=np.full((num_out, 3), _GREY, np.uint8),
        points_error=points_error.astype(np.float64),
        obs_point=obs_point,
        obs_image=obs_img_out.astype(np.int64),
        obs_xy=obs_xy[kept].astype(np.float64),
        unregistered=tuple(image_names[i] for i in np.flatnonzero(~finite_img)),
        info=info,
    )
