"""Coloured point clouds as binary PLY files.

The file is the most widely read PLY flavour (Open3D, MeshLab, CloudCompare, 3DGS tools)::

    ply
    format binary_little_endian 1.0
    comment written by sfm3r
    element vertex N
    property float x          <- float32: ~7 significant digits, plenty for a scene a few km wide
    property float y             at mm resolution; georeferenced coordinates should be shifted first
    property float z
    property uchar red
    property uchar green
    property uchar blue
    end_header
    N records of 15 bytes (3 x float32 + 3 x uint8), little-endian, no padding

:func:`read_ply` reads this and any binary little-endian PLY whose first element is ``vertex`` with
scalar properties (e.g. files with normals or extra fields); it returns x, y, z and red, green, blue.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sfm3r.errors import InputError
from sfm3r.io.atomic import write_bytes_atomic

_VERTEX_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "<i2", "int16": "<i2",
    "ushort": "<u2", "uint16": "<u2", "int": "<i4", "int32": "<i4", "uint": "<u4", "uint32": "<u4",
    "float": "<f4", "float32": "<f4", "double": "<f8", "float64": "<f8",
}  # fmt: skip


def write_ply(path: Path, xyz: np.ndarray, rgb: np.ndarray) -> Path:
    """Write points with colours as a binary little-endian PLY (layout in the module docstring).

    Args:
        path: the file to write (its folder is created); replaced atomically if it exists.
        xyz: (N, 3) float, world coordinates; stored as float32.
        rgb: (N, 3) uint8 colours.

    Raises:
        ValueError: wrong shapes or dtype, or non-finite coordinates.
    """
    xyz, rgb = np.asarray(xyz), np.asarray(rgb)
    if xyz.ndim != 2 or xyz.shape[1] != 3 or rgb.shape != xyz.shape:
        raise ValueError(f"write_ply expects xyz (N, 3) and rgb (N, 3), got {xyz.shape=} {rgb.shape=}")
    if rgb.dtype != np.uint8:
        raise ValueError(f"write_ply expects uint8 colours, got {rgb.dtype=}")
    if not np.isfinite(xyz).all():
        raise ValueError("write_ply: xyz holds NaN or inf values; filter them out first")
    vertices = np.empty(len(xyz), dtype=_VERTEX_DTYPE)
    for k, axis in enumerate("xyz"):
        vertices[axis] = xyz[:, k]
    for k, channel in enumerate(("red", "green", "blue")):
        vertices[channel] = rgb[:, k]
    header = "\n".join(
        ["ply", "format binary_little_endian 1.0", "comment written by sfm3r", f"element vertex {len(xyz)}"]
        + [f"property {'float' if name in 'xyz' else 'uchar'} {name}" for name in _VERTEX_DTYPE.names]
        + ["end_header", ""]
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, header.encode("ascii") + vertices.tobytes())
    return path


def _parse_header(f, path: Path) -> tuple[int, np.dtype]:
    """Read the header lines; return (vertex count, record dtype of the vertex element)."""
    if f.readline().strip() != b"ply":
        raise InputError(f"{path} is not a PLY file")
    count, fields, element = None, [], None
    while True:
        line = f.readline()
        if not line:
            raise InputError(f"{path}: PLY header has no end_header line")
        words = line.decode("ascii", errors="replace").split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "end_header":
            break
        if words[0] == "format" and words[1] != "binary_little_endian":
            raise InputError(f"{path}: only binary_little_endian PLY is supported, not {words[1]}")
        if words[0] == "element":
            if element is None and words[1] != "vertex":
                raise InputError(f"{path}: the first PLY element must be 'vertex', not {words[1]}")
            element = words[1]
            count = int(words[2]) if element == "vertex" else count
        elif words[0] == "property" and element == "vertex":
            if words[1] == "list" or words[1] not in _PLY_TYPES:
                raise InputError(f"{path}: unsupported vertex property {' '.join(words[1:])}")
            fields.append((words[2], _PLY_TYPES[words[1]]))
    if count is None:
        raise InputError(f"{path}: PLY file has no vertex element")
    return count, np.dtype(fields)


def read_ply(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a binary little-endian PLY point cloud.

    Returns:
        xyz: (N, 3) float32 (other float types are cast to float32).
        rgb: (N, 3) uint8; zeros if the file has no colours.

    Raises:
        InputError: not a PLY file, an unsupported layout, or fewer bytes than the header promises.
    """
    path = Path(path)
    with open(path, "rb") as f:
        count, dtype = _parse_header(f, path)
        data = f.read(count * dtype.itemsize)
    if len(data) < count * dtype.itemsize:
        raise InputError(f"{path} is truncated: {count} vertices announced, {len(data) // dtype.itemsize} present")
    vertices = np.frombuffer(data, dtype=dtype, count=count)
    for name in ("x", "y", "z"):
        if name not in dtype.names:
            raise InputError(f"{path}: vertex element has no '{name}' property")
    xyz = np.stack([vertices[a].astype(np.float32) for a in "xyz"], axis=1)
    if all(c in dtype.names for c in ("red", "green", "blue")):
        rgb = np.stack([vertices[c].astype(np.uint8) for c in ("red", "green", "blue")], axis=1)
    else:
        rgb = np.zeros((count, 3), dtype=np.uint8)
    return xyz, rgb
