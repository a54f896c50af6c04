"""Pose metrics: perfect estimates score 100, similarity transforms do not matter, errors are detected."""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from alignment_synthetic import make_scene
from sfm3r.sfm.evaluation import evaluate_poses, pose_auc


class Poses:
    def __init__(self, names, R, t, cameras=None):
        self.image_names, self.rotations, self.translations = tuple(names), R, t
        self.cameras, self.camera_of_image = cameras, None


def _gt():
    s = make_scene(8, seed=0)
    return s, Poses(s.image_names, s.rotations, s.translations, s.cameras)


def _sim3(gt, scale, R_w, t_w):
    """Same cameras in another world frame: x_new = s R_w x + t_w."""
    R = gt.rotations @ R_w.T
    t = scale * gt.translations - np.einsum("nij,j->ni", R, t_w)
    return R, t


def test_perfect_estimate_scores_100_in_any_similarity_frame():
    s, gt = _gt()
    R, t = _sim3(gt, 3.0, Rotation.from_rotvec([0.3, -0.2, 1.0]).as_matrix(), np.array([1.0, 2.0, -3.0]))
    m = evaluate_poses(Poses(s.image_names, R, t, s.cameras), gt)
    assert m["registration_rate"] == 100.0 and m["AUC@3"] > 99.99 and m["mAA@30"] > 99.99
    assert m["RRA@5"] == 100.0 and m["RTA@5"] == 100.0
    assert m["ATE"] < 1e-9 and m["focal_err_max"] == 0.0


def test_missing_images_count_as_failures_and_names_are_matched():
    s, gt = _gt()
    keep = [5, 0, 3, 1, 2, 4]  # shuffled, 2 of 8 missing
    m = evaluate_poses(Poses([s.image_names[k] for k in keep], gt.rotations[keep], gt.translations[keep]), gt)
    assert m["registration_rate"] == 75.0
    assert abs(m["RRA@5"] - 100.0 * 15 / 28) < 1e-9  # 15 of 28 pairs have both images


def test_rotation_noise_lowers_the_auc():
    s, gt = _gt()
    rng = np.random.default_rng(0)
    noise = Rotation.from_rotvec(np.deg2rad(2.0) * rng.normal(size=(8, 3)) / np.sqrt(3)).as_matrix()
    m = evaluate_poses(Poses(s.image_names, noise @ gt.rotations, gt.translations), gt)
    assert 0 < m["AUC@3"] < m["AUC@10"] < 100
    assert m["rot_err_max_deg"] > 0.5


def test_pose_auc_of_uniform_errors():
    # errors uniform on [0, 10] -> recall(e) = e/10 -> AUC@10 = 0.5, AUC@5 = 0.25
    auc5, auc10 = pose_auc(np.linspace(0, 10, 10001)[1:], [5.0, 10.0])
    assert abs(auc5 - 0.25) < 1e-3 and abs(auc10 - 0.5) < 1e-3
