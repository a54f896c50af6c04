"""nerfstudio's ``transforms.json`` for the 3DGS folder, as nerfstudio's own COLMAP converter writes it.

``ns-train splatfacto --data OUT`` (the default ``nerfstudio-data`` data parser) reads ``OUT/transforms.json``;
its ``images_2/4/8`` copies are found by the same file names. The layout follows nerfstudio's
``process_data/colmap_utils.py:colmap_to_json`` (default settings, read for facts, not copied):

- Intrinsics ``w``, ``h``, ``fl_x``, ``fl_y``, ``cx``, ``cy`` (COLMAP pixels), ``k1``, ``k2``, ``p1``, ``p2`` and
  ``camera_model`` ``"OPENCV"`` (pinhole cameras get zero distortion, which nerfstudio skips). At the top
  level when every image uses one camera, else in each frame.
- Frames in image id order (as in ``sparse/0``): ``file_path`` ``images/<name>`` relative to the folder,
  ``colmap_im_id``, and ``transform_matrix``: camera-to-world, 4x4, in nerfstudio's conventions:
  camera axes of OpenGL (x right, y up, z back: COLMAP's y and z columns negated), and the world turned
  by ``applied_transform`` ``A`` (new = A · COLMAP world: x' = x, y' = z, z' = -y), which nerfstudio
  stores so that its exports can go back to COLMAP's world::

      transform_matrix = [[A, 0], [0, 1]] · inv([[R, t], [0, 1]]) · diag(1, -1, -1, 1)    (R, t: cam_from_world)

- ``ply_file_path``: ``sparse_pc.ply``, the points of ``points.ply`` (the sparse tracks, or the dense cloud
  when asked) in that same turned world (A · xyz), which splatfacto uses to initialise its Gaussians.

Checked against nerfstudio's own ``nerfstudio-data`` parser (commit 50e0e3c): it finds ``images_F/``, the
image sizes equal its cameras, and its poses map back to ``sparse/0`` (README, "What was checked here").
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sfm3r.io.atomic import write_text_atomic
from sfm3r.io.ply import write_ply
from sfm3r.types import Camera, Scene

__all__ = [
    "APPLIED_TRANSFORM", "PLY_NAME", "TRANSFORMS_NAME", "camera_to_world_nerfstudio", "nerfstudio_transforms",
    "write_nerfstudio_transforms", "written_paths",
]  # fmt: skip

TRANSFORMS_NAME = "transforms.json"
PLY_NAME = "sparse_pc.ply"  # nerfstudio's name for the converted sparse points
# nerfstudio world from COLMAP world: (3, 3), new = APPLIED_TRANSFORM @ old
APPLIED_TRANSFORM = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
_OPENGL_FROM_OPENCV = np.diag([1.0, -1.0, -1.0])  # camera axes: y down, z forward -> y up, z back


def _intrinsics(camera: Camera) -> dict:
    """The nerfstudio camera fields of `camera` (the values cameras.bin holds for it)."""
    model, params = camera.colmap_model()
    if model in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL"):
        fx = fy = params[0]
        cx, cy, extra = params[1], params[2], params[3:]
    else:  # PINHOLE, OPENCV
        fx, fy, cx, cy, extra = params[0], params[1], params[2], params[3], params[4:]
    k1, k2, p1, p2 = (list(extra) + [0.0] * 4)[:4]  # SIMPLE_RADIAL (k), RADIAL (k1, k2), OPENCV (all four)
    return {
        "w": int(camera.width), "h": int(camera.height), "fl_x": float(fx), "fl_y": float(fy),
        "cx": float(cx), "cy": float(cy), "k1": float(k1), "k2": float(k2), "p1": float(p1), "p2": float(p2),
        "camera_model": "OPENCV",
    }  # fmt: skip


def camera_to_world_nerfstudio(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """(4, 4) nerfstudio ``transform_matrix`` of a camera with cam_from_world `rotation` (3, 3), `translation` (3,)."""
    matrix = np.eye(4)
    matrix[:3, :3] = APPLIED_TRANSFORM @ rotation.T @ _OPENGL_FROM_OPENCV  # camera axes, in the turned world
    matrix[:3, 3] = APPLIED_TRANSFORM @ (-rotation.T @ translation)  # camera centre, in the turned world
    return matrix


def nerfstudio_transforms(scene: Scene, image_folder: str = "images", ply_name: str | None = PLY_NAME) -> dict:
    """The ``transforms.json`` content of `scene` as written to ``sparse/0`` (layout in the module docstring).

    Args:
        scene: the exported scene (pinhole cameras, names as in `image_folder`).
        image_folder: the folder of the images, relative to the 3DGS folder.
        ply_name: the sparse point file to name in ``ply_file_path``, or None for none.
    """
    used = [scene.cameras[int(c)] for c in scene.camera_of_image]
    single = len(set(used)) == 1  # cameras.bin holds one camera per distinct value (io.colmap)
    out: dict = _intrinsics(used[0]) if single else {}
    frames = []
    for i, name in enumerate(scene.image_names):
        frame = {
            "file_path": f"{image_folder}/{name}",
            "transform_matrix": camera_to_world_nerfstudio(scene.rotations[i], scene.translations[i]).tolist(),
            "colmap_im_id": i + 1,  # io.colmap writes image ids 1..N in Scene order
        }
        if not single:
            frame |= _intrinsics(used[i])
        frames.append(frame)
    out["frames"] = frames
    out["applied_transform"] = np.hstack([APPLIED_TRANSFORM, np.zeros((3, 1))]).tolist()  # (3, 4)
    if ply_name is not None:
        out["ply_file_path"] = ply_name
    return out


def write_nerfstudio_transforms(scene: Scene, out_dir: Path, xyz: np.ndarray, rgb: np.ndarray) -> list[Path]:
    """Write ``out_dir/transforms.json`` and ``out_dir/sparse_pc.ply`` (the points `xyz` turned by A).

    Args:
        scene: the scene of ``out_dir/sparse/0``.
        xyz: (P, 3) float, COLMAP world coordinates (the points of ``points.ply``); rgb: (P, 3) uint8.

    Returns:
        The two paths written (atomically).
    """
    out_dir = Path(out_dir)
    ply = write_ply(out_dir / PLY_NAME, np.asarray(xyz, np.float64) @ APPLIED_TRANSFORM.T, rgb)
    content = nerfstudio_transforms(scene)
    path = write_text_atomic(out_dir / TRANSFORMS_NAME, json.dumps(content, indent=2) + "\n")
    return [path, ply]


def written_paths(out_dir: Path) -> list[Path]:
    """The files :func:`write_nerfstudio_transforms` writes into `out_dir`."""
    return [Path(out_dir) / TRANSFORMS_NAME, Path(out_dir) / PLY_NAME]
