"""Canonical anchors: per-pair scales reconciled, dense views streamed, focal fitted."""

from __future__ import annotations

import numpy as np

from alignment_synthetic import make_pair_results, make_scene, neighbour_pairs
from sfm3r.sfm.align.canonical import build_canonical, weiszfeld_focal
from sfm3r.sfm.align.edge_verification import VerifyConf, verify_edges
from sfm3r.types import DenseView


def _setup(n=6, focal_error=0.0):
    scene = make_scene(n, seed=7)
    prs = make_pair_results(scene, neighbour_pairs(n, 2), backend_focal_error=focal_error, seed=8)
    graph = verify_edges(prs, scene.image_names, VerifyConf())
    return scene, prs, graph


def _true_depths(scene, canon):
    x = scene.points[canon.anchor_id] if canon.anchor_id.max() < len(scene.points) else None
    R, t = scene.rotations[canon.anchor_image], scene.translations[canon.anchor_image]
    return np.einsum("nij,nj->ni", R, x)[:, 2] + t[:, 2]


def test_verification_drops_the_outlier_matches():
    scene, prs, graph = _setup()
    assert len(graph.edges) == len(prs)
    for e in graph.edges:
        ids = prs[e.pair_index].idx_i[e.inliers]
        assert (ids < len(scene.points)).mean() > 0.98  # outliers have ids past the scene points


def test_sparse_canonical_depths_agree_across_pairs_up_to_one_scale_per_image():
    scene, prs, graph = _setup()
    canon = build_canonical(prs, graph.edges, scene.images)
    ok = canon.anchor_id < len(scene.points)
    z = _true_depths(scene, _subset(canon, ok))
    for k in range(len(scene.images)):
        sel = canon.anchor_image[ok] == k
        ratio = canon.anchor_depth[ok][sel] / z[sel]
        assert np.std(np.log(ratio)) < 0.03  # depth noise is 1 %: one scale per image, not per pair
    np.testing.assert_allclose(canon.focal, [c.fx for c in scene.cameras], rtol=0.01)


def _subset(canon, mask):
    class C:
        anchor_id = canon.anchor_id[mask]
        anchor_image = canon.anchor_image[mask]

    return C


def test_dense_views_are_streamed_into_depths_and_the_focal():
    scene, prs, graph = _setup(focal_error=0.1)  # backend pointmaps imply a focal off by up to 10 %
    size = 11 * len(scene.points)  # flat "network" index space covering every keypoint id
    consumed = []

    def dense_views(name):
        k = scene.image_names.index(name)
        x = scene.points @ scene.rotations[k].T + scene.translations[k]
        for scale in (1.0, 2.5):  # two pairs at different scales
            pts = np.zeros((1, size, 3), np.float32)
            pts[0, :, 2] = 1.0
            pts[0, : len(x)] = x * scale
            consumed.append(name)
            yield DenseView(name, "other", pts, np.full((1, size), 3.0, np.float32))

    canon = build_canonical(prs, graph.edges, scene.images, dense_views)
    assert sorted(consumed) == sorted(2 * list(scene.image_names))
    np.testing.assert_allclose(canon.focal, [c.fx for c in scene.cameras], rtol=0.005)
    ok = canon.anchor_id < len(scene.points)
    z = _true_depths(scene, _subset(canon, ok))
    for k in range(len(scene.images)):
        sel = canon.anchor_image[ok] == k
        assert np.std(np.log(canon.anchor_depth[ok][sel] / z[sel])) < 1e-6


def test_weiszfeld_focal_ignores_outliers():
    rng = np.random.default_rng(0)
    ray = rng.uniform(-0.5, 0.5, size=(500, 2))
    u = 700.0 * ray
    u[:100] = rng.uniform(-300, 300, size=(100, 2))
    assert abs(weiszfeld_focal(u, ray)[0] / 700.0 - 1) < 0.01


def test_group_median_is_the_lower_median_of_each_group():
    from sfm3r.sfm.align.canonical import group_median

    rng = np.random.default_rng(0)
    groups = rng.integers(0, 40, 3000)
    groups[groups == 7] = 8  # group 7 empty
    values = rng.integers(0, 50, 3000).astype(float)  # many ties
    out = group_median(values, groups, 41)
    for g in range(41):
        sel = np.sort(values[groups == g])
        assert out[g] == (sel[(sel.size - 1) // 2] if sel.size else 0.0)
    assert group_median(np.zeros(0), np.zeros(0, np.int64), 3).tolist() == [0.0, 0.0, 0.0]
