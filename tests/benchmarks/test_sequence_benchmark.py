"""The synthetic orbit renderer (benchmarks/synthetic_sequence.py) and the pure helpers of benchmarks/vs_colmap_speed.py."""

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


def test_vs_colmap_speed_counts_sift_once_under_a_retrieval_graph():
    import vs_colmap_speed as bench

    t = {"images": 0.1, "features": 29.2, "pairs": 98.8, "putative_matching": 24.2, "self_calibration": 25.9,
         "matching": 19.8, "alignment": 149.7, "colors": 0.2, "export": 1.1}  # fmt: skip
    stages, retrieval = bench.sfm3r_stages(t, "retrieval-20-10", 320.0)
    assert stages["features"] == 0.1 + 98.8 and abs(retrieval - 69.6) < 1e-9  # SIFT ran inside "pairs"
    stages, retrieval = bench.sfm3r_stages(t | {"pairs": 0.3}, "complete", 160.0)
    assert abs(stages["features"] - (0.1 + 29.2 + 0.3)) < 1e-9 and retrieval == 0.0
    assert stages["matching"] == 24.2 + 19.8 and stages["total"] == 160.0
    assert abs(stages["model"] - (160.0 - 1.1)) < 1e-9 and stages["export"] == 1.1  # to the sparse model alone


def test_vs_colmap_speed_scaling_reports_the_ratio_per_n():
    import vs_colmap_speed as bench

    assert bench.sequence_length("seq50") == 50 and bench.sequence_length("temple") is None
    summary = [{"set": f"seq{n}", "images": n, "ratio": {"total": r, "cpu_s": r, "model": r, "total_per_repeat_median": r}}
               for n, r in ((25, 2.4), (50, 1.5))] + [{"set": "temple", "images": 47, "ratio": {"total": 9.0}}]  # fmt: skip
    sc = bench.scaling(summary)
    assert list(sc["ratio_by_n"]) == [25, 50] and sc["range"] == [25, 50]
    assert abs(sc["growth_wall"] - 1.5 / 2.4) < 1e-12
