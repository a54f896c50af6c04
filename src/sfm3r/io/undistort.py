"""Undistortion for Gaussian Splatting trainers: distorted cameras -> PINHOLE cameras, images and observations.

graphdeco 3DGS, gsplat's COLMAP loader and nerfstudio's splatfacto expect pinhole images, so cameras with
lens distortion (SIMPLE_RADIAL, RADIAL, OPENCV) are undistorted as COLMAP's ``image_undistorter`` does
(pycolmap ``undistort_camera`` / ``undistort_image`` with their defaults): the output size is chosen so
that no black borders appear (``blank_pixels = 0``; the image grows or shrinks by at most 2x, so some
border pixels of a strongly distorted photo may fall outside), the focal lengths are kept, and the
principal point moves with the size change. Resampling is bilinear.

The poses and 3D points are unchanged; each observation maps through the distorted camera's rays into
the new pinhole camera. Observations that leave the new image are dropped, and a point left with fewer
than 2 observations is removed.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from sfm3r.sfm.geometry.distortion import to_pycolmap, undistort_pixels
from sfm3r.types import Camera, Scene

if TYPE_CHECKING:  # imported where used: an export of pinhole cameras needs no pycolmap (~0.1 s)
    import pycolmap

__all__ = ["undistorted_camera", "undistort_rgb", "undistort_scene"]


def _options() -> pycolmap.UndistortCameraOptions:
    import pycolmap

    return pycolmap.UndistortCameraOptions()  # COLMAP's image_undistorter defaults (no black borders)


def undistorted_camera(camera: Camera) -> Camera:
    """The PINHOLE camera of `camera`'s undistorted images (itself when it has no distortion)."""
    if not camera.has_distortion:
        return camera
    import pycolmap

    out = pycolmap.undistort_camera(_options(), to_pycolmap(camera))
    fx, fy, cx, cy = (float(v) for v in out.params)
    return Camera(int(out.width), int(out.height), fx, fy, cx, cy, model="PINHOLE")


def undistort_rgb(rgb: np.ndarray, camera: Camera) -> np.ndarray:
    """(H, W, 3) uint8 image of the distorted `camera` -> the image of :func:`undistorted_camera`."""
    import pycolmap

    bitmap = pycolmap.Bitmap.from_array(np.ascontiguousarray(rgb, dtype=np.uint8))
    out, _ = pycolmap.undistort_image(_options(), bitmap, to_pycolmap(camera))
    return out.to_array().reshape(out.height, out.width, -1)[..., :3]


def undistort_scene(scene: Scene) -> tuple[Scene, dict[int, Camera]]:
    """`scene` with every distorted camera replaced by its undistorted PINHOLE camera.

    Returns:
        (the new Scene, {camera index: the distorted Camera it replaced}); the second is empty (and the
        scene returned as is) when no camera has distortion.
    """
    distorted = {c: cam for c, cam in enumerate(scene.cameras) if cam.has_distortion}
    if not distorted:
        return scene, {}
    cameras = list(scene.cameras)
    obs_xy = np.asarray(scene.obs_xy, np.float64).copy()
    obs_image = np.asarray(scene.obs_image, np.int64)
    obs_camera = np.asarray(scene.camera_of_image, np.int64)[obs_image]  # (K,)
    keep = np.ones(obs_xy.shape[0], bool)
    for c, camera in distorted.items():
        target = cameras[c] = undistorted_camera(camera)
        sel = obs_camera == c
        xy = undistort_pixels(obs_xy[sel], camera, target)
        inside = np.isfinite(xy).all(1) & (xy >= 0).all(1) & (xy <= [target.width, target.height]).all(1)
        obs_xy[sel] = np.where(np.isfinite(xy), xy, 0.0)
        keep[np.flatnonzero(sel)[~inside]] = False
    obs_point = np.asarray(scene.obs_point, np.int64)
    before = np.bincount(obs_point, minlength=scene.num_points)
    after = np.bincount(obs_point[keep], minlength=scene.num_points)
    keep_point = ~((after < before) & (after < 2))  # (P,)
    keep &= keep_point[obs_point]
    renumber = np.cumsum(keep_point) - 1
    out = dataclasses.replace(
        scene,
        cameras=tuple(cameras),
        points_xyz=scene.points_xyz[keep_point],
        points_rgb=scene.points_rgb[keep_point],
        points_error=scene.points_error[keep_point],
        obs_point=renumber[obs_point[keep]],
        obs_image=obs_image[keep],
        obs_xy=obs_xy[keep],
    )
    return out, distorted
