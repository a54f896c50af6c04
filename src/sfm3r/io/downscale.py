"""Downscaled copies of the 3DGS folder's images: ``images_2/``, ``images_4/``, ... beside ``images/``.

What the trainers read:

- gsplat's COLMAP parser (``--data_factor F``) reads ``images_F/``, sizes each camera ``W // F`` x ``H // F``
  with ``K / F``, then rescales K by (actual size of the first image) / (that size); it pairs the files of
  ``images/`` and ``images_F/`` by sorted order, so both folders must hold the same names.
- nerfstudio (``nerfstudio-data`` and ``colmap`` data parsers, ``--downscale-factor F``, or automatically
  for 2, 4, 8 when the images are larger than 1600 px) reads ``images_F/<name>`` and divides the cameras by
  F with the size rounded down (``floor``, its default rounding mode).
- graphdeco 3DGS reads them with ``-i images_F`` (it derives the field of view from ``sparse/0``).

So a copy is ``floor(W / F)`` x ``floor(H / F)`` pixels: exactly the size gsplat and nerfstudio expect, with
no rescaling. It is resampled (Lanczos, antialiased) from the top-left ``F·floor(W / F)`` x ``F·floor(H / F)``
pixels of the image, i.e. the last ``W mod F`` columns and ``H mod F`` rows are left out, so that the
scale is exactly 1/F on both axes in COLMAP pixels (x' = x / F): the intrinsics gsplat and nerfstudio
compute (``fx / F``, ``cx / F``, ...) are then exact. (Resizing the whole image instead would make the scale
``floor(W / F) / W``, off by up to ``(F - 1) / W``.) graphdeco's ``convert.py --resize`` and gsplat's own
fallback resize the whole image to ``round(W / F)`` instead; the two agree whenever F divides the size.

Each copy keeps the name and format of its source (JPEG at quality 95 with full-resolution chroma, PNG
lossless) and the source's colour profile, and records in its metadata (JPEG comment, PNG text chunk) the
factor and the SHA-256 of the source file: a rerun whose source is unchanged keeps the copy without
decoding or encoding anything.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from PIL import Image, PngImagePlugin

from sfm3r.errors import InputError
from sfm3r.io.atomic import write_bytes_atomic

__all__ = [
    "check_downscale_factors", "downscale_folder", "downscaled_paths", "downscaled_size", "write_downscaled_copies",
]  # fmt: skip

JPEG_QUALITY = 95  # as the export's re-encoded JPEGs (io.export.JPEG_QUALITY)
_KEY_NAME = "sfm3r-downscale"  # PNG text key; JPEG comments start with it
_KEY_VERSION = 1  # bump when the resampling changes, so that reruns redo the copies


def check_downscale_factors(factors: Collection[object]) -> tuple[int, ...]:
    """The factors as sorted unique ints; each must be an integer >= 2.

    Raises:
        InputError: a factor is not an integer (bools, floats and strings count as not) or is below 2.
    """
    checked = set()
    for factor in factors:
        if isinstance(factor, bool) or not isinstance(factor, int):
            raise InputError(f"downscale factor {factor!r} is not an integer; give integers >= 2, e.g. 2 4 8")
        if factor < 2:
            raise InputError(
                f"downscale factor {factor} is below 2; give integers >= 2, e.g. 2 4 8 (images/ is factor 1)"
            )
        checked.add(factor)
    return tuple(sorted(checked))


def downscale_folder(factor: int) -> str:
    """The folder of the copies downscaled by `factor`, relative to the 3DGS folder: ``images_<factor>``."""
    return f"images_{factor}"


def downscaled_size(width: int, height: int, factor: int) -> tuple[int, int]:
    """(W, H) of an image of `width` x `height` downscaled by `factor`: rounded down (see the module docstring).

    Raises:
        InputError: the copy would be empty (the factor exceeds the width or height).
    """
    if factor > width or factor > height:
        raise InputError(
            f"downscale factor {factor} is larger than an image of {width}x{height} pixels; give smaller factors"
        )
    return width // factor, height // factor


def _key(factor: int, source_sha256: str) -> str:
    return f"{_KEY_NAME} v{_KEY_VERSION} factor={factor} source_sha256={source_sha256}"


def _stored_key(path: Path) -> str | None:
    """The key recorded in the copy at `path` (header only, no pixels decoded), or None."""
    try:
        with Image.open(path) as image:
            if image.format == "PNG":
                value = image.info.get(_KEY_NAME)
                return value if isinstance(value, str) else None
            comment = image.info.get("comment")
            if isinstance(comment, bytes):
                return comment.decode("utf-8", "replace")
            return comment if isinstance(comment, str) else None
    except (OSError, ValueError, SyntaxError):
        return None  # missing or unreadable: write it again


def _encode(image: Image.Image, file_format: str, key: str, icc_profile: bytes | None) -> bytes:
    buffer = io.BytesIO()
    options: dict = {"icc_profile": icc_profile} if icc_profile else {}
    if file_format == "JPEG":
        options |= {"quality": JPEG_QUALITY, "subsampling": 0, "comment": key}
    else:
        info = PngImagePlugin.PngInfo()
        info.add_text(_KEY_NAME, key)
        options["pnginfo"] = info
    image.save(buffer, format=file_format, **options)
    return buffer.getvalue()


def write_downscaled_copies(source: Path, targets: Mapping[int, Path]) -> int:
    """Write `source` downscaled by each factor to ``targets[factor]`` (atomically); keep current copies.

    Args:
        source: a file of the 3DGS ``images/`` folder: JPEG or PNG, 8-bit RGB, no EXIF rotation (as the
            export writes them).
        targets: {factor >= 2: path of its copy}; the folders are created.

    Returns:
        How many copies were written (the others held the same factor and source SHA-256 already).

    Raises:
        InputError: the source is not an RGB JPEG/PNG, or a factor exceeds its size.
    """
    data = Path(source).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    stale = {factor: Path(path) for factor, path in targets.items() if _stored_key(Path(path)) != _key(factor, digest)}
    if not stale:
        return 0
    with Image.open(io.BytesIO(data)) as image:
        if image.format not in ("JPEG", "PNG") or image.mode != "RGB":
            raise InputError(
                f"{source} is a {image.format} {image.mode} image; expected an RGB JPEG or PNG of the export"
            )
        file_format, icc_profile = image.format, image.info.get("icc_profile")
        image.load()
        sizes = {factor: downscaled_size(image.width, image.height, factor) for factor in stale}
        for factor, path in sorted(stale.items()):
            width, height = sizes[factor]
            box = (0, 0, width * factor, height * factor)  # scale exactly 1/factor (module docstring)
            small = image.resize((width, height), Image.Resampling.LANCZOS, box=box)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(path, _encode(small, file_format, _key(factor, digest), icc_profile))
    return len(stale)


def downscaled_paths(out_dir: Path, names: Sequence[str], factors: Sequence[int]) -> list[Path]:
    """Every copy's path: ``out_dir/images_<f>/<name>`` for each factor f and exported file name."""
    return [Path(out_dir) / downscale_folder(factor) / name for factor in factors for name in names]
