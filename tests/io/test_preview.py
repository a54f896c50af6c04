import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

import sfm3r
from sfm3r.io.preview import PREVIEW_SIZE, labelled_cameras, scale_bar_length, top_view, write_preview
from sfm3r.types import Camera, Scene


def _scene(rotations, centers, points, colors) -> Scene:
    rotations = np.asarray(rotations, dtype=np.float64)
    translations = -np.einsum("nij,nj->ni", rotations, np.asarray(centers, dtype=np.float64))
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    return Scene(
        image_names=tuple(f"{k}.jpg" for k in range(len(rotations))),
        cameras=(Camera(640, 480, 500.0, 500.0, 320.0, 240.0),),
        camera_of_image=np.zeros(len(rotations), np.int64),
        rotations=rotations,
        translations=translations,
        points_xyz=points,
        points_rgb=np.asarray(colors, dtype=np.uint8).reshape(-1, 3),
        points_error=np.zeros(len(points)),
        obs_point=np.zeros(0, np.int64),
        obs_image=np.zeros(0, np.int64),
        obs_xy=np.zeros((0, 2)),
    )


def _ring_scene(n_cams: int = 8, n_points: int = 500) -> Scene:
    """Cameras on a circle of radius 4 in the world xz plane, upright (y down), looking at the origin."""
    rng = np.random.default_rng(0)
    rotations, centers = [], []
    for k in range(n_cams):
        angle = 2 * np.pi * k / n_cams
        center = np.array([4 * np.cos(angle), 0.0, 4 * np.sin(angle)])
        forward = -center / np.linalg.norm(center)
        down = np.array([0.0, 1.0, 0.0])
        rotations.append(np.stack([np.cross(down, forward), down, forward]))  # rows: camera axes in world
        centers.append(center)
    points = rng.normal(size=(n_points, 3))
    return _scene(rotations, centers, points, rng.integers(0, 255, size=(n_points, 3)))


def _row_scene(points, colors) -> Scene:
    """Five upright cameras on the world x axis, all looking along +z."""
    rotation = np.eye(3)  # camera axes = world axes: x right, y down, z forward
    return _scene([rotation] * 5, [[x, 0.0, 0.0] for x in np.linspace(-2, 2, 5)], points, colors)


def _read(path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB")).astype(int)  # (H, W, 3)


def _is_camera_red(rgb) -> bool:
    r, g, b = rgb
    return r > 180 and g < 60 and b < 60


def _red_near(image, xy) -> bool:
    """Whether a pixel within 1 px of `xy` (a 2-px-wide line may fall between pixel centres) is camera red."""
    x, y = np.rint(xy).astype(int)
    return any(_is_camera_red(rgb) for rgb in image[y - 1 : y + 2, x - 1 : x + 2].reshape(-1, 3))


def test_preview_is_a_png_of_the_documented_size(tmp_path):
    image = _read(write_preview(_ring_scene(), tmp_path / "preview.png"))
    assert image.shape == (PREVIEW_SIZE[1], PREVIEW_SIZE[0], 3)


def test_cameras_are_red_dots_at_their_projected_centres_with_arrows_along_their_viewing_directions(tmp_path):
    scene = _ring_scene()
    image = _read(write_preview(scene, tmp_path / "preview.png"))
    view = top_view(scene)
    centers = view.to_pixels(scene.camera_centers())  # (N, 2)
    target = view.to_pixels(np.zeros((1, 3)))[0]  # every camera looks at the world origin
    arrow = 0.05 * view.extent * view.scale  # px
    for center in centers:
        x, y = np.rint(center).astype(int)
        assert _is_camera_red(image[y, x])
        towards = (target - center) / np.linalg.norm(target - center)
        assert _red_near(image, center + 0.6 * arrow * towards)  # on the arrow, beyond the dot
        assert not _red_near(image, center - 0.6 * arrow * towards)  # behind the camera: no arrow


def test_the_top_view_puts_the_cameras_viewing_direction_up_and_their_right_to_the_right():
    scene = _row_scene(np.zeros((0, 3)), np.zeros((0, 3)))
    centers = top_view(scene).to_pixels(scene.camera_centers())
    assert np.all(np.diff(centers[:, 0]) > 0)  # world +x is the cameras' right: increasing pixel x
    ahead = top_view(scene).to_pixels(np.array([[0.0, 0.0, 1.0]]))[0]  # a point in front of the middle camera
    assert ahead[1] < centers[2, 1] and abs(ahead[0] - centers[2, 0]) < 1e-6  # drawn above it


def test_points_are_drawn_in_their_colours_and_the_highest_of_a_column_is_on_top(tmp_path):
    grid = np.array([[x, 0.0, z] for x in np.linspace(-1.5, 1.5, 7) for z in np.linspace(3, 6, 7)])  # (49, 3)
    colors = np.random.default_rng(1).integers(0, 256, size=(len(grid), 3))
    below = grid + [0.0, 0.5, 0.0]  # the same columns, lower (y points down): hidden under the grid
    scene = _row_scene(np.concatenate([grid, below]), np.concatenate([colors, np.full_like(colors, 7)]))
    image = _read(write_preview(scene, tmp_path / "preview.png"))
    pixels = np.rint(top_view(scene).to_pixels(grid)).astype(int)
    np.testing.assert_array_equal(image[pixels[:, 1], pixels[:, 0]], colors)


def test_far_outliers_do_not_shrink_the_view(tmp_path):
    rng = np.random.default_rng(2)
    points = np.concatenate([rng.uniform([-2, -1, 2], [2, 1, 6], size=(2000, 3)), [[500.0, 0.0, 900.0]]])
    scene = _row_scene(points, np.zeros((len(points), 3)))
    image = _read(write_preview(scene, tmp_path / "preview.png"))
    dark = np.flatnonzero((image.sum(axis=2) == 0).any(axis=0))  # columns holding a black point
    assert dark.max() - dark.min() > 0.6 * PREVIEW_SIZE[0]


def test_title_and_scale_bar_are_drawn(tmp_path):
    image = _read(write_preview(_ring_scene(), tmp_path / "preview.png", title="a title"))
    title_band = image[:20]
    assert (title_band.sum(axis=2) < 200).sum() > 20  # dark text pixels
    bottom_left = image[PREVIEW_SIZE[1] - 80 : PREVIEW_SIZE[1] - 20, :200]
    assert (bottom_left.sum(axis=2) == 0).sum() > 50  # the black bar


def test_preview_of_a_scene_without_points(tmp_path):
    scene = _ring_scene(n_points=0)
    image = _read(write_preview(scene, tmp_path / "p.png"))
    assert image.shape == (PREVIEW_SIZE[1], PREVIEW_SIZE[0], 3)
    x, y = np.rint(top_view(scene).to_pixels(scene.camera_centers()[:1])[0]).astype(int)
    assert _is_camera_red(image[y, x])


def test_camera_labels_are_thinned_beyond_forty():
    assert list(labelled_cameras(8)) == list(range(8))
    labelled = list(labelled_cameras(1000))
    assert 20 <= len(labelled) <= 40 and labelled[0] == 0


def test_scale_bar_is_a_round_length_of_at_most_a_fifth_of_the_view():
    assert scale_bar_length(1.6) == 0.2
    assert scale_bar_length(5.0) == 1.0
    assert scale_bar_length(60.0) == 10.0
    assert scale_bar_length(0.03) == 0.005


def test_drawing_a_preview_imports_no_matplotlib(tmp_path):
    code = (
        "import sys, numpy as np\n"
        "from pathlib import Path\n"
        "import sfm3r.pipelines.reconstruct\n"
        "from tests.io.test_preview import _ring_scene\n"
        "from sfm3r.io.preview import write_preview\n"
        f"write_preview(_ring_scene(), Path({str(tmp_path / 'p.png')!r}))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib'))\n"
    )
    repo = Path(__file__).resolve().parents[2]  # for `tests.io.test_preview`
    src = str(Path(sfm3r.__file__).parents[1])
    env = os.environ | {"PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=repo, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
