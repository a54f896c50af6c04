"""COLMAP sparse models: :class:`~sfm3r.types.Scene` -> ``pycolmap.Reconstruction`` -> files, and back.

What the writer emits (pycolmap 4.x, readable by COLMAP 3.x, 3DGS and classic ``read_write_model``
readers, see PYTHON_STACK.md §A4):

- ``cameras``: one per *distinct* :class:`~sfm3r.types.Camera` value used by a registered image (images
  with identical intrinsics and size share a camera), ids 1..C in order of first use. Original-image
  resolution; the camera's own ``model`` with its distortion when set, else ``SIMPLE_PINHOLE`` (f = mean
  of fx, fy) when fx and fy agree within 1e-9 relative, else ``PINHOLE`` (``Camera.colmap_model``).
- ``images``: ids 1..N in Scene order, pose ``cam_from_world``. Each image's ``points2D`` are its
  observations in the order of the Scene's observation table; every one of them has a 3D point.
- ``points3D``: ids 1..P in Scene order, colour, error (COLMAP's -1 where the Scene has NaN), track of
  (image id, point2D index) pairs that match the images' point2D lists.
- pycolmap also writes ``rigs`` and ``frames`` (one trivial rig per camera, one frame per image);
  classic readers ignore them.

The binary files are written by pycolmap, except the 3D points: images.bin's point3D ids and points3D.bin
come from numpy, byte for byte what pycolmap writes, without its Python call per point (section "The binary
3D points" below). The text files come from :func:`scene_to_reconstruction` and pycolmap.

Conventions: Scene pixels (``obs_xy``, ``cx``, ``cy``) are already in COLMAP's convention (pixel (0, 0)
centred at (0.5, 0.5)); the +0.5 shift from network pixel indices lives only in
:meth:`~sfm3r.types.NetView.net_to_original`, so nothing here shifts again. Rotations go to pycolmap
as 3x3 matrices; pycolmap stores quaternions as (x, y, z, w), the text files as (w, x, y, z).
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sfm3r.errors import InputError, ReconstructionError
from sfm3r.types import Camera, Scene

if TYPE_CHECKING:  # pycolmap (~0.1 s) is imported where it is used: a cached rerun that keeps sparse/0 needs none
    import pycolmap

logger = logging.getLogger(__name__)

_MODEL_FILES = ("cameras", "images", "points3D", "rigs", "frames")  # pycolmap 4.x writes all five
_ROTATION_ATOL = 1e-6  # |R Rᵀ - I| and |det R - 1| above this: not a rotation


# ---------------------------------------------------------------------------------------------------
# Checks: everything is refused before anything is built or written


def _check_shape(name: str, array: np.ndarray, shape: tuple) -> None:
    """`shape` holds ints or None (any size); raises ValueError quoting both shapes."""
    if array.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, array.shape)):
        raise ValueError(f"Scene.{name} has shape {array.shape}, expected {shape} (None = any)")


def check_scene(scene: Scene) -> None:
    """Validate a Scene before writing it.

    Raises:
        ValueError: shapes or indices are inconsistent (a programming error).
        ReconstructionError: a value is non-finite (NaN/inf pose, intrinsics, point or observation),
            a focal length is not positive, or a rotation is not a rotation.
    """
    n, c, p = scene.num_images, len(scene.cameras), scene.num_points
    k = int(np.asarray(scene.obs_point).shape[0])
    for name, shape in [
        ("camera_of_image", (n,)), ("rotations", (n, 3, 3)), ("translations", (n, 3)),
        ("points_xyz", (p, 3)), ("points_rgb", (p, 3)), ("points_error", (p,)),
        ("obs_point", (k,)), ("obs_image", (k,)), ("obs_xy", (k, 2)),
    ]:  # fmt: skip
        _check_shape(name, np.asarray(getattr(scene, name)), shape)
    if len(set(scene.image_names)) != n:
        raise ValueError("Scene.image_names has duplicates")
    if np.asarray(scene.points_rgb).dtype != np.uint8:
        raise ValueError(f"Scene.points_rgb must be uint8, got {np.asarray(scene.points_rgb).dtype}")
    for name, index, size in [
        ("camera_of_image", scene.camera_of_image, c), ("obs_point", scene.obs_point, p),
        ("obs_image", scene.obs_image, n),
    ]:  # fmt: skip
        index = np.asarray(index)
        if index.size and (index.min() < 0 or index.max() >= size):
            raise ValueError(f"Scene.{name} holds indices outside [0, {size})")

    for i, camera in enumerate(scene.cameras):
        values = np.array([camera.fx, camera.fy, camera.cx, camera.cy, *camera.distortion], dtype=np.float64)
        if not np.isfinite(values).all() or camera.fx <= 0 or camera.fy <= 0:
            raise ReconstructionError(f"camera {i} has invalid intrinsics {camera}; refusing to write the model")
        if camera.width <= 0 or camera.height <= 0:
            raise ReconstructionError(f"camera {i} has an empty image size {camera}")
    rotations = np.asarray(scene.rotations, dtype=np.float64)
    for i, name in enumerate(scene.image_names):
        if not (np.isfinite(rotations[i]).all() and np.isfinite(scene.translations[i]).all()):
            raise ReconstructionError(f"image {name} has a non-finite pose; refusing to write the model")
        off_orthonormal = np.abs(rotations[i] @ rotations[i].T - np.eye(3)).max()
        if off_orthonormal > _ROTATION_ATOL or abs(np.linalg.det(rotations[i]) - 1) > _ROTATION_ATOL:
            raise ReconstructionError(f"image {name}: cam_from_world rotation is not a rotation matrix")
    for name in ("points_xyz", "obs_xy"):
        bad = ~np.isfinite(np.asarray(getattr(scene, name))).all(axis=1)
        if bad.any():
            raise ReconstructionError(
                f"{bad.sum()} non-finite values in Scene.{name} (first at index {np.flatnonzero(bad)[0]}); "
                "refusing to write the model"
            )


# ---------------------------------------------------------------------------------------------------
# Scene -> pycolmap.Reconstruction


def _colmap_camera(camera: Camera, camera_id: int) -> pycolmap.Camera:
    import pycolmap

    model, params = camera.colmap_model()
    return pycolmap.Camera(
        camera_id=camera_id, model=model, width=int(camera.width), height=int(camera.height), params=params
    )


def _group(index: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Group a (K,) index array with values in [0, size): (order (K,), bounds (size + 1,)).

    ``order[bounds[g]:bounds[g + 1]]`` are the positions holding value g, in their original order.
    """
    order = np.argsort(index, kind="stable")
    return order, np.searchsorted(index[order], np.arange(size + 1))


def _observation_layout(scene: Scene) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(order (K,), bounds (N + 1,), rank (K,)): image i's points2D are the observations
    ``order[bounds[i]:bounds[i + 1]]``, in the Scene's order; observation k is entry ``rank[k]`` of its image's list."""
    obs_image = np.asarray(scene.obs_image, dtype=np.int64)
    order, bounds = _group(obs_image, scene.num_images)
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size) - bounds[obs_image[order]]
    return order, bounds, rank


def _reconstruction_without_points(scene: Scene, order: np.ndarray, bounds: np.ndarray) -> pycolmap.Reconstruction:
    """The cameras (with trivial rigs) and the posed images (with trivial frames) and their points2D, no 3D points."""
    import pycolmap

    rec = pycolmap.Reconstruction()
    camera_ids: dict[Camera, int] = {}  # distinct Camera value -> COLMAP camera id
    for cam_index in np.asarray(scene.camera_of_image):
        camera = scene.cameras[int(cam_index)]
        if camera not in camera_ids:
            camera_ids[camera] = len(camera_ids) + 1
            rec.add_camera_with_trivial_rig(_colmap_camera(camera, camera_ids[camera]))
    obs_xy = np.asarray(scene.obs_xy, dtype=np.float64)
    for i, name in enumerate(scene.image_names):
        image = pycolmap.Image(
            name=name,
            keypoints=obs_xy[order[bounds[i] : bounds[i + 1]]].reshape(-1, 2),
            camera_id=camera_ids[scene.cameras[int(scene.camera_of_image[i])]],
            image_id=i + 1,
        )
        pose = pycolmap.Rigid3d(
            pycolmap.Rotation3d(np.asarray(scene.rotations[i], dtype=np.float64)),
            np.asarray(scene.translations[i], dtype=np.float64),
        )
        rec.add_image_with_trivial_frame(image, pose)
    return rec


def scene_to_reconstruction(scene: Scene) -> pycolmap.Reconstruction:
    """Build the pycolmap model of a Scene (ids and layout in the module docstring).

    Raises:
        ValueError, ReconstructionError: see :func:`check_scene`.
    """
    import pycolmap

    check_scene(scene)
    order, bounds, rank = _observation_layout(scene)
    rec = _reconstruction_without_points(scene, order, bounds)
    obs_image = np.asarray(scene.obs_image, dtype=np.int64)
    by_point, point_bounds = _group(np.asarray(scene.obs_point, dtype=np.int64), scene.num_points)
    track_image_ids = (obs_image[by_point] + 1).tolist()  # python ints: much faster through pybind
    track_point2d_idx = rank[by_point].tolist()
    xyz = np.asarray(scene.points_xyz, dtype=np.float64)
    rgb = np.asarray(scene.points_rgb).astype(np.uint8)
    errors = np.asarray(scene.points_error, dtype=np.float64).tolist()
    points3d = rec.points3D
    for p, (start, end) in enumerate(zip(point_bounds[:-1].tolist(), point_bounds[1:].tolist())):
        elements = map(pycolmap.TrackElement, track_image_ids[start:end], track_point2d_idx[start:end])
        point_id = rec.add_point3D(xyz[p], pycolmap.Track(list(elements)), rgb[p])
        if np.isfinite(errors[p]):
            points3d[point_id].error = errors[p]  # else COLMAP's "unknown", -1
    return rec


# ---------------------------------------------------------------------------------------------------
# The binary 3D points without a Python loop per point
#
# pycolmap builds a point through several binding calls (~7 us a point: 0.2 s for 30k points, seconds for
# millions), so the binary model is written in two steps: pycolmap writes the model without 3D points
# (cameras, rigs, frames, images with their points2D), then numpy fills in images.bin's point3D ids and writes
# points3D.bin, in COLMAP's binary layout (colmap/scene/reconstruction_io_binary.cc, little-endian):
#
#   images.bin    uint64 N; per image: uint32 image_id, 4 x f8 quaternion (w, x, y, z), 3 x f8 translation,
#                 uint32 camera_id, name + NUL, uint64 num_points2D, then per point2D f8 x, f8 y, uint64 point3D_id
#   points3D.bin  uint64 P; per point: uint64 point3D_id, 3 x f8 xyz, 3 x uint8 rgb, f8 error,
#                 uint64 track_length, then per element uint32 image_id, uint32 point2D_idx
#
# The files are byte for byte those of pycolmap's writer (tests/io/test_colmap.py checks it).

_POINT2D = np.dtype([("xy", "<f8", (2,)), ("point3D_id", "<u8")])  # 24 bytes
_POINT_HEAD = np.dtype([("point3D_id", "<u8"), ("xyz", "<f8", (3,)), ("rgb", "u1", (3,)), ("error", "<f8"),
                        ("track_length", "<u8")])  # 51 bytes, packed  # fmt: skip
_TRACK_ELEMENT = np.dtype([("image_id", "<u4"), ("point2D_idx", "<u4")])  # 8 bytes
_POINTS_PER_CHUNK = 1 << 16  # bounds the byte-gather index of _interleave (~8 bytes per output byte)
_IMAGE_HEAD_BYTES = 4 + 4 * 8 + 3 * 8 + 4  # image_id, quaternion, translation, camera_id (the name follows)


def _with_point3d_ids(images_bin: bytes, scene: Scene, order: np.ndarray, bounds: np.ndarray) -> bytes:
    """`images_bin` (pycolmap's, no 3D points) with each point2D's point3D id set: observation k is point
    ``obs_point[k] + 1``.

    Raises:
        ValueError: the file is not laid out as expected (truncated, or another image order or count).
    """
    data = bytearray(images_bin)
    point_ids = np.asarray(scene.obs_point, dtype=np.uint64) + np.uint64(1)  # (K,)
    count, offset = int.from_bytes(data[:8], "little"), 8
    if count != scene.num_images:
        raise ValueError(f"images.bin holds {count} images, expected {scene.num_images}")
    for _ in range(count):
        i = int.from_bytes(data[offset : offset + 4], "little") - 1  # image id i + 1
        offset = data.index(0, offset + _IMAGE_HEAD_BYTES) + 1  # past the name's NUL
        num_points2d = int.from_bytes(data[offset : offset + 8], "little")
        if not 0 <= i < scene.num_images or num_points2d != bounds[i + 1] - bounds[i]:
            raise ValueError(f"images.bin: image {i + 1} with {num_points2d} points2D is not in the scene")
        points = np.frombuffer(data, dtype=_POINT2D, count=num_points2d, offset=offset + 8)  # a writable view
        points["point3D_id"] = point_ids[order[bounds[i] : bounds[i + 1]]]
        offset += 8 + num_points2d * _POINT2D.itemsize
    if offset != len(data):
        raise ValueError(f"images.bin has {len(data) - offset} bytes beyond its last image")
    return bytes(data)


def _points3d_bin(scene: Scene, rank: np.ndarray) -> bytes:
    """points3D.bin of `scene`: ids 1..P, COLMAP's -1 for an unknown (NaN) error, tracks in Scene order."""
    obs_point = np.asarray(scene.obs_point, dtype=np.int64)
    by_point, point_bounds = _group(obs_point, scene.num_points)
    lengths = np.diff(point_bounds)  # (P,)
    heads = np.zeros(scene.num_points, _POINT_HEAD)
    heads["point3D_id"] = np.arange(1, scene.num_points + 1)
    heads["xyz"] = np.asarray(scene.points_xyz, dtype=np.float64)
    heads["rgb"] = np.asarray(scene.points_rgb).astype(np.uint8)
    errors = np.asarray(scene.points_error, dtype=np.float64)
    heads["error"] = np.where(np.isfinite(errors), errors, -1.0)
    heads["track_length"] = lengths
    track = np.empty(len(obs_point), _TRACK_ELEMENT)  # (K,) grouped by point
    track["image_id"] = np.asarray(scene.obs_image, dtype=np.int64)[by_point] + 1
    track["point2D_idx"] = rank[by_point]
    head_bytes = heads.view(np.uint8).reshape(-1, _POINT_HEAD.itemsize)
    track_bytes = track.view(np.uint8).reshape(-1, _TRACK_ELEMENT.itemsize)
    parts = [np.uint64(scene.num_points).tobytes()]
    for start in range(0, scene.num_points, _POINTS_PER_CHUNK):
        stop = min(start + _POINTS_PER_CHUNK, scene.num_points)
        tracks = track_bytes[point_bounds[start] : point_bounds[stop]]
        parts.append(_interleave(head_bytes[start:stop], tracks, lengths[start:stop]))
    return b"".join(parts)


def _interleave(heads: np.ndarray, tracks: np.ndarray, lengths: np.ndarray) -> bytes:
    """``heads[0], tracks of point 0, heads[1], tracks of point 1, ...`` as bytes.

    Args:
        heads: (n, 51) uint8, one point's head per row; tracks: (m, 8) uint8, the elements of point 0, then of
            point 1, ...; lengths: (n,) elements per point (sum m).
    """
    n, head_size = heads.shape
    source = np.concatenate([heads.ravel(), tracks.ravel()])
    first_element = np.cumsum(lengths) - lengths  # (n,)
    sizes = np.stack([np.full(n, head_size), lengths * tracks.shape[1]], axis=1).ravel()  # (2n,) in output order
    starts = np.stack([np.arange(n) * head_size, heads.size + first_element * tracks.shape[1]], axis=1).ravel()
    out_starts = np.cumsum(sizes) - sizes
    index = np.repeat(starts - out_starts, sizes) + np.arange(int(sizes.sum()))  # output byte -> source byte
    return source[index].tobytes()


def _write_binary_model(scene: Scene, folder: Path) -> tuple[int, int, int]:
    """Write the binary model of `scene` into `folder` (pycolmap without points, then numpy for the points);
    returns (cameras, images, points) written.

    Raises:
        OSError: images.bin did not read back as pycolmap should have written it (disk full, I/O error).
    """
    order, bounds, rank = _observation_layout(scene)
    rec = _reconstruction_without_points(scene, order, bounds)
    rec.write_binary(str(folder))
    images_bin = folder / "images.bin"
    try:
        images = _with_point3d_ids(images_bin.read_bytes(), scene, order, bounds)
    except ValueError as exc:
        raise OSError(errno.EIO, f"the COLMAP model written here reads back incomplete ({exc}); is the disk full?",
                      str(folder)) from exc  # fmt: skip
    images_bin.write_bytes(images)
    (folder / "points3D.bin").write_bytes(_points3d_bin(scene, rank))
    return rec.num_cameras(), rec.num_images(), scene.num_points


# ---------------------------------------------------------------------------------------------------
# Files


def _check_written(counts: tuple[int, int, int], folder: Path, target: Path) -> None:
    """Read back the model just written: pycolmap's writers do not report a full disk (they truncate).

    Raises:
        OSError: the files in `folder` do not read back with `counts` (cameras, images, points) (disk full,
            I/O error).
    """
    import pycolmap

    try:
        back = pycolmap.Reconstruction(str(folder))
        same = (back.num_cameras(), back.num_images(), back.num_points3D()) == counts
    except Exception as exc:  # noqa: BLE001 -- pycolmap raises ValueError/RuntimeError on short files
        same, reason = False, f"{type(exc).__name__}: {exc}"
    else:
        reason = "counts differ"
    if not same:
        raise OSError(errno.EIO, f"the COLMAP model written here reads back incomplete ({reason}); is the disk full?",
                      str(target))  # fmt: skip


def check_text_names(names: Sequence[str]) -> None:
    """Refuse names that the COLMAP text format cannot hold (`--text`): it separates fields by spaces, so
    a name with whitespace would be read back cut at the first space."""
    bad = [name for name in names if any(c.isspace() for c in name)]
    if bad:
        raise InputError(
            f"image name {bad[0]!r} contains whitespace, which the COLMAP text format (--text) cannot hold "
            f"({len(bad)} such name(s)); rename the file(s) or drop --text (the binary model holds any name)"
        )


def model_file_names() -> list[str]:
    """Every file name :func:`write_colmap_model` may write or remove in its folder (both formats)."""
    return [f"{stem}{ext}" for ext in (".bin", ".txt") for stem in _MODEL_FILES]


def write_colmap_model(scene: Scene, out_dir: Path, binary: bool = True, text: bool = False) -> Path:
    """Write `scene` as a COLMAP model into `out_dir` (created if needed) and return `out_dir`.

    Everything is validated first (nothing is written for a bad Scene). Files are written into a
    temporary folder inside `out_dir` and then moved in place one by one; model files of a format
    not requested this time (e.g. an old ``images.txt``) are removed so the folder holds one model.

    Args:
        binary: write ``cameras.bin, images.bin, points3D.bin, rigs.bin, frames.bin``.
        text: write the same as ``.txt`` (both may be requested; they then sit side by side).

    Raises:
        ValueError: neither format requested, or inconsistent Scene arrays.
        ReconstructionError: non-finite or invalid values (see :func:`check_scene`).
    """
    if not (binary or text):
        raise ValueError("write_colmap_model: ask for binary, text or both")
    check_scene(scene)
    rec = scene_to_reconstruction(scene) if text else None  # the binary files need no points in pycolmap
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".writing-", dir=out_dir))
    counts = (0, 0, 0)
    try:
        for wanted, ext in [(binary, ".bin"), (text, ".txt")]:
            if wanted and ext == ".bin":
                counts = _write_binary_model(scene, tmp)
            elif wanted:
                rec.write_text(str(tmp))
                counts = rec.num_cameras(), rec.num_images(), rec.num_points3D()
            if wanted:
                _check_written(counts, tmp, out_dir)
            for stem in _MODEL_FILES:
                if wanted and (tmp / f"{stem}{ext}").exists():
                    os.replace(tmp / f"{stem}{ext}", out_dir / f"{stem}{ext}")
                elif not wanted:
                    (out_dir / f"{stem}{ext}").unlink(missing_ok=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("wrote COLMAP model to %s: %d cameras, %d images, %d points", out_dir, *counts)
    return out_dir


def _camera_from_colmap(camera: pycolmap.Camera) -> tuple[Camera, list[float] | None]:
    """(Camera, None) for the models sfm3r handles (distortion kept); for other models (pinhole part,
    all their params): their distortion is dropped."""
    model = camera.model.name
    try:
        return Camera.from_colmap(model, camera.width, camera.height, list(camera.params)), None
    except ValueError:
        pass
    pinhole = Camera(
        width=int(camera.width),
        height=int(camera.height),
        fx=float(camera.focal_length_x),
        fy=float(camera.focal_length_y),
        cx=float(camera.principal_point_x),
        cy=float(camera.principal_point_y),
    )
    return pinhole, [float(v) for v in camera.params]


def read_colmap_model(model_dir: Path) -> Scene:
    """Read a COLMAP model folder (binary or text, any COLMAP/pycolmap version) into a Scene.

    Registered images sorted by image id; all cameras sorted by camera id; points sorted by point id,
    errors < 0 (unknown) as NaN; observations in point order, then track order. Cameras keep their
    model and distortion (``types.CAMERA_MODELS``); other models (FULL_OPENCV, fisheyes, ...) keep only
    their pinhole part, with a warning; ``info["distortion"]`` then maps the camera index to
    ``{"model": name, "params": [...]}``. ``info["model_dir"]`` is the folder read.

    Raises:
        InputError: the folder is missing or holds no readable model.
    """
    import pycolmap

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise InputError(f"COLMAP model folder {model_dir} does not exist")
    try:
        rec = pycolmap.Reconstruction(str(model_dir))
    except (RuntimeError, ValueError) as err:
        raise InputError(
            f"cannot read a COLMAP model from {model_dir} (expected cameras, images and points3D "
            f".bin or .txt files): {str(err).splitlines()[0] if str(err) else err}"
        ) from err

    camera_ids = sorted(rec.cameras)
    cameras, distortion = [], {}
    for index, camera_id in enumerate(camera_ids):
        pinhole, params = _camera_from_colmap(rec.cameras[camera_id])
        cameras.append(pinhole)
        if params is not None:
            distortion[index] = {"model": rec.cameras[camera_id].model.name, "params": params}
    if distortion:
        logger.warning(
            "%s: %d camera(s) with an unsupported distortion model read as pinhole", model_dir, len(distortion)
        )
    camera_index = {camera_id: i for i, camera_id in enumerate(camera_ids)}

    image_ids = sorted(rec.reg_image_ids())
    image_index = {image_id: i for i, image_id in enumerate(image_ids)}
    images = [rec.images[image_id] for image_id in image_ids]
    poses = [image.cam_from_world() for image in images]

    points3d = rec.points3D  # one map proxy: indexing rec.points3D anew each time is slow
    points = [points3d[point_id] for point_id in sorted(rec.point3D_ids())]
    image_of = dict(zip(image_ids, images))
    obs_point, obs_image, obs_xy = [], [], []
    for p, point in enumerate(points):
        for element in point.track.elements:
            if element.image_id not in image_index:
                continue  # an observation in an unregistered image: not part of the Scene
            obs_point.append(p)
            obs_image.append(image_index[element.image_id])
            obs_xy.append(image_of[element.image_id].point2D(element.point2D_idx).xy)
    errors = np.array([pt.error for pt in points], dtype=np.float64)
    unregistered = sorted(image.name for image_id, image in rec.images.items() if image_id not in image_index)

    return Scene(
        image_names=tuple(image.name for image in images),
        cameras=tuple(cameras),
        camera_of_image=np.array([camera_index[image.camera_id] for image in images], dtype=np.int64),
        rotations=np.array([pose.rotation.matrix() for pose in poses], dtype=np.float64).reshape(-1, 3, 3),
        translations=np.array([pose.translation for pose in poses], dtype=np.float64).reshape(-1, 3),
        points_xyz=np.array([pt.xyz for pt in points], dtype=np.float64).reshape(-1, 3),
        points_rgb=np.array([pt.color for pt in points], dtype=np.uint8).reshape(-1, 3),
        points_error=np.where(errors < 0, np.nan, errors),
        obs_point=np.array(obs_point, dtype=np.int64),
        obs_image=np.array(obs_image, dtype=np.int64),
        obs_xy=np.array(obs_xy, dtype=np.float64).reshape(-1, 2),
        unregistered=tuple(unregistered),
        info={"model_dir": str(model_dir), **({"distortion": distortion} if distortion else {})},
    )
