"""Known intrinsics given by the user: a COLMAP model folder or a `cameras.txt`, mapped onto the images.

- A folder with `cameras` and `images` files (.bin or .txt): each image named there gets its camera.
- A `cameras.txt` (or a folder with only cameras) holding ONE camera: it applies to every image of that size.
SIMPLE_RADIAL, RADIAL and OPENCV cameras keep their distortion (and are written with it); PINHOLE and
SIMPLE_PINHOLE keep their model. FULL_OPENCV distortion is dropped with a warning.
"""

from __future__ import annotations

import logging
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
    if min(fx, fy) <= 0 or width <= 0 or height <= 0:
        raise InputError(f"{where}: focal lengths and sizes must be positive")
    if model in CAMERA_MODELS:
        return Camera.from_colmap(model, width, height, params)
    if any(p != 0 for p in params[_NUM_PINHOLE_PARAMS[model] :]):
        logger.warning("%s: the distortion of %s cameras is ignored (sfm3r handles %s)", where, model,
                       ", ".join(CAMERA_MODELS))
    return Camera(width=width, height=height, fx=fx, fy=fy, cx=cx, cy=cy)


def read_cameras_txt(path: Path) -> dict[int, Camera]:
    """{camera_id: Camera} from a COLMAP cameras.txt."""
    cameras = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
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
            by_name[image.name] = _camera(cam.model.name, cam.width, cam.height, list(cam.params), str(folder))
        known = {info.name: by_name[info.name] for info in images if info.name in by_name}
        if not known:
            raise InputError(f"none of the images is named in {folder}; image names must match the model's")
        return known
    cameras_txt = folder / "cameras.txt" if folder is not None else path
    if not cameras_txt.is_file():
        raise InputError(f"{path}: expected a COLMAP model folder (cameras + images) or a cameras.txt")
    cameras = read_cameras_txt(cameras_txt)
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
