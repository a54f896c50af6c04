"""What a COLMAP model holds, per camera, per image and per track: `sfm3r info` and `sfm3r view` read it.

Works on any COLMAP model folder, or a run folder (OUT/sparse/0; its run.json adds the input images
that were never registered).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sfm3r.sfm.geometry.projection import project_pinhole
from sfm3r.types import Scene


@dataclass(frozen=True)
class CameraRow:
    index: int
    model: str  # PINHOLE, SIMPLE_PINHOLE, or the COLMAP model the file had (distortion dropped on read)
    width: int
    height: int
    params: tuple[float, ...]  # as COLMAP orders them for `model`
    num_images: int


@dataclass(frozen=True)
class ImageRow:
    name: str
    registered: bool
    camera: int | None  # index into the cameras; None when not registered
    observations: int  # 2D points with a 3D point
    mean_error_px: float  # mean reprojection error of those (NaN without observations)


@dataclass(frozen=True)
class ModelStats:
    folder: Path
    scene: Scene
    cameras: tuple[CameraRow, ...]
    images: tuple[ImageRow, ...]  # registered first (model order), then the unregistered
    track_lengths: dict[int, int]  # track length -> number of points
    observation_errors: np.ndarray  # (K,) reprojection error of each observation in px

    @property
    def num_registered(self) -> int:
        return sum(row.registered for row in self.images)


def model_folder(path: Path) -> Path:
    """A model folder as given, or the model inside a run folder (OUT/sparse/0)."""
    path = Path(path)
    inner = path / "sparse" / "0"
    return inner if inner.is_dir() and not (path / "images.bin").exists() and not (path / "images.txt").exists() else path


def observation_errors(scene: Scene) -> np.ndarray:
    """(K,) pixel distance between each observation and the projection of its 3D point (pinhole)."""
    if scene.obs_point.size == 0:
        return np.zeros(0)
    R = scene.rotations[scene.obs_image]  # (K, 3, 3)
    t = scene.translations[scene.obs_image]  # (K, 3)
    x = np.einsum("kij,kj->ki", R, scene.points_xyz[scene.obs_point]) + t  # (K, 3) camera frame
    cams = scene.camera_of_image[scene.obs_image]
    K = np.array([[c.fx, c.fy, c.cx, c.cy] for c in scene.cameras])[cams]  # (K, 4)
    x[:, 2] = np.where(np.abs(x[:, 2]) < 1e-12, 1e-12, x[:, 2])  # finite pixels at depth 0
    uv, _ = project_pinhole(x, K[:, 0], K[:, 1], K[:, 2], K[:, 3])
    return np.linalg.norm(uv - scene.obs_xy, axis=1)


def _camera_row(scene: Scene, index: int) -> CameraRow:
    cam = scene.cameras[index]
    distortion = scene.info.get("distortion", {}).get(index)
    if distortion is not None:
        model, params = distortion["model"], tuple(distortion["params"])
    elif cam.fx == cam.fy:
        model, params = "SIMPLE_PINHOLE", (cam.fx, cam.cx, cam.cy)
    else:
        model, params = "PINHOLE", (cam.fx, cam.fy, cam.cx, cam.cy)
    used = int(np.sum(scene.camera_of_image == index))
    return CameraRow(index, model, cam.width, cam.height, tuple(float(p) for p in params), used)


def _run_unregistered(folder: Path, scene: Scene) -> list[str]:
    """Input images of a run (OUT/run.json) that are not in the model, besides those COLMAP lists."""
    run_json = folder.parent.parent / "run.json" if folder.name == "0" and folder.parent.name == "sparse" else None
    names = set(scene.unregistered)
    if run_json is not None and run_json.is_file():
        try:
            run = json.loads(run_json.read_text())
            names |= {image["name"] for image in run.get("images", [])} - set(scene.image_names)
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return sorted(names)


def model_stats(path: Path, scene: Scene | None = None) -> ModelStats:
    """Statistics of the model at `path` (a model folder or a run folder); `scene` if already read."""
    from sfm3r.io.colmap import read_colmap_model

    folder = model_folder(path)
    if scene is None:
        scene = read_colmap_model(folder)
    errors = observation_errors(scene)
    n = scene.num_images
    counts = np.bincount(scene.obs_image, minlength=n) if n else np.zeros(0, np.int64)
    sums = np.bincount(scene.obs_image, weights=errors, minlength=n) if n else np.zeros(0)
    rows = [
        ImageRow(name, True, int(scene.camera_of_image[k]), int(counts[k]),
                 float(sums[k] / counts[k]) if counts[k] else float("nan"))
        for k, name in enumerate(scene.image_names)
    ]  # fmt: skip
    rows += [ImageRow(name, False, None, 0, float("nan")) for name in _run_unregistered(folder, scene)]
    lengths = np.bincount(scene.obs_point, minlength=scene.num_points) if scene.num_points else np.zeros(0, np.int64)
    values, number = np.unique(lengths, return_counts=True)
    return ModelStats(
        folder=folder,
        scene=scene,
        cameras=tuple(_camera_row(scene, c) for c in range(len(scene.cameras))),
        images=tuple(rows),
        track_lengths={int(v): int(c) for v, c in zip(values, number, strict=True)},
        observation_errors=errors,
    )
