"""The data types that pass between stages (DESIGN.md §3), importable by every subpackage.

Conventions (DESIGN.md §2), once for the whole code base:
- Pixels are continuous coordinates in the *original* image (after EXIF rotation), COLMAP convention:
  the centre of pixel (0, 0) is at (0.5, 0.5). Network-resolution values are named ``net_…``; they use the
  pixel-index convention (centre of pixel (0, 0) at 0) and are converted by :meth:`NetView.net_to_original`.
- Cameras use OpenCV axes (x right, y down, z forward); poses are ``cam_from_world``: x_cam = R·x_world + t.
- float32 for bulk data (points, matches), float64 for poses and optimisation state.

Arrays inside frozen dataclasses are not copied or frozen; treat them as read-only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class ImageInfo:
    """One input image, as found on disk."""

    name: str  # unique relative name (as COLMAP uses it), e.g. "IMG_0001.jpg" or "sub/IMG_0001.jpg"
    path: Path  # absolute path of the file
    sha256: str  # hex SHA-256 of the file bytes: the cache key of everything computed from this image
    width: int  # original width in pixels, after EXIF rotation
    height: int  # original height in pixels, after EXIF rotation
    prior_focal_px: float | None = None  # focal length from EXIF in original pixels, if known


@dataclass(frozen=True)
class NetView:
    """How the network saw an image: resize by 1/scale, then crop.

    A resized image of size (resized_width, resized_height) is cropped at (crop_left, crop_top) to
    (net_width, net_height). ``scale_x = width / resized_width`` maps resized pixels to original pixels
    (x and y differ slightly because of rounding).
    """

    net_height: int
    net_width: int
    scale_x: float  # original pixels per resized pixel, x axis
    scale_y: float  # original pixels per resized pixel, y axis
    crop_left: int  # crop offset in resized pixels
    crop_top: int

    def net_to_original(self, net_xy: np.ndarray) -> np.ndarray:
        """Network pixel coordinates (N, 2) (x, y), pixel-index convention -> original pixels (N, 2), COLMAP.

        This is the one place where the +0.5 pixel-centre shift and the crop offsets are applied.
        """
        net_xy = np.asarray(net_xy, dtype=np.float64)
        x = (net_xy[..., 0] + 0.5 + self.crop_left) * self.scale_x
        y = (net_xy[..., 1] + 0.5 + self.crop_top) * self.scale_y
        return np.stack([x, y], axis=-1)

    def original_to_net(self, xy: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`net_to_original`: original pixels (N, 2), COLMAP -> network pixel coordinates."""
        xy = np.asarray(xy, dtype=np.float64)
        x = xy[..., 0] / self.scale_x - self.crop_left - 0.5
        y = xy[..., 1] / self.scale_y - self.crop_top - 0.5
        return np.stack([x, y], axis=-1)

    def net_intrinsics_to_original(
        self, focal_x: float, focal_y: float, net_cx: float, net_cy: float
    ) -> tuple[float, float, float, float]:
        """Pinhole intrinsics at network resolution (pixel-index convention) -> (fx, fy, cx, cy) original."""
        (cx, cy) = self.net_to_original(np.array([net_cx, net_cy]))
        return focal_x * self.scale_x, focal_y * self.scale_y, float(cx), float(cy)


@dataclass(frozen=True, eq=False)
class Pairs:
    """The scene graph: which unordered image pairs get matched."""

    names: tuple[str, ...]  # every image of the graph (nodes), in input order
    pairs: tuple[tuple[str, str], ...]  # unordered, de-duplicated; name_i precedes name_j in `names`
    scores: np.ndarray  # (P,) float32 similarity of each pair (NaN where unknown)
    sources: tuple[str, ...]  # (P,) how each pair was chosen, e.g. "complete", "knn", "key", "connectivity", "file"

    def __len__(self) -> int:
        return len(self.pairs)


@dataclass(frozen=True, eq=False)
class PairResult:
    """One image pair from any pairwise backend (MASt3R, classic SIFT, ...).

    Match m links pixel ``xy_i[m]`` of image i to ``xy_j[m]`` of image j. ``idx_i``/``idx_j`` are
    per-image keypoint ids, stable across all pairs of that image (classic: SIFT keypoint index; MASt3R:
    flat network pixel index y*W+x), so multi-view tracks can be built by union-find on (image, id).
    """

    name_i: str
    name_j: str
    backend: str  # e.g. "classic-sift" or "mast3r"
    xy_i: np.ndarray  # (M, 2) float32, original pixels of image i, COLMAP convention
    xy_j: np.ndarray  # (M, 2) float32, original pixels of image j
    idx_i: np.ndarray  # (M,) int64 keypoint ids in image i
    idx_j: np.ndarray  # (M,) int64 keypoint ids in image j
    conf: np.ndarray  # (M,) float32 match confidence (higher is better)
    pts_i: np.ndarray  # (M, 3) float32 the match's 3D point in camera i's frame
    pts_j: np.ndarray  # (M, 3) float32 the same match's 3D point in camera j's frame
    verified: bool  # passed the backend's geometric check
    num_inliers: int  # inliers of that check (== M for a verified sparse pair)
    # Optional relative pose estimate, cam_j_from_cam_i: x_j = R x_i + t (t at the scale of pts_i).
    rel_rotation: np.ndarray | None = None  # (3, 3) float64
    rel_translation: np.ndarray | None = None  # (3,) float64

    @property
    def num_matches(self) -> int:
        return int(self.xy_i.shape[0])


@dataclass(frozen=True, eq=False)
class DenseView:
    """MASt3R only: one image's own-frame pointmap from one pair, streamed into its canonical depth."""

    name: str  # the image this pointmap belongs to
    partner: str  # the other image of the pair
    net_pts3d: np.ndarray  # (H, W, 3) float32, camera frame of `name`, network resolution
    net_conf: np.ndarray  # (H, W) float32 confidence (>= 1 for MASt3R)


# COLMAP camera models sfm3r reads and writes: name -> number of distortion parameters after the pinhole part.
CAMERA_MODELS = {"SIMPLE_PINHOLE": 0, "PINHOLE": 0, "SIMPLE_RADIAL": 1, "RADIAL": 2, "OPENCV": 4}
_ONE_FOCAL_MODELS = ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL")


@dataclass(frozen=True)
class Camera:
    """A camera in original-image pixels (COLMAP convention): pinhole part plus optional lens distortion.

    ``model`` is the COLMAP model to write ("" = the writer's choice: SIMPLE_PINHOLE when fx == fy, else
    PINHOLE). ``distortion`` holds the model's parameters after the pinhole part, in COLMAP's order:
    SIMPLE_RADIAL (k,), RADIAL (k1, k2), OPENCV (k1, k2, p1, p2). One-focal models use (fx + fy) / 2.
    """

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    model: str = ""
    distortion: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.model and self.model not in CAMERA_MODELS:
            raise ValueError(f"camera model {self.model!r} is not one of {', '.join(CAMERA_MODELS)}")
        expected = CAMERA_MODELS.get(self.model, 0)
        if len(self.distortion) != expected:
            raise ValueError(f"camera model {self.model or 'PINHOLE'} takes {expected} distortion parameters, "
                             f"got {len(self.distortion)}")
        object.__setattr__(self, "distortion", tuple(float(v) for v in self.distortion))

    def matrix(self) -> np.ndarray:
        """(3, 3) float64 calibration matrix K (the pinhole part)."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def has_distortion(self) -> bool:
        """True when a distortion parameter is non-zero."""
        return any(v != 0.0 for v in self.distortion)

    def colmap_model(self) -> tuple[str, list[float]]:
        """(COLMAP model name, parameter list) as written to cameras.bin/txt."""
        same_focal = abs(self.fx - self.fy) <= 1e-9 * max(abs(self.fx), abs(self.fy))
        model = self.model or ("SIMPLE_PINHOLE" if same_focal else "PINHOLE")
        f = (self.fx + self.fy) / 2
        pinhole = [f, self.cx, self.cy] if model in _ONE_FOCAL_MODELS else [self.fx, self.fy, self.cx, self.cy]
        return model, pinhole + list(self.distortion)

    @classmethod
    def from_colmap(cls, model: str, width: int, height: int, params) -> Camera:
        """The Camera of a COLMAP model name and parameter list (ValueError for other models)."""
        if model not in CAMERA_MODELS:
            raise ValueError(f"camera model {model} is not supported; use one of {', '.join(CAMERA_MODELS)}")
        params = [float(v) for v in params]
        n_pinhole = 3 if model in _ONE_FOCAL_MODELS else 4
        if len(params) != n_pinhole + CAMERA_MODELS[model]:
            raise ValueError(f"{model} takes {n_pinhole + CAMERA_MODELS[model]} parameters, got {len(params)}")
        fx, fy, cx, cy = (params[0], params[0], params[1], params[2]) if n_pinhole == 3 else params[:4]
        camera = cls(int(width), int(height), fx, fy, cx, cy)
        if CAMERA_MODELS[model] == 0 and camera.colmap_model()[0] == model:
            return camera  # canonical form: the writer's own choice gives this model back
        return cls(int(width), int(height), fx, fy, cx, cy, model, tuple(params[n_pinhole:]))

    def pinhole(self) -> Camera:
        """The same camera without a model choice or distortion."""
        return Camera(self.width, self.height, self.fx, self.fy, self.cx, self.cy)


@dataclass(frozen=True, eq=False)
class Scene:
    """The alignment result handed to the writers.

    N registered images, C cameras, P points, K observations (2D-3D links, flat table).
    """

    image_names: tuple[str, ...]  # (N,) registered images
    cameras: tuple[Camera, ...]  # (C,)
    camera_of_image: np.ndarray  # (N,) int64 index into `cameras`
    rotations: np.ndarray  # (N, 3, 3) float64, cam_from_world rotation
    translations: np.ndarray  # (N, 3) float64, cam_from_world translation
    points_xyz: np.ndarray  # (P, 3) float64 world coordinates
    points_rgb: np.ndarray  # (P, 3) uint8
    points_error: np.ndarray  # (P,) float64 mean reprojection error in pixels (NaN if unknown)
    obs_point: np.ndarray  # (K,) int64 point index of each observation
    obs_image: np.ndarray  # (K,) int64 image index (into image_names) of each observation
    obs_xy: np.ndarray  # (K, 2) float64 observed pixel, original image, COLMAP convention
    unregistered: tuple[str, ...] = ()  # input images that could not be placed
    dense_xyz: np.ndarray | None = None  # (D, 3) float32 optional dense points (MASt3R backend)
    dense_rgb: np.ndarray | None = None  # (D, 3) uint8
    info: dict = field(default_factory=dict)  # free-form stage report (counts, timings, residuals)

    @property
    def num_images(self) -> int:
        return len(self.image_names)

    @property
    def num_points(self) -> int:
        return int(self.points_xyz.shape[0])

    def camera_centers(self) -> np.ndarray:
        """(N, 3) float64 camera centres in world coordinates: C = -Rᵀ t."""
        return -np.einsum("nji,nj->ni", self.rotations, self.translations)
