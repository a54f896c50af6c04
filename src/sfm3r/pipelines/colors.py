"""Point colours: the mean of the image pixels each 3D point is observed at."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from sfm3r.types import Scene


def color_points(scene: Scene, image_paths: Mapping[str, Path], read_image: Callable[[Path], np.ndarray]) -> Scene:
    """A copy of `scene` whose `points_rgb` average the observed pixels over all observations.

    Reads each registered image once. Observation xy are COLMAP pixels (centre of pixel (0, 0) at 0.5), so the
    pixel holding xy is floor(xy).
    """
    num_points = scene.num_points
    sums = np.zeros((num_points, 3), np.float64)
    counts = np.zeros(num_points, np.int64)
    for k, name in enumerate(scene.image_names):
        at = np.flatnonzero(scene.obs_image == k)
        if at.size == 0:
            continue
        rgb = read_image(image_paths[name])  # (H, W, 3) uint8
        height, width = rgb.shape[:2]
        x = np.clip(np.floor(scene.obs_xy[at, 0]).astype(np.int64), 0, width - 1)
        y = np.clip(np.floor(scene.obs_xy[at, 1]).astype(np.int64), 0, height - 1)
        np.add.at(sums, scene.obs_point[at], rgb[y, x].astype(np.float64))
        np.add.at(counts, scene.obs_point[at], 1)
    colors = np.full((num_points, 3), 128, np.uint8)
    seen = counts > 0
    colors[seen] = np.clip(np.round(sums[seen] / counts[seen, None]), 0, 255).astype(np.uint8)
    return dataclasses.replace(scene, points_rgb=colors)
