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
_MAX_LABELS = 40  # beyond this many cameras, label every k-th so that names stay readable


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
    ax.set_xlabel("right (model units)")
    ax.set_ylabel("forward: mean viewing direction (model units)")
    ax.tick_params(labelsize=7)
    ax.grid(True, linewidth=0.3, alpha=0.5)
    _label_cameras(ax, scene.image_names, centers[:, :2], directions[:, :2], 0.015 * extent)
    _scale_bar(ax, extent)
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", bbox_inches="tight")
    finally:
        plt.close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, buffer.getvalue())
    return path


def _label_cameras(ax, names, centers: np.ndarray, directions: np.ndarray, offset: float) -> None:
    """Image names beside the cameras (every k-th beyond _MAX_LABELS), behind the viewing direction."""
    step = max(1, int(np.ceil(len(names) / _MAX_LABELS)))
    for k in range(0, len(names), step):
        d = directions[k] / (np.linalg.norm(directions[k]) or 1.0)
        x, y = centers[k] - d * offset * 2
        ax.annotate(names[k], (x, y), fontsize=6, color="darkred", ha="center", va="center")


def _scale_bar(ax, extent: float) -> None:
    """A bar of a round length (1, 2 or 5 x 10^k model units) about a fifth of the view, bottom left."""
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    target = extent / 5
    power = 10 ** np.floor(np.log10(target))
    length = max(m * power for m in (1, 2, 5) if m * power <= target)
    bar = AnchoredSizeBar(ax.transData, length, f"{length:g} units", "lower left", pad=0.5, color="black",
                          frameon=True, size_vertical=extent / 300, fontproperties={"size": 7})  # fmt: skip
    ax.add_artist(bar)
