"""A small exact scene for the report and viewer tests: 4 cameras on an arc, 80 points, exact observations."""

import numpy as np

from sfm3r.types import Camera, Scene


def arc_scene(num_images: int = 4, num_points: int = 80, noise_px: float = 0.0) -> Scene:
    rng = np.random.default_rng(0)
    camera = Camera(640, 480, 500.0, 500.0, 320.0, 240.0)
    rotations, translations = [], []
    for k, angle in enumerate(np.linspace(-0.5, 0.5, num_images)):
        center = np.array([4 * np.sin(angle), 0.1 * k, -4 * np.cos(angle)])
        forward = -center / np.linalg.norm(center)
        right = np.cross([0.0, 1.0, 0.0], forward)
        right /= np.linalg.norm(right)
        rot = np.stack([right, np.cross(forward, right), forward])
        rotations.append(rot)
        translations.append(-rot @ center)
    points = rng.uniform(-1, 1, size=(num_points, 3))
    obs_point, obs_image, obs_xy = [], [], []
    for i in range(num_images):
        cam = points @ rotations[i].T + translations[i]
        xy = cam[:, :2] / cam[:, 2:] * 500.0 + [320.0, 240.0]
        for p in range(num_points):
            if p % num_images == i and i > 0:  # every point unseen by one image: track lengths vary
                continue
            obs_point.append(p)
            obs_image.append(i)
            obs_xy.append(xy[p] + rng.normal(scale=noise_px, size=2))
    return Scene(
        image_names=tuple(f"{k:04d}.jpg" for k in range(num_images)),
        cameras=(camera,),
        camera_of_image=np.zeros(num_images, np.int64),
        rotations=np.array(rotations),
        translations=np.array(translations),
        points_xyz=points,
        points_rgb=rng.integers(0, 256, size=(num_points, 3), dtype=np.uint8),
        points_error=np.full(num_points, 0.5),
        obs_point=np.array(obs_point, np.int64),
        obs_image=np.array(obs_image, np.int64),
        obs_xy=np.array(obs_xy),
    )
