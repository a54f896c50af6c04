import numpy as np
from PIL import Image

from sfm3r.io.preview import write_preview
from sfm3r.types import Camera, Scene


def _ring_scene(n_cams: int = 8, n_points: int = 500) -> Scene:
    rng = np.random.default_rng(0)
    rotations, translations = [], []
    for k in range(n_cams):
        angle = 2 * np.pi * k / n_cams
        center = np.array([4 * np.cos(angle), 0.0, 4 * np.sin(angle)])
        forward = -center / np.linalg.norm(center)
        down = np.array([0.0, 1.0, 0.0])
        right = np.cross(down, forward)
        rot = np.stack([right, down, forward])  # rows: camera axes in world coordinates
        rotations.append(rot)
        translations.append(-rot @ center)
    points = rng.normal(size=(n_points, 3))
    return Scene(
        image_names=tuple(f"{k}.jpg" for k in range(n_cams)),
        cameras=(Camera(640, 480, 500.0, 500.0, 320.0, 240.0),),
        camera_of_image=np.zeros(n_cams, np.int64),
        rotations=np.array(rotations),
        translations=np.array(translations),
        points_xyz=points,
        points_rgb=rng.integers(0, 255, size=(n_points, 3), dtype=np.uint8),
        points_error=np.zeros(n_points),
        obs_point=np.zeros(0, np.int64),
        obs_image=np.zeros(0, np.int64),
        obs_xy=np.zeros((0, 2)),
    )


def test_preview_writes_a_png_with_content(tmp_path):
    path = write_preview(_ring_scene(), tmp_path / "preview.png")
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape[0] > 200 and image.shape[1] > 200
    red = (image[..., 0] > 200) & (image[..., 1] < 80) & (image[..., 2] < 80)
    assert red.sum() > 20  # the camera markers are drawn


def test_preview_of_a_scene_without_points(tmp_path):
    scene = _ring_scene(n_points=0)
    assert write_preview(scene, tmp_path / "p.png").stat().st_size > 1000
