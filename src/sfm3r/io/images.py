"""Image files: find them, decode them as the cameras saw them, and prepare them for the network.

Reading top to bottom:

1. :func:`list_image_files` finds the photos of a folder.
2. :func:`read_image` decodes one file into an (H, W, 3) uint8 RGB array with the EXIF orientation
   applied, so every later pixel coordinate refers to the image *as displayed* (DESIGN.md §2).
3. :func:`load_image_infos` builds the :class:`~sfm3r.types.ImageInfo` of every image (name, SHA-256,
   size after EXIF, focal prior from EXIF) and checks that each file decodes.
4. :func:`resize_for_network` / :func:`preprocess_for_network` reproduce the official MASt3R
   ``load_images`` resize, crop and normalisation bit for bit (MAST3R_NETWORK.md §2), and return the
   :class:`~sfm3r.types.NetView` that maps network pixels back to original pixels.

Colour conversion (what :func:`read_image` does per Pillow mode):

- RGB: unchanged. L, 1, P, PA, CMYK, YCbCr, LAB, HSV, ...: Pillow's ``convert("RGB")``.
- RGBA / LA / palette with transparency: the alpha channel is **dropped** (not composited), exactly as
  the official MASt3R loader does, so the network sees the same pixels as in the reference code.
- 16-bit grey (Pillow modes ``I;16*``, and ``I`` which Pillow uses for 16-bit data): scaled to 8 bits
  with ``round(v / 257)`` (Pillow's own ``convert`` would clip everything above 255 to white).
  Float images (mode ``F``): values in [0, 1] are scaled by 255, otherwise clipped to [0, 255].
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageFile, ImageOps

from sfm3r.errors import ImageReadError, InputError
from sfm3r.types import ImageInfo, NetView

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")  # matched in any case

PATCH_SIZE = 16  # the network's patch size: network images are cropped to multiples of it
_LOW_RES_SIZE = 224  # the one size for which the official loader crops a square (short side -> 224)

# EXIF tags (Exif 2.32 numbering).
_TAG_ORIENTATION = 0x0112
_TAG_EXIF_IFD = 0x8769
_TAG_FOCAL_LENGTH = 0x920A  # mm
_TAG_FOCAL_35MM = 0xA405  # mm, 35 mm film equivalent (36 mm wide frame)
_TAG_FOCAL_PLANE_X_RES = 0xA20E  # sensor pixels per unit, x axis of the stored image
_TAG_FOCAL_PLANE_RES_UNIT = 0xA210  # 2 = inch (default), 3 = cm, 4 = mm, 5 = um
_TAG_PIXEL_X_DIMENSION = 0xA002  # width the focal plane resolution refers to
_MM_PER_UNIT = {2: 25.4, 3: 10.0, 4: 1.0, 5: 1e-3}  # unit 1 means "no absolute unit": unusable
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height


# ---------------------------------------------------------------------------------------------------
# 1. Finding images


def _is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


# Photo formats that Pillow cannot decode without a plugin: listed in one warning, not silently ignored.
_UNDECODABLE_EXTENSIONS = (".heic", ".heif", ".avif", ".cr2", ".cr3", ".nef", ".arw", ".dng", ".raf", ".orf", ".rw2")


def list_image_files(folder: Path, recursive: bool = False) -> list[Path]:
    """The image files of `folder`, sorted by their name relative to `folder`.

    Extensions: :data:`IMAGE_EXTENSIONS` in any case. Hidden files and folders (name starting with
    ".", e.g. macOS ``._IMG.jpg`` resource forks) are skipped. Subfolders are searched only with
    ``recursive=True`` (symbolic links to folders are not followed).

    Raises:
        InputError: the folder does not exist, is not a folder, or holds no image.
    """
    folder = Path(folder)
    looked_for = ", ".join(f"*{ext}" for ext in IMAGE_EXTENSIONS)
    if not folder.exists():
        raise InputError(f"image folder {folder} does not exist; pass a folder of photos ({looked_for})")
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder; pass the folder that holds the photos ({looked_for})")
    if recursive:
        found = []
        for root, dirs, files in os.walk(folder):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            found += [Path(root) / f for f in files if _is_image_file(Path(f))]
    else:
        found = [p for p in folder.iterdir() if _is_image_file(p)]
    found = [p for p in found if p.is_file()]
    undecodable = sorted(
        str(p.relative_to(folder)) for p in (folder.rglob("*") if recursive else folder.iterdir())
        if p.suffix.lower() in _UNDECODABLE_EXTENSIONS and not p.name.startswith(".")
    )  # fmt: skip
    if undecodable:
        logger.warning(
            "%d file(s) look like images but cannot be decoded with the installed libraries (HEIC/HEIF/AVIF/"
            "raw need a plugin): %s%s; convert them to JPEG or PNG to use them",
            len(undecodable), ", ".join(undecodable[:5]), ", ..." if len(undecodable) > 5 else "",
        )  # fmt: skip
    if not found:
        where = "in it or its subfolders" if recursive else "in it (subfolders were not searched)"
        raise InputError(f"no images in {folder}: looked for {looked_for} (any case) {where}")
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


# ---------------------------------------------------------------------------------------------------
# 2. Decoding one image


def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ImageReadError(f"cannot read image file {path}: {err.strerror or err}") from err
    if not data:
        raise ImageReadError(f"image file {path} is empty (0 bytes); delete it or copy it again")
    return data


@contextlib.contextmanager
def _strict_truncation() -> Iterator[None]:
    """Make Pillow raise on truncated files even if some other code set ``LOAD_TRUNCATED_IMAGES``.

    Pillow's only switch for this is a module global; we restore its previous value on exit.
    """
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _open(data: bytes, path: Path) -> Image.Image:
    """Open (header only) the image held in `data`; `path` is for messages."""
    try:
        return Image.open(io.BytesIO(data))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise ImageReadError(f"cannot decode image file {path}: {err}; is it a valid image?") from err


def _decode(image: Image.Image, path: Path, draft: bool = False) -> Image.Image:
    """Decode every pixel (raises on truncated or corrupt data). `draft`: JPEG at 1/8 scale (checks only)."""
    try:
        with _strict_truncation():
            if draft and image.format == "JPEG":
                image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as err:
        raise ImageReadError(
            f"cannot decode image file {path}: {err}; the file is truncated or corrupt, "
            "copy it again or remove it"
        ) from err
    return image


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1..8) of an opened image; 1 when absent or invalid, as Pillow assumes.

    Orientations 5 to 8 swap width and height. For a PNG, Pillow may decode the file to find its EXIF.
    """
    try:
        orientation = int(image.getexif().get(_TAG_ORIENTATION, 1))
    except (TypeError, ValueError, OSError, SyntaxError):
        return 1
    return orientation if 1 <= orientation <= 8 else 1


def _to_rgb(image: Image.Image) -> np.ndarray:
    """A decoded Pillow image of any mode -> (H, W, 3) uint8 RGB (see the module docstring)."""
    if image.mode.startswith("I;16") or image.mode == "I":
        grey = np.clip(np.asarray(image, dtype=np.float64), 0, 65535) / 257.0
        return np.repeat(np.rint(grey).astype(np.uint8)[..., None], 3, axis=2)
    if image.mode == "F":
        grey = np.nan_to_num(np.asarray(image, dtype=np.float64))
        grey = grey * 255.0 if grey.size and grey.max() <= 1.0 else grey
        return np.repeat(np.rint(np.clip(grey, 0, 255)).astype(np.uint8)[..., None], 3, axis=2)
    if image.mode != "RGB":
        try:
            image = image.convert("RGB")
        except ValueError:  # a few rare modes (e.g. "La") convert only through RGBA
            image = image.convert("RGBA").convert("RGB")
    return np.asarray(image, dtype=np.uint8).copy()


def read_image(path: Path) -> np.ndarray:
    """Decode an image file as displayed: EXIF orientation applied, RGB.

    Args:
        path: an image file (any format Pillow decodes).

    Returns:
        (H, W, 3) uint8 RGB, H and W after the EXIF rotation (all 8 orientations).

    Raises:
        ImageReadError: the file is missing, empty, truncated or not a decodable image.
    """
    path = Path(path)
    image = _decode(_open(_read_bytes(path), path), path)
    try:
        image = ImageOps.exif_transpose(image)
    except (OSError, ValueError, SyntaxError, TypeError) as err:  # malformed EXIF block
        logger.warning("ignoring the unreadable EXIF orientation of %s (%s)", path, err)
    return _to_rgb(image)


class DecodedImages:
    """:func:`read_image` with a memory, for stages that decode the same files one after the other (the
    point colours, then the export's cropped or undistorted images): one decode instead of two.

    Arrays are kept until `budget_bytes` are held in all; later images are decoded but not kept. An entry
    is found again by the resolved path and the file's size and mtime (a file changed in between is
    decoded anew). The arrays handed out are read-only (they are shared): copy before writing into one.
    """

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self.held_bytes = 0
        self.reused = 0  # calls answered from memory
        self._kept: dict[tuple[str, int, int], np.ndarray] = {}

    def __call__(self, path: Path) -> np.ndarray:
        """(H, W, 3) uint8 RGB, read-only: :func:`read_image` of `path`, or its kept result."""
        try:
            stat = os.stat(path)
            key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
        except OSError:
            return read_image(path)  # raises the usual ImageReadError
        if key in self._kept:
            self.reused += 1
            return self._kept[key]
        rgb = read_image(path)
        rgb.flags.writeable = False
        if self.held_bytes + rgb.nbytes <= self.budget_bytes:
            self._kept[key] = rgb
            self.held_bytes += rgb.nbytes
        return rgb

    def clear(self) -> None:
        """Forget every kept array (their memory is freed once no caller holds them)."""
        self._kept.clear()
        self.held_bytes = 0


# ---------------------------------------------------------------------------------------------------
# 3. Image infos (name, hash, size, focal prior)


def _float_tag(ifd, tag: int) -> float | None:
    """A positive finite EXIF number, or None (missing, zero denominator, not a number)."""
    try:
        value = float(ifd[tag])
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    return value if np.isfinite(value) and value > 0 else None


def exif_focal_px(exif: Image.Exif, stored_width: int, width: int, height: int) -> float | None:
    """Focal length in pixels of the displayed image from EXIF, or None.

    1. ``FocalLengthIn35mmFilm``: f_px = f35 / 36 * max(W, H) (the 35 mm frame is 36 mm wide).
    2. Else ``FocalLength`` (mm) times the sensor resolution ``FocalPlaneXResolution`` (pixels per
       ``FocalPlaneResolutionUnit``: inch, cm, mm or um), rescaled by ``stored_width /
       PixelXDimension`` when the image was resized after capture.

    Args:
        exif: the image's EXIF (``Image.getexif()``).
        stored_width: width of the stored pixels (before EXIF rotation).
        width, height: size of the displayed image (after EXIF rotation).
    """
    try:
        exif_ifd = exif.get_ifd(_TAG_EXIF_IFD)
    except (OSError, ValueError, SyntaxError, TypeError, KeyError):
        return None
    focal_35 = _float_tag(exif_ifd, _TAG_FOCAL_35MM)
    if focal_35 is not None:
        return focal_35 / 36.0 * max(width, height)
    focal_mm = _float_tag(exif_ifd, _TAG_FOCAL_LENGTH)
    x_res = _float_tag(exif_ifd, _TAG_FOCAL_PLANE_X_RES)
    unit = _float_tag(exif_ifd, _TAG_FOCAL_PLANE_RES_UNIT) or 2.0  # EXIF default: inch
    if focal_mm is None or x_res is None or int(unit) not in _MM_PER_UNIT:
        return None
    focal_px = focal_mm * x_res / _MM_PER_UNIT[int(unit)]  # at the resolution of PixelXDimension
    capture_width = _float_tag(exif_ifd, _TAG_PIXEL_X_DIMENSION)
    return focal_px * stored_width / capture_width if capture_width is not None else focal_px


# Plausible EXIF focals, as 35 mm-equivalent focal lengths: 7 mm (a 137 deg horizontal field of view,
# wider than any rectilinear lens) to 1800 mm (a long telephoto: a focal of 50x the image's long side).
# Outside, the tag is a placeholder or garbage (FocalLengthIn35mmFilm = 65535, 0.001 mm): the prior is
# ignored with a warning and the focal is estimated as for an image without EXIF.
PLAUSIBLE_FOCAL_35MM = (7.0, 1800.0)


def plausible_focal(focal_px: float | None, width: int, height: int) -> bool:
    """Whether a focal (pixels of the displayed W x H image) is within :data:`PLAUSIBLE_FOCAL_35MM`."""
    if focal_px is None:
        return True
    equivalent_35mm = focal_px / max(width, height) * 36.0
    return bool(np.isfinite(equivalent_35mm)) and PLAUSIBLE_FOCAL_35MM[0] <= equivalent_35mm <= PLAUSIBLE_FOCAL_35MM[1]


def read_image_info(path: Path, name: str) -> ImageInfo:
    """The :class:`ImageInfo` of one file: hash of its bytes, size after EXIF, focal prior.

    Decodes the pixels to prove the file is whole (JPEGs at 1/8 scale, which still reads every byte
    of the compressed stream), then reads the size and EXIF.

    Raises:
        ImageReadError: the file is missing, empty, truncated or undecodable.
    """
    path = Path(path)
    data = _read_bytes(path)
    image = _open(data, path)
    stored_w, stored_h = image.size  # before a JPEG draft shrinks it
    _decode(image, path, draft=True)  # first: reading EXIF may load a PNG outside the strict guard
    swap = exif_orientation(image) in _TRANSPOSING_ORIENTATIONS
    width, height = (stored_h, stored_w) if swap else (stored_w, stored_h)
    focal = exif_focal_px(image.getexif(), stored_w, width, height)
    if not plausible_focal(focal, width, height):
        logger.warning(
            "%s: ignoring its EXIF focal length (%.4g px = %.4g mm in 35 mm terms, outside the plausible %g-%g mm); "
            "the focal is estimated instead", name, focal, focal / max(width, height) * 36.0, *PLAUSIBLE_FOCAL_35MM,
        )  # fmt: skip
        focal = None
    return ImageInfo(
        name=name,
        path=path.absolute(),
        sha256=hashlib.sha256(data).hexdigest(),
        width=width,
        height=height,
        prior_focal_px=focal,
    )


def load_image_infos(folder: Path, recursive: bool = False, skip_bad_images: bool = False) -> list[ImageInfo]:
    """The :class:`ImageInfo` of every image in `folder`, in the order of :func:`list_image_files`.

    Names are paths relative to `folder` in posix form ("a.jpg", "sub/b.jpg").

    Args:
        skip_bad_images: log a warning and leave out files that cannot be decoded, instead of raising.

    Raises:
        InputError: see :func:`list_image_files`; also when every image was skipped.
        ImageReadError: a file cannot be decoded and `skip_bad_images` is False.
    """
    folder = Path(folder)
    infos = []
    for path in list_image_files(folder, recursive=recursive):
        name = path.relative_to(folder).as_posix()
        try:
            infos.append(read_image_info(path, name))
        except ImageReadError as err:
            if not skip_bad_images:
                raise
            logger.warning("skipping %s: %s", name, err)
    if not infos:
        raise InputError(f"none of the images in {folder} could be decoded; see the warnings above")
    return infos


# ---------------------------------------------------------------------------------------------------
# 4. Network input (official MASt3R `load_images`, MAST3R_NETWORK.md §2)


def _network_geometry(
    width: int, height: int, size: int, square_ok: bool
) -> tuple[tuple[int, int], tuple[int, int, int, int], Image.Resampling]:
    """The official loader's resized size (W', H'), crop box (left, top, right, bottom) and filter."""
    long_side = max(width, height)
    target = round(size * max(width / height, height / width)) if size == _LOW_RES_SIZE else size
    resized = (round(width * target / long_side), round(height * target / long_side))  # round: ties to even
    cx, cy = resized[0] // 2, resized[1] // 2
    if size == _LOW_RES_SIZE:
        half_w = half_h = min(cx, cy)
    else:
        # Largest multiple of the patch size not above 2*cx (resp. 2*cy), halved; always a multiple of 8.
        half_w = (2 * cx) // PATCH_SIZE * PATCH_SIZE // 2
        half_h = (2 * cy) // PATCH_SIZE * PATCH_SIZE // 2
        if not square_ok and resized[0] == resized[1]:
            half_h = 3 * half_w // 4  # square -> 4:3 landscape (exact: half_w is a multiple of 8)
    resample = Image.Resampling.LANCZOS if long_side > target else Image.Resampling.BICUBIC
    return resized, (cx - half_w, cy - half_h, cx + half_w, cy + half_h), resample


def resize_for_network(rgb: np.ndarray, size: int = 512, square_ok: bool = False) -> tuple[np.ndarray, NetView]:
    """Resize and centre-crop an image exactly as the official MASt3R loader does.

    - ``size == 224``: the short side becomes ~224 (long side ``round(224 * aspect)``), then a centred
      square crop of side ``2 * min(W'//2, H'//2)``.
    - any other size (512 for MASt3R, 64 for the tiny test model): the long side becomes `size`, then
      a centred crop to multiples of 16; a square result becomes 4:3 landscape unless `square_ok`.
    - Resampling: LANCZOS when shrinking, BICUBIC when enlarging (Pillow, as the official code).

    Args:
        rgb: (H, W, 3) uint8, the image as displayed (EXIF applied, e.g. from :func:`read_image`).

    Returns:
        net_rgb: (h, w, 3) uint8, h and w multiples of 16 (size != 224) or h == w (size == 224).
        view: the :class:`NetView` mapping network pixels to pixels of `rgb`.

    Raises:
        InputError: `rgb` is not (H, W, 3) uint8, or too elongated to leave a 16-pixel crop.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise InputError(f"expected an (H, W, 3) uint8 RGB image, got {rgb.shape=} {rgb.dtype=}")
    if size < PATCH_SIZE:
        raise InputError(f"network size {size} is below the patch size {PATCH_SIZE}")
    height, width = rgb.shape[:2]
    resized, box, resample = _network_geometry(width, height, size, square_ok)
    if box[2] - box[0] <= 0 or box[3] - box[1] <= 0:
        raise InputError(
            f"a {width}x{height} image is too elongated for network size {size}: "
            "nothing is left after cropping to multiples of 16; crop it closer to 4:3"
        )
    image = Image.fromarray(rgb)
    image = image.resize(resized, resample).crop(box)
    view = NetView(
        net_height=box[3] - box[1],
        net_width=box[2] - box[0],
        scale_x=width / resized[0],
        scale_y=height / resized[1],
        crop_left=box[0],
        crop_top=box[1],
    )
    return np.array(image, dtype=np.uint8), view


def normalize_for_network(net_rgb: np.ndarray) -> torch.Tensor:
    """(h, w, 3) uint8 -> (1, 3, h, w) float32 in [-1, 1]: ``(u8 / 255 - 0.5) / 0.5``, in that order.

    The order of operations is the official one (ToTensor then Normalize), so results are bit-identical.
    """
    import torch  # only the network paths need it; reading images (a cached rerun) must not import it

    tensor = torch.from_numpy(np.ascontiguousarray(net_rgb)).permute(2, 0, 1).contiguous()
    return tensor.to(torch.float32).div(255).sub(0.5).div(0.5).unsqueeze(0)


def preprocess_for_network(rgb: np.ndarray, size: int = 512, square_ok: bool = False) -> tuple[torch.Tensor, NetView]:
    """The network input of an image: :func:`resize_for_network` then :func:`normalize_for_network`.

    Args:
        rgb: (H, W, 3) uint8, the image as displayed (EXIF applied).
        size: 512 for MASt3R (long side 512), 224 for the low-resolution mode (square crop).
        square_ok: keep square images square instead of cropping them to 4:3.

    Returns:
        img: (1, 3, h, w) float32 in [-1, 1] (CPU); ``true_shape`` is ``[[h, w]]``.
        view: maps network pixel (x, y) to original pixels with :meth:`NetView.net_to_original`.
    """
    net_rgb, view = resize_for_network(rgb, size=size, square_ok=square_ok)
    return normalize_for_network(net_rgb), view
