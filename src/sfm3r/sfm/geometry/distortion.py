"""Lens distortion of a Camera (SIMPLE_RADIAL, RADIAL, OPENCV: COLMAP's models, evaluated by pycolmap).

The alignment works on pinhole pixels: keypoints of a camera with distortion are first *undistorted*
(pixel -> ray -> pixel of the same camera without distortion, same fx, fy, cx, cy), and the model's
observations are *distorted* back to the photo's pixels at the end.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sfm3r.types import Camera

if TYPE_CHECKING:  # imported where used: pinhole cameras never need it (a cached rerun saves ~0.1 s)
    import pycolmap

__all__ = ["to_pycolmap", "undistort_pixels", "distort_pixels"]


def to_pycolmap(camera: Camera) -> pycolmap.Camera:
    """The pycolmap camera of `camera` (its COLMAP model and parameters)."""
    import pycolmap

    model, params = camera.colmap_model()
    return pycolmap.Camera(model=model, width=int(camera.width), height=int(camera.height), params=params)


def undistort_pixels(xy: np.ndarray, camera: Camera, target: Camera | None = None) -> np.ndarray:
    """(K, 2) photo pixels of `camera` -> (K, 2) pixels of the pinhole `target` seeing the same rays
    (default: `camera` without its distortion)."""
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    target = target or camera
    if xy.size == 0 or not camera.has_distortion and target == camera:
        return xy.copy()
    normalised = to_pycolmap(camera).cam_from_img(xy)  # (K, 2): x/z, y/z
    return normalised * [target.fx, target.fy] + [target.cx, target.cy]


def distort_pixels(xy: np.ndarray, camera: Camera) -> np.ndarray:
    """Inverse of :func:`undistort_pixels` with the default target: (K, 2) pinhole pixels of `camera` ->
    (K, 2) photo pixels through its lens."""
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    if xy.size == 0 or not camera.has_distortion:
        return xy.copy()
    rays = np.c_[(xy - [camera.cx, camera.cy]) / [camera.fx, camera.fy], np.ones(len(xy))]
    return to_pycolmap(camera).img_from_cam(rays)
