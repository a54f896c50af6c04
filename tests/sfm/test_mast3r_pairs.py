"""MASt3R pair -> PairResult + DenseViews (sfm3r.sfm.mast3r.pairs), on a synthetic two-camera scene.

The scene: a fronto-parallel plane at depth Z seen by camera i (40x48 network pixels) and camera j
(48x64), where j is i rolled by 180° about the optical axis and shifted sideways, so every pixel of
i lands exactly on a pixel of j: (x, y) -> (60 - x, 41 - y). Descriptors are random unit vectors
attached to the plane's points, so true correspondences have identical descriptors (mutual nearest
neighbours) and every walk ends on a true correspondence. Pass j->i is predicted at another scale.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sfm3r.sfm.mast3r.pairs import Mast3rPairConf, mast3r_pair_result
from sfm3r.types import NetView

F, Z, D = 40.0, 4.0, 24
HI, WI, HJ, WJ = 40, 48, 48, 64
CI = ((WI - 1) / 2, (HI - 1) / 2)  # principal points, pixel-index convention
CJ = ((WJ - 1) / 2, (HJ - 1) / 2)
R_JI = np.diag([-1.0, -1.0, 1.0])  # cam_j_from_cam_i rotation
T_JI = np.array([5 * Z / F, -2 * Z / F, 0.0])  # disparity (5, -2) px
SCALE_JI = 1.7  # pass j->i predicts at another scale
VIEW_I = NetView(net_height=HI, net_width=WI, scale_x=2.5, scale_y=2.5, crop_left=4, crop_top=0)
VIEW_J = NetView(net_height=HJ, net_width=WJ, scale_x=1.5, scale_y=1.49, crop_left=0, crop_top=3)


def _true_j_of_i(x, y):
    return 60 - x, 41 - y


def _backproject(h, w, c):
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    return np.stack([(x - c[0]) * Z / F, (y - c[1]) * Z / F, np.full_like(x, Z)], axis=-1)


def _scene(seed=0):
    rng = np.random.default_rng(seed)
    table = rng.normal(size=(48, 64, D))  # descriptor of plane point with i-pixel (x, y) at [y+6, x+3]
    table /= np.linalg.norm(table, axis=-1, keepdims=True)
    desc_i = table[6 : 6 + HI, 3 : 3 + WI]
    v, u = np.mgrid[0:HJ, 0:WJ]
    xi, yi = 60 - u, 41 - v  # the i-pixel seen at j-pixel (u, v)
    desc_j = table[yi + 6, xi + 3]
    x_ii = _backproject(HI, WI, CI)
    x_j = _backproject(HJ, WJ, CJ)  # image j in camera j
    x_ji = (x_j - T_JI) @ R_JI  # image j in camera i: R^T (x - t)
    x_ij = x_ii @ R_JI.T + T_JI  # image i in camera j
    f32 = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32)  # noqa: E731
    qs = [1.0 + rng.random((h, w)) for h, w in [(HI, WI), (HJ, WJ), (HJ, WJ), (HI, WI)]]
    dq = [0.5 + 2 * rng.random((h, w)) for h, w in [(HI, WI), (HJ, WJ), (HJ, WJ), (HI, WI)]]
    pass_ij = {
        "view1": {"pts3d": f32(x_ii), "conf": f32(qs[0]), "desc": f32(desc_i), "desc_conf": f32(dq[0])},
        "view2": {
            "pts3d_in_other_view": f32(x_ji),
            "conf": f32(qs[1]),
            "desc": f32(desc_j),
            "desc_conf": f32(dq[1]),
        },
    }
    pass_ji = {
        "view1": {
            "pts3d": f32(SCALE_JI * x_j),
            "conf": f32(qs[2]),
            "desc": f32(desc_j),
            "desc_conf": f32(dq[2]),
        },
        "view2": {
            "pts3d_in_other_view": f32(SCALE_JI * x_ij),
            "conf": f32(qs[3]),
            "desc": f32(desc_i),
            "desc_conf": f32(dq[3]),
        },
    }
    return pass_ij, pass_ji


@pytest.fixture(scope="module")
def scene():
    return _scene()


@pytest.fixture(scope="module")
def result(scene):
    return mast3r_pair_result("i.jpg", "j.jpg", *scene, VIEW_I, VIEW_J)


def test_matches_land_on_the_true_correspondences(result):
    pair = result.pair
    assert pair.backend == "mast3r" and (pair.name_i, pair.name_j) == ("i.jpg", "j.jpg")
    # seeds on i (5 x 6 grid) all match; seeds on j in the overlap add more
    assert pair.num_matches >= 30
    x, y = pair.idx_i % WI, pair.idx_i // WI
    xj, yj = _true_j_of_i(x, y)
    np.testing.assert_array_equal(pair.idx_j, yj * WJ + xj)
    assert len(set(zip(pair.idx_i.tolist(), pair.idx_j.tolist()))) == pair.num_matches


def test_pixels_are_converted_to_original_colmap_pixels_exactly(result):
    pair = result.pair
    x, y = pair.idx_i % WI, pair.idx_i // WI
    expected_i = np.stack([(x + 0.5 + 4) * 2.5, (y + 0.5 + 0) * 2.5], axis=1).astype(np.float32)
    np.testing.assert_array_equal(pair.xy_i, expected_i)
    xj, yj = pair.idx_j % WJ, pair.idx_j // WJ
    expected_j = np.stack([(xj + 0.5) * 1.5, (yj + 0.5 + 3) * 1.49], axis=1).astype(np.float32)
    np.testing.assert_array_equal(pair.xy_j, expected_j)
    assert pair.xy_i.dtype == np.float32 and pair.idx_i.dtype == np.int64


def test_points_are_each_cameras_own_pointmap_and_agree_with_the_relative_pose(result, scene):
    pair = result.pair
    x_ii = scene[0]["view1"]["pts3d"].numpy().reshape(-1, 3)
    x_jj = scene[1]["view1"]["pts3d"].numpy().reshape(-1, 3)
    np.testing.assert_array_equal(pair.pts_i, x_ii[pair.idx_i])
    np.testing.assert_array_equal(pair.pts_j, x_jj[pair.idx_j])
    np.testing.assert_allclose(pair.pts_j, SCALE_JI * (pair.pts_i @ R_JI.T + T_JI), atol=1e-5)


def test_consistent_pair_is_verified_with_the_true_relative_pose(result):
    pair = result.pair
    assert pair.verified and pair.num_inliers == pair.num_matches
    np.testing.assert_allclose(pair.rel_rotation, R_JI, atol=1e-5)
    np.testing.assert_allclose(pair.rel_translation, T_JI, atol=1e-5)
    assert np.linalg.det(pair.rel_rotation) == pytest.approx(1.0)


def test_match_confidence_is_the_geometric_mean_of_desc_conf(result, scene):
    pair = result.pair
    q_ii = scene[0]["view1"]["desc_conf"].numpy().reshape(-1)
    q_ji = scene[0]["view2"]["desc_conf"].numpy().reshape(-1)
    # every match is found by the first walk set here, so pass i->j provides the confidence
    np.testing.assert_allclose(pair.conf, np.sqrt(q_ii[pair.idx_i] * q_ji[pair.idx_j]), rtol=1e-6)


def test_dense_views_are_the_own_frame_pointmaps_of_each_pass(result, scene):
    di, dj = result.dense_i, result.dense_j
    assert (di.name, di.partner, dj.name, dj.partner) == ("i.jpg", "j.jpg", "j.jpg", "i.jpg")
    np.testing.assert_array_equal(di.net_pts3d, scene[0]["view1"]["pts3d"].numpy())
    np.testing.assert_array_equal(di.net_conf, scene[0]["view1"]["conf"].numpy())
    np.testing.assert_array_equal(dj.net_pts3d, scene[1]["view1"]["pts3d"].numpy())
    np.testing.assert_array_equal(dj.net_conf, scene[1]["view1"]["conf"].numpy())
    assert di.net_pts3d.shape == (HI, WI, 3) and di.net_pts3d.dtype == np.float32


def test_forward_tuple_layout_and_numpy_arrays_give_the_same_result(result, scene):
    def as_tuple(p):
        v2 = {("pts3d" if k == "pts3d_in_other_view" else k): v.numpy() for k, v in p["view2"].items()}
        return ({k: v.numpy() for k, v in p["view1"].items()}, v2)

    other = mast3r_pair_result("i.jpg", "j.jpg", as_tuple(scene[0]), as_tuple(scene[1]), VIEW_I, VIEW_J)
    np.testing.assert_array_equal(other.pair.idx_i, result.pair.idx_i)
    np.testing.assert_array_equal(other.pair.xy_j, result.pair.xy_j)
    np.testing.assert_array_equal(other.pair.conf, result.pair.conf)


def test_pair_whose_passes_disagree_is_not_verified(scene):
    pass_ij, pass_ji = scene
    rng = np.random.default_rng(5)
    broken = {
        "view1": {**pass_ji["view1"], "pts3d": torch.as_tensor(rng.normal(size=(HJ, WJ, 3)) + [0, 0, 5])},
        "view2": pass_ji["view2"],
    }
    out = mast3r_pair_result("i.jpg", "j.jpg", pass_ij, broken, VIEW_I, VIEW_J)
    assert out.pair.num_matches >= 30
    assert not out.pair.verified
    assert out.pair.num_inliers < 0.25 * out.pair.num_matches


def test_no_matches_give_a_well_formed_empty_result():
    tiny = NetView(net_height=3, net_width=3, scale_x=1.0, scale_y=1.0, crop_left=0, crop_top=0)
    view = {"pts3d": torch.ones(3, 3, 3), "conf": torch.ones(3, 3), "desc": torch.ones(3, 3, 4)}
    view["desc_conf"] = torch.ones(3, 3)
    out = mast3r_pair_result("a", "b", (view, view), (view, view), tiny, tiny, Mast3rPairConf(subsample=8))
    pair = out.pair
    assert pair.num_matches == 0 and not pair.verified and pair.num_inliers == 0
    assert pair.xy_i.shape == (0, 2) and pair.pts_j.shape == (0, 3) and pair.idx_i.dtype == np.int64
    assert pair.rel_rotation is None


def test_outputs_that_do_not_match_the_netview_raise(scene):
    pass_ij, pass_ji = scene
    with pytest.raises(ValueError, match=r"pass_ij view1 \(image i\)\['pts3d'\]"):
        mast3r_pair_result("i", "j", pass_ij, pass_ji, VIEW_J, VIEW_J)
    batched = {"view1": {k: v[None] for k, v in pass_ij["view1"].items()}, "view2": pass_ij["view2"]}
    with pytest.raises(ValueError, match="batch dimension"):
        mast3r_pair_result("i", "j", batched, pass_ji, VIEW_I, VIEW_J)
    with pytest.raises(ValueError, match="desc_conf"):
        no_conf = {"view1": pass_ij["view1"], "view2": {**pass_ij["view2"]}}
        del no_conf["view2"]["desc_conf"]
        mast3r_pair_result("i", "j", no_conf, pass_ji, VIEW_I, VIEW_J)
