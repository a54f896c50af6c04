"""Synthetic ground truth for the tracks / bundle-adjustment tests and benchmark (numpy only).

Two layouts:
- ``orbit``: N cameras on a sphere looking at a random cloud at the origin (every camera sees most points).
- ``ring``: N cameras on a circle looking outwards at points on a thick cylindrical shell; each camera
  sees an arc, so points per image stay constant as N grows (for scaling benchmarks).

Pairs link each camera with its ``neighbours`` nearest cameras (by angle). Keypoint id of a point in an
image = the point index; its pixel gets per-(image, point) Gaussian noise, so the same keypoint has the
same pixel in every pair. A fraction of each pair's matches is replaced by outliers: the keypoint in
image j is swapped for a random other keypoint visible in j.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sfm3r.types import Camera, PairResult


@dataclass
class SyntheticScene:
    names: list[str]
    cameras: list[Camera]  # one per image
    rotations: np.ndarray  # (N, 3, 3) cam_from_world
    translations: np.ndarray  # (N, 3)
    points: np.ndarray  # (P, 3)
    visible: list[np.ndarray]  # per image: sorted point indices visible
    xy: list[np.ndarray]  # per image: (V, 2) noisy pixels of `visible`
    pairs: list[PairResult]


def _look_at(center: np.ndarray, target: np.ndarray, rng) -> np.ndarray:
    """cam_from_world rotation of a camera at `center` looking at `target` (OpenCV axes), random roll."""
    z = target - center
    z /= np.linalg.norm(z)
    up = np.array([0.0, 0.0, 1.0]) + 0.1 * rng.normal(size=3)
    x = np.cross(z, up)  # y down: x = z × up gives x right for up = world +z
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return np.stack([x, y, z])  # rows: camera axes in world


def make_scene(
    num_images: int = 12,
    *,
    layout: str = "orbit",
    num_points: int = 400,
    width: int = 640,
    height: int = 480,
    focal: float = 500.0,
    noise_px: float = 0.5,
    outlier_frac: float = 0.2,
    neighbours: int = 6,
    focal_jitter: float = 0.1,
    seed: int = 0,
) -> SyntheticScene:
    rng = np.random.default_rng(seed)
    n = num_images
    if layout == "orbit":
        points = rng.uniform(-1.0, 1.0, (num_points, 3))
        az = np.linspace(0, 2 * np.pi, n, endpoint=False) + rng.uniform(-0.1, 0.1, n)
        el = rng.uniform(-0.5, 0.5, n)
        radius = rng.uniform(3.5, 4.5, n)
        centers = np.stack([np.cos(az) * np.cos(el), np.sin(az) * np.cos(el), np.sin(el)], 1) * radius[:, None]
        targets = rng.normal(0, 0.2, (n, 3))
        cam_angle = az
    elif layout == "ring":
        # circumference grows with N (0.5 units between cameras): points per image and track lengths
        # stay constant as N grows; points on a 2-unit thick wall 3 units outside the camera circle
        r_in = max(5.0, 0.5 * n / (2 * np.pi))
        r_out = r_in + 3.0
        phi = rng.uniform(0, 2 * np.pi, num_points)
        rad = rng.uniform(r_out, r_out + 2.0, num_points)
        points = np.stack([np.cos(phi) * rad, np.sin(phi) * rad, rng.uniform(-2.0, 2.0, num_points)], 1)
        az = np.linspace(0, 2 * np.pi, n, endpoint=False)
        centers = np.stack([np.cos(az) * r_in, np.sin(az) * r_in, rng.uniform(-0.3, 0.3, n)], 1)
        look = az + rng.uniform(-0.15, 0.15, n)  # look roughly outwards
        targets = centers + np.stack([np.cos(look), np.sin(look), rng.uniform(-0.05, 0.05, n)], 1)
        cam_angle = az
    else:
        raise ValueError(f"unknown layout {layout!r}")

    rotations = np.stack([_look_at(c, t, rng) for c, t in zip(centers, targets)])
    translations = -np.einsum("nij,nj->ni", rotations, centers)
    focals = focal * rng.uniform(1 - focal_jitter, 1 + focal_jitter, n)
    cameras = [Camera(width=width, height=height, fx=f, fy=f, cx=width / 2, cy=height / 2) for f in focals]

    visible, xys = [], []
    for i in range(n):
        pc = points @ rotations[i].T + translations[i]
        uv = pc[:, :2] / pc[:, 2:3] * focals[i] + np.array([width / 2, height / 2])
        ok = (pc[:, 2] > 0.1) & (uv[:, 0] > 1) & (uv[:, 0] < width - 1) & (uv[:, 1] > 1) & (uv[:, 1] < height - 1)
        vis = np.flatnonzero(ok)
        visible.append(vis)
        xys.append(uv[vis] + rng.normal(0, noise_px, (vis.size, 2)))

    names = [f"img_{i:04d}.jpg" for i in range(n)]
    edges = set()
    for i in range(n):
        d = np.abs(np.angle(np.exp(1j * (cam_angle - cam_angle[i]))))
        d[i] = np.inf
        for j in np.argsort(d)[:neighbours]:
            edges.add((min(i, int(j)), max(i, int(j))))
    pairs = [_pair(i, j, names, visible, xys, outlier_frac, rng) for i, j in sorted(edges)]
    pairs = [p for p in pairs if p is not None]
    return SyntheticScene(names, cameras, rotations, translations, points, visible, xys, pairs)


def _pair(i, j, names, visible, xys, outlier_frac, rng) -> PairResult | None:
    common, ai, aj = np.intersect1d(visible[i], visible[j], return_indices=True)
    if common.size == 0:
        return None
    idx_i, idx_j = common.copy(), common.copy()
    xy_i, xy_j = xys[i][ai], xys[j][aj]
    m = common.size
    out = rng.random(m) < outlier_frac
    repl = rng.integers(0, visible[j].size, int(out.sum()))
    idx_j[out] = visible[j][repl]
    xy_j = xy_j.copy()
    xy_j[out] = xys[j][repl]
    return PairResult(
        name_i=names[i], name_j=names[j], backend="synthetic",
        xy_i=xy_i.astype(np.float32), xy_j=xy_j.astype(np.float32),
        idx_i=idx_i.astype(np.int64), idx_j=idx_j.astype(np.int64),
        conf=np.ones(m, np.float32), pts_i=np.zeros((m, 3), np.float32), pts_j=np.zeros((m, 3), np.float32),
        verified=True, num_inliers=m,
    )


def perturb(scene: SyntheticScene, *, rot_deg: float = 2.0, trans_frac: float = 0.05, focal_frac: float = 0.05,
            seed: int = 1):
    """Noisy initial cameras and poses: random rotation of `rot_deg`, translation noise of `trans_frac` of
    the camera-centre extent, focal scaled by 1 ± focal_frac."""
    rng = np.random.default_rng(seed)
    n = len(scene.names)
    centers = -np.einsum("nji,nj->ni", scene.rotations, scene.translations)
    extent = np.linalg.norm(centers.max(0) - centers.min(0))
    rots, ctrs = [], []
    for i in range(n):
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        dR = _axis_angle(axis, np.radians(rot_deg))
        rots.append(dR @ scene.rotations[i])
        ctrs.append(centers[i] + rng.normal(size=3) / np.sqrt(3) * trans_frac * extent)
    rots = np.stack(rots)
    trans = -np.einsum("nij,nj->ni", rots, np.stack(ctrs))
    signs = rng.choice([-1.0, 1.0], n)
    cams = [Camera(width=c.width, height=c.height, fx=c.fx * (1 + s * focal_frac), fy=c.fy * (1 + s * focal_frac),
                   cx=c.cx, cy=c.cy) for c, s in zip(scene.cameras, signs)]
    return cams, rots, trans


def _axis_angle(axis, angle):
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def rotation_angle_deg(Ra: np.ndarray, Rb: np.ndarray) -> np.ndarray:
    """(N,) angle in degrees of Ra Rbᵀ for stacks (N, 3, 3)."""
    tr = np.einsum("nij,nij->n", Ra, Rb)
    return np.degrees(np.arccos(np.clip((tr - 1) / 2, -1, 1)))
