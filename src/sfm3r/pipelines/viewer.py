"""`sfm3r view`: a model in the browser (viser): camera frustums with thumbnails, coloured points, errors.

Cameras follow OpenCV axes (as viser's frustums do), so a pose goes in as world_from_cam: rotation Rᵀ
(as a w, x, y, z quaternion, viser's order) at the camera centre -Rᵀt. Points and cameras can be
coloured by their reprojection error (per point: COLMAP's track error; per camera: the mean over its
observations). Clicking a camera shows its image and numbers in the side panel.

viser is an optional extra (`pip install "sfm3r[viewer]"`): it is imported only by `serve`/`build_view`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sfm3r.errors import InputError
from sfm3r.pipelines.inspect import ModelStats

logger = logging.getLogger(__name__)

_THUMBNAIL_SIDE = 160  # px, long side of the frustum images
_PANEL_SIDE = 480  # px, long side of the image shown on click
_MAX_POINTS = 500_000  # subsampled beyond this: the browser stays responsive
_ERROR_CAP_PX = 4.0  # errors at or above this get the top colour of the scale

VIEWER_MISSING = (
    "the 3D viewer needs the optional package viser: pip install 'sfm3r[viewer]' (or pip install viser)"
)


def import_viser():
    """viser, or an InputError saying how to install it."""
    try:
        import viser
    except ImportError:
        raise InputError(VIEWER_MISSING) from None
    return viser


def rotation_to_wxyz(R: np.ndarray) -> np.ndarray:  # (3, 3) -> (4,) w, x, y, z
    """Unit quaternion (w first) of a rotation matrix (Shepperd's method, stable for all angles)."""
    m = np.asarray(R, np.float64)
    trace = np.trace(m)
    if trace > 0:
        s = 2.0 * math.sqrt(trace + 1.0)
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = [(m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s]
    else:
        s = 2.0 * math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s]
    q = np.array(q)
    return q / np.linalg.norm(q) * (1 if q[0] >= 0 else -1)


def error_colors(errors: np.ndarray, cap: float = _ERROR_CAP_PX) -> np.ndarray:  # (N,) px -> (N, 3) uint8
    """Green (0 px) through yellow to red (>= cap px); grey where unknown (NaN)."""
    t = np.clip(np.nan_to_num(errors, nan=0.0) / cap, 0.0, 1.0)
    rgb = np.stack([np.clip(2 * t, 0, 1), np.clip(2 * (1 - t), 0, 1), np.zeros_like(t)], axis=1)
    rgb[~np.isfinite(errors)] = 0.6
    return (255 * rgb).astype(np.uint8)


@dataclass
class ViewScene:
    """What build_view put into the server (for the panel callbacks and for tests)."""

    server: Any  # viser.ViserServer
    frustums: dict[str, Any] = field(default_factory=dict)  # image name -> CameraFrustumHandle
    points: Any = None  # PointCloudHandle or None
    num_points_shown: int = 0
    selected: list[str] = field(default_factory=list)  # image names clicked, in order
    show: Callable[[str], None] | None = None  # what a click on a camera calls (its image name)
    details: Any = None  # the panel's markdown about the selected camera


def _find_image(images_dir: Path | None, name: str) -> Path | None:
    if images_dir is None:
        return None
    path = images_dir / name
    if path.is_file():
        return path
    flat = images_dir / name.replace("/", "_").replace("\\", "_")  # the run folder's flat export names
    return flat if flat.is_file() else None


def _load_rgb(path: Path | None, side: int) -> np.ndarray | None:  # -> (h, w, 3) uint8
    if path is None:
        return None
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image).convert("RGB")
            image.thumbnail((side, side))
            return np.asarray(image)
    except OSError as error:
        logger.warning("viewer: cannot read %s (%s); the camera is drawn without its image", path, error)
        return None


def default_images_dir(model: Path, stats: ModelStats) -> Path | None:
    """The images beside a run's model (OUT/images for OUT/sparse/0), if there."""
    folder = stats.folder
    for candidate in (Path(model) / "images", folder.parent.parent / "images", folder.parent / "images"):
        if candidate.is_dir():
            return candidate
    return None


def build_view(server, stats: ModelStats, images_dir: Path | None = None) -> ViewScene:
    """Fill `server` (a viser.ViserServer) with the model of `stats` and its side panel."""
    scene = stats.scene
    view = ViewScene(server=server)
    centres = scene.camera_centers()
    spread = float(np.median(np.linalg.norm(centres - np.median(centres, axis=0), axis=1))) if len(centres) else 1.0
    if len(scene.points_xyz):
        depth = float(np.median(np.linalg.norm(scene.points_xyz - centres.mean(axis=0), axis=1)))
        spread = max(spread, 0.2 * depth)
    frustum_scale = 0.15 * (spread or 1.0)
    per_image = {row.name: row for row in stats.images}
    image_error = np.array([per_image[name].mean_error_px for name in scene.image_names])

    up = _up_direction(scene)
    server.scene.set_up_direction(up)
    _initial_camera(server, scene, centres, np.array(up))
    rgb = scene.points_rgb
    keep = np.arange(scene.num_points)
    if scene.num_points > _MAX_POINTS:
        keep = np.sort(np.random.default_rng(0).choice(scene.num_points, _MAX_POINTS, replace=False))
    point_size = 0.004 * (spread or 1.0) * 4
    if len(keep):
        view.points = server.scene.add_point_cloud(
            "/points", scene.points_xyz[keep].astype(np.float32), rgb[keep], point_size=point_size, point_shape="rounded"
        )
        view.num_points_shown = int(len(keep))

    def add_frustums(colour_of: Callable[[int], tuple[int, int, int]]) -> None:
        for k, name in enumerate(scene.image_names):
            cam = scene.cameras[scene.camera_of_image[k]]
            R = scene.rotations[k]
            handle = server.scene.add_camera_frustum(
                f"/cameras/{k:05d}",
                fov=2 * math.atan2(cam.height / 2, cam.fy),
                aspect=cam.width / cam.height,
                scale=frustum_scale,
                thickness=2.5,
                thickness_units="screen",  # px: visible at any model scale
                color=colour_of(k),
                image=thumbnails.get(name),
                wxyz=rotation_to_wxyz(R.T),
                position=centres[k],
            )
            handle.on_click(lambda event, name=name: show(name))
            view.frustums[name] = handle

    thumbnails = {name: _load_rgb(_find_image(images_dir, name), _THUMBNAIL_SIDE) for name in scene.image_names}
    thumbnails = {name: image for name, image in thumbnails.items() if image is not None}

    # --- side panel
    gui = server.gui
    registered = stats.num_registered
    finite = scene.points_error[np.isfinite(scene.points_error)]
    error_text = f"mean reprojection error {finite.mean():.2f} px" if finite.size else "no point errors"
    shown = f" (showing {len(keep)})" if len(keep) < scene.num_points else ""
    gui.add_markdown(
        f"**{stats.folder}**  \n{registered} of {len(stats.images)} images registered · "
        f"{scene.num_points} points{shown} · {error_text}"
    )
    colour_by = gui.add_dropdown("Colour by", ("image colours", "reprojection error"), initial_value="image colours")
    gui.add_markdown(f"error scale: green 0 px → yellow {_ERROR_CAP_PX / 2:g} → red ≥ {_ERROR_CAP_PX:g} px")
    size = gui.add_slider("Point size", min=0.1, max=5.0, step=0.1, initial_value=1.0)
    unregistered = [row.name for row in stats.images if not row.registered]
    with gui.add_folder("Images", expand_by_default=False):
        gui.add_markdown("\n".join(
            f"- {row.name}: " + (f"{row.observations} obs, {row.mean_error_px:.2f} px" if row.registered else "**not registered**")
            for row in stats.images[:300]
        ) + (f"\n- … {len(stats.images) - 300} more" if len(stats.images) > 300 else ""))  # fmt: skip
    if unregistered:
        gui.add_markdown(f"**Not registered ({len(unregistered)})**: {', '.join(unregistered[:50])}")
    with gui.add_folder("Selected camera"):
        details = gui.add_markdown("Click a camera.")
        picture = gui.add_image(np.zeros((8, 8, 3), np.uint8), label="", visible=False)

    def show(name: str) -> None:
        view.selected.append(name)
        k = scene.image_names.index(name)
        cam = scene.cameras[scene.camera_of_image[k]]
        row = per_image[name]
        details.content = (
            f"**{name}**  \ncamera {int(scene.camera_of_image[k])}: {cam.width}x{cam.height}, "
            f"f {cam.fx:.1f}/{cam.fy:.1f} px, c ({cam.cx:.1f}, {cam.cy:.1f})  \n"
            f"{row.observations} observations · mean reprojection error {row.mean_error_px:.3f} px  \n"
            f"centre ({centres[k][0]:.3f}, {centres[k][1]:.3f}, {centres[k][2]:.3f})"
        )
        image = _load_rgb(_find_image(images_dir, name), _PANEL_SIDE)
        if image is not None:
            picture.image = image
            picture.visible = True
        else:
            picture.visible = False

    def recolour(_=None) -> None:
        by_error = colour_by.value == "reprojection error"
        if view.points is not None:
            view.points.colors = error_colors(scene.points_error[keep]) if by_error else rgb[keep]
        colours = error_colors(image_error) if by_error else None
        for k, name in enumerate(scene.image_names):
            view.frustums[name].color = tuple(int(c) for c in colours[k]) if by_error else (220, 40, 40)

    def resize(_=None) -> None:
        if view.points is not None:
            view.points.point_size = point_size * size.value

    add_frustums(lambda k: (220, 40, 40))
    view.show, view.details = show, details
    colour_by.on_update(recolour)
    size.on_update(resize)
    return view


def _up_direction(scene) -> tuple[float, float, float]:
    """The cameras' mean up (-y of OpenCV cameras), so the model stands upright in the browser."""
    if scene.num_images == 0:
        return (0.0, 0.0, 1.0)
    up = -scene.rotations[:, 1, :].mean(axis=0)
    norm = float(np.linalg.norm(up))
    return tuple(float(v) for v in (up / norm if norm > 1e-6 else np.array([0.0, 0.0, 1.0])))


def _initial_camera(server, scene, centres: np.ndarray, up: np.ndarray) -> None:
    """Open the page behind and above the cameras, looking at the middle of the points."""
    if not len(centres):
        return
    middle = centres.mean(axis=0)
    target = np.median(scene.points_xyz, axis=0) if scene.num_points else middle
    forward = scene.rotations[:, 2, :].mean(axis=0)
    forward /= np.linalg.norm(forward) or 1.0
    distance = max(float(np.linalg.norm(target - middle)), float(np.ptp(centres, axis=0).max()), 1e-3)
    server.initial_camera.position = tuple(middle - 0.8 * distance * forward + 0.5 * distance * up)
    server.initial_camera.look_at = tuple(target)
    server.initial_camera.up = tuple(up)


def serve(model: Path, images_dir: Path | None = None, host: str = "127.0.0.1", port: int = 8080):
    """Start a viser server showing `model` (a run folder or a COLMAP model folder); returns (server, view)."""
    from sfm3r.pipelines.inspect import model_stats

    viser = import_viser()
    stats = model_stats(model)
    if images_dir is None:
        images_dir = default_images_dir(model, stats)
    server = viser.ViserServer(host=host, port=port, verbose=False)
    view = build_view(server, stats, images_dir)
    return server, view
