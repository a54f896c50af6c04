"""geometry.arrays: the numpy and torch backends give the same scatter-adds and per-pair products."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sfm3r.sfm.geometry import arrays as backends
from sfm3r.sfm.geometry.arrays import Arrays, arrays_for, namespace

NUMPY, TORCH = Arrays(np), Arrays(torch, torch.device("cpu"))


# numpy's three routes: one column (bincount), fewer targets than rows (sparse product), more (ufunc.at)
@pytest.mark.parametrize("shape, targets", [((), 40), ((3,), 40), ((9, 9), 40), ((3,), 600), ((), 600)])
def test_index_add_equals_a_plain_loop_on_both_backends_also_for_strided_rows(shape, targets):
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(500, 2, *shape))[:, 1]  # a non-contiguous slice, as the system's blocks
    index = rng.integers(0, targets, 500)
    expected = np.zeros((targets, *shape))
    for k, i in enumerate(index):
        expected[i] += rows[k]
    for arrays in (NUMPY, TORCH):
        target = arrays.zeros(targets, *shape)
        arrays.index_add(target, arrays.asarray(index), arrays.asarray(rows))
        np.testing.assert_allclose(Arrays.to_numpy(target), expected, rtol=0, atol=1e-12)


def test_segment_products_sum_each_segments_product_into_its_block():
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(30, 16, 18)), rng.normal(size=(30, 16, 4))
    blocks = np.sort(rng.integers(0, 6, 30))
    blocks[-1] = 2  # not sorted at the end: still right, one more run
    expected = np.zeros((6, 18, 4))
    for s, b in enumerate(blocks):
        expected[b] += X[s].T @ Y[s]
    for arrays in (NUMPY, TORCH):
        target = arrays.zeros(6, 18, 4)
        arrays.segment_products(target, arrays.asarray(blocks), arrays.asarray(X), arrays.asarray(Y))
        np.testing.assert_allclose(Arrays.to_numpy(target), expected, rtol=1e-12, atol=1e-12)


def test_small_cpu_problems_run_on_numpy_large_ones_and_other_devices_on_torch(monkeypatch):
    assert arrays_for("cpu", 10).is_numpy
    assert not arrays_for("cpu", backends.NUMPY_MAX_MATCHES + 1).is_numpy
    monkeypatch.setattr(backends, "NUMPY_MAX_MATCHES", 0)
    assert arrays_for("cpu", 10).xp is torch
    assert namespace(np.zeros(2)) is np and namespace(torch.zeros(2)) is torch
