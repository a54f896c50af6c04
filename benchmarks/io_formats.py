"""Speed of the io/ formats on realistic sizes: image infos and network preprocessing on a real photo set,
COLMAP model writing/reading and PLY writing on a large synthetic scene.

Run from the repository root:  PYTHONPATH=src python benchmarks/io_formats.py [--images DIR]
Prints a table and writes benchmarks/results/io_formats.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from sfm3r.io.colmap import read_colmap_model, write_colmap_model
from sfm3r.io.images import load_image_infos, preprocess_for_network, read_image
from sfm3r.io.ply import write_ply
from sfm3r.types import Camera, Scene

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SFM3R_SHARED", REPO.parent / "shared"))


def _timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def _random_scene(num_images: int, num_points: int, track_length: int, seed: int = 0) -> Scene:
    rng = np.random.default_rng(seed)
    rotations = np.array([np.linalg.qr(rng.normal(size=(3, 3)))[0] for _ in range(num_images)])
    rotations *= np.sign(np.linalg.det(rotations))[:, None, None]  # proper rotations
    obs_point = np.repeat(np.arange(num_points), track_length)
    obs_image = np.concatenate([rng.choice(num_images, track_length, replace=False) for _ in range(num_points)])
    return Scene(
        image_names=tuple(f"img_{i:05d}.jpg" for i in range(num_images)),
        cameras=(Camera(4032, 3024, 3000.0, 3000.0, 2016.0, 1512.0),),
        camera_of_image=np.zeros(num_images, np.int64),
        rotations=rotations,
        translations=rng.normal(size=(num_images, 3)),
        points_xyz=rng.normal(size=(num_points, 3)),
        points_rgb=rng.integers(0, 256, (num_points, 3), dtype=np.uint8),
        points_error=rng.uniform(0, 2, num_points),
        obs_point=obs_point,
        obs_image=obs_image,
        obs_xy=rng.uniform(0, 3000, size=(len(obs_point), 2)),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=SHARED / "data" / "strecha_fountain_P11" / "images")
    parser.add_argument("--points", type=int, default=100_000)
    args = parser.parse_args()
    rows = []

    infos, seconds = _timed(load_image_infos, args.images)
    pixels = sum(i.width * i.height for i in infos)
    rows.append(("load_image_infos", f"{len(infos)} images, {pixels / len(infos) / 1e6:.1f} MP", seconds))
    _, seconds = _timed(lambda: [read_image(i.path) for i in infos])
    rows.append(("read_image", f"{len(infos)} images", seconds))
    rgbs = [read_image(i.path) for i in infos]
    _, seconds = _timed(lambda: [preprocess_for_network(rgb, 512) for rgb in rgbs])
    rows.append(("preprocess_for_network(512)", f"{len(infos)} images", seconds))

    scene = _random_scene(200, args.points, 5)
    with tempfile.TemporaryDirectory() as tmp:
        _, seconds = _timed(write_colmap_model, scene, Path(tmp) / "bin")
        rows.append(("write_colmap_model (binary)", f"200 images, {args.points} points, 5 obs each", seconds))
        _, seconds = _timed(read_colmap_model, Path(tmp) / "bin")
        rows.append(("read_colmap_model (binary)", "same", seconds))
        _, seconds = _timed(write_ply, Path(tmp) / "p.ply", scene.points_xyz, scene.points_rgb)
        rows.append(("write_ply", f"{args.points} points", seconds))

    print(f"{'operation':32s} {'size':42s} {'seconds':>8s}")
    for name, size, seconds in rows:
        print(f"{name:32s} {size:42s} {seconds:8.2f}")
    out = REPO / "benchmarks" / "results" / "io_formats.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
        "rows": [{"operation": n, "size": s, "seconds": round(t, 3)} for n, s, t in rows],
    }, indent=1))  # fmt: skip
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
