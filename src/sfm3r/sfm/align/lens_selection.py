"""Which lens model the data supports: the ladder PINHOLE -> SIMPLE_RADIAL -> RADIAL -> OPENCV.

Every model is fitted by the same bundle adjustment (poses, points, focal, principal point, distortion) on a
deterministic 80 % of the tracks (``track % HOLDOUT_EVERY != 0``); the other 20 % are held out. The held-out
tracks are then triangulated with each fit's cameras and poses kept fixed (a points-only BA), and each model
is scored by its mean reprojection error on the held-out observations that every model kept (a common set, so
that a model is not rewarded for dropping observations). An extra distortion term that only fits noise does
not lower the held-out error; a real one does.

Climbing the ladder, a richer model replaces the current choice only when (a) its held-out error is lower
by a significant amount: a paired z-test over the held-out tracks (per track, the sum over its common
observations of the current model's error minus the richer one's; z = mean / standard error >= ``MIN_Z``),
and at least ``MIN_GAIN`` (1 %) relative; and (b) its distortion differs from the current choice's by at
least ``MIN_EFFECT_PX`` somewhere in the image (a grid including the corners): a lens that moves no pixel
by half a pixel is not worth a model. Each rung is compared with the current choice, not with the rung
below, so a RADIAL lens can be chosen over pinhole even when SIMPLE_RADIAL alone was not enough.

Per camera. With several cameras (groups of images sharing intrinsics, sfm.align.camera_groups) each
camera climbs its own ladder, scored on the held-out observations in its own images, with every other
camera at the top rung (OPENCV) in all of its fits: the others' lenses are modelled whatever they are, so
camera g's rungs differ only in g's model (nested fits). Two cheaper designs were measured and dropped:

- one fit per rung with every camera at that rung: a distorted camera whose lens a rung lacks corrupts
  the points it shares with the others, so an undistorted camera's pinhole fit looks worse than it is and
  its extra terms "gain" (two-camera test scene: 23 %, z = 12, for a camera without distortion; its
  OPENCV noise moved pixels 0.64 px, over the effect floor);
- camera g alone refitted inside one all-OPENCV (or all-RADIAL) fit, the other cameras and poses kept:
  g's extra terms then also absorb what the kept cameras and poses got wrong (mixed herzjesu set of
  benchmarks/distortion.py: inside all-OPENCV, OPENCV 4.9 % "better" than SIMPLE_RADIAL (z 7.3) for the
  SIMPLE_RADIAL camera; inside all-RADIAL, OPENCV for both cameras, the undistorted one 2.8 % (z 5.5)).

Each of g's fits uses only the tracks that g's images see (with their other images), so a camera of a few
images costs little; with C cameras that is C x 4 such fits and one final fit of the chosen models
together. With one camera nothing changes: the single ladder above, 4 fits.

Measured (benchmarks/README.md, issue 15): on synthetic scenes (0.3 px keypoint noise, 640x480, f = 600) an
extra term the data does not have changes the held-out error by -0.1 % to +0.01 % (z < 2); a real k2 = 0.08
over SIMPLE_RADIAL gains 2.0 % (z 5.6), tangential p = 0.002 over RADIAL 2.2 % (z 5.9), k = -0.1 over pinhole
36 % (tests/sfm/test_lens_selection.py). On the real herzjesu photos OPENCV gains 0.35 % (z 3.6, 1.7 px
change) and forcing it costs 7 AUC@3 points (91.1 vs 98.2): tangential terms trade off against a common
rotation of the cameras, hence a gain floor of 1 %, not just significance.

Why a held-out error and not an F-test or BIC on the in-sample residuals: the residuals are of tens of
thousands of observations with a robust loss and an outlier filter that depends on the model, so a classical
test calls any improvement significant (n is huge) and the observation sets differ between models. The
held-out error on a common set has neither problem. Measured in benchmarks/README.md (issue 15).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from sfm3r.errors import ReconstructionError
from sfm3r.sfm.align.bundle_adjustment import (
    BundleAdjustmentConf,
    CameraModel,
    refine_scene,
)
from sfm3r.sfm.align.tracks import Tracks
from sfm3r.sfm.geometry.distortion import distort_pixels, to_pycolmap
from sfm3r.types import Camera, Scene

logger = logging.getLogger(__name__)

__all__ = ["LADDER", "LensChoice", "distortion_difference", "lens_name", "select_lens", "split_tracks"]

LADDER = (CameraModel.SIMPLE_PINHOLE, CameraModel.SIMPLE_RADIAL, CameraModel.RADIAL, CameraModel.OPENCV)
HOLDOUT_EVERY = 5  # every 5th track is held out
MIN_GAIN = 0.01  # a richer model must lower the held-out error by 1 % ...
MIN_Z = 3.0  # ... significantly (paired z over the held-out tracks) ...
MIN_EFFECT_PX = 0.5  # ... and change the distortion by at least this much somewhere in the image
_GRID = 9  # effect measured on a _GRID x _GRID grid of image points, corners included


@dataclass(frozen=True, eq=False)
class LensChoice:
    models: tuple[CameraModel, ...]  # (C,) the chosen model of each input camera (SIMPLE_PINHOLE = no distortion)
    cameras: tuple[Camera, ...]  # (C,) each camera as `fit` has it (the input camera without a fit)
    fit: Scene | None  # a fit with these models on the 80 % of the tracks (None when every fit failed)
    # per candidate: fit_error_px, distortion, heldout_error_px, heldout_kept, and with one camera effect_px,
    # gain, z, compared_with; with several, those per camera under "cameras" and the mixed fit under "mixed"
    report: dict

    @property
    def has_lens(self) -> bool:
        """True when some camera got a distortion model."""
        return any(m not in (CameraModel.SIMPLE_PINHOLE, CameraModel.PINHOLE) for m in self.models)


def split_tracks(tracks: Tracks, every: int = HOLDOUT_EVERY) -> tuple[Tracks, Tracks]:
    """(fit, held out): tracks with ``id % every != 0`` and the others, each renumbered from 0."""
    held = tracks.obs_track % every == 0

    def subset(mask: np.ndarray) -> Tracks:
        ids, obs_track = np.unique(tracks.obs_track[mask], return_inverse=True)
        return Tracks(obs_track=obs_track.astype(np.int64), obs_image=tracks.obs_image[mask],
                      obs_keypoint=tracks.obs_keypoint[mask], obs_xy=tracks.obs_xy[mask], num_tracks=int(ids.size))

    return subset(~held), subset(held)


def distortion_difference(a: Camera, b: Camera) -> float:
    """Largest difference in pixels between the distortion displacements of `a` and `b` (same image size)
    over a grid of image points including the corners; for a pinhole `b` it is `a`'s largest shift."""
    u, v = np.meshgrid(np.linspace(0.0, a.width, _GRID), np.linspace(0.0, a.height, _GRID))
    grid = np.stack([u.ravel(), v.ravel()], 1)  # (G, 2)
    shift_a = distort_pixels(grid, a) - grid
    shift_b = distort_pixels(grid, b) - grid
    return float(np.linalg.norm(shift_a - shift_b, axis=1).max())


def _heldout_errors(fit: Scene, held: Tracks, image_names: Sequence[str], conf: BundleAdjustmentConf) -> dict:
    """{(image, x, y): reprojection error px} of the held-out observations triangulated with `fit`'s cameras
    and poses fixed (a points-only BA; observations over conf.max_reproj_error are dropped)."""
    index = {n: i for i, n in enumerate(fit.image_names)}
    keep = np.array([image_names[i] in index for i in held.obs_image.tolist()], bool)
    _, obs_track = np.unique(held.obs_track[keep], return_inverse=True)
    sub = Tracks(obs_track=obs_track.astype(np.int64),
                 obs_image=np.array([index[image_names[i]] for i in held.obs_image[keep].tolist()], np.int64),
                 obs_keypoint=held.obs_keypoint[keep], obs_xy=held.obs_xy[keep], num_tracks=int(obs_track.max(initial=-1) + 1))  # fmt: skip
    points_only = replace(conf, refine_focal=False, refine_principal_point=False, refine_extra_params=False,
                          refine_poses=False, camera_model=CameraModel.AUTO, shared_intrinsics=False)  # fmt: skip
    out = refine_scene(sub, list(fit.image_names), list(fit.cameras), fit.camera_of_image, fit.rotations,
                       fit.translations, points_only)  # fmt: skip
    cam = fit.camera_of_image[out.obs_image]
    errors = np.empty(out.obs_point.size)
    for c in np.unique(cam):  # per camera: project with its lens
        sel = np.flatnonzero(cam == c)
        pc = np.einsum("kij,kj->ki", out.rotations[out.obs_image[sel]], out.points_xyz[out.obs_point[sel]])
        pc += out.translations[out.obs_image[sel]]
        xy = to_pycolmap(fit.cameras[int(c)]).img_from_cam(pc)
        errors[sel] = np.linalg.norm(xy - out.obs_xy[sel], axis=1)
    names = [out.image_names[i] for i in out.obs_image.tolist()]
    return {(n, x, y): e for n, (x, y), e in zip(names, out.obs_xy.tolist(), errors.tolist())}


def _paired_z(current: dict, richer: dict, common: Sequence[tuple], track_of: dict) -> float:
    """z of the held-out error decrease from `current` to `richer`: per held-out track, the sum over its
    `common` observations of (current - richer); mean over tracks / its standard error (tracks are the
    independent units: a track's observations share its point)."""
    track = np.array([track_of[k] for k in common], np.int64)
    diff = np.array([current[k] - richer[k] for k in common])
    _, track = np.unique(track, return_inverse=True)
    per_track = np.bincount(track, diff)
    if per_track.size < 2:
        return 0.0
    se = per_track.std(ddof=1) / np.sqrt(per_track.size)
    return float(per_track.mean() / se) if se > 0 else float("inf") * np.sign(per_track.mean())


def select_lens(
    tracks: Tracks,
    image_names: Sequence[str],  # (N,)
    cameras: Sequence[Camera],  # (C,) pinhole starting cameras
    camera_of_image: np.ndarray,  # (N,) int index into cameras
    rotations: np.ndarray,  # (N, 3, 3) cam_from_world
    translations: np.ndarray,  # (N, 3)
    conf: BundleAdjustmentConf,  # the lens BA (its camera_model is replaced by each rung's)
    ladder: Sequence[CameraModel] = LADDER,
) -> LensChoice:
    """Fit every model of `ladder` on 80 % of the tracks, score it on the held-out 20 %, climb; with several
    cameras, once per camera with the others at the top rung (module doc)."""
    camera_of_image = np.asarray(camera_of_image, np.int64)
    used = np.unique(camera_of_image)
    report: dict = {"rule": f"held-out {100 // HOLDOUT_EVERY} % of the tracks; a richer model needs a "
                            f"held-out error {100 * MIN_GAIN:g} % lower with paired z >= {MIN_Z:g} and a "
                            f"distortion change of {MIN_EFFECT_PX} px or more", "candidates": {}}  # fmt: skip
    problem = (tracks, list(image_names), list(cameras), camera_of_image, rotations, translations, conf, ladder)
    if used.size <= 1:
        return _select_one(*problem, report)
    del report["candidates"]
    return _select_per_camera(*problem, report)


def _select_one(tracks, image_names, cameras, camera_of_image, rotations, translations, conf, ladder,
                report) -> LensChoice:
    """One ladder for all cameras: every rung fitted with every camera at that model."""
    fit_tracks, held = split_tracks(tracks)
    fits: dict[CameraModel, Scene] = {}
    heldout: dict[CameraModel, dict] = {}
    for model in ladder:
        entry = report["candidates"].setdefault(model.value, {})
        fit = _try_fit(fit_tracks, held, image_names, cameras, camera_of_image, rotations, translations,
                       replace(conf, camera_model=model), entry)  # fmt: skip
        if fit is not None:
            fits[model], heldout[model] = fit
    if not fits:
        return LensChoice(models=(CameraModel.SIMPLE_PINHOLE,) * len(cameras), cameras=tuple(cameras), fit=None,
                          report={**report, "chosen": "none"})  # fmt: skip
    common = _common(heldout)
    report["heldout_observations"] = {"total": held.num_observations, "common": len(common)}
    for model, errors in heldout.items():
        entry = report["candidates"][model.value]
        entry["heldout_error_px"] = _mean_error(errors, common)
        entry["heldout_kept"] = len(errors) / max(held.num_observations, 1)
    ordered = [m for m in ladder if m in fits]
    chosen = _climb(ordered, fits, heldout, common, _track_of(held, image_names),
                    image_names[0], report["candidates"])  # fmt: skip
    logger.info("lens: %s chosen (held-out error px: %s)", chosen.value, {
        m: round(e.get("heldout_error_px", float("nan")), 4) for m, e in report["candidates"].items()})
    return LensChoice(models=(chosen,) * len(cameras), cameras=tuple(fits[chosen].cameras), fit=fits[chosen],
                      report=report)  # fmt: skip


def _select_per_camera(tracks, image_names, cameras, camera_of_image, rotations, translations, conf, ladder,
                       report) -> LensChoice:
    """A ladder per camera: camera g's rung m is fitted with every other camera at the top rung, on the
    tracks that g's images see, and scored on g's held-out observations (module doc)."""
    fit_tracks, held = split_tracks(tracks)
    top = ladder[-1]
    report["others_at"] = top.value
    track_of = _track_of(held, image_names)
    models, report["cameras"] = [], []
    for g in range(len(cameras)):
        group = [image_names[i] for i in np.flatnonzero(camera_of_image == g)]
        if not group:
            models.append(ladder[0])
            continue
        fits, heldout, entries = {}, {}, {}
        for model in ladder:
            entries[model.value] = entry = {}
            rung = [top] * len(cameras)
            rung[g] = model
            one = _fit_one_camera(fit_tracks, held, image_names, cameras, camera_of_image, rotations, translations,
                                  g, rung, conf, entry)  # fmt: skip
            if one is not None:
                fits[model], heldout[model] = one
                entry["distortion"] = list(_camera_of(fits[model], group[0]).distortion)
        group_set = set(group)
        heldout = {m: {k: e for k, e in errors.items() if k[0] in group_set} for m, errors in heldout.items()}
        common = _common(heldout)
        for model, errors in heldout.items():
            entries[model.value]["heldout_error_px"] = _mean_error(errors, common)
        ordered = [m for m in ladder if m in fits]
        chosen = _climb(ordered, fits, heldout, common, track_of, group[0], entries) if common else ladder[0]
        models.append(chosen)
        report["cameras"].append({"camera": g, "images": len(group), "first_image": group[0],
                                  "heldout_observations": len(common), "chosen": lens_name(chosen),
                                  "candidates": entries})  # fmt: skip
    logger.info("lens per camera: %s", [m.value for m in models])
    if not any(lens_name(m) != "none" for m in models):
        return LensChoice(models=tuple(models), cameras=tuple(cameras), fit=None, report=report)
    mixed: dict = {}
    fit = _try_fit(fit_tracks, held, image_names, cameras, camera_of_image, rotations, translations, conf, mixed,
                   camera_models=models)  # fmt: skip
    report["mixed"] = mixed
    if fit is None:
        logger.warning("lens: the fit with a model per camera failed (%s); cameras stay pinhole", mixed["failed"])
        return LensChoice(models=(CameraModel.SIMPLE_PINHOLE,) * len(cameras), cameras=tuple(cameras), fit=None,
                          report=report)  # fmt: skip
    mixed["heldout_error_px"] = _mean_error(fit[1], list(fit[1]))
    chosen_cameras = tuple(_camera_of(fit[0], image_names[int(np.flatnonzero(camera_of_image == c)[0])])
                           if (camera_of_image == c).any() else cam for c, cam in enumerate(cameras))  # fmt: skip
    return LensChoice(models=tuple(models), cameras=chosen_cameras, fit=fit[0], report=report)


def _try_fit(fit_tracks, held, image_names, cameras, camera_of_image, rotations, translations, conf, entry,
             camera_models=None, held_names=None) -> tuple[Scene, dict] | None:
    """(the lens BA on `fit_tracks`, its held-out errors), or None when it fails (said in `entry`);
    `entry` gets fit_error_px, distortion and heldout_kept. `held` indexes `held_names` (default
    `image_names`); its observations in images outside the fit are left out."""
    try:
        fit = refine_scene(fit_tracks, list(image_names), list(cameras), camera_of_image, rotations, translations,
                           conf, camera_models=camera_models)  # fmt: skip
        if fit.unregistered:
            raise ReconstructionError(f"lost images {list(fit.unregistered)}")
        errors = _heldout_errors(fit, held, held_names or image_names, conf)
    except ReconstructionError as error:
        logger.info("lens %s: no fit (%s)", camera_models or conf.camera_model.value, error)
        entry["failed"] = str(error)
        return None
    entry.update(fit_error_px=fit.info["mean_reproj_error_after"],
                 distortion=[list(c.distortion) for c in fit.cameras],
                 heldout_kept=len(errors) / max(held.num_observations, 1))  # fmt: skip
    return fit, errors


def _fit_one_camera(fit_tracks, held, image_names, cameras, camera_of_image, rotations, translations, g, models,
                    conf, entry):
    """The lens BA with `models` (one per camera) on the tracks that camera `g`'s images see, all their
    images' poses and cameras refined: (that fit, its held-out errors on the held-out tracks of `g`'s
    images), or None."""
    images = np.flatnonzero(camera_of_image == g)
    sub_fit, sub_images = _touching(fit_tracks, images)
    sub_held, _ = _touching(held, images)
    cams, cam_of_sub = np.unique(camera_of_image[sub_images], return_inverse=True)
    remap = np.full(len(image_names), -1, np.int64)
    remap[sub_images] = np.arange(sub_images.size)
    return _try_fit(replace(sub_fit, obs_image=remap[sub_fit.obs_image]), sub_held,
                    [image_names[i] for i in sub_images], [cameras[c] for c in cams], cam_of_sub,
                    rotations[sub_images], translations[sub_images], conf, entry,
                    camera_models=[models[c] for c in cams], held_names=image_names)  # fmt: skip


def _touching(tracks: Tracks, images: np.ndarray) -> tuple[Tracks, np.ndarray]:
    """(the tracks with an observation in `images`, renumbered from 0; the images those tracks see)."""
    seen = np.zeros(tracks.num_tracks, bool)
    seen[tracks.obs_track[np.isin(tracks.obs_image, images)]] = True
    mask = seen[tracks.obs_track]
    ids, obs_track = np.unique(tracks.obs_track[mask], return_inverse=True)
    sub = Tracks(obs_track=obs_track.astype(np.int64), obs_image=tracks.obs_image[mask],
                 obs_keypoint=tracks.obs_keypoint[mask], obs_xy=tracks.obs_xy[mask], num_tracks=int(ids.size))
    return sub, np.unique(sub.obs_image)


def _track_of(held: Tracks, image_names: Sequence[str]) -> dict:
    """{(image, x, y): held-out track} of every held-out observation."""
    names = [image_names[i] for i in held.obs_image.tolist()]
    return {(n, x, y): t for n, (x, y), t in zip(names, held.obs_xy.tolist(), held.obs_track.tolist())}


def _common(heldout: dict) -> list:
    """The held-out observations every candidate kept (sorted)."""
    return sorted(set.intersection(*(set(e) for e in heldout.values()))) if heldout else []


def _climb(ordered: Sequence[CameraModel], fits: dict, heldout: dict, keys: Sequence[tuple], track_of: dict,
           image: str, entries: dict) -> CameraModel:
    """The ladder climb of the camera that sees `image`, scored on the held-out observations `keys`; writes
    effect_px, gain, z and compared_with into ``entries[model]`` (which holds heldout_error_px on `keys`)."""
    chosen = ordered[0]
    for model in ordered[1:]:
        entry, best = entries[model.value], entries[chosen.value]
        entry["effect_px"] = distortion_difference(_camera_of(fits[model], image), _camera_of(fits[chosen], image))
        gain = 1.0 - entry["heldout_error_px"] / best["heldout_error_px"] if best["heldout_error_px"] > 0 else 0.0
        z = _paired_z(heldout[chosen], heldout[model], keys, track_of)
        entry.update(gain=gain, z=z, compared_with=chosen.value)
        if gain >= MIN_GAIN and z >= MIN_Z and entry["effect_px"] >= MIN_EFFECT_PX:
            chosen = model
    return chosen


def _mean_error(errors: dict, keys: Sequence[tuple]) -> float:
    return float(np.mean([errors[k] for k in keys])) if len(keys) else float("inf")


def _camera_of(scene: Scene, image: str) -> Camera:
    return scene.cameras[int(scene.camera_of_image[scene.image_names.index(image)])]


def lens_name(model: CameraModel) -> str:
    """The run.json name of a chosen model: "none" for pinhole, else the lowercase COLMAP name."""
    return "none" if model in (CameraModel.SIMPLE_PINHOLE, CameraModel.PINHOLE) else model.value.lower()
