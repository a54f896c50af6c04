"""Point colours: the mean of the image pixels each 3D point is observed at."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from sfm3r.types import Scene


def color_points(scene: Scene, image_paths: Mapping[str, Path], read_image: Callable[[Path], np.ndarray]) -> Scene:
    """A copy of `scene` whose `points_rgb` average the observed pixels over all observations (128 grey for a
    point without any).

    Reads each registered image with observations once. Observation xy are COLMAP pixels (centre of pixel (0, 0)
    at 0.5), so the pixel holding xy is floor(xy). The observations are grouped by image once and the sums
    taken by one bincount per channel (exact: sums of integers in float64), so the bookkeeping is linear in
    the observations, not images x observations.
    """
    obs_image = np.asarray(scene.obs_image, dtype=np.int64)
    obs_point = np.asarray(scene.obs_point, dtype=np.int64)
    pixel = np.floor(np.asarray(scene.obs_xy, dtype=np.float64)).astype(np.int64)  # (K, 2) x, y
    order = np.argsort(obs_image, kind="stable")
    bounds = np.searchsorted(obs_image[order], np.arange(scene.num_images + 1))  # image k: order[bounds[k]:bounds[k+1]]
    samples = np.zeros((len(obs_point), 3), np.uint8)  # (K, 3) the pixel each observation sees
    for k, name in enumerate(scene.image_names):
        at = order[bounds[k] : bounds[k + 1]]
        if at.size == 0:
            continue
        rgb = read_image(image_paths[name])  # (H, W, 3) uint8
        height, width = rgb.shape[:2]
        samples[at] = rgb[np.clip(pixel[at, 1], 0, height - 1), np.clip(pixel[at, 0], 0, width - 1)]
    counts = np.bincount(obs_point, minlength=scene.num_points)  # (P,)
    sums = np.stack(
        [np.bincount(obs_point, weights=samples[:, c], minlength=scene.num_points) for c in range(3)], axis=1
    )  # (P, 3) float64
    colors = np.full((scene.num_points, 3), 128, np.uint8)
    seen = counts > 0
    colors[seen] = np.clip(np.round(sums[seen] / counts[seen, None]), 0, 255).astype(np.uint8)
    return dataclasses.replace(scene, points_rgb=colors)
