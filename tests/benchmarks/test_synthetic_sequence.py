"""The synthetic orbit renderer of benchmarks/synthetic_sequence.py: projection, poses, ray casting, GT model."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import synthetic_sequence as ss


def test_look_at_puts_the_target_at_the_principal_point_in_front():
    conf = ss.SequenceConf()
    K = ss.intrinsics(conf)
    R, t = ss.look_at(np.array([3.0, -4.0, 2.0]), np.array([0.5, 0.2, 0.7]))
    assert np.allclose(R @ R.T, np.eye(3)) and np.isclose(np.linalg.det(R), 1.0)
    uv, z = ss.project(K, R, t, np.array([[0.5, 0.2, 0.7], [0.5, 0.2, 1.7]]))
    assert np.allclose(uv[0], [conf.width / 2, conf.height / 2]) and z[0] > 0
    assert uv[1, 1] < conf.height / 2  # a point above the target (z up) is higher in the image (y down)


def test_orbit_steps_evenly_and_closes_the_loop():
    centres = np.array([-ss.orbit_pose(i)[0].T @ ss.orbit_pose(i)[1] for i in range(ss.LOOP_FRAMES + 1)])
    angles = np.unwrap(np.arctan2(centres[:, 1], centres[:, 0]))
    assert np.allclose(np.diff(angles), 2 * np.pi / ss.LOOP_FRAMES)
    assert np.allclose(centres[0], centres[-1])


def test_render_shows_a_rect_where_it_projects_and_background_elsewhere():
    tex = np.full((8, 8, 3), 200, np.uint8)
    rect = ss.Rect(np.array([-1.0, -1.0, 0.0]), np.array([2.0, 0, 0]), np.array([0, 2.0, 0]), tex, shade=0.5)
    K = np.array([[40.0, 0, 32], [0, 40.0, 24], [0, 0, 1]])
    R, t = ss.look_at(np.array([0.0, -0.01, 5.0]), np.zeros(3), up=np.array([0.0, 1.0, 0.0]))
    img = ss.render([rect], K, R, t, 64, 48, supersample=2)
    (u0, v0), (u1, v1) = np.sort(ss.project(K, R, t, np.array([[-1.0, -1, 0], [1, 1, 0]]))[0], axis=0)
    inside = img[int(v0) + 2 : int(v1) - 2, int(u0) + 2 : int(u1) - 2]
    assert inside.size and np.all(inside == 100)  # texture 200 × shade 0.5
    assert np.all(img[:, : int(u0) - 1] == 20) and np.all(img[:, int(u1) + 2 :] == 20)  # background


def test_gt_model_round_trips_through_the_colmap_reader(tmp_path):
    from sfm3r.io.colmap import read_colmap_model

    conf = ss.SequenceConf()
    poses = [ss.orbit_pose(i) for i in (0, 7, 60)]
    names = [ss.frame_name(i) for i in (0, 7, 60)]
    ss.write_gt_model(tmp_path, conf, poses, names)
    model = read_colmap_model(tmp_path)
    assert list(model.image_names) == names
    assert np.allclose(model.rotations, [R for R, _ in poses], atol=1e-9)
    assert np.allclose(model.translations, [t for _, t in poses], atol=1e-9)
