"""Known intrinsics given by the user: a COLMAP model folder or a `cameras.txt`, mapped onto the images.

- A folder with `cameras` and `images` files (.bin or .txt): each image named there gets its camera.
- A `cameras.txt` or binary `cameras.bin` (or a folder with only cameras) holding ONE camera: it applies to
  every image of that size.
SIMPLE_RADIAL, RADIAL and OPENCV cameras keep their distortion (and are written with it); PINHOLE and
SIMPLE_PINHOLE keep their model. FULL_OPENCV distortion is dropped with a warning. Focal lengths must
be finite and positive and the principal point inside the image; anything else is refused with a line
naming the file and the camera (a NaN focal would otherwise surface much later as "no pair could be aligned").
"""

from __future__ import annotations

import logging
import math
import shutil
import struct
import tempfile
from collections.abc import Sequence
from pathlib import Path

from sfm3r.errors import InputError
from sfm3r.types import CAMERA_MODELS, Camera, ImageInfo

logger = logging.getLogger(__name__)

# COLMAP model name -> positions of (fx, fy, cx, cy) in its parameter list (fy = fx for one-focal models).
_PINHOLE_PARAMS = {
    "SIMPLE_PINHOLE": (0, 0, 1, 2),
    "PINHOLE": (0, 1, 2, 3),
    "SIMPLE_RADIAL": (0, 0, 1, 2),
    "RADIAL": (0, 0, 1, 2),
    "OPENCV": (0, 1, 2, 3),
    "FULL_OPENCV": (0, 1, 2, 3),
}
_NUM_PARAMS = {"SIMPLE_PINHOLE": 3, "PINHOLE": 4, "SIMPLE_RADIAL": 4, "RADIAL": 5, "OPENCV": 8, "FULL_OPENCV": 12}
_NUM_PINHOLE_PARAMS = {"SIMPLE_PINHOLE": 3, "PINHOLE": 4, "SIMPLE_RADIAL": 3, "RADIAL": 3, "OPENCV": 4, "FULL_OPENCV": 4}


def _camera(model: str, width: int, height: int, params: Sequence[float], where: str) -> Camera:
    if model not in _PINHOLE_PARAMS:
        raise InputError(f"{where}: camera model {model} is not supported; use one of {', '.join(_PINHOLE_PARAMS)}")
    if len(params) != _NUM_PARAMS[model]:
        raise InputError(f"{where}: {model} takes {_NUM_PARAMS[model]} parameters, got {len(params)}")
    fx, fy, cx, cy = (float(params[i]) for i in _PINHOLE_PARAMS[model])
    if width <= 0 or height <= 0:
        raise InputError(f"{where}: the image size must be positive, got {width}x{height}")
    if not (math.isfinite(fx) and math.isfinite(fy) and fx > 0 and fy > 0):
        raise InputError(f"{where}: focal lengths must be finite and positive, got fx={fx}, fy={fy}")
    if not (math.isfinite(cx) and math.isfinite(cy) and 0 < cx < width and 0 < cy < height):
        raise InputError(
            f"{where}: the principal point ({cx}, {cy}) is not inside the {width}x{height} image; COLMAP gives it "
            "in pixels (about width/2, height/2)"
        )
    if not all(math.isfinite(float(p)) for p in params):
        raise InputError(f"{where}: the distortion parameters must be finite, got {list(params)}")
    if model in CAMERA_MODELS:
        return Camera.from_colmap(model, width, height, params)
    if any(p != 0 for p in params[_NUM_PINHOLE_PARAMS[model] :]):
        logger.warning("%s: the distortion of %s cameras is ignored (sfm3r handles %s)", where, model,
                       ", ".join(CAMERA_MODELS))
    return Camera(width=width, height=height, fx=fx, fy=fy, cx=cx, cy=cy)


def read_cameras_txt(path: Path) -> dict[int, Camera]:
    """{camera_id: Camera} from a COLMAP cameras.txt."""
    cameras = {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read the camera file {path}: {error}") from None
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        where = f"{path}:{number}"
        try:
            camera_id, model, width, height = int(fields[0]), fields[1], int(fields[2]), int(fields[3])
            params = [float(v) for v in fields[4:]]
        except (ValueError, IndexError):
            raise InputError(f"{where}: expected 'CAMERA_ID MODEL WIDTH HEIGHT PARAMS...', got {line!r}") from None
        cameras[camera_id] = _camera(model, width, height, params, where)
    if not cameras:
        raise InputError(f"{path} holds no camera")
    return cameras


def read_cameras_bin(path: Path) -> dict[int, Camera]:
    """{camera_id: Camera} from a binary COLMAP cameras.bin (read with pycolmap)."""
    import pycolmap

    with tempfile.TemporaryDirectory(prefix="sfm3r-cameras-") as folder:
        shutil.copyfile(path, f"{folder}/cameras.bin")
        for empty in ("images.bin", "points3D.bin"):
            with open(f"{folder}/{empty}", "wb") as handle:
                handle.write(struct.pack("<Q", 0))
        try:
            rec = pycolmap.Reconstruction()
            rec.read_binary(folder)
        except Exception as error:  # noqa: BLE001 -- pycolmap raises ValueError/RuntimeError on bad files
            raise InputError(f"cannot read the binary camera file {path}: {error}") from None
    cameras = {
        camera_id: _camera(cam.model.name, cam.width, cam.height, list(cam.params), f"{path}: camera {camera_id}")
        for camera_id, cam in rec.cameras.items()
    }  # fmt: skip
    if not cameras:
        raise InputError(f"{path} holds no camera")
    return cameras


def read_cameras_file(path: Path) -> Path:
    """The camera file that `path` names: itself, or the cameras.txt / cameras.bin of a folder."""
    path = Path(path)
    if path.is_dir():
        found = [path / name for name in ("cameras.txt", "cameras.bin") if (path / name).is_file()]
        if not found:
            raise InputError(f"{path}: expected a COLMAP model folder (cameras + images), a cameras.txt or cameras.bin")
        return found[0]
    return path


def read_cameras(path: Path) -> dict[int, Camera]:
    """{camera_id: Camera} from a cameras.txt, or a cameras.bin (binary: recognised by content, not name)."""
    path = Path(path)
    try:
        head = path.read_bytes()[:4096]
    except OSError as error:
        raise InputError(f"cannot read the camera file {path} ({error.strerror or error})") from None
    try:
        head.decode("utf-8")
        is_text = b"\0" not in head
    except UnicodeDecodeError:
        is_text = False
    return read_cameras_txt(path) if is_text else read_cameras_bin(path)


def check_known_intrinsics(path: Path) -> None:
    """Read and check the cameras of `path` before any work (the image mapping is checked later).

    Raises:
        InputError: unreadable files, unsupported models, non-finite or non-positive focals, principal
            points outside the image.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"known intrinsics {path} do not exist; give a COLMAP model folder or a cameras.txt")
    if path.is_dir() and any((path / f"images.{ext}").exists() for ext in ("bin", "txt")):
        load_known_cameras(path, [])  # reads the model and checks every camera of an image
        return
    read_cameras(read_cameras_file(path))


def load_known_cameras(path: Path, images: Sequence[ImageInfo]) -> dict[str, Camera]:
    """{image name: Camera} for the images that the given intrinsics cover."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"known intrinsics {path} do not exist; give a COLMAP model folder or a cameras.txt")
    folder = path if path.is_dir() else None
    if folder is not None and any((folder / f"images.{ext}").exists() for ext in ("bin", "txt")):
        import pycolmap

        try:
            rec = pycolmap.Reconstruction(str(folder))
        except Exception as error:  # pycolmap raises plain ValueError/RuntimeError on bad files
            raise InputError(f"cannot read the COLMAP model {folder}: {error}") from None
        by_name = {}
        for image in rec.images.values():
            cam = rec.cameras[image.camera_id]
            where = f"{folder}: camera {image.camera_id}"
            by_name[image.name] = _camera(cam.model.name, cam.width, cam.height, list(cam.params), where)
        known = {info.name: by_name[info.name] for info in images if info.name in by_name}
        if not known and images:
            raise InputError(f"none of the images is named in {folder}; image names must match the model's")
        return known
    cameras_txt = read_cameras_file(path)
    cameras = read_cameras(cameras_txt)
    if len(cameras) != 1:
        raise InputError(
            f"{cameras_txt} holds {len(cameras)} cameras but no images file says which image uses which; "
            "give the whole model folder or a cameras.txt with one camera"
        )
    camera = next(iter(cameras.values()))
    known = {info.name: camera for info in images if (info.width, info.height) == (camera.width, camera.height)}
    skipped = len(images) - len(known)
    if not known:
        raise InputError(
            f"the camera in {cameras_txt} is {camera.width}x{camera.height} but no image has that size"
        )
    if skipped:
        logger.warning("known intrinsics: %d images of another size than %dx%d keep estimated intrinsics",
                       skipped, camera.width, camera.height)  # fmt: skip
    return known
