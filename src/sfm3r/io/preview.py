"""A PNG preview of a reconstruction: cameras and points seen from above, for a quick glance.

"Above" is the direction the cameras agree is up: the mean of their -y axes (OpenCV y points down), so
a scene shot by upright photographers is drawn as a floor plan whatever the world frame.

Drawn with numpy and Pillow only (points scattered into an array, cameras, labels and the scale bar by
``ImageDraw``): a few tens of milliseconds, where matplotlib took about a second (half of it the import)
of a run that should be as fast as COLMAP. Layout of the image (PREVIEW_SIZE, width x height)::

    +----------------------------------+
    |              title               |  _TITLE_HEIGHT px
    +----------------------------------+
    |  right ->, forward (mean viewing |
    |  direction) ^ : the plot square, |  _PLOT_SIZE x _PLOT_SIZE px, equal scale on both axes
    |  points, cameras, names          |
    |  [scale bar]                     |
    +----------------------------------+
    |            axes caption          |  _CAPTION_HEIGHT px
    +----------------------------------+
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from sfm3r.io.atomic import write_bytes_atomic
from sfm3r.types import Scene

_MAX_POINTS = 100_000  # subsample the cloud beyond this; a preview needs no more
_MAX_LABELS = 40  # beyond this many cameras, label every k-th so that names stay readable
_PLOT_SIZE = 800  # px, the square plot
_TITLE_HEIGHT = 28  # px, the band above it
_CAPTION_HEIGHT = 18  # px, the band below it
PREVIEW_SIZE = (_PLOT_SIZE, _TITLE_HEIGHT + _PLOT_SIZE + _CAPTION_HEIGHT)  # (width, height) of the PNG
_MARGIN = 0.05  # of the extent, around the robust limits
_POINT_PX = 2  # points are drawn as squares this wide
_CAMERA = (220, 0, 0)  # cameras and their viewing-direction arrows
_LABEL = (139, 0, 0)  # matplotlib's "darkred", the camera names
_CAMERA_RADIUS_PX = 4
_ARROW = 0.05  # arrow length, fraction of the extent
_PNG_COMPRESS_LEVEL = 1  # a preview: speed over the last few kB


def _top_view_basis(scene: Scene) -> np.ndarray:
    """(3, 3) rows: two in-plane axes and the up axis, from the cameras' mean up and viewing directions."""
    up = -scene.rotations[:, 1, :].mean(axis=0) if scene.num_images else np.zeros(3)  # camera y axes, negated
    if np.linalg.norm(up) < 1e-6:
        up = np.array([0.0, 0.0, 1.0])
    up /= np.linalg.norm(up)
    forward = scene.rotations[:, 2, :].mean(axis=0) if scene.num_images else np.zeros(3)
    forward -= forward.dot(up) * up
    if np.linalg.norm(forward) < 1e-6:  # cameras looking straight down: any perpendicular will do
        forward = np.cross(up, [1.0, 0.0, 0.0] if abs(up[0]) < 0.9 else [0.0, 1.0, 0.0])
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    return np.stack([right, forward, up])


def _to_plane(xyz: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """(N, 3) world -> (N, 3) coordinates along the rows of `basis` (3, 3). einsum, not ``@``: OpenBLAS's
    threaded product of a (100k, 3) by a transposed (3, 3) took 70 ms on a busy 2-core machine, einsum 1.4 ms."""
    return np.einsum("nj,kj->nk", np.asarray(xyz, dtype=np.float64).reshape(-1, 3), basis)


@dataclasses.dataclass(frozen=True)
class TopView:
    """The map from world coordinates to preview pixels: x right, y down from the PNG's top-left corner (the title
    band included), Pillow's convention (pixel (i, j) is centred on (i, j))."""

    basis: np.ndarray  # (3, 3) rows: right, forward, up (world coordinates)
    center: np.ndarray  # (2,) right, forward: the model point drawn at the plot's centre
    scale: float  # pixels per model unit
    extent: float  # model units: the larger side of the robust limits (scale bar, arrow lengths)

    def to_plane(self, xyz: np.ndarray) -> np.ndarray:
        """(N, 3) world -> (N, 3) right, forward, up."""
        return _to_plane(xyz, self.basis)

    def plane_to_pixels(self, plane_xy: np.ndarray) -> np.ndarray:
        """(N, 2) right, forward -> (N, 2) float pixel coordinates of the PNG (x right, y down)."""
        offset = (np.asarray(plane_xy, dtype=np.float64).reshape(-1, 2) - self.center) * self.scale
        return np.stack([_PLOT_SIZE / 2 + offset[:, 0], _TITLE_HEIGHT + _PLOT_SIZE / 2 - offset[:, 1]], axis=1)

    def to_pixels(self, xyz: np.ndarray) -> np.ndarray:
        """(N, 3) world -> (N, 2) float pixel coordinates of the PNG."""
        return self.plane_to_pixels(self.to_plane(xyz)[:, :2])


def top_view(scene: Scene, points_xyz: np.ndarray | None = None) -> TopView:
    """The preview's projection of `scene`: the cameras and the central 98 % of the points (1-99 %
    percentiles per axis, so that far outliers don't shrink the view), plus a 5 % margin, fill the plot.

    Args:
        points_xyz: (P, 3) world points that set the limits; default ``scene.points_xyz``.
    """
    basis = _top_view_basis(scene)
    points = _to_plane(scene.points_xyz if points_xyz is None else points_xyz, basis)
    return _fit(basis, points[:, :2], _to_plane(scene.camera_centers(), basis)[:, :2])


def _fit(basis: np.ndarray, points: np.ndarray, centers: np.ndarray) -> TopView:
    """The TopView of `basis` framing `points` (P, 2) and camera `centers` (N, 2), both right, forward."""
    lows, highs = [], []
    if len(points):
        low, high = np.percentile(points, [1, 99], axis=0)
        lows.append(low)
        highs.append(high)
    if len(centers):
        lows.append(centers.min(axis=0))
        highs.append(centers.max(axis=0))
    low = np.min(lows, axis=0) if lows else np.zeros(2)
    high = np.max(highs, axis=0) if highs else np.zeros(2)
    extent = float(max(high - low)) or 1.0
    return TopView(basis, (low + high) / 2, _PLOT_SIZE / (extent * (1 + 2 * _MARGIN)), extent)


def write_preview(scene: Scene, path: Path, title: str = "") -> Path:
    """Draw the top view of `scene` (points coloured, cameras as red arrows) into the PNG `path`."""
    points, colors = scene.points_xyz, scene.points_rgb
    if len(points) > _MAX_POINTS:
        keep = np.sort(np.random.default_rng(0).choice(len(points), _MAX_POINTS, replace=False))
        points, colors = points[keep], colors[keep]
    basis = _top_view_basis(scene)
    plane_points = _to_plane(points, basis)  # (P, 3) right, forward, up
    plane_centers = _to_plane(scene.camera_centers(), basis)  # (N, 3)
    view = _fit(basis, plane_points[:, :2], plane_centers[:, :2])
    width, height = PREVIEW_SIZE
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    _draw_points(canvas, view, plane_points, colors)
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    centers = view.plane_to_pixels(plane_centers[:, :2])  # (N, 2) px
    directions = view.to_plane(scene.rotations[:, 2, :])[:, :2] * np.array([1.0, -1.0])  # (N, 2) in pixel axes
    _draw_cameras(draw, centers, directions, _ARROW * view.extent * view.scale)
    _label_cameras(draw, scene.image_names, centers, directions, 0.03 * view.extent * view.scale)
    _scale_bar(draw, view)
    draw.rectangle((0, _TITLE_HEIGHT, width - 1, _TITLE_HEIGHT + _PLOT_SIZE - 1), outline=(128, 128, 128))
    _text(draw, (width / 2, _TITLE_HEIGHT / 2), title or f"{scene.num_images} cameras, {scene.num_points} points "
          "(top view)", _font(15), (0, 0, 0))  # fmt: skip
    _text(draw, (width / 2, height - _CAPTION_HEIGHT / 2), "top view, model units: x right, y forward (the "
          "cameras' mean viewing direction), up = the cameras' mean up", _font(11), (96, 96, 96))  # fmt: skip
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=_PNG_COMPRESS_LEVEL)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, buffer.getvalue())
    return path


def _draw_points(canvas: np.ndarray, view: TopView, plane: np.ndarray, colors: np.ndarray) -> None:
    """Scatter points `plane` (P, 3: right, forward, up) with `colors` (P, 3) uint8 into `canvas` (H, W, 3)
    as _POINT_PX squares, lowest first (so that, seen from above, the highest point of a column shows).
    Squares not wholly inside the plot are left out."""
    if not len(plane):
        return
    order = np.argsort(plane[:, 2])
    corner = np.rint(view.plane_to_pixels(plane[order, :2]) - (_POINT_PX - 1) / 2)  # (P, 2) top-left pixel
    x, y = corner[:, 0], corner[:, 1]
    bottom = _TITLE_HEIGHT + _PLOT_SIZE - _POINT_PX  # the last row a square may start on
    inside = (x >= 0) & (x <= _PLOT_SIZE - _POINT_PX) & (y >= _TITLE_HEIGHT) & (y <= bottom)
    width = canvas.shape[1]
    first = (y[inside] * width + x[inside]).astype(np.int64)  # (P',) flat index of each square's corner
    colors = np.asarray(colors, dtype=np.uint8)[order[inside]]
    flat = canvas.reshape(-1, 3)
    for dy in range(_POINT_PX):
        for dx in range(_POINT_PX):
            flat[first + (dy * width + dx)] = colors  # later (higher) points overwrite


def _draw_cameras(draw: ImageDraw.ImageDraw, centers: np.ndarray, directions: np.ndarray, length: float) -> None:
    """A red dot at each centre (N, 2) px and an arrow of `length` px along its direction (N, 2, pixel axes)."""
    r = _CAMERA_RADIUS_PX
    for (x, y), d in zip(centers.tolist(), directions):
        norm = float(np.linalg.norm(d))
        if norm > 1e-9 and length >= 1:
            ux, uy = d / norm * length
            tip = (x + ux, y + uy)
            draw.line([(x, y), tip], fill=_CAMERA, width=2)
            head = min(8.0, 0.4 * length)  # arrow head: a triangle at the tip
            bx, by = tip[0] - ux / length * head, tip[1] - uy / length * head
            px, py = -uy / length * head * 0.5, ux / length * head * 0.5
            draw.polygon([tip, (bx + px, by + py), (bx - px, by - py)], fill=_CAMERA)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=_CAMERA)


def _label_cameras(
    draw: ImageDraw.ImageDraw, names: tuple[str, ...], centers: np.ndarray, directions: np.ndarray, offset: float
) -> None:
    """Image names beside the cameras (every k-th beyond _MAX_LABELS), behind the viewing direction."""
    font = _font(10)
    for k in labelled_cameras(len(names)):
        norm = float(np.linalg.norm(directions[k])) or 1.0
        x, y = centers[k] - directions[k] / norm * max(offset, 2 * _CAMERA_RADIUS_PX + 6)
        _text(draw, (float(x), float(y)), names[k], font, _LABEL)


def labelled_cameras(count: int) -> range:
    """The indices of the cameras whose name is drawn: all up to _MAX_LABELS, else every k-th."""
    return range(0, count, max(1, int(np.ceil(count / _MAX_LABELS))))


def scale_bar_length(extent: float) -> float:
    """A round length (1, 2 or 5 x 10^k model units) of at most a fifth of `extent`."""
    target = extent / 5
    power = 10 ** np.floor(np.log10(target))
    return float(max(m * power for m in (1, 2, 5) if m * power <= target))


def _scale_bar(draw: ImageDraw.ImageDraw, view: TopView) -> None:
    """A bar of scale_bar_length() with its length written above, bottom left of the plot, on a white box."""
    length = scale_bar_length(view.extent)
    pixels = length * view.scale
    font = _font(11)
    label = f"{length:g} units"
    left, bottom = 14, _TITLE_HEIGHT + _PLOT_SIZE - 14
    text_width = draw.textlength(label, font=font)
    draw.rectangle((left - 6, bottom - 28, left + max(pixels, text_width) + 6, bottom + 6), fill=(255, 255, 255),
                   outline=(160, 160, 160))  # fmt: skip
    draw.rectangle((left, bottom - 3, left + pixels, bottom), fill=(0, 0, 0))
    _text(draw, (left + pixels / 2, bottom - 15), label, font, (0, 0, 0))


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's built-in font at `size` px (FreeType), or its fixed bitmap font where FreeType is missing."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1 (no size), or built without FreeType
        return ImageFont.load_default()


def _text(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, font, fill) -> None:
    """`text` centred on `xy`."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    draw.text((xy[0] - (left + right) / 2, xy[1] - (top + bottom) / 2), text, font=font, fill=fill)
