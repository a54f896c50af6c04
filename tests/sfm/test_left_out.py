"""Why images stay out of the model: describe_left_out / left_out_message over the verified graph."""

from __future__ import annotations

import dataclasses

import numpy as np

from alignment_synthetic import make_pair_results, make_scene, neighbour_pairs
from sfm3r.sfm.align.edge_verification import VerifyConf, describe_left_out, left_out_message, verify_edges
from sfm3r.types import PairResult


def _failed(name_i: str, name_j: str, num_inliers: int) -> PairResult:
    empty2, empty3 = np.zeros((0, 2), np.float32), np.zeros((0, 3), np.float32)
    return PairResult(
        name_i=name_i, name_j=name_j, backend="test", xy_i=empty2, xy_j=empty2,
        idx_i=np.zeros(0, np.int64), idx_j=np.zeros(0, np.int64),
        conf=np.zeros(0, np.float32),
        pts_i=empty3, pts_j=empty3, verified=False, num_inliers=num_inliers,
    )  # fmt: skip


def _two_components():
    scene = make_scene(9, seed=3)
    pairs = neighbour_pairs(6, 2, cyclic=False) + [(6, 7), (7, 8), (6, 8)]
    return scene, make_pair_results(scene, pairs, seed=4)


def test_a_left_out_component_lists_its_strongest_links_to_the_model():
    scene, prs = _two_components()
    names = scene.image_names
    # links between the two components: two failed two-view checks and one verified pair whose 3D points
    # disagree with any similarity (the edge check rejects it)
    bad = prs[-1]
    rng = np.random.default_rng(0)
    noise = rng.normal(size=bad.pts_j.shape).astype(np.float32)
    scrambled = dataclasses.replace(bad, name_i=names[2], name_j=names[7], pts_j=noise)
    prs = prs + [_failed(names[5], names[6], 12), _failed(names[0], names[8], 0), scrambled]
    graph = verify_edges(prs, names, VerifyConf())
    assert graph.other_components == (tuple(names[6:]),)

    (component,) = describe_left_out(prs, graph, max_links=2)
    assert component.images == tuple(names[6:])
    assert component.internal_pairs == 3 and component.link_pairs == 3
    first, second = component.links
    assert (first.name_i, first.name_j, first.two_view_verified) == (names[2], names[7], True)
    assert (second.name_i, second.name_j, second.num_inliers) == (names[5], names[6], 12)
    assert not second.two_view_verified
    message = left_out_message(component)
    assert "rejected by the edge check" in message and f"{names[5]} / {names[6]}: 12 inliers, not verified" in message


def test_a_component_without_pairs_to_the_model_says_so():
    scene, prs = _two_components()
    graph = verify_edges(prs, scene.image_names, VerifyConf())
    (component,) = describe_left_out(prs, graph)
    assert component.link_pairs == 0 and component.links == ()
    assert "no pair between them and the model" in left_out_message(component)


def test_nothing_is_described_when_every_image_is_in_the_model():
    scene = make_scene(5, seed=1)
    prs = make_pair_results(scene, neighbour_pairs(5, 2, cyclic=False), seed=2)
    assert describe_left_out(prs, verify_edges(prs, scene.image_names, VerifyConf())) == ()


def test_links_without_an_inlier_are_summed_up_not_listed():
    scene, prs = _two_components()
    names = scene.image_names
    prs = prs + [_failed(names[5], names[6], 0), _failed(names[0], names[8], 0)]
    (component,) = describe_left_out(prs, verify_edges(prs, names, VerifyConf()))
    assert component.link_pairs == 2
    assert left_out_message(component).endswith("none of its 2 pairs to the model has an inlier (too few matches)")
