"""The alignment's two array backends: numpy on the CPU for small problems, torch for large ones and GPUs.

The alignment's least-squares steps (coarse alignment, 2D refinement) are written once against the few
operations the two libraries share (``xp.exp``, ``xp.where``, ``.mT``, ``reshape``, ...) plus the helpers
here for what differs: array creation on a device, scatter-adds and per-pair matrix products. Why two:
importing torch costs ~1.5 s of CPU on this machine, as much as the whole alignment of an 8-image set,
while on 100k+ residuals torch's batched kernels on two threads are 1.5-2x faster than numpy's
(benchmarks/README.md §5). :func:`arrays_for` picks by problem size; the results agree to float rounding.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

__all__ = ["Array", "Arrays", "NUMPY_MAX_MATCHES", "arrays_for", "arrays_like", "namespace"]

Array = Any  # np.ndarray or torch.Tensor (torch is not imported here)

# A problem with at most this many matches runs on numpy when its device is the CPU (herzjesu, 8 images:
# 32k matches, numpy as fast as torch; fountain, 11 images: 71k, torch 1.5x faster).
NUMPY_MAX_MATCHES = 50_000


def namespace(x: Array) -> ModuleType:
    """numpy or torch, whichever `x` belongs to (torch is taken from sys.modules: a tensor means it is loaded)."""
    return np if isinstance(x, (np.ndarray, np.generic, float, int)) else sys.modules["torch"]


@dataclass(frozen=True)
class Arrays:
    """An array library (`xp`: numpy or torch) and the device its arrays live on."""

    xp: ModuleType
    device: Any = "cpu"

    @property
    def is_numpy(self) -> bool:
        return self.xp is np

    def asarray(self, x: Any, dtype: Any = None) -> Array:
        """`x` (array-like) as a contiguous array of this backend; dtype: ``xp.float64`` etc., None keeps it."""
        x = np.ascontiguousarray(x)
        if self.is_numpy:
            return x if dtype is None else x.astype(dtype, copy=False)
        return self.xp.as_tensor(x, dtype=dtype, device=self.device)

    def zeros(self, *shape: int, dtype: Any = None) -> Array:
        dtype = self.xp.float64 if dtype is None else dtype
        if self.is_numpy:
            return np.zeros(shape, dtype)
        return self.xp.zeros(shape, dtype=dtype, device=self.device)

    @staticmethod
    def to_numpy(x: Array) -> np.ndarray:
        return x if isinstance(x, np.ndarray) else x.detach().cpu().numpy()

    def index_add(self, target: Array, index: Array, rows: Array) -> None:
        """target[index[k]] += rows[k] in place; target (P, ...) contiguous, index (K,) int64, rows (K, ...)."""
        if not self.is_numpy:  # index_add_ on flat 2-D views: ~4x faster on the CPU than on (P, 18, 18) blocks
            target.view(target.shape[0], -1).index_add_(0, index, rows.reshape(rows.shape[0], -1))
            return
        flat = target.reshape(target.shape[0], -1)  # a view: target is contiguous
        values = rows.reshape(rows.shape[0], -1)
        # the fastest of three, measured on the refinement's shapes (8,192 rows, 2 cores): one column: bincount
        # (30k targets: 0.03 ms); more targets than rows: ufunc.at (60k targets, 9 columns: 0.8 ms, bincount
        # per column 2.2 ms); few targets: a sparse 0/1 matrix product (100 targets, 30k rows, 49 columns:
        # 0.9 ms, ufunc.at 12 ms)
        if flat.shape[1] == 1:
            flat[:, 0] += np.bincount(index, weights=values[:, 0], minlength=flat.shape[0])
        elif flat.shape[0] > index.size:
            np.add.at(flat, index, values)
        else:
            flat += _selection(index, flat.shape[0]) @ values

    def scatter_plan(self, index: np.ndarray) -> ScatterPlan:
        """A reusable target[index[k]] += rows[k] for a fixed `index` (K,)."""
        return ScatterPlan(self, index)

    def segment_products(self, target: Array, segment_block: Array, X: Array, Y: Array) -> None:
        """target[segment_block[s]] += X[s]ᵀ Y[s] for segments s; X (S, w, m), Y (S, w, n), target (P, m, n).

        torch: one batched product then a scatter-add. numpy, whose batched products of small matrices are
        slow: one BLAS product per run of consecutive segments of the same block (callers sort the segments by
        block, so a run is all the rows of one image pair in this batch).
        """
        if not self.is_numpy:
            self.index_add(target, segment_block, X.mT @ Y)
            return
        if segment_block.size == 0:
            return
        starts = np.flatnonzero(np.diff(segment_block, prepend=-1))
        ends = np.append(starts[1:], segment_block.size)
        m, n = X.shape[-1], Y.shape[-1]
        for start, end in zip(starts.tolist(), ends.tolist()):
            x, y = X[start:end].reshape(-1, m), Y[start:end].reshape(-1, n)
            target[segment_block[start]] += x.T @ y


class ScatterPlan:
    """target[index[k]] += rows[k] for one fixed index, prepared once for many calls (iterations).

    numpy: a sparse 0/1 matrix from the rows to the distinct targets they hit, so that each call is one sparse
    product and one fancy-indexed add (the refinement's 16k rows into 60k targets: ~0.3 ms instead of 1.8 ms
    with ufunc.at). torch: index_add_ (Arrays.index_add).
    """

    def __init__(self, arrays: Arrays, index: np.ndarray):
        self.arrays = arrays
        index = np.asarray(index, np.int64)
        if arrays.is_numpy:
            self.targets, inverse = np.unique(index, return_inverse=True)
            self.select = _selection(inverse.reshape(-1), self.targets.size)
        else:
            self.index = arrays.asarray(index)

    def add(self, target: Array, rows: Array) -> None:
        """In place; target (num_targets, ...) contiguous, rows (K, ...)."""
        if not self.arrays.is_numpy:
            self.arrays.index_add(target, self.index, rows)
            return
        flat = target.reshape(target.shape[0], -1)  # a view: target is contiguous
        flat[self.targets] += self.select @ rows.reshape(rows.shape[0], -1)


def _selection(index: np.ndarray, num_targets: int):
    """The sparse 0/1 matrix S (num_targets, K) with S[index[k], k] = 1: S @ rows sums the rows per target."""
    import scipy.sparse as sp  # here: a cached rerun never loads it

    return sp.csr_matrix((np.ones(index.size), (index, np.arange(index.size))), shape=(num_targets, index.size))


def arrays_like(x: Array) -> Arrays:
    """The backend and device of the array `x`."""
    return Arrays(namespace(x), getattr(x, "device", "cpu"))


def arrays_for(device: Any, num_matches: int) -> Arrays:
    """The backend of a problem of `num_matches` matches on `device` (see NUMPY_MAX_MATCHES)."""
    if str(device) == "cpu" and num_matches <= NUMPY_MAX_MATCHES:
        return Arrays(np)
    import torch

    return Arrays(torch, torch.device(device))
