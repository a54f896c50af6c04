"""PLY point clouds: round trip, a standard header, and files written by other tools."""

from __future__ import annotations

import numpy as np
import pytest

from sfm3r.errors import InputError
from sfm3r.io.ply import read_ply, write_ply

STANDARD_HEADER = (
    b"ply\nformat binary_little_endian 1.0\ncomment written by sfm3r\nelement vertex 100\n"
    b"property float x\nproperty float y\nproperty float z\n"
    b"property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
)


def _cloud(n: int = 100, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(scale=10, size=(n, 3)), rng.integers(0, 256, size=(n, 3), dtype=np.uint8)


def test_round_trip_keeps_float32_coordinates_and_colours(tmp_path):
    xyz, rgb = _cloud()
    path = write_ply(tmp_path / "sub" / "points.ply", xyz, rgb)
    got_xyz, got_rgb = read_ply(path)
    assert got_xyz.dtype == np.float32 and got_rgb.dtype == np.uint8
    np.testing.assert_array_equal(got_xyz, xyz.astype(np.float32))
    np.testing.assert_array_equal(got_rgb, rgb)


def test_header_is_the_standard_one_and_records_are_15_bytes(tmp_path):
    """What Open3D, MeshLab and 3DGS tools expect: binary LE, vertex element, float xyz, uchar rgb."""
    xyz, rgb = _cloud()
    data = write_ply(tmp_path / "points.ply", xyz, rgb).read_bytes()
    assert data.startswith(STANDARD_HEADER)
    body = data[len(STANDARD_HEADER) :]
    assert len(body) == 100 * 15
    first = np.frombuffer(body[:15], dtype=np.dtype([("xyz", "<f4", 3), ("rgb", "u1", 3)]))[0]
    np.testing.assert_array_equal(first["xyz"], xyz[0].astype(np.float32))
    np.testing.assert_array_equal(first["rgb"], rgb[0])


def test_empty_cloud_round_trips(tmp_path):
    xyz, rgb = read_ply(write_ply(tmp_path / "empty.ply", np.zeros((0, 3)), np.zeros((0, 3), np.uint8)))
    assert xyz.shape == (0, 3) and rgb.shape == (0, 3)


def test_reads_files_with_normals_doubles_and_a_second_element(tmp_path):
    """A graphdeco-3DGS-style cloud (x y z nx ny nz red green blue), here with double coordinates."""
    xyz, rgb = _cloud(5)
    dtype = np.dtype([("x", "<f8"), ("y", "<f8"), ("z", "<f8"), ("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4"),
                      ("red", "u1"), ("green", "u1"), ("blue", "u1")])  # fmt: skip
    vertices = np.zeros(5, dtype)
    vertices["x"], vertices["y"], vertices["z"] = xyz.T
    vertices["red"], vertices["green"], vertices["blue"] = rgb.T
    header = (
        "ply\nformat binary_little_endian 1.0\nelement vertex 5\nproperty double x\nproperty double y\n"
        "property double z\nproperty float nx\nproperty float ny\nproperty float nz\nproperty uchar red\n"
        "property uchar green\nproperty uchar blue\nelement face 0\nproperty list uchar int vertex_indices\n"
        "end_header\n"
    )
    (tmp_path / "other.ply").write_bytes(header.encode() + vertices.tobytes())
    got_xyz, got_rgb = read_ply(tmp_path / "other.ply")
    np.testing.assert_array_equal(got_xyz, xyz.astype(np.float32))
    np.testing.assert_array_equal(got_rgb, rgb)


def test_write_refuses_bad_input(tmp_path):
    xyz, rgb = _cloud(3)
    with pytest.raises(ValueError, match="uint8"):
        write_ply(tmp_path / "a.ply", xyz, rgb.astype(np.int64))
    with pytest.raises(ValueError, match="shape"):
        write_ply(tmp_path / "a.ply", xyz[:, :2], rgb)
    xyz[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        write_ply(tmp_path / "a.ply", xyz, rgb)
    assert not (tmp_path / "a.ply").exists()


def test_read_refuses_truncated_and_ascii_files(tmp_path):
    xyz, rgb = _cloud()
    data = write_ply(tmp_path / "p.ply", xyz, rgb).read_bytes()
    (tmp_path / "cut.ply").write_bytes(data[:-10])
    with pytest.raises(InputError, match="truncated"):
        read_ply(tmp_path / "cut.ply")
    (tmp_path / "ascii.ply").write_text("ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nend_header\n1\n")
    with pytest.raises(InputError, match="binary_little_endian"):
        read_ply(tmp_path / "ascii.ply")
    (tmp_path / "not.ply").write_text("hello")
    with pytest.raises(InputError, match="not a PLY"):
        read_ply(tmp_path / "not.ply")


def test_colmap_reads_the_written_file(tmp_path):
    """An independent PLY parser (COLMAP's, through pycolmap) gets the same points and colours."""
    import pycolmap

    xyz, rgb = _cloud(20)
    rec = pycolmap.Reconstruction()
    rec.import_PLY(str(write_ply(tmp_path / "points.ply", xyz, rgb)))
    points = [rec.points3D[i] for i in sorted(rec.point3D_ids())]
    np.testing.assert_allclose([p.xyz for p in points], xyz.astype(np.float32), rtol=1e-6)
    np.testing.assert_array_equal([p.color for p in points], rgb)
