"""umeyama_sim3: weighted closed-form similarity fit."""

from __future__ import annotations

import numpy as np
import pytest

from sfm3r.errors import InputError
from sfm3r.sfm.sim3 import apply_sim3, umeyama_sim3


def _random_rotation(rng):
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))


def test_recovers_known_similarity():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(50, 3))
    R, t, s = _random_rotation(rng), rng.normal(size=3), 2.5
    scale, rot, trans = umeyama_sim3(src, apply_sim3(s, R, t, src))
    assert scale == pytest.approx(s)
    np.testing.assert_allclose(rot, R, atol=1e-10)
    np.testing.assert_allclose(trans, t, atol=1e-10)
    assert np.linalg.det(rot) == pytest.approx(1.0)


def test_zero_weight_ignores_outliers_and_rigid_mode():
    rng = np.random.default_rng(1)
    src = rng.normal(size=(30, 3))
    R, t = _random_rotation(rng), rng.normal(size=3)
    dst = apply_sim3(1.0, R, t, src)
    dst[:5] += 100.0
    w = np.ones(30)
    w[:5] = 0
    scale, rot, trans = umeyama_sim3(src, dst, w, with_scale=False)
    assert scale == 1.0
    np.testing.assert_allclose(rot, R, atol=1e-10)
    np.testing.assert_allclose(trans, t, atol=1e-10)


def test_mirrored_points_still_give_a_rotation():
    rng = np.random.default_rng(2)
    src = rng.normal(size=(20, 3))
    _, rot, _ = umeyama_sim3(src, src * np.array([1, 1, -1]))
    assert np.linalg.det(rot) == pytest.approx(1.0)


def test_bad_input_raises():
    with pytest.raises(InputError):
        umeyama_sim3(np.zeros((5, 3)), np.zeros((4, 3)))
    with pytest.raises(InputError):
        umeyama_sim3(np.zeros((5, 3)), np.zeros((5, 3)))
