"""The Gaussian Splatting folder (DESIGN.md §4), what graphdeco 3DGS, gsplat and nerfstudio read::

    out_dir/
      images/        every registered image, as the cameras see it, under a unique flat name
      sparse/0/      cameras.bin images.bin points3D.bin (+ rigs.bin frames.bin; + .txt on request)
      points.ply     the coloured points (sparse tracks, or the dense cloud on request)
      images_2/ ...  on request: the images downscaled by 2, 4, 8, ... (``io.downscale``)
      transforms.json, sparse_pc.ply   nerfstudio's camera file and its copy of the points (``io.nerfstudio``)

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

Centring crop (``centre_principal_points=True``, the default). The alignment refines the principal
point of shared cameras, and graphdeco 3DGS ignores ``cx, cy`` (it builds its projection from the
field of view only, i.e. assumes the principal point at the image centre). So every camera whose
principal point is 0.5 px or more off the centre (``W/2, H/2`` in COLMAP pixels) in x or y gets one
integer crop, applied to all its images: on such an axis, with ``cx < W/2`` the image keeps its first
``round(2·cx)`` columns, with ``cx > W/2`` its first ``round(2·cx - W)`` columns are cut (same for y).
The written camera has the cropped size and ``cx - left, cy - top`` exactly (not rounded: gsplat and
nerfstudio, which read ``cx, cy``, stay exact; graphdeco sees at most 0.25 px offset on a cropped axis,
under 0.5 px on an uncropped one), the same focal. Observations shift by ``(-left, -top)``; those that
fall outside the cropped image are dropped, and a point that lost observations that way and keeps
fewer than 2 is removed (points the crop did not touch are kept as they are). The crop of a camera
that would lose more than 10 % of its width or height is refused with a warning, and that camera is
exported whole. Cropped images keep their name and format (so the model's names stay those of the
photos): PNG stays lossless, JPEG is re-encoded at quality 95 with full-resolution chroma.
With ``centre_principal_points=False`` nothing is cropped (graphdeco then sees a shifted image).

Undistortion. Cameras with lens distortion (SIMPLE_RADIAL, RADIAL, OPENCV) are first undistorted
(``io.undistort``, as COLMAP's ``image_undistorter``): their images are resampled to PINHOLE cameras
whose principal point is then centred by the crop above like any other.

Reruns. Given the record of an earlier export into the same folder (``written``: the run folder's
manifest keeps it), an image whose file would be made from the same source bytes with the same crop,
undistortion and encoder options (its recipe, :func:`image_recipe`), and whose file still has the size
and modification time recorded when it was written, is kept as it is: neither decoded nor re-encoded,
its mtime unchanged. Any other image is written and its record replaced. The model files of ``sparse/0``
are kept the same way when they were written from the same model (:func:`model_recipe`).

The PLY is not written as ``sparse/0/points3D.ply``: graphdeco 3DGS would load that file instead of
points3D.bin and expects normals in it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import re
from collections.abc import Callable, Collection, Mapping, MutableMapping, Sequence
from pathlib import Path, PurePosixPath

import numpy as np
import PIL
from PIL import Image

from sfm3r.errors import InputError, ReconstructionError
from sfm3r.io.atomic import write_bytes_atomic
from sfm3r.io.colmap import check_scene, model_file_names, write_colmap_model
from sfm3r.io.downscale import (
    check_downscale_factors, downscale_folder, downscaled_paths, downscaled_size, write_downscaled_copies,
)  # fmt: skip
from sfm3r.io.images import exif_orientation, read_image
from sfm3r.io.nerfstudio import write_nerfstudio_transforms, written_paths
from sfm3r.io.ply import write_ply
from sfm3r.io.undistort import undistort_rgb, undistort_scene
from sfm3r.types import Camera, ImageInfo, Scene

logger = logging.getLogger(__name__)

_COPYABLE_FORMATS = ("JPEG", "PNG")  # read by every trainer, as is
JPEG_QUALITY = 95  # cropped JPEGs (4:4:4 chroma); COLMAP's image_undistorter re-encodes JPEGs too
# zlib level of written PNGs (lossless at any level). Pillow's default 6 took 0.095 s per 640x480 templeRing
# image, 3 takes 0.033 s for files 9 % larger (47 images: ~3 s of the export saved).
PNG_COMPRESS_LEVEL = 3
_NESTING_SEPARATOR = "__"
_CENTRED_TOLERANCE_PX = 0.5  # a principal point this close to the centre (per axis) needs no crop
_MAX_CROP_FRACTION = 0.10  # a camera that would lose more of its width or height is exported whole


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
            "was the image replaced after reconstruction? Reconstruct again. (A model from a Gaussian "
            "Splatting folder may have cropped cameras: export it with that folder's images/.)"
        )
    return reencode


def _export_image(
    info: ImageInfo,
    reencode: bool,
    target: Path,
    crop: Crop | None = None,
    distorted: Camera | None = None,
    read_rgb: Callable[[Path], np.ndarray] = read_image,
) -> None:
    """Write one image into `target` (atomically): its bytes, or its displayed RGB pixels undistorted
    (when its `distorted` camera is given) and then cropped by `crop`.

    `reencode`: write PNG (the file is not a plain JPEG/PNG). Undistortion or a crop alone keep the file's
    format: PNG stays lossless, JPEG is written at JPEG_QUALITY with full-resolution chroma. `read_rgb`
    decodes the file as :func:`~sfm3r.io.images.read_image` does (or hands out its earlier result); its
    array is not written into.
    """
    if reencode or crop is not None or distorted is not None:
        rgb = read_rgb(info.path)
        if distorted is not None:
            rgb = undistort_rgb(rgb, distorted)
        if crop is not None:
            height, width = rgb.shape[:2]
            rgb = rgb[crop.top : height - crop.bottom, crop.left : width - crop.right]
        if reencode:
            file_format = "PNG"
        else:
            with Image.open(info.path) as image:
                file_format = image.format
        options = (
            {"quality": JPEG_QUALITY, "subsampling": 0} if file_format == "JPEG" else {"compress_level": PNG_COMPRESS_LEVEL}
        )
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(rgb)).save(buffer, format=file_format, **options)
        data = buffer.getvalue()
    else:
        data = info.path.read_bytes()
    write_bytes_atomic(target, data)


# ---------------------------------------------------------------------------------------------------
# Keeping the images of an earlier export

_RECIPE_VERSION = 1  # bump when the image code (read_image, crop, undistortion, encoder options) changes
_MODEL_RECIPE_VERSION = 1  # bump when the COLMAP writer (io.colmap) changes what it writes


@dataclasses.dataclass(frozen=True)
class WrittenFile:
    """An exported file (an image, a model file) as written: what it was made from, and its size and mtime
    right after."""

    recipe: str  # image_recipe() / model_recipe(): sha256 hex of everything shaping the file
    size: int  # bytes
    mtime_ns: int  # st_mtime_ns

    @classmethod
    def of_file(cls, recipe: str, path: Path) -> WrittenFile:
        stat = path.stat()
        return cls(recipe, stat.st_size, stat.st_mtime_ns)

    @classmethod
    def from_json(cls, value: object) -> WrittenFile | None:
        """The record as stored (a dict of the fields); None for anything else (an old or edited record)."""
        if not isinstance(value, dict) or set(value) != {"recipe", "size", "mtime_ns"}:
            return None
        recipe, size, mtime_ns = value["recipe"], value["size"], value["mtime_ns"]
        if not isinstance(recipe, str) or type(size) is not int or type(mtime_ns) is not int:
            return None
        return cls(recipe, size, mtime_ns)

    def to_json(self) -> dict[str, str | int]:
        return dataclasses.asdict(self)

    def is_current(self, recipe: str, path: Path) -> bool:
        """Whether `path` is this record's file, untouched since, and would be made the same way again."""
        try:
            stat = path.stat()
        except OSError:
            return False
        return self.recipe == recipe and (stat.st_size, stat.st_mtime_ns) == (self.size, self.mtime_ns)


def image_recipe(info: ImageInfo, reencode: bool, crop: Crop | None, distorted: Camera | None) -> str:
    """sha256 (hex) of everything that decides an exported image's bytes (see :func:`_export_image`): the
    source file's sha256, the crop, the distorted camera it is undistorted from, the output format and
    encoder options, and the versions of the code that decodes, resamples and encodes it."""
    made = reencode or crop is not None or distorted is not None
    recipe = {
        "version": _RECIPE_VERSION,
        "source_sha256": info.sha256,
        "copy": not made,
        "png": reencode,  # else the source's own format (decided by its bytes, i.e. by its sha256)
        "crop": dataclasses.asdict(crop) if crop is not None else None,
        "undistort_from": dataclasses.asdict(distorted) if distorted is not None else None,
        "jpeg": {"quality": JPEG_QUALITY, "subsampling": 0} if made else None,
        "png_compress_level": PNG_COMPRESS_LEVEL if made else None,
        "pillow": PIL.__version__ if made else None,
        "pycolmap": _pycolmap_version() if distorted is not None else None,
    }
    text = json.dumps(recipe, sort_keys=True, default=lambda value: np.asarray(value).tolist())  # numpy values
    return hashlib.sha256(text.encode()).hexdigest()


def model_recipe(scene: Scene, text: bool) -> str:
    """sha256 (hex) of everything :func:`~sfm3r.io.colmap.write_colmap_model` writes from `scene`: the
    fields it reads (not ``info`` or the dense points), the formats, and the writer's version."""
    digest = hashlib.sha256(json.dumps({"version": _MODEL_RECIPE_VERSION, "text": text}).encode())
    cameras = [dataclasses.asdict(camera) for camera in scene.cameras]
    digest.update(json.dumps([scene.image_names, cameras], default=lambda value: np.asarray(value).tolist()).encode())
    for array in (scene.camera_of_image, scene.rotations, scene.translations, scene.points_xyz, scene.points_rgb,
                  scene.points_error, scene.obs_point, scene.obs_image, scene.obs_xy):  # fmt: skip
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _write_model_unless_current(
    scene: Scene, out_dir: Path, text: bool, written: MutableMapping[str, object] | None
) -> None:
    """``sparse/0`` of `scene`, unless an earlier export wrote these very files from the same model (their
    records in `written` are current): a cached rerun then neither rebuilds nor rewrites them (nor loads
    pycolmap, ~0.1 s)."""
    model_dir = out_dir / "sparse" / "0"
    recipe = model_recipe(scene, text)
    names = [name for name in model_file_names() if text or name.endswith(".bin")]
    keys = [f"sparse/0/{name}" for name in names]
    if written is not None:
        records = [WrittenFile.from_json(written.get(key)) for key in keys]
        others = [name for name in model_file_names() if name not in names and (model_dir / name).exists()]
        if not others and all(r is not None and r.is_current(recipe, model_dir / n) for r, n in zip(records, names)):
            logger.info("sparse/0 kept as an earlier export wrote it (same model)")
            return
    write_colmap_model(scene, model_dir, binary=True, text=text)
    if written is not None:
        for key, name in zip(keys, names):
            written[key] = WrittenFile.of_file(recipe, model_dir / name).to_json()


def _pycolmap_version() -> str:
    import pycolmap  # imported by io.undistort already

    return pycolmap.__version__


# ---------------------------------------------------------------------------------------------------
# Centring crop


@dataclasses.dataclass(frozen=True, kw_only=True)
class Crop:
    """Whole pixel columns/rows cut from each side of an image (left, top, right, bottom >= 0)."""

    left: int
    top: int
    right: int
    bottom: int

    @property
    def largest(self) -> int:
        """The columns or rows removed, whichever is more."""
        return max(self.left + self.right, self.top + self.bottom)


def _axis_crop(size: int, centre: float) -> tuple[int, int]:
    """(cut before, cut after) along one axis so that `centre` ends within 0.25 px of the middle."""
    if abs(centre - size / 2) < _CENTRED_TOLERANCE_PX:
        return 0, 0
    if centre < size / 2:
        return 0, size - int(round(2 * centre))
    return int(round(2 * centre - size)), 0


def centring_crop(camera: Camera) -> Crop | None:
    """The crop that centres `camera`'s principal point, or None if it is centred already (< 0.5 px per axis).

    Never empty when not None; it cuts the whole image or more for a principal point at or outside the
    border, so callers refuse crops larger than they accept (the export: 10 % of the width or height).
    """
    left, right = _axis_crop(camera.width, camera.cx)
    top, bottom = _axis_crop(camera.height, camera.cy)
    if left == right == top == bottom == 0:
        return None
    return Crop(left=left, top=top, right=right, bottom=bottom)


def crop_camera(camera: Camera, crop: Crop) -> Camera:
    """`camera` as seen in the cropped image: cropped size, principal point shifted exactly, same focal."""
    return dataclasses.replace(
        camera,
        width=camera.width - crop.left - crop.right,
        height=camera.height - crop.top - crop.bottom,
        cx=camera.cx - crop.left,
        cy=camera.cy - crop.top,
    )


def crop_scene(scene: Scene, crops: Mapping[int, Crop]) -> Scene:
    """`scene` with the images of camera c cropped by ``crops[c]`` (camera index into ``scene.cameras``).

    Observations of a cropped camera's images shift by (-left, -top); those outside the cropped image
    ([0, W] x [0, H] in COLMAP pixels) are dropped. A point that lost an observation that way and keeps
    fewer than 2 is removed (its remaining observation too); all other points and observations are
    kept unchanged, in order. Poses, dense points and ``info`` are unchanged.
    """
    if not crops:
        return scene
    cameras = list(scene.cameras)
    shift = np.zeros((len(cameras), 2))  # (C, 2) left, top
    for index, crop in crops.items():
        cameras[index] = crop_camera(cameras[index], crop)
        shift[index] = crop.left, crop.top
    size = np.array([[camera.width, camera.height] for camera in cameras], dtype=np.float64)  # (C, 2)
    cropped = np.zeros(len(cameras), dtype=bool)
    cropped[list(crops)] = True

    obs_point = np.asarray(scene.obs_point, dtype=np.int64)
    obs_camera = np.asarray(scene.camera_of_image, dtype=np.int64)[np.asarray(scene.obs_image, dtype=np.int64)]
    obs_xy = np.asarray(scene.obs_xy, dtype=np.float64) - shift[obs_camera]  # (K, 2)
    inside = ((obs_xy >= 0) & (obs_xy <= size[obs_camera])).all(axis=1)
    keep = inside | ~cropped[obs_camera]  # (K,)
    before = np.bincount(obs_point, minlength=scene.num_points)
    after = np.bincount(obs_point[keep], minlength=scene.num_points)
    keep_point = ~((after < before) & (after < 2))  # (P,)
    keep &= keep_point[obs_point]
    renumber = np.cumsum(keep_point) - 1
    return dataclasses.replace(
        scene,
        cameras=tuple(cameras),
        points_xyz=scene.points_xyz[keep_point],
        points_rgb=scene.points_rgb[keep_point],
        points_error=scene.points_error[keep_point],
        obs_point=renumber[obs_point[keep]],
        obs_image=np.asarray(scene.obs_image)[keep],
        obs_xy=obs_xy[keep],
    )


def _centring_crops(scene: Scene) -> dict[int, Crop]:
    """{camera index: crop} of the used cameras with an off-centre principal point, minus refused crops."""
    crops = {}
    for index in np.unique(np.asarray(scene.camera_of_image, dtype=np.int64)).tolist():
        camera = scene.cameras[index]
        crop = centring_crop(camera)
        if crop is None:
            continue
        if (
            crop.left + crop.right > _MAX_CROP_FRACTION * camera.width
            or crop.top + crop.bottom > _MAX_CROP_FRACTION * camera.height
        ):
            names = [scene.image_names[i] for i in np.flatnonzero(np.asarray(scene.camera_of_image) == index)]
            logger.warning(
                "camera %d (%dx%d, principal point %.1f, %.1f, images %s%s) is not cropped to centre its "
                "principal point: that would cut more than %d%% of the image; graphdeco 3DGS, which assumes a "
                "centred principal point, will see these images shifted (gsplat and nerfstudio read cx, cy)",
                index, camera.width, camera.height, camera.cx, camera.cy, ", ".join(names[:3]),
                ", ..." if len(names) > 3 else "", round(100 * _MAX_CROP_FRACTION),
            )  # fmt: skip
            continue
        crops[index] = crop
    return crops



# ---------------------------------------------------------------------------------------------------
# The folder


def export_gaussian_splatting_scene(
    scene: Scene,
    images: Sequence[ImageInfo],
    out_dir: Path,
    text: bool = False,
    *,
    dense: bool = False,
    centre_principal_points: bool = True,
    claim: Callable[[list[Path]], None] | None = None,
    written: MutableMapping[str, object] | None = None,
    downscales: Sequence[int] = (),
    nerfstudio: bool = True,
    read_rgb: Callable[[Path], np.ndarray] = read_image,
) -> Scene:
    """Lay out `out_dir` for Gaussian Splatting trainers (layout in the module docstring).

    Returns the Scene written to ``out_dir/sparse/0`` (undistorted, cropped, renamed).

    Args:
        scene: the reconstruction; only its registered images are exported.
        images: the ImageInfo of (at least) every registered image, matched by name.
        text: also write the model as .txt next to the .bin files.
        dense: write ``scene.dense_xyz/dense_rgb`` to points.ply instead of the sparse points.
        centre_principal_points: crop the images of cameras with an off-centre principal point so that
            it is centred (for graphdeco 3DGS); the written model describes the cropped images.
        claim: called with every path to be written before the first is written (the run folder's
            written-files contract: it raises if one of them is not sfm3r's to write).
        written: the record of earlier exports into `out_dir`, {path relative to `out_dir` (posix):
            WrittenFile.to_json()}; images whose record is current are kept as they are (module
            docstring), and the record of every image written is set. None: every image is written.
        downscales: factors (integers >= 2) of the downscaled copies ``images_<f>/`` (``io.downscale``);
            a copy already holding the same pixels' source is kept as is.
        nerfstudio: also write nerfstudio's ``transforms.json`` and ``sparse_pc.ply`` (``io.nerfstudio``).
        read_rgb: decodes an image file exactly as :func:`~sfm3r.io.images.read_image` (the default) does,
            for the images written from pixels; a :class:`~sfm3r.io.images.DecodedImages` hands out the
            arrays an earlier stage decoded.

    Cameras with lens distortion are undistorted first (``io.undistort``): their images are resampled
    and written with PINHOLE cameras; the centring crop then applies to the undistorted cameras.

    Raises:
        InputError: an image is missing from `images`, changed on disk since it was read (SHA-256), has
            a size different from its camera, or has an unsafe name; `dense` without dense points; a
            downscale factor below 2, not an integer, or larger than an exported image.
        ReconstructionError: non-finite values in the scene.
        Every check runs before anything is written.
    """
    by_name = {info.name: info for info in images}
    missing = [name for name in scene.image_names if name not in by_name]
    if missing:
        raise InputError(f"no ImageInfo for {len(missing)} registered image(s), e.g. {missing[0]!r}")
    if dense and scene.dense_xyz is None:
        raise InputError("dense points were requested for points.ply but the scene has none")
    check_scene(scene)  # nothing is written for a scene with NaN poses or points
    if dense and not np.isfinite(scene.dense_xyz).all():
        raise ReconstructionError("the dense points hold NaN or inf values; refusing to export")
    for name in scene.image_names:
        flat_name(name)  # refuse unsafe names before reading any file
    downscales = check_downscale_factors(downscales)

    reencode = set()
    for i, name in enumerate(scene.image_names):
        camera = scene.cameras[int(scene.camera_of_image[i])]
        if _check_and_classify(by_name[name], (camera.width, camera.height)):
            reencode.add(name)
    pinhole_scene, distorted = undistort_scene(scene)
    crops = _centring_crops(pinhole_scene) if centre_principal_points else {}
    crop_of = {
        name: crops[int(c)] for name, c in zip(scene.image_names, scene.camera_of_image) if int(c) in crops
    }  # fmt: skip
    distorted_of = {
        name: distorted[int(c)] for name, c in zip(scene.image_names, scene.camera_of_image) if int(c) in distorted
    }  # fmt: skip
    cropped_scene = crop_scene(pinhole_scene, crops)
    new_names = export_names(scene.image_names, reencode)
    renamed = dataclasses.replace(cropped_scene, image_names=tuple(new_names[n] for n in scene.image_names))
    xyz, rgb = (scene.dense_xyz, scene.dense_rgb) if dense else (renamed.points_xyz, renamed.points_rgb)

    out_dir = Path(out_dir)
    images_dir = out_dir / "images"
    for name in scene.image_names:
        if os.path.basename(new_names[name]) != new_names[name] or new_names[name] in (".", ".."):
            raise InputError(f"export name {new_names[name]!r} would leave {images_dir}")  # cannot happen
    for camera in {renamed.cameras[int(c)] for c in renamed.camera_of_image}:
        for factor in downscales:
            downscaled_size(camera.width, camera.height, factor)  # refuse a factor larger than an image
    if claim is not None:
        claim(
            [images_dir / new_names[name] for name in scene.image_names]
            + [out_dir / "sparse" / "0" / file for file in model_file_names()]
            + [out_dir / "points.ply"]
            + downscaled_paths(out_dir, renamed.image_names, downscales)
            + (written_paths(out_dir) if nerfstudio else [])
        )
    images_dir.mkdir(parents=True, exist_ok=True)
    kept = 0
    for name in scene.image_names:
        target, crop, camera = images_dir / new_names[name], crop_of.get(name), distorted_of.get(name)
        recipe = image_recipe(by_name[name], name in reencode, crop, camera)
        key = target.relative_to(out_dir).as_posix()
        previous = WrittenFile.from_json(written.get(key)) if written is not None else None
        if previous is not None and previous.is_current(recipe, target):
            kept += 1
            continue
        _export_image(by_name[name], name in reencode, target, crop, camera, read_rgb)
        if written is not None:
            written[key] = WrittenFile.of_file(recipe, target).to_json()
    _write_model_unless_current(renamed, out_dir, text, written)
    write_ply(out_dir / "points.ply", xyz, rgb)
    if downscales:
        copies_written = sum(
            write_downscaled_copies(images_dir / file, {f: out_dir / downscale_folder(f) / file for f in downscales})
            for file in renamed.image_names
        )  # fmt: skip
        total = len(downscales) * renamed.num_images
        logger.info(
            "downscaled copies (%s): %d written, %d unchanged since the last export and kept",
            ", ".join(f"{downscale_folder(f)}/" for f in downscales), copies_written, total - copies_written,
        )  # fmt: skip
    if nerfstudio:
        write_nerfstudio_transforms(renamed, out_dir, xyz, rgb)
    if distorted:
        logger.info(
            "undistorted the images of %d camera(s) (%d images) to PINHOLE for the trainers; dropped %d "
            "points left with fewer than 2 observations inside the undistorted images",
            len(distorted), len(distorted_of), scene.num_points - pinhole_scene.num_points,
        )  # fmt: skip
    if crops:
        logger.info(
            "cropped the images of %d camera(s) (%d images, largest crop %d px) to centre their principal "
            "points for graphdeco 3DGS; dropped %d observations outside the crops and %d points left with "
            "fewer than 2",
            len(crops), len(crop_of), max(crop.largest for crop in crops.values()),
            len(pinhole_scene.obs_xy) - len(renamed.obs_xy), pinhole_scene.num_points - renamed.num_points,
        )  # fmt: skip
    copied = sum(
        name not in reencode and name not in crop_of and name not in distorted_of for name in scene.image_names
    )  # fmt: skip
    logger.info(
        "exported %d images (%d copied, %d re-encoded, undistorted or cropped; %d kept as an earlier export "
        "wrote them), the model and %d points to %s",
        scene.num_images, copied, scene.num_images - copied, kept, len(xyz), out_dir,
    )  # fmt: skip
    return renamed


def export_gaussian_splatting_folder(
    scene: Scene,
    images: Sequence[ImageInfo],
    out_dir: Path,
    text: bool = False,
    *,
    dense: bool = False,
    centre_principal_points: bool = True,
    claim: Callable[[list[Path]], None] | None = None,
    written: MutableMapping[str, object] | None = None,
    downscales: Sequence[int] = (),
    nerfstudio: bool = True,
    read_rgb: Callable[[Path], np.ndarray] = read_image,
) -> Path:
    """:func:`export_gaussian_splatting_scene`, returning `out_dir`."""
    export_gaussian_splatting_scene(
        scene, images, out_dir, text, dense=dense, centre_principal_points=centre_principal_points, claim=claim,
        written=written, downscales=downscales, nerfstudio=nerfstudio, read_rgb=read_rgb,
    )  # fmt: skip
    return Path(out_dir)
