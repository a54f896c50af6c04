"""The Gaussian Splatting folder (DESIGN.md §4), what graphdeco 3DGS, gsplat and nerfstudio read::

    out_dir/
      images/        every registered image, as the cameras see it, under a unique flat name
      sparse/0/      cameras.bin images.bin points3D.bin (+ rigs.bin frames.bin; + .txt on request)
      points.ply     the coloured points (sparse tracks, or the dense cloud on request)

Images. A file is **copied byte for byte** when a trainer reads it exactly as our cameras saw it: a
JPEG or PNG, 8-bit RGB, without a (non-identity) EXIF orientation. Everything else is **re-encoded
as PNG** (lossless) from :func:`~sfm3r.io.images.read_image`, so its pixels are exactly what the
network saw: files with an EXIF rotation (most trainers ignore EXIF, and their sizes would not match
the cameras), WebP/BMP/TIFF (not read by every trainer), and grey, palette, CMYK, 16-bit or alpha
images (3DGS expects 3 channels; an alpha channel would be used as a mask the network never saw).

Names. Loaders keep only the basename of a COLMAP image name, so nested names are flattened:
``a/b.jpg`` -> ``a__b.jpg``; a re-encoded file gets the ``.png`` suffix. Collisions (compared case-
insensitively, for macOS and Windows file systems) are resolved deterministically: names that need no
change keep them, then the others in sorted order get ``_2``, ``_3``, ... before the suffix. The
written COLMAP model uses the new names. Names with ``..``, ``.`` or empty parts, absolute paths and
drive letters are refused, so nothing is ever written outside ``out_dir``.

The PLY is not written as ``sparse/0/points3D.ply``: graphdeco 3DGS would load that file instead of
points3D.bin and expects normals in it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import os
import re
from collections.abc import Collection, Sequence
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from sfm3r.errors import InputError, ReconstructionError
from sfm3r.io.colmap import check_scene, write_colmap_model
from sfm3r.io.images import exif_orientation, read_image
from sfm3r.io.ply import write_ply
from sfm3r.types import ImageInfo, Scene

logger = logging.getLogger(__name__)

_COPYABLE_FORMATS = ("JPEG", "PNG")  # read by every trainer, as is
_NESTING_SEPARATOR = "__"


# ---------------------------------------------------------------------------------------------------
# Names


def flat_name(name: str) -> str:
    """``"a/b/c.jpg"`` -> ``"a__b__c.jpg"`` (backslashes count as separators too).

    Raises:
        InputError: the name is empty, absolute, has a drive letter, or a ``.``, ``..`` or empty part.
    """
    parts = name.replace("\\", "/").split("/")
    if not name or name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name) or "\x00" in name:
        raise InputError(f"image name {name!r} is not a relative path; refusing to export it")
    if any(part in ("", ".", "..") for part in parts):
        raise InputError(f"image name {name!r} has an empty, '.' or '..' part; refusing to export it")
    return _NESTING_SEPARATOR.join(parts)


def export_names(names: Sequence[str], reencoded: Collection[str] = ()) -> dict[str, str]:
    """Unique flat file names for `names` (the rules are in the module docstring).

    Args:
        names: image names (relative, posix), unique.
        reencoded: the names whose file is re-encoded as PNG (their suffix becomes ``.png``).

    Returns:
        {name: flat file name}, deterministic for a given set of names (independent of their order).
    """
    wanted = {}
    for name in names:
        flat = flat_name(name)
        wanted[name] = str(PurePosixPath(flat).with_suffix(".png")) if name in reencoded else flat
    taken: set[str] = set()
    result: dict[str, str] = {}
    unchanged_first = sorted(names, key=lambda n: (wanted[n] != n, n))
    for name in unchanged_first:
        candidate, stem, suffix, k = wanted[name], Path(wanted[name]).stem, Path(wanted[name]).suffix, 1
        while candidate.casefold() in taken:
            k += 1
            candidate = f"{stem}_{k}{suffix}"
        taken.add(candidate.casefold())
        result[name] = candidate
    return {name: result[name] for name in names}


# ---------------------------------------------------------------------------------------------------
# Images


def _check_and_classify(info: ImageInfo, size: tuple[int, int]) -> bool:
    """Check one image before anything is written; return True if it must be re-encoded as PNG.

    Checks: the file still has the SHA-256 it was reconstructed with, and its displayed size (after
    EXIF rotation) equals its camera's `size` (W, H). Copied as is only when it is a JPEG or PNG,
    8-bit RGB, with identity EXIF orientation.
    """
    data = info.path.read_bytes()
    if hashlib.sha256(data).hexdigest() != info.sha256:
        raise InputError(f"{info.path} changed since it was reconstructed; reconstruct again")
    try:
        with Image.open(io.BytesIO(data)) as image:
            orientation = exif_orientation(image)
            width, height = image.size if orientation < 5 else image.size[::-1]
            reencode = not (image.format in _COPYABLE_FORMATS and image.mode == "RGB" and orientation == 1)
    except (OSError, ValueError, SyntaxError) as err:
        raise InputError(f"cannot open {info.path} for export: {err}") from err
    if (width, height) != size:
        raise InputError(
            f"{info.path} is {width}x{height} but its camera is {size[0]}x{size[1]}; "
            "was the image replaced after reconstruction? Reconstruct again."
        )
    return reencode


def _export_image(info: ImageInfo, reencode: bool, target: Path) -> None:
    """Copy the file's bytes, or re-encode its displayed RGB pixels as PNG, into `target` (atomic)."""
    if reencode:
        buffer = io.BytesIO()
        Image.fromarray(read_image(info.path)).save(buffer, format="PNG")
        data = buffer.getvalue()
    else:
        data = info.path.read_bytes()
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)


# ---------------------------------------------------------------------------------------------------
# The folder


def export_gaussian_splatting_folder(
    scene: Scene, images: Sequence[ImageInfo], out_dir: Path, text: bool = False, *, dense: bool = False
) -> Path:
    """Lay out `out_dir` for Gaussian Splatting trainers and return it (layout in the module docstring).

    Args:
        scene: the reconstruction; only its registered images are exported.
        images: the ImageInfo of (at least) every registered image, matched by name.
        text: also write the model as .txt next to the .bin files.
        dense: write ``scene.dense_xyz/dense_rgb`` to points.ply instead of the sparse points.

    Raises:
        InputError: an image is missing from `images`, changed on disk since it was read (SHA-256), has
            a size different from its camera, or has an unsafe name; `dense` without dense points.
        ReconstructionError: non-finite values in the scene.
        Every check runs before anything is written.
    """
    by_name = {info.name: info for info in images}
    missing = [name for name in scene.image_names if name not in by_name]
    if missing:
        raise InputError(f"no ImageInfo for {len(missing)} registered image(s), e.g. {missing[0]!r}")
    if dense and scene.dense_xyz is None:
        raise InputError("dense points were requested for points.ply but the scene has none")
    xyz, rgb = (scene.dense_xyz, scene.dense_rgb) if dense else (scene.points_xyz, scene.points_rgb)
    check_scene(scene)  # nothing is written for a scene with NaN poses or points
    if not np.isfinite(xyz).all():
        raise ReconstructionError("the dense points hold NaN or inf values; refusing to export")
    for name in scene.image_names:
        flat_name(name)  # refuse unsafe names before reading any file

    reencode = set()
    for i, name in enumerate(scene.image_names):
        camera = scene.cameras[int(scene.camera_of_image[i])]
        if _check_and_classify(by_name[name], (camera.width, camera.height)):
            reencode.add(name)
    new_names = export_names(scene.image_names, reencode)
    renamed = dataclasses.replace(scene, image_names=tuple(new_names[n] for n in scene.image_names))

    out_dir = Path(out_dir)
    images_dir = out_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    for name in scene.image_names:
        if os.path.basename(new_names[name]) != new_names[name] or new_names[name] in (".", ".."):
            raise InputError(f"export name {new_names[name]!r} would leave {images_dir}")  # cannot happen
        _export_image(by_name[name], name in reencode, images_dir / new_names[name])
    write_colmap_model(renamed, out_dir / "sparse" / "0", binary=True, text=text)
    write_ply(out_dir / "points.ply", xyz, rgb)
    logger.info(
        "exported %d images (%d copied, %d re-encoded as PNG), the model and %d points to %s",
        scene.num_images, scene.num_images - len(reencode), len(reencode), len(xyz), out_dir,
    )  # fmt: skip
    return out_dir
