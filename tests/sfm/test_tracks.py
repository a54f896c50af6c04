"""build_tracks: union-find over (image, keypoint) nodes with conflict splitting."""

from __future__ import annotations

import numpy as np
import pytest
from ba_synthetic import make_scene

from sfm3r.errors import InputError
from sfm3r.sfm.align.tracks import Tracks, build_tracks
from sfm3r.types import PairResult

NAMES = ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]


def _pair(i, j, idx_i, idx_j, *, verified=True, conf=None):
    idx_i = np.asarray(idx_i, np.int64)
    idx_j = np.asarray(idx_j, np.int64)
    m = idx_i.size
    xy_i = np.stack([idx_i * 10.0 + i, idx_i * 1.0], 1).astype(np.float32)  # pixel encodes (keypoint, image)
    xy_j = np.stack([idx_j * 10.0 + j, idx_j * 1.0], 1).astype(np.float32)
    return PairResult(name_i=NAMES[i], name_j=NAMES[j], backend="test", xy_i=xy_i, xy_j=xy_j, idx_i=idx_i,
                      idx_j=idx_j, conf=np.ones(m, np.float32) if conf is None else np.asarray(conf, np.float32),
                      pts_i=np.zeros((m, 3), np.float32), pts_j=np.zeros((m, 3), np.float32), verified=verified,
                      num_inliers=m)


def _as_sets(tr: Tracks) -> set[frozenset]:
    return {frozenset(zip(tr.obs_image[tr.obs_track == t].tolist(), tr.obs_keypoint[tr.obs_track == t].tolist()))
            for t in range(tr.num_tracks)}


def _assert_invariants(tr: Tracks):
    assert tr.obs_track.dtype == np.int64 and tr.obs_xy.shape == (tr.obs_track.size, 2)
    assert np.all(np.diff(tr.obs_track) >= 0), "sorted by track"
    key = tr.obs_track * 1000 + tr.obs_image
    assert np.unique(key).size == key.size, "a track has two observations in one image"
    assert set(np.unique(tr.obs_track).tolist()) == set(range(tr.num_tracks))


def test_chained_matches_form_one_track_with_keypoint_pixels():
    tr = build_tracks([_pair(0, 1, [3], [5]), _pair(1, 2, [5], [7])], NAMES)
    assert _as_sets(tr) == {frozenset({(0, 3), (1, 5), (2, 7)})}
    np.testing.assert_allclose(tr.obs_xy, [[30, 3], [51, 5], [72, 7]])
    _assert_invariants(tr)


def test_outlier_edge_between_two_full_tracks_is_cut():
    # point p = keypoint 1 in all 4 images, point q = keypoint 2, all 6 pairs matched; one outlier p@a -- q@b
    pairs = [_pair(i, j, [1, 2], [1, 2]) for i in range(4) for j in range(i + 1, 4)]
    pairs.append(_pair(0, 1, [1], [2]))
    tr = build_tracks(pairs, NAMES)
    _assert_invariants(tr)
    assert _as_sets(tr) == {frozenset((i, 1) for i in range(4)), frozenset((i, 2) for i in range(4))}


def test_conflict_without_triangles_is_split_by_support():
    # a:1 matches b:5 and b:6 (non one-to-one); b:5 is also matched by c and d, so it has more support
    pairs = [_pair(0, 1, [1, 1], [5, 6]), _pair(1, 2, [5], [9]), _pair(1, 3, [5], [4])]
    tr = build_tracks(pairs, NAMES)
    _assert_invariants(tr)
    assert frozenset({(0, 1), (1, 5), (2, 9), (3, 4)}) in _as_sets(tr)
    assert not any((1, 6) in s and (1, 5) in s for s in _as_sets(tr))


def test_min_length_drops_short_tracks():
    pairs = [_pair(0, 1, [1, 2], [1, 2]), _pair(1, 2, [1], [1])]
    assert _as_sets(build_tracks(pairs, NAMES, min_length=3)) == {frozenset({(0, 1), (1, 1), (2, 1)})}
    assert len(_as_sets(build_tracks(pairs, NAMES, min_length=2))) == 2


def test_verified_only_and_min_conf_filter_matches():
    pairs = [_pair(0, 1, [1], [1]), _pair(1, 2, [1], [1], verified=False), _pair(2, 3, [1, 2], [1, 2], conf=[1, 0.1])]
    assert _as_sets(build_tracks(pairs, NAMES)) == {frozenset({(0, 1), (1, 1)}), frozenset({(2, 1), (3, 1)}),
                                                    frozenset({(2, 2), (3, 2)})}
    everything = build_tracks(pairs, NAMES, verified_only=False, min_conf=0.5)
    assert _as_sets(everything) == {frozenset({(0, 1), (1, 1), (2, 1), (3, 1)})}


def test_no_pairs_gives_empty_tracks():
    tr = build_tracks([], NAMES)
    assert tr.num_tracks == 0 and tr.obs_xy.shape == (0, 2)


def test_unknown_image_name_raises():
    bad = _pair(0, 1, [1], [1])
    object.__setattr__(bad, "name_j", "missing.jpg")
    with pytest.raises(InputError, match="missing.jpg"):
        build_tracks([bad], NAMES)


def test_synthetic_scene_with_20_percent_outliers_gives_pure_tracks():
    sc = make_scene(12, num_points=300, outlier_frac=0.2, seed=3)
    tr = build_tracks(sc.pairs, sc.names)
    _assert_invariants(tr)
    # a track is pure when all its keypoints are the same scene point (keypoint id = point id)
    pure = np.array([np.unique(tr.obs_keypoint[tr.obs_track == t]).size == 1 for t in range(tr.num_tracks)])
    assert pure.mean() > 0.95
    # most true observations end up in a pure track
    true_obs = sum(v.size for v in sc.visible)
    assert pure[tr.obs_track].sum() > 0.9 * true_obs
