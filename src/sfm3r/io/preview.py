"""A PNG preview of a reconstruction: cameras and points seen from above, for a quick glance.

"Above" is the direction the cameras agree is up: the mean of their -y axes (OpenCV y points down), so
a scene shot by upright photographers is drawn as a floor plan whatever the world frame.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from sfm3r.io.atomic import write_bytes_atomic
from sfm3r.types import Scene

_MAX_POINTS = 50_000  # subsample the cloud beyond this; a preview needs no more


def _top_view_basis(scene: Scene) -> np.ndarray:
    """(3, 3) rows: two in-plane axes and the up axis, from the cameras' mean up and viewing directions."""
    up = -scene.rotations[:, 1, :].mean(axis=0)  # camera y axes in world coordinates, negated
    if np.linalg.norm(up) < 1e-6:
        up = np.array([0.0, 0.0, 1.0])
    up /= np.linalg.norm(up)
    forward = scene.rotations[:, 2, :].mean(axis=0)
    forward -= forward.dot(up) * up
    if np.linalg.norm(forward) < 1e-6:  # cameras looking straight down: any perpendicular will do
        forward = np.cross(up, [1.0, 0.0, 0.0] if abs(up[0]) < 0.9 else [0.0, 1.0, 0.0])
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    return np.stack([right, forward, up])


def write_preview(scene: Scene, path: Path, title: str = "") -> Path:
    """Draw the top view of `scene` (points coloured, cameras as red arrows) into the PNG `path`."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    basis = _top_view_basis(scene)
    centers = scene.camera_centers() @ basis.T  # (N, 3)
    directions = scene.rotations[:, 2, :] @ basis.T  # (N, 3) viewing directions
    points = scene.points_xyz
    colors = scene.points_rgb
    if len(points) > _MAX_POINTS:
        keep = np.random.default_rng(0).choice(len(points), _MAX_POINTS, replace=False)
        points, colors = points[keep], colors[keep]
    points = points @ basis.T

    fig, ax = plt.subplots(figsize=(8, 8), dpi=100)
    if len(points):
        # Robust limits: the cameras plus the central 98 % of the points, so far outliers don't shrink the view.
        low = np.percentile(points[:, :2], 1, axis=0)
        high = np.percentile(points[:, :2], 99, axis=0)
        ax.scatter(points[:, 0], points[:, 1], s=1, c=colors / 255.0, linewidths=0)
    else:
        low = high = centers[:, :2].mean(axis=0)
    low = np.minimum(low, centers[:, :2].min(axis=0))
    high = np.maximum(high, centers[:, :2].max(axis=0))
    extent = float(max(high - low)) or 1.0
    arrow = 0.05 * extent
    ax.quiver(
        centers[:, 0], centers[:, 1], directions[:, 0] * arrow, directions[:, 1] * arrow,
        color="red", angles="xy", scale_units="xy", scale=1, width=0.004,
    )
    ax.scatter(centers[:, 0], centers[:, 1], s=12, c="red")
    margin = 0.05 * extent
    ax.set_xlim(low[0] - margin, high[0] + margin)
    ax.set_ylim(low[1] - margin, high[1] + margin)
    ax.set_aspect("equal")
    ax.set_title(title or f"{scene.num_images} cameras, {scene.num_points} points (top view)")
    ax.set_xticks([])
    ax.set_yticks([])
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", bbox_inches="tight")
    finally:
        plt.close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, buffer.getvalue())
    return path
