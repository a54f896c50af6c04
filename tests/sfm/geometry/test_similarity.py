"""geometry.similarity: the weighted closed-form rigid / similarity fit (Umeyama), single and batched."""

from __future__ import annotations

import numpy as np
import pytest

from sfm3r.errors import InputError
from sfm3r.sfm.geometry.similarity import apply_similarity, fit_similarity, fit_similarity_batch


def _random_rotation(rng):
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))


def test_recovers_a_known_similarity_exactly():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(50, 3))
    R, t, s = _random_rotation(rng), rng.normal(size=3), 2.5
    scale, rot, trans = fit_similarity(src, apply_similarity(s, R, t, src))
    assert scale == pytest.approx(s, rel=1e-12)
    np.testing.assert_allclose(rot, R, atol=1e-10)
    np.testing.assert_allclose(trans, t, atol=1e-10)
    assert np.linalg.det(rot) == pytest.approx(1.0)


def test_zero_weights_ignore_outliers_and_rigid_mode_keeps_scale_one():
    rng = np.random.default_rng(1)
    src = rng.normal(size=(30, 3))
    R, t = _random_rotation(rng), rng.normal(size=3)
    dst = apply_similarity(1.0, R, t, src)
    dst[:5] += 100.0
    w = np.ones(30)
    w[:5] = 0
    scale, rot, trans = fit_similarity(src, dst, w, with_scale=False)
    assert scale == 1.0
    np.testing.assert_allclose(rot, R, atol=1e-10)
    np.testing.assert_allclose(trans, t, atol=1e-10)


def test_weights_are_a_weighted_least_squares_not_a_selection():
    """Doubling a point's weight equals duplicating it."""
    rng = np.random.default_rng(3)
    src = rng.normal(size=(12, 3))
    dst = apply_similarity(1.3, _random_rotation(rng), rng.normal(size=3), src) + 0.05 * rng.normal(size=(12, 3))
    w = np.ones(12)
    w[0] = 2.0
    weighted = fit_similarity(src, dst, w)
    duplicated = fit_similarity(np.vstack([src, src[:1]]), np.vstack([dst, dst[:1]]))
    for a, b in zip(weighted, duplicated, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-12)
    assert not np.allclose(weighted[2], fit_similarity(src, dst)[2], atol=1e-6)


def test_mirrored_points_still_give_a_proper_rotation():
    rng = np.random.default_rng(2)
    src = rng.normal(size=(20, 3))
    _, rot, _ = fit_similarity(src, src * np.array([1, 1, -1]))
    assert np.linalg.det(rot) == pytest.approx(1.0)


def test_batched_fits_are_independent_and_equal_the_single_fit():
    rng = np.random.default_rng(4)
    src = rng.normal(size=(3, 8, 3))
    dst = np.stack([apply_similarity(k + 1.0, _random_rotation(rng), rng.normal(size=3), src[k]) for k in range(3)])
    s, R, t = fit_similarity_batch(src, dst, np.ones((3, 8)))
    np.testing.assert_allclose(s, [1.0, 2.0, 3.0], rtol=1e-12)
    for k in range(3):
        single = fit_similarity(src[k], dst[k])
        np.testing.assert_allclose(R[k], single[1], atol=1e-12)
        np.testing.assert_allclose(t[k], single[2], atol=1e-12)


def test_degenerate_input_raises_in_the_checked_fit_and_gives_scale_zero_in_the_batch():
    with pytest.raises(InputError, match="must both be"):
        fit_similarity(np.zeros((5, 3)), np.zeros((4, 3)))
    with pytest.raises(InputError, match="identical"):
        fit_similarity(np.ones((5, 3)), np.zeros((5, 3)))
    with pytest.raises(InputError, match="at least 3"):
        fit_similarity(np.eye(3)[:2], np.eye(3)[:2])
    with pytest.raises(InputError, match="weights"):
        fit_similarity(np.eye(3), np.eye(3), [1.0, -1.0, 1.0])
    s, R, t = fit_similarity_batch(np.ones((1, 4, 3)), np.zeros((1, 4, 3)), np.ones((1, 4)))
    assert s[0] == 0.0 and np.isfinite(R).all() and np.allclose(t, 0.0)
