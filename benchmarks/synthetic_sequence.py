"""A synthetic image sequence with GT poses: a camera orbiting a textured room scene, for scaling benchmarks.

Why: no real set with GT under ``shared/data`` has ~100 images (the temple ring has 47), and the speed
ratio sfm3r / COLMAP must be measured as N grows at a constant per-frame overlap, like a video walk.

The scene (metres, z up): a 24 × 24 m floor, four 6 m walls around it, and five boxes of different sizes
near the centre. Every face has its own texture (multi-octave colour noise plus random ellipses and
rectangles, seeded per face) mapped once without tiling, so nothing repeats. Faces get a fixed Lambertian
shade so box edges show. The camera moves on one orbit of ``LOOP_FRAMES`` frames around the centre
(3.6° per frame, radius and height wobbling), looking at the boxes; sequence N is the first N frames, so
N = 25 / 50 / 100 share their first frames and N = 100 closes the loop. Images are ray-cast (2×2
supersampling), 640 × 480, one shared PINHOLE camera (f = 520 px), JPEG quality 95.

Conventions: cam_from_world rotations ``R`` (rows = camera x right, y down, z forward, as COLMAP and
OpenCV) and translations ``t``; pixel centres at +0.5 (COLMAP's continuous convention). The GT is written
as a COLMAP text model (``gt/``), which ``benchmarks/accuracy.py::_subset_gt`` reads like a real set's.

    PYTHONPATH=src python benchmarks/synthetic_sequence.py OUT_DIR [N]   # renders N frames into OUT_DIR
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

LOOP_FRAMES = 100  # frames on the whole orbit: 3.6° apart
SCENE_VERSION = 1  # bump when the scene, the path or the renderer changes (invalidates cached renders)


@dataclass(frozen=True)
class Rect:
    """A textured parallelogram: points ``o + a u + b v`` for a, b in [0, 1]; ``tex`` (H, W, 3) uint8 spans it once."""

    o: np.ndarray  # (3,)
    u: np.ndarray  # (3,)
    v: np.ndarray  # (3,)
    tex: np.ndarray = field(repr=False)  # (H, W, 3) uint8; row = b, column = a
    shade: float = 1.0


@dataclass(frozen=True)
class SequenceConf:
    width: int = 640
    height: int = 480
    focal: float = 520.0
    supersample: int = 2
    quality: int = 95
    texel_m: float = 0.012  # texture resolution of the floor and walls (boxes: half of it)
    version: int = SCENE_VERSION

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


# ------------------------------------------------------------------------------------------------ geometry
def intrinsics(conf: SequenceConf) -> np.ndarray:
    """(3, 3) pinhole K with the principal point at the image centre (continuous pixel convention)."""
    return np.array([[conf.focal, 0, conf.width / 2], [0, conf.focal, conf.height / 2], [0, 0, 1.0]])


def look_at(centre: np.ndarray, target: np.ndarray, up: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """cam_from_world (R (3, 3), t (3,)) of a camera at ``centre`` looking at ``target``, image y pointing down
    (``up``, default world z, points up in the image)."""
    up = np.array([0.0, 0.0, 1.0]) if up is None else up
    z = target - centre
    z = z / np.linalg.norm(z)
    x = np.cross(z, up)
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    return R, -R @ centre


def project(K: np.ndarray, R: np.ndarray, t: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (M, 2) and depths (M,) of world points X (M, 3)."""
    Xc = X @ R.T + t
    uv = Xc @ K.T
    return uv[:, :2] / uv[:, 2:3], Xc[:, 2]


def orbit_pose(i: int, loop: int = LOOP_FRAMES) -> tuple[np.ndarray, np.ndarray]:
    """cam_from_world of frame ``i`` of the orbit (radius 6.5 ± 0.6 m, height 1.9 ± 0.35 m, 360°/loop per frame)."""
    a = 2 * np.pi * i / loop
    r = 6.5 + 0.6 * np.sin(3 * a)
    centre = np.array([r * np.cos(a), r * np.sin(a), 1.9 + 0.35 * np.sin(5 * a + 0.7)])
    target = np.array([0.4 * np.sin(2 * a), 0.4 * np.cos(3 * a), 0.7])
    return look_at(centre, target)


# ------------------------------------------------------------------------------------------------- scene
def make_texture(seed: int, width: int, height: int) -> np.ndarray:
    """(height, width, 3) uint8: colour noise summed over octaves plus random shapes, never periodic."""
    from PIL import Image, ImageDraw, ImageFilter
    from scipy.ndimage import map_coordinates

    rng = np.random.default_rng(seed)
    img = np.zeros((height, width, 3), np.float32)
    for octave, weight in ((64, 40.0), (16, 28.0), (4, 18.0), (1, 8.0)):
        h, w = max(2, height // octave + 2), max(2, width // octave + 2)
        noise = rng.normal(0.0, 1.0, (h, w, 3)).astype(np.float32)
        rows, cols = np.meshgrid(np.linspace(0, h - 1.001, height), np.linspace(0, w - 1.001, width), indexing="ij")
        for k in range(3):  # bilinear upsampling of the coarse noise to the texture size
            img[..., k] += weight * map_coordinates(noise[..., k], [rows, cols], order=1)
    img += rng.uniform(70, 180, 3).astype(np.float32)
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    for _ in range(int(width * height / 2500)):
        x, y = rng.integers(0, width), rng.integers(0, height)
        s = int(rng.integers(4, 40))
        col = tuple(int(c) for c in rng.integers(0, 256, 3))
        box = [x, y, x + s, y + int(s * rng.uniform(0.4, 2.0))]
        (draw.rectangle if rng.random() < 0.5 else draw.ellipse)(box, fill=col)
    return np.asarray(pil.filter(ImageFilter.GaussianBlur(0.8)))


def build_scene(texel_m: float = SequenceConf.texel_m) -> list[Rect]:
    """The floor, four walls and five boxes, each face with its own texture."""
    light = np.array([0.4, -0.3, 0.87])
    light /= np.linalg.norm(light)
    rects: list[Rect] = []

    def add(o, u, v, texel: float) -> None:
        o, u, v = (np.asarray(x, np.float64) for x in (o, u, v))
        n = np.cross(u, v)
        shade = 0.55 + 0.45 * abs(float(n @ light)) / np.linalg.norm(n)
        w, h = (max(8, int(np.linalg.norm(x) / texel)) for x in (u, v))
        rects.append(Rect(o, u, v, make_texture(1000 + len(rects), w, h), shade))

    add([-12, -12, 0], [24, 0, 0], [0, 24, 0], texel_m)  # floor z = 0
    for o, u in (([-12, 12, 0], [24, 0, 0]), ([12, -12, 0], [0, 24, 0]),
                 ([-12, -12, 0], [24, 0, 0]), ([-12, -12, 0], [0, 24, 0])):  # fmt: skip
        add(o, u, [0, 0, 6], texel_m)  # walls
    for cx, cy, sx, sy, sz in ((-1.0, 0.6, 1.2, 1.0, 1.4), (1.1, -0.4, 0.9, 1.3, 0.8), (0.2, -1.8, 1.6, 0.7, 0.5),
                               (1.6, 1.5, 0.6, 0.6, 1.9), (-1.9, -1.2, 0.8, 0.9, 1.0)):  # fmt: skip
        x0, y0 = cx - sx / 2, cy - sy / 2
        add([x0, y0, sz], [sx, 0, 0], [0, sy, 0], texel_m / 2)  # top
        add([x0, y0, 0], [sx, 0, 0], [0, 0, sz], texel_m / 2)  # y = y0
        add([x0, y0 + sy, 0], [sx, 0, 0], [0, 0, sz], texel_m / 2)  # y = y0 + sy
        add([x0, y0, 0], [0, sy, 0], [0, 0, sz], texel_m / 2)  # x = x0
        add([x0 + sx, y0, 0], [0, sy, 0], [0, 0, sz], texel_m / 2)  # x = x0 + sx
    return rects


# ---------------------------------------------------------------------------------------------- renderer
def render(rects: list[Rect], K: np.ndarray, R: np.ndarray, t: np.ndarray, width: int, height: int,
           supersample: int = 2) -> np.ndarray:  # fmt: skip
    """(height, width, 3) uint8 ray-cast image; rays only tested against rects whose projection covers them."""
    from scipy.ndimage import map_coordinates

    s = supersample
    W, H = width * s, height * s
    Ks = K.copy()
    Ks[:2] *= s
    u, v = np.meshgrid(np.arange(W, dtype=np.float64) + 0.5, np.arange(H, dtype=np.float64) + 0.5)
    rays = np.stack([u, v, np.ones_like(u)], -1) @ (R.T @ np.linalg.inv(Ks)).T  # (H, W, 3) world directions
    c = -R.T @ t
    depth = np.full((H, W), np.inf)
    out = np.full((H, W, 3), 20.0, np.float32)
    for rc in rects:
        box = _pixel_box(rc, Ks, R, t, W, H)
        if box is None:
            continue
        r0, r1, c0, c1 = box
        d = rays[r0:r1, c0:c1]
        n = np.cross(rc.u, rc.v)
        with np.errstate(divide="ignore", invalid="ignore"):
            tt = ((rc.o - c) @ n) / (d @ n)  # ray parameter of the plane hit
        rel = c - rc.o + d * tt[..., None]
        a = rel @ rc.u / (rc.u @ rc.u)
        b = rel @ rc.v / (rc.v @ rc.v)
        hit = (tt > 1e-6) & (tt < depth[r0:r1, c0:c1]) & (a >= 0) & (a <= 1) & (b >= 0) & (b <= 1)
        if not hit.any():
            continue
        depth[r0:r1, c0:c1][hit] = tt[hit]
        th, tw = rc.tex.shape[:2]
        coords = [b[hit] * (th - 1), a[hit] * (tw - 1)]
        sub = out[r0:r1, c0:c1]
        sub[hit] = np.stack([map_coordinates(rc.tex[..., k], coords, order=1, mode="nearest") for k in range(3)], -1) * rc.shade
    img = out.reshape(height, s, width, s, 3).mean((1, 3))
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def _pixel_box(rc: Rect, K: np.ndarray, R: np.ndarray, t: np.ndarray, W: int, H: int) -> tuple[int, int, int, int] | None:
    """Rows/columns (r0, r1, c0, c1) that the rect can cover; the whole image when it crosses the camera plane."""
    corners = np.stack([rc.o, rc.o + rc.u, rc.o + rc.v, rc.o + rc.u + rc.v])
    uv, z = project(K, R, t, corners)
    if (z <= 1e-6).all():
        return None
    if (z <= 1e-6).any():
        return 0, H, 0, W
    c0, r0 = np.floor(uv.min(0)).astype(int) - 1
    c1, r1 = np.ceil(uv.max(0)).astype(int) + 1
    c0, c1, r0, r1 = max(c0, 0), min(c1, W), max(r0, 0), min(r1, H)
    return None if c0 >= c1 or r0 >= r1 else (r0, r1, c0, c1)


# ------------------------------------------------------------------------------------------------ output
def frame_name(i: int) -> str:
    return f"frame_{i:03d}.jpg"


def rotation_to_quaternion(R: np.ndarray) -> np.ndarray:
    """(w, x, y, z) unit quaternion, w >= 0, of a rotation matrix (3, 3)."""
    from scipy.spatial.transform import Rotation

    x, y, z, w = Rotation.from_matrix(R).as_quat()
    q = np.array([w, x, y, z])
    return q if w >= 0 else -q


def write_gt_model(folder: Path, conf: SequenceConf, poses: list[tuple[np.ndarray, np.ndarray]], names: list[str]) -> None:
    """A COLMAP text model: one PINHOLE camera, the cam_from_world poses, no points."""
    folder.mkdir(parents=True, exist_ok=True)
    f, W, H = conf.focal, conf.width, conf.height
    (folder / "cameras.txt").write_text(f"1 PINHOLE {W} {H} {f:.6f} {f:.6f} {W / 2:.6f} {H / 2:.6f}\n")
    lines = []
    for k, ((R, t), name) in enumerate(zip(poses, names, strict=True), start=1):
        q = rotation_to_quaternion(R)
        lines.append(f"{k} " + " ".join(f"{x:.12f}" for x in (*q, *t)) + f" 1 {name}\n")  # then an empty POINTS2D line
    (folder / "images.txt").write_text("\n".join(lines) + "\n")
    (folder / "points3D.txt").write_text("")


def render_sequence(folder: Path, n: int, conf: SequenceConf = SequenceConf(), log=print) -> Path:
    """Render frames 0 … n−1 into ``folder/images`` (frames already there, same conf key as ``folder/conf.json``,
    are kept) and write ``folder/gt`` with the poses of all LOOP_FRAMES frames. Returns ``folder``."""
    from PIL import Image

    if n > LOOP_FRAMES:
        raise ValueError(f"the orbit has {LOOP_FRAMES} frames, asked for {n}")
    folder.mkdir(parents=True, exist_ok=True)
    stamp = folder / "conf.json"
    if stamp.exists() and json.loads(stamp.read_text()).get("key") != conf.key():
        raise ValueError(f"{folder} holds renders of another configuration; use an empty folder")
    stamp.write_text(json.dumps({"key": conf.key(), "conf": asdict(conf)}))
    images = folder / "images"
    images.mkdir(exist_ok=True)
    K = intrinsics(conf)
    poses = [orbit_pose(i) for i in range(LOOP_FRAMES)]
    names = [frame_name(i) for i in range(LOOP_FRAMES)]
    todo = [i for i in range(n) if not (images / names[i]).exists()]
    if todo:
        rects = build_scene(conf.texel_m)
        for i in todo:
            img = render(rects, K, *poses[i], conf.width, conf.height, conf.supersample)
            tmp = images / f".{names[i]}.tmp.jpg"
            Image.fromarray(img).save(tmp, quality=conf.quality)
            tmp.rename(images / names[i])  # a killed render leaves no half-written frame
            log(f"rendered {names[i]} ({todo.index(i) + 1}/{len(todo)})")
    write_gt_model(folder / "gt", conf, poses, names)
    return folder


if __name__ == "__main__":
    render_sequence(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 12)
