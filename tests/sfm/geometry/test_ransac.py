"""geometry.ransac: the Sim(3) RANSAC (relative inlier rule, weighted refits)."""

from __future__ import annotations

import numpy as np
import pytest

from sfm3r.sfm.geometry.ransac import relative_residuals, sim3_ransac


def _scene(outlier_fraction: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    src = rng.normal(size=(200, 3)) + [0, 0, 6]
    angle = 0.4
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    dst = 0.8 * src @ rot.T + [0.3, -0.1, 0.5]
    outliers = rng.random(200) < outlier_fraction
    dst[outliers] = rng.normal(size=(outliers.sum(), 3)) * 3 + [0, 0, 6]
    return src, dst, rot, outliers


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.6])
def test_recovers_the_similarity_exactly_despite_outliers(fraction):
    src, dst, rot, outliers = _scene(fraction)
    fit = sim3_ransac(src, dst, np.ones(200), rng=np.random.default_rng(0))
    assert fit.scale == pytest.approx(0.8, rel=1e-9)
    np.testing.assert_allclose(fit.rotation, rot, atol=1e-9)
    np.testing.assert_allclose(fit.translation, [0.3, -0.1, 0.5], atol=1e-9)
    np.testing.assert_array_equal(fit.inliers, ~outliers)
    assert fit.num_inliers == (~outliers).sum()
    assert np.all(fit.residuals[fit.inliers] < 1e-9)


def test_inlier_rule_is_relative_to_the_distance_in_the_target_frame():
    src = np.array([[0.0, 0, 1], [0, 0, 10], [1, 0, 1], [0, 1, 1]])
    dst = src.copy()
    dst[:, 0] += 0.3  # the same absolute error: relative 0.3 near, 0.03 far
    res = relative_residuals(src, dst, np.ones(1), np.eye(3)[None], np.zeros((1, 3)))[0]
    assert res[1] < 0.05 < res[0]


def test_refit_uses_the_weights():
    src, dst, _, _ = _scene(0.0, seed=1)
    noisy = dst + np.random.default_rng(2).normal(size=dst.shape) * 0.01
    w = np.ones(200)
    w[:100] = 0.0  # a weighted refit sees only the second half
    fit_w = sim3_ransac(src, noisy, w, rng=np.random.default_rng(0), thr=1.0)
    fit_half = sim3_ransac(src[100:], noisy[100:], np.ones(100), rng=np.random.default_rng(0), thr=1.0)
    assert fit_w.scale == pytest.approx(fit_half.scale, rel=1e-12)
    np.testing.assert_allclose(fit_w.translation, fit_half.translation, atol=1e-12)


def test_same_generator_state_gives_the_same_fit_and_too_few_points_raise():
    src, dst, _, _ = _scene(0.5)
    a = sim3_ransac(src, dst, np.ones(200), rng=np.random.default_rng(7), iters=8)
    b = sim3_ransac(src, dst, np.ones(200), rng=np.random.default_rng(7), iters=8)
    np.testing.assert_array_equal(a.inliers, b.inliers)
    with pytest.raises(ValueError, match="at least 3"):
        sim3_ransac(src[:2], dst[:2], np.ones(2), rng=np.random.default_rng(0))


def test_no_consistent_similarity_returns_none():
    rng = np.random.default_rng(3)
    src, dst = rng.normal(size=(30, 3)) + [0, 0, 5], rng.normal(size=(30, 3)) + [0, 0, 5]
    assert sim3_ransac(src, dst, np.ones(30), rng=rng, iters=4, thr=1e-6) is None


def test_random_triples_are_distinct_and_cover_every_index():
    from sfm3r.sfm.geometry.ransac import _distinct_triples

    for m in (3, 4, 50):
        triples = _distinct_triples(m, 20000, np.random.default_rng(m))
        assert triples.min() >= 0 and triples.max() < m
        assert (np.sort(triples, 1)[:, 1:] != np.sort(triples, 1)[:, :-1]).all()  # three different indices
        counts = np.bincount(triples.ravel(), minlength=m)
        np.testing.assert_allclose(counts / counts.mean(), 1.0, atol=0.15)  # uniform over the indices


def test_many_points_are_scored_on_a_subset_and_refitted_on_all():
    """5,000 correspondences, 40 % outliers: the hypotheses are scored on SCORE_POINTS of them, the fit and the
    inlier mask cover all."""
    from sfm3r.sfm.geometry.ransac import SCORE_POINTS

    rng = np.random.default_rng(3)
    src = rng.normal(size=(5000, 3)) + [0, 0, 6]
    dst = 1.3 * src + [0.1, 0.2, -0.3]
    outliers = rng.random(5000) < 0.4
    dst[outliers] = rng.normal(size=(outliers.sum(), 3)) * 3 + [0, 0, 6]
    assert SCORE_POINTS < 5000
    fit = sim3_ransac(src, dst, np.ones(5000), rng=np.random.default_rng(0))
    assert fit.scale == pytest.approx(1.3, rel=1e-9)
    np.testing.assert_array_equal(fit.inliers, ~outliers)
