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

import numpy as np
import pycolmap

from sfm3r.errors import InputError, ReconstructionError
from sfm3r.types import Camera, Scene

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


def scene_to_reconstruction(scene: Scene) -> pycolmap.Reconstruction:
    """Build the pycolmap model of a Scene (ids and layout in the module docstring).

    Raises:
        ValueError, ReconstructionError: see :func:`check_scene`.
    """
    check_scene(scene)
    rec = pycolmap.Reconstruction()
    camera_ids: dict[Camera, int] = {}  # distinct Camera value -> COLMAP camera id
    for cam_index in np.asarray(scene.camera_of_image):
        camera = scene.cameras[int(cam_index)]
        if camera not in camera_ids:
            camera_ids[camera] = len(camera_ids) + 1
            rec.add_camera_with_trivial_rig(_colmap_camera(camera, camera_ids[camera]))

    obs_image = np.asarray(scene.obs_image, dtype=np.int64)
    obs_xy = np.asarray(scene.obs_xy, dtype=np.float64)
    order, bounds = _group(obs_image, scene.num_images)
    rank = np.empty_like(order)  # observation k is entry rank[k] of its image's points2D list
    rank[order] = np.arange(order.size) - bounds[obs_image[order]]
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
# Files


def _check_written(rec: pycolmap.Reconstruction, folder: Path, target: Path) -> None:
    """Read back the model just written: pycolmap's writers do not report a full disk (they truncate).

    Raises:
        OSError: the files in `folder` do not read back as `rec` (disk full, I/O error).
    """
    try:
        back = pycolmap.Reconstruction(str(folder))
        same = (back.num_cameras(), back.num_images(), back.num_points3D()) == (
            rec.num_cameras(), rec.num_images(), rec.num_points3D()
        )  # fmt: skip
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
    rec = scene_to_reconstruction(scene)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".writing-", dir=out_dir))
    try:
        for wanted, ext, write in [(binary, ".bin", rec.write_binary), (text, ".txt", rec.write_text)]:
            if wanted:
                write(str(tmp))
                _check_written(rec, tmp, out_dir)
            for stem in _MODEL_FILES:
                if wanted and (tmp / f"{stem}{ext}").exists():
                    os.replace(tmp / f"{stem}{ext}", out_dir / f"{stem}{ext}")
                elif not wanted:
                    (out_dir / f"{stem}{ext}").unlink(missing_ok=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info(
        "wrote COLMAP model to %s: %d cameras, %d images, %d points",
        out_dir, rec.num_cameras(), rec.num_reg_images(), rec.num_points3D(),
    )  # fmt: skip
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
        logger.warning("%s: %d camera(s) with an unsupported distortion model read as pinhole", model_dir, len(distortion))
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
