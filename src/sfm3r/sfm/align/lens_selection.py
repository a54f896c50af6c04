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

__all__ = ["LADDER", "LensChoice", "distortion_difference", "select_lens", "split_tracks"]

LADDER = (CameraModel.SIMPLE_PINHOLE, CameraModel.SIMPLE_RADIAL, CameraModel.RADIAL, CameraModel.OPENCV)
HOLDOUT_EVERY = 5  # every 5th track is held out
MIN_GAIN = 0.01  # a richer model must lower the held-out error by 1 % ...
MIN_Z = 3.0  # ... significantly (paired z over the held-out tracks) ...
MIN_EFFECT_PX = 0.5  # ... and change the distortion by at least this much somewhere in the image
_GRID = 9  # effect measured on a _GRID x _GRID grid of image points, corners included


@dataclass(frozen=True, eq=False)
class LensChoice:
    model: CameraModel  # the chosen model (SIMPLE_PINHOLE = no distortion)
    fit: Scene | None  # the chosen model's fit on the 80 % of the tracks (None when every fit failed)
    report: dict  # per candidate: fit_error_px, heldout_error_px, heldout_kept, effect_px, distortion; the rule


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
    camera_of_image: np.ndarray,  # (N,)
    rotations: np.ndarray,  # (N, 3, 3) cam_from_world
    translations: np.ndarray,  # (N, 3)
    conf: BundleAdjustmentConf,  # the lens BA (its camera_model is replaced by each rung's)
    ladder: Sequence[CameraModel] = LADDER,
) -> LensChoice:
    """Fit every model of `ladder` on 80 % of the tracks, score it on the held-out 20 %, climb (module doc)."""
    fit_tracks, held = split_tracks(tracks)
    fits: dict[CameraModel, Scene] = {}
    heldout: dict[CameraModel, dict] = {}
    report: dict = {"rule": f"held-out {100 // HOLDOUT_EVERY} % of the tracks; a richer model needs a "
                            f"held-out error {100 * MIN_GAIN:g} % lower with paired z >= {MIN_Z:g} and a "
                            f"distortion change of {MIN_EFFECT_PX} px or more", "candidates": {}}  # fmt: skip
    for model in ladder:
        entry = report["candidates"].setdefault(model.value, {})
        try:
            fit = refine_scene(fit_tracks, list(image_names), list(cameras), camera_of_image, rotations,
                               translations, replace(conf, camera_model=model))  # fmt: skip
            if fit.unregistered:
                raise ReconstructionError(f"lost images {list(fit.unregistered)}")
            errors = _heldout_errors(fit, held, image_names, conf)
        except ReconstructionError as error:
            logger.info("lens %s: no fit (%s)", model.value, error)
            entry["failed"] = str(error)
            continue
        fits[model], heldout[model] = fit, errors
        entry.update(fit_error_px=fit.info["mean_reproj_error_after"],
                     distortion=[list(c.distortion) for c in fit.cameras])  # fmt: skip
    if not fits:
        return LensChoice(model=CameraModel.SIMPLE_PINHOLE, fit=None, report={**report, "chosen": "none"})
    common = sorted(set.intersection(*(set(e) for e in heldout.values())))
    names = [image_names[i] for i in held.obs_image.tolist()]
    track_of = {(n, x, y): t for n, (x, y), t in zip(names, held.obs_xy.tolist(), held.obs_track.tolist())}
    total = len(held.obs_track)
    report["heldout_observations"] = {"total": total, "common": len(common)}
    for model, errors in heldout.items():
        entry = report["candidates"][model.value]
        entry["heldout_error_px"] = float(np.mean([errors[k] for k in common])) if common else float("inf")
        entry["heldout_kept"] = len(errors) / max(total, 1)
    chosen = None
    for model in ladder:
        if model not in fits:
            continue
        entry = report["candidates"][model.value]
        if chosen is None:
            chosen = model
            continue
        best = report["candidates"][chosen.value]
        effect = max(distortion_difference(a, b) for a, b in zip(fits[model].cameras, fits[chosen].cameras))
        entry["effect_px"] = effect
        gain = 1.0 - entry["heldout_error_px"] / best["heldout_error_px"] if best["heldout_error_px"] > 0 else 0.0
        z = _paired_z(heldout[chosen], heldout[model], common, track_of)
        entry.update(gain=gain, z=z, compared_with=chosen.value)
        if gain >= MIN_GAIN and z >= MIN_Z and effect >= MIN_EFFECT_PX:
            chosen = model
    logger.info("lens: %s chosen (held-out error px: %s)", chosen.value, {
        m: round(e.get("heldout_error_px", float("nan")), 4) for m, e in report["candidates"].items()})
    return LensChoice(model=chosen, fit=fits[chosen], report=report)
