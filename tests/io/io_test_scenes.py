"""Synthetic Scenes for the writer tests: a few cameras around a cloud of points, with exact tracks."""

from __future__ import annotations

import numpy as np

from sfm3r.types import Camera, Scene

SIMPLE = Camera(width=64, height=48, fx=50.0, fy=50.0, cx=32.5, cy=23.75)
PINHOLE = Camera(width=48, height=64, fx=61.0, fy=58.5, cx=24.25, cy=31.0)


def look_at(center: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cam_from_world (R (3, 3), t (3,)) of a camera at `center` looking at `target`, OpenCV axes, y down."""
    forward = (target - center) / np.linalg.norm(target - center)
    right = np.cross(forward, [0.0, -1.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rotation = np.stack([right, down, forward])
    return rotation, -rotation @ center


def synthetic_scene(names: tuple[str, ...] = ("a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"), seed: int = 0) -> Scene:
    """Images on an arc looking at the origin; cameras: SIMPLE, PINHOLE, then a duplicate of SIMPLE.

    The observation table is shuffled (not grouped by image or point) and every visible point is
    observed with its exact projection; one point has an unknown (NaN) error.
    """
    rng = np.random.default_rng(seed)
    n = len(names)
    cameras = (SIMPLE, PINHOLE, Camera(**vars(SIMPLE)))  # the third equals the first: written once
    camera_of_image = np.array([[0, 1, 2][i % 3] for i in range(n)], dtype=np.int64)
    poses = [look_at(np.array([4 * np.sin(a), 0.3 * i, -4 * np.cos(a)]), np.zeros(3))
             for i, a in enumerate(np.linspace(-0.6, 0.6, n))]  # fmt: skip
    points = rng.uniform(-2.5, 2.5, size=(60, 3))
    obs = []
    for i, (rotation, translation) in enumerate(poses):
        camera = cameras[camera_of_image[i]]
        cam_pts = points @ rotation.T + translation
        xy = cam_pts[:, :2] / cam_pts[:, 2:] * [camera.fx, camera.fy] + [camera.cx, camera.cy]
        inside = (xy > 0).all(axis=1) & (xy[:, 0] < camera.width) & (xy[:, 1] < camera.height)
        visible = inside & (cam_pts[:, 2] > 0.1)
        obs += [(p, i, *xy[p]) for p in np.flatnonzero(visible)]
    obs = np.array(obs)[rng.permutation(len(obs))]
    seen = np.unique(obs[:, 0].astype(np.int64))  # keep points seen at least once, renumbered
    renumber = np.full(len(points), -1)
    renumber[seen] = np.arange(len(seen))
    errors = rng.uniform(0.1, 2.0, len(seen))
    errors[0] = np.nan
    return Scene(
        image_names=tuple(names),
        cameras=cameras,
        camera_of_image=camera_of_image,
        rotations=np.array([r for r, _ in poses]),
        translations=np.array([t for _, t in poses]),
        points_xyz=points[seen],
        points_rgb=rng.integers(0, 256, size=(len(seen), 3), dtype=np.uint8),
        points_error=errors,
        obs_point=renumber[obs[:, 0].astype(np.int64)],
        obs_image=obs[:, 1].astype(np.int64),
        obs_xy=obs[:, 2:4],
    )


def observation_set(scene: Scene) -> set[tuple]:
    """Observations as a set of (point xyz rounded, image name, x, y rounded): order-free comparison."""
    return {
        (tuple(np.round(scene.points_xyz[p], 9)), scene.image_names[i], round(float(x), 9), round(float(y), 9))
        for p, i, (x, y) in zip(scene.obs_point, scene.obs_image, scene.obs_xy)
    }
