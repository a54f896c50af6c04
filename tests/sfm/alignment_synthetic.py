"""Synthetic ground truth for the global alignment: cameras around a random scene, and the PairResults a
pairwise backend would report for them (per-pair scale, pixel noise, depth noise, outlier matches).

Test and benchmark code (not part of the package): used by the alignment tests and ``benchmarks/alignment*.py``,
``benchmarks/scaling.py`` (which put ``tests/sfm`` on ``sys.path``); pure numpy, deterministic given ``seed``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sfm3r.sfm.geometry.projection import project_pinhole
from sfm3r.types import Camera, ImageInfo, PairResult


@dataclass(frozen=True, eq=False)
class SyntheticScene:
    """Ground truth of a synthetic scene. N images, P points."""

    images: tuple[ImageInfo, ...]
    cameras: tuple[Camera, ...]  # (N,) one per image
    rotations: np.ndarray  # (N, 3, 3) float64 cam_from_world
    translations: np.ndarray  # (N, 3) float64
    points: np.ndarray  # (P, 3) float64 world points

    @property
    def image_names(self) -> tuple[str, ...]:
        return tuple(im.name for im in self.images)


def _look_at(centre: np.ndarray, target: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """cam_from_world rotation (3, 3) of a camera at `centre` looking at `target`, with a random roll."""
    z = target - centre
    z /= np.linalg.norm(z)
    up = np.array([0.0, -1.0, 0.0]) + 0.1 * rng.normal(size=3)
    x = np.cross(up, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return np.stack([x, y, z])


def make_scene(
    num_images: int,
    *,
    num_points: int = 2000,
    width: int = 640,
    height: int = 480,
    focal: float = 600.0,
    radius: float = 6.0,
    arc_deg: float = 360.0,
    focal_spread: float = 0.0,
    pp_offset: tuple[float, float] = (0.0, 0.0),
    seed: int = 0,
) -> SyntheticScene:
    """Cameras on a noisy ring of `radius` looking at a random blob of points of radius ~1.5 at the origin.

    `arc_deg` < 360 places the cameras on an arc; `focal_spread` draws per-image focals in focal·(1 ± spread);
    `pp_offset` (pixels) moves every principal point away from the image centre.
    """
    rng = np.random.default_rng(seed)
    pts = rng.normal(size=(num_points, 3)) * np.array([1.5, 0.7, 1.5])
    angles = np.deg2rad(np.linspace(0.0, arc_deg, num_images, endpoint=arc_deg < 360.0))
    cams, rots, trans, infos = [], [], [], []
    for k, a in enumerate(angles):
        c = np.array([radius * np.sin(a), -1.0 + 0.5 * rng.normal(), -radius * np.cos(a)])
        c += 0.3 * rng.normal(size=3)
        R = _look_at(c, 0.3 * rng.normal(size=3), rng)
        f = focal * (1.0 + focal_spread * rng.uniform(-1, 1))
        cams.append(Camera(width, height, f, f, width / 2 + pp_offset[0], height / 2 + pp_offset[1]))
        rots.append(R)
        trans.append(-R @ c)
        infos.append(ImageInfo(f"img_{k:05d}.png", Path(f"img_{k:05d}.png"), f"{k:064x}", width, height))
    return SyntheticScene(tuple(infos), tuple(cams), np.array(rots), np.array(trans), pts)


def project(scene: SyntheticScene, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points of the scene in camera k: (xy (P, 2) pixels, depth (P,), visible (P,) bool)."""
    cam = scene.cameras[k]
    x = scene.points @ scene.rotations[k].T + scene.translations[k]
    xy, z = project_pinhole(x, cam.fx, cam.fy, cam.cx, cam.cy)
    vis = (z > 0.1) & (xy[:, 0] > 0) & (xy[:, 0] < cam.width) & (xy[:, 1] > 0) & (xy[:, 1] < cam.height)
    return xy, z, vis


def make_pair_results(
    scene: SyntheticScene,
    pairs: list[tuple[int, int]],
    *,
    pixel_noise: float = 0.5,
    depth_noise: float = 0.01,
    outlier_ratio: float = 0.2,
    backend_focal_error: float = 0.0,
    max_matches: int = 400,
    seed: int = 0,
) -> list[PairResult]:
    """One PairResult per (i, j) in `pairs`, as a backend would produce it.

    Inlier matches are co-visible scene points with Gaussian pixel noise (std `pixel_noise` px); their 3D
    points are back-projected from the noisy pixels with depths multiplied by (1 + N(0, depth_noise)),
    through a focal off by a random factor within ±`backend_focal_error`, and expressed at a random
    per-pair scale. A fraction `outlier_ratio` of the matches are replaced by random pixels with random
    depths. Keypoint ids are the scene point ids (outliers get ids past the last point).
    """
    rng = np.random.default_rng(seed)
    proj = [project(scene, k) for k in range(len(scene.images))]
    num_pts = scene.points.shape[0]
    out = []
    for i, j in pairs:
        (xy_i, z_i, v_i), (xy_j, z_j, v_j) = proj[i], proj[j]
        ids = np.flatnonzero(v_i & v_j)
        if ids.size > max_matches:
            ids = rng.choice(ids, max_matches, replace=False)
        m = ids.size
        pxi = xy_i[ids] + pixel_noise * rng.normal(size=(m, 2))
        pxj = xy_j[ids] + pixel_noise * rng.normal(size=(m, 2))
        dzi = z_i[ids] * (1 + depth_noise * rng.normal(size=m))
        dzj = z_j[ids] * (1 + depth_noise * rng.normal(size=m))
        idx_i, idx_j = ids.copy(), ids.copy()
        n_out = int(round(outlier_ratio * m))
        if n_out:
            o = rng.choice(m, n_out, replace=False)
            ci, cj = scene.cameras[i], scene.cameras[j]
            pxi[o] = rng.uniform([0, 0], [ci.width, ci.height], size=(n_out, 2))
            pxj[o] = rng.uniform([0, 0], [cj.width, cj.height], size=(n_out, 2))
            dzi[o] = rng.uniform(0.5, 1.5, n_out) * np.median(z_i[ids])
            dzj[o] = rng.uniform(0.5, 1.5, n_out) * np.median(z_j[ids])
            idx_i[o] = num_pts + rng.integers(0, 10 * num_pts, n_out)
            idx_j[o] = num_pts + rng.integers(0, 10 * num_pts, n_out)
        scale = np.exp(rng.uniform(-1.0, 1.0))
        pts = []
        for k, px, dz in ((i, pxi, dzi), (j, pxj, dzj)):
            cam = scene.cameras[k]
            f = cam.fx * (1 + backend_focal_error * rng.uniform(-1, 1))
            ray = np.stack([(px[:, 0] - cam.cx) / f, (px[:, 1] - cam.cy) / f, np.ones(m)], axis=1)
            pts.append((ray * dz[:, None] * scale).astype(np.float32))
        out.append(
            PairResult(
                name_i=scene.images[i].name,
                name_j=scene.images[j].name,
                backend="synthetic",
                xy_i=pxi.astype(np.float32),
                xy_j=pxj.astype(np.float32),
                idx_i=idx_i.astype(np.int64),
                idx_j=idx_j.astype(np.int64),
                conf=np.ones(m, np.float32),
                pts_i=pts[0],
                pts_j=pts[1],
                verified=True,
                num_inliers=m,
            )
        )
    return out


def neighbour_pairs(num_images: int, window: int, cyclic: bool = True) -> list[tuple[int, int]]:
    """Sliding-window pairs (i, i+1..i+window), wrapping around when `cyclic`."""
    pairs = set()
    for i in range(num_images):
        for d in range(1, window + 1):
            j = i + d
            if j >= num_images:
                if not cyclic:
                    continue
                j %= num_images
            if i != j:
                pairs.add((min(i, j), max(i, j)))
    return sorted(pairs)
