"""A minimal reader of the classic COLMAP model files, written from the published format description.

Independent of pycolmap, so the tests can check what other programs (COLMAP 3.x, graphdeco 3DGS,
``read_write_model.py``-style loaders) will parse. Binary layout (little-endian):

- cameras.bin: uint64 count; per camera: int32 id, int32 model id, uint64 width, uint64 height,
  float64 params[n(model)].
- images.bin: uint64 count; per image: int32 id, float64 qw qx qy qz tx ty tz, int32 camera id,
  name as NUL-terminated bytes, uint64 n, then n × (float64 x, float64 y, int64 point3D id or -1).
- points3D.bin: uint64 count; per point: uint64 id, float64 x y z, uint8 r g b, float64 error,
  uint64 track length, then length × (int32 image id, int32 point2D index).

Text files hold the same fields, one record per line (images: two lines), '#' starts a comment.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

MODEL_NAMES = {0: "SIMPLE_PINHOLE", 1: "PINHOLE", 2: "SIMPLE_RADIAL", 3: "RADIAL", 4: "OPENCV"}
NUM_PARAMS = {"SIMPLE_PINHOLE": 3, "PINHOLE": 4, "SIMPLE_RADIAL": 4, "RADIAL": 5, "OPENCV": 8}


class _Reader:
    def __init__(self, path: Path):
        self.data = Path(path).read_bytes()
        self.pos = 0

    def read(self, fmt: str) -> tuple:
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values

    def read_name(self) -> str:
        end = self.data.index(b"\x00", self.pos)
        name = self.data[self.pos : end].decode("utf-8")
        self.pos = end + 1
        return name

    def at_end(self) -> bool:
        return self.pos == len(self.data)


def read_cameras_bin(path: Path) -> dict[int, tuple[str, int, int, np.ndarray]]:
    """{camera id: (model name, width, height, params)}."""
    f, cameras = _Reader(path), {}
    (count,) = f.read("Q")
    for _ in range(count):
        camera_id, model_id, width, height = f.read("iiQQ")
        model = MODEL_NAMES[model_id]
        cameras[camera_id] = (model, width, height, np.array(f.read("d" * NUM_PARAMS[model])))
    if not f.at_end():
        raise ValueError(f"{path}: trailing bytes")
    return cameras


def read_images_bin(path: Path) -> dict[int, dict]:
    """{image id: {q (w, x, y, z), t, camera_id, name, xy (n, 2), point3D_ids (n,)}}."""
    f, images = _Reader(path), {}
    (count,) = f.read("Q")
    for _ in range(count):
        image_id, qw, qx, qy, qz, tx, ty, tz, camera_id = f.read("idddddddi")
        name = f.read_name()
        (n,) = f.read("Q")
        table = np.array([f.read("ddq") for _ in range(n)], dtype=object).reshape(n, 3)
        images[image_id] = dict(
            q=np.array([qw, qx, qy, qz]), t=np.array([tx, ty, tz]), camera_id=camera_id, name=name,
            xy=table[:, :2].astype(np.float64), point3D_ids=table[:, 2].astype(np.int64),
        )  # fmt: skip
    if not f.at_end():
        raise ValueError(f"{path}: trailing bytes")
    return images


def read_points3D_bin(path: Path) -> dict[int, dict]:
    """{point id: {xyz, rgb, error, track [(image id, point2D index), ...]}}."""
    f, points = _Reader(path), {}
    (count,) = f.read("Q")
    for _ in range(count):
        point_id, x, y, z, r, g, b, error = f.read("QdddBBBd")
        (length,) = f.read("Q")
        track = [f.read("ii") for _ in range(length)]
        points[point_id] = dict(xyz=np.array([x, y, z]), rgb=(r, g, b), error=error, track=track)
    if not f.at_end():
        raise ValueError(f"{path}: trailing bytes")
    return points


def _records(path: Path) -> list[str]:
    return [line.strip() for line in Path(path).read_text().splitlines() if not line.startswith("#")]


def read_cameras_txt(path: Path) -> dict[int, tuple[str, int, int, np.ndarray]]:
    cameras = {}
    for line in filter(None, _records(path)):
        fields = line.split()
        cameras[int(fields[0])] = (fields[1], int(fields[2]), int(fields[3]), np.array(fields[4:], dtype=np.float64))
    return cameras


def read_images_txt(path: Path) -> dict[int, dict]:
    images = {}
    lines = _records(path)
    for header, points in zip(lines[0::2], lines[1::2]):
        fields = header.split()
        table = np.array(points.split(), dtype=np.float64).reshape(-1, 3)
        images[int(fields[0])] = dict(
            q=np.array(fields[1:5], dtype=np.float64), t=np.array(fields[5:8], dtype=np.float64),
            camera_id=int(fields[8]), name=fields[9], xy=table[:, :2], point3D_ids=table[:, 2].astype(np.int64),
        )  # fmt: skip
    return images


def read_points3D_txt(path: Path) -> dict[int, dict]:
    points = {}
    for line in filter(None, _records(path)):
        fields = line.split()
        track = np.array(fields[8:], dtype=np.int64).reshape(-1, 2)
        points[int(fields[0])] = dict(
            xyz=np.array(fields[1:4], dtype=np.float64), rgb=tuple(int(v) for v in fields[4:7]),
            error=float(fields[7]), track=[tuple(int(v) for v in pair) for pair in track],
        )  # fmt: skip
    return points


def read_model(folder: Path, ext: str) -> tuple[dict, dict, dict]:
    """(cameras, images, points) of a model folder; `ext` is ".bin" or ".txt"."""
    folder = Path(folder)
    if ext == ".bin":
        readers = read_cameras_bin, read_images_bin, read_points3D_bin
    else:
        readers = read_cameras_txt, read_images_txt, read_points3D_txt
    return tuple(read(folder / f"{stem}{ext}") for read, stem in zip(readers, ["cameras", "images", "points3D"]))


def quaternion_wxyz_to_matrix(q: np.ndarray) -> np.ndarray:
    """(4,) unit quaternion, real part first -> (3, 3) rotation matrix."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )
