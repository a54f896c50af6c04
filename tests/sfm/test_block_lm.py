"""block_lm.add_rows: the flattened index_add_ gives the same sums as index_add_ on the blocks."""

from __future__ import annotations

import torch

from sfm3r.sfm.align.block_lm import add_rows


def test_add_rows_equals_index_add_on_the_blocks_also_for_strided_rows():
    gen = torch.Generator().manual_seed(0)
    rows = torch.randn(500, 18, 18, dtype=torch.float64, generator=gen)
    index = torch.randint(0, 40, (500,), generator=gen)
    expected = torch.zeros(40, 9, 9, dtype=torch.float64).index_add_(0, index, rows[:, :9, 9:])
    target = torch.zeros(40, 9, 9, dtype=torch.float64)
    add_rows(target, index, rows[:, :9, 9:])  # a non-contiguous slice, as the reprojection system's blocks
    assert torch.allclose(target, expected, rtol=0, atol=1e-12)
