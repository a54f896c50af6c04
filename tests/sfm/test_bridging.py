"""Bridges to a left-out component: two-view solutions of different links that agree on its rotation."""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from sfm3r.sfm.align.bridging import BridgeConf, component_rotation, component_rotations, select_bridges
from sfm3r.types import PairResult


def _rotation(seed: int, degrees: float | None = None) -> np.ndarray:
    """A random rotation, or one of `degrees` about a random axis."""
    rng = np.random.default_rng(seed)
    if degrees is None:
        return Rotation.random(random_state=seed).as_matrix()
    axis = rng.normal(size=3)
    return Rotation.from_rotvec(np.radians(degrees) * axis / np.linalg.norm(axis)).as_matrix()


def _solution(name_i: str, name_j: str, rotation_i: np.ndarray, rotation_j: np.ndarray, inliers: int,
              error: np.ndarray | None = None) -> PairResult:
    """A verified pair whose relative rotation (cam_j from cam_i) follows the cam_from_world rotations given,
    times an optional error rotation."""
    relative = rotation_j @ rotation_i.T
    if error is not None:
        relative = error @ relative
    empty2, empty3 = np.zeros((0, 2), np.float32), np.zeros((0, 3), np.float32)
    return PairResult(
        name_i=name_i, name_j=name_j, backend="test", xy_i=empty2, xy_j=empty2, idx_i=np.zeros(0, np.int64),
        idx_j=np.zeros(0, np.int64), conf=np.zeros(0, np.float32), pts_i=empty3, pts_j=empty3, verified=True,
        num_inliers=inliers, rel_rotation=relative, rel_translation=np.array([1.0, 0.0, 0.0]),
    )  # fmt: skip


def _world():
    """Model rotations (cam_from_world), component rotations (cam_from_component) and the true
    component_from_world rotation."""
    model = {f"m{k}": _rotation(10 + k) for k in range(4)}
    members = {"u0": np.eye(3), "u1": _rotation(20), "u2": _rotation(21)}
    truth = _rotation(30)
    world = {name: rotation @ truth for name, rotation in members.items()}  # cam_from_world of the members
    return model, members, truth, world


def test_each_solution_implies_the_component_rotation_in_either_pair_order():
    model, members, truth, world = _world()
    for pair in (_solution("u1", "m2", world["u1"], model["m2"], 25), _solution("m2", "u1", model["m2"], world["u1"], 25)):
        np.testing.assert_allclose(component_rotation(pair, members, model), truth, atol=1e-12)


def test_agreeing_solutions_of_two_links_are_kept_and_scattered_ones_dropped():
    model, members, truth, world = _world()
    right_a = _solution("u1", "m0", world["u1"], model["m0"], 26, error=_rotation(1, degrees=1.0))
    right_b = _solution("m3", "u2", model["m3"], world["u2"], 23, error=_rotation(2, degrees=1.0))
    # near-tied wrong solutions of the same links (more support than the right ones) and a spurious link
    wrong_a = _solution("u1", "m0", world["u1"], model["m0"], 28, error=_rotation(3, degrees=12.0))
    wrong_b = _solution("m3", "u2", model["m3"], world["u2"], 24, error=_rotation(4, degrees=17.0))
    spurious = _solution("u0", "m1", world["u0"], model["m1"], 30, error=_rotation(5))
    chosen = select_bridges([wrong_a, right_a, wrong_b, spurious, right_b], members, model)
    assert {(p.name_i, p.name_j, p.num_inliers) for p in chosen} == {("u1", "m0", 26), ("m3", "u2", 23)}


def test_one_link_alone_or_disagreeing_links_give_no_bridge():
    model, members, truth, world = _world()
    right = _solution("u1", "m0", world["u1"], model["m0"], 26)
    also_right = _solution("u1", "m0", world["u1"], model["m0"], 25, error=_rotation(6, degrees=0.5))  # same link
    assert select_bridges([right, also_right], members, model) == []
    wrong = _solution("u2", "m1", world["u2"], model["m1"], 30, error=_rotation(7, degrees=10.0))
    assert select_bridges([right, wrong], members, model) == []
    # agreeing, but below the support a solution needs
    weak = _solution("u2", "m1", world["u2"], model["m1"], 15)
    assert select_bridges([right, weak], members, model) == []
    assert len(select_bridges([right, weak], members, model, BridgeConf(min_inliers=15))) == 2


def test_component_rotations_chain_the_verified_pairs_among_the_members():
    _, members, _, world = _world()
    pairs = [_solution("u0", "u1", world["u0"], world["u1"], 200), _solution("u2", "u1", world["u2"], world["u1"], 150)]
    rotations = component_rotations(pairs, ["u0", "u1", "u2"])
    for name in members:  # u0 is the identity: the component frame of `members`
        np.testing.assert_allclose(rotations[name], members[name], atol=1e-12)
    assert component_rotations(pairs[:1], ["u0", "u1", "u2"]) is None  # u2 not connected
    single = component_rotations([], ["u0"])
    assert list(single) == ["u0"] and np.array_equal(single["u0"], np.eye(3))
