import dataclasses
from pathlib import Path

import numpy as np

from sfm3r.pipelines.colors import color_points
from sfm3r.types import Camera, Scene


def _scene(num_images: int, num_points: int, seed: int = 0) -> tuple[Scene, dict[str, np.ndarray]]:
    """Random observations (up to one per image and point, some points unobserved) and random images."""
    rng = np.random.default_rng(seed)
    obs_point, obs_image = [], []
    for p in range(num_points - 3):  # the last three points have no observation
        images = rng.choice(num_images, rng.integers(1, num_images + 1), replace=False)
        obs_point += [p] * len(images)
        obs_image += images.tolist()
    names = tuple(f"{k}.png" for k in range(num_images))
    pixels = {name: rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8) for name in names}  # (H, W, 3)
    scene = Scene(
        image_names=names,
        cameras=(Camera(40, 30, 50.0, 50.0, 20.0, 15.0),),
        camera_of_image=np.zeros(num_images, np.int64),
        rotations=np.repeat(np.eye(3)[None], num_images, axis=0),
        translations=np.zeros((num_images, 3)),
        points_xyz=rng.normal(size=(num_points, 3)),
        points_rgb=np.zeros((num_points, 3), np.uint8),
        points_error=np.zeros(num_points),
        obs_point=np.array(obs_point, np.int64),
        obs_image=np.array(obs_image, np.int64),
        obs_xy=rng.uniform([-1.0, -1.0], [41.0, 31.0], size=(len(obs_point), 2)),  # a few beyond the border
    )
    return scene, pixels


def _reference(scene: Scene, pixels: dict[str, np.ndarray]) -> np.ndarray:
    """The definition, one observation at a time: the rounded mean of the pixels holding floor(xy), clamped."""
    sums, counts = np.zeros((scene.num_points, 3)), np.zeros(scene.num_points)
    for point, image, (x, y) in zip(scene.obs_point, scene.obs_image, scene.obs_xy):
        rgb = pixels[scene.image_names[image]]
        sums[point] += rgb[min(max(int(np.floor(y)), 0), 29), min(max(int(np.floor(x)), 0), 39)]
        counts[point] += 1
    colors = np.full((scene.num_points, 3), 128, np.uint8)
    seen = counts > 0
    colors[seen] = np.round(sums[seen] / counts[seen, None]).astype(np.uint8)
    return colors


def test_point_colours_are_the_mean_observed_pixel_and_grey_without_observations():
    scene, pixels = _scene(num_images=6, num_points=200)
    reads = []

    def read_image(path: Path) -> np.ndarray:
        reads.append(path.name)
        return pixels[path.name]

    colored = color_points(scene, {name: Path(name) for name in scene.image_names}, read_image)
    np.testing.assert_array_equal(colored.points_rgb, _reference(scene, pixels))
    np.testing.assert_array_equal(colored.points_rgb[-3:], 128)
    assert sorted(reads) == sorted(scene.image_names)  # each image read once
    np.testing.assert_array_equal(colored.points_xyz, scene.points_xyz)


def test_an_image_without_observations_is_not_read():
    scene, pixels = _scene(num_images=3, num_points=20)
    keep = scene.obs_image != 1
    scene = dataclasses.replace(scene, obs_point=scene.obs_point[keep], obs_image=scene.obs_image[keep],
                                obs_xy=scene.obs_xy[keep])  # fmt: skip
    reads = []

    def read_image(path: Path) -> np.ndarray:
        reads.append(path.name)
        return pixels[path.name]

    color_points(scene, {name: Path(name) for name in scene.image_names}, read_image)
    assert sorted(reads) == ["0.png", "2.png"]
