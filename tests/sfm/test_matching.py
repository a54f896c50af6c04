"""Fast reciprocal matching (sfm3r.sfm.mast3r.matching): golden fixtures, a plain reference, edge cases."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import FIXTURES

from matching_official_api import fast_reciprocal_nns, fast_reciprocal_nns_idx, nonsym_correspondences

from sfm3r.sfm.mast3r.matching import PairDescriptors, symmetric_correspondences, symmetric_correspondences_batch

FAST_NN = FIXTURES / "fast_nn"


@pytest.fixture(scope="module")
def fx() -> dict[str, np.ndarray]:
    if not (FAST_NN / "fast_nn.npz").is_file():
        pytest.skip(f"fast_nn fixtures not found in {FAST_NN}")
    return dict(np.load(FAST_NN / "fast_nn.npz"))


def _seeds(fx):
    return np.stack([fx["pixel_tol_init_x1"], fx["pixel_tol_init_y1"]], axis=1)


# Each case: how our API reproduces the official call named in cases.json.
CASES = {
    "dot_sub8_xy": lambda f: fast_reciprocal_nns(f["desc1"], f["desc2"], subsample=8),
    "dot_sub8_idx": lambda f: fast_reciprocal_nns_idx(f["desc1"], f["desc2"], subsample=8),
    "dot_sub4_xy": lambda f: fast_reciprocal_nns(f["desc1"], f["desc2"], subsample=4),
    "dot_sub8_blocked50": lambda f: fast_reciprocal_nns(f["desc1"], f["desc2"], block_size=50),
    "kdtree_l2_sub8_xy": lambda f: fast_reciprocal_nns(f["desc1"], f["desc2"], dist="l2"),
    "dot_sub8_xy_reverse": lambda f: fast_reciprocal_nns(f["desc2"], f["desc1"]),
    "dot_initxy_pixeltol5_idx": lambda f: fast_reciprocal_nns_idx(
        f["desc1"], f["desc2"], seeds_xy=_seeds(f), pixel_tol=5
    ),
    "nonsym_sub8": lambda f: nonsym_correspondences(f["desc1"], f["desc2"], f["conf1"], f["conf2"]),
    # official feats order (d11, d21, d22, d12) = (desc1, desc2, desc2_b, desc1_b):
    # image i = 1, image j = 2; pass i->j maps desc1/desc2, pass j->i maps desc2_b/desc1_b.
    "sparse_ga_extract_correspondences_sub8": lambda f: symmetric_correspondences(
        desc_ii=f["desc1"],
        desc_ji=f["desc2"],
        desc_jj=f["desc2_b"],
        desc_ij=f["desc1_b"],
        conf_ii=f["conf1"],
        conf_ji=f["conf2"],
        conf_jj=f["conf2_b"],
        conf_ij=f["conf1_b"],
    ),
}


def test_every_fixture_case_is_covered(fx):
    cases = json.loads((FAST_NN / "cases.json").read_text())["cases"]
    assert set(cases) == set(CASES)


@pytest.mark.parametrize("case", sorted(CASES))
def test_fixture_case_reproduced_exactly(fx, case):
    spec = json.loads((FAST_NN / "cases.json").read_text())["cases"][case]
    got = CASES[case]({k: torch.from_numpy(v) for k, v in fx.items()})
    assert len(got) == len(spec["outputs"])
    for out, name in zip(got, spec["outputs"]):
        expected = fx[name]
        assert out.shape[0] == spec["n_matches"]
        np.testing.assert_array_equal(out.numpy(), expected.astype(out.numpy().dtype), err_msg=name)
        if expected.dtype == np.float32:  # confidences: bit-exact, and float32
            assert out.dtype == torch.float32


def test_numpy_inputs_give_the_same_result_as_tensors(fx):
    xa, xb = fast_reciprocal_nns(fx["desc1"], fx["desc2"])
    np.testing.assert_array_equal(xa.numpy(), fx["dot_sub8_xy__out0"])
    np.testing.assert_array_equal(xb.numpy(), fx["dot_sub8_xy__out1"])


# ----------------------------------------------------------------------------------------------------
# A plain reference (full similarity matrix, one seed at a time), written from the algorithm


def _reference_walk(a: np.ndarray, b: np.ndarray, subsample: int, max_iter: int = 10):
    """(H1, W1, D), (H2, W2, D) -> set of (idx_a, idx_b) reached by converged grid walks."""
    h1, w1, _ = a.shape
    fa, fb = a.reshape(h1 * w1, -1).astype(np.float64), b.reshape(-1, b.shape[2]).astype(np.float64)
    sim = fa @ fb.T
    nn_ab, nn_ba = sim.argmax(1), sim.argmax(0)
    out = set()
    for y in range(subsample // 2, h1, subsample):
        for x in range(subsample // 2, w1, subsample):
            cur_a, cur_b = y * w1 + x, -1
            for _ in range(max_iter):
                nb = nn_ab[cur_a]
                if nb == cur_b:
                    out.add((cur_a, cur_b))
                    break
                cur_b = nb
                na = nn_ba[cur_b]
                if na == cur_a:
                    out.add((cur_a, cur_b))
                    break
                cur_a = na
    return out


def _smooth_field(gen, h, w, d, cells=(5, 6)):
    base = torch.randn(1, d, *cells, generator=gen)
    field = F.interpolate(base, size=(h, w), mode="bicubic", align_corners=False)[0].permute(1, 2, 0)
    field = field + 0.05 * torch.randn(h, w, d, generator=gen)
    return F.normalize(field, dim=-1).contiguous()


@pytest.mark.parametrize("shape_b", [(32, 40), (36, 28)])
@pytest.mark.parametrize("block_size", [150, 8192])
def test_matches_equal_the_plain_reference(shape_b, block_size):
    gen = torch.Generator().manual_seed(3)
    a = _smooth_field(gen, 32, 40, 16)
    b = _smooth_field(gen, *shape_b, 16)
    ia, ib = fast_reciprocal_nns_idx(a, b, subsample=4, block_size=block_size)
    expected = sorted(_reference_walk(a.numpy(), b.numpy(), 4))
    assert len(expected) > 10
    assert list(zip(ia.tolist(), ib.tolist())) == expected


def test_identical_maps_match_every_seed_to_itself():
    gen = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(24, 32, 24, generator=gen), dim=-1)
    xa, xb = fast_reciprocal_nns(a, a, subsample=8)
    grid = [[x, y] for y in range(4, 24, 8) for x in range(4, 32, 8)]
    assert xa.tolist() == grid
    assert xb.tolist() == grid


def test_symmetric_merge_is_the_union_of_the_four_walk_sets_with_first_pass_confidence():
    gen = torch.Generator().manual_seed(1)
    d_ii, d_ij = _smooth_field(gen, 24, 32, 8), _smooth_field(gen, 24, 32, 8)
    d_ji, d_jj = _smooth_field(gen, 24, 32, 8), _smooth_field(gen, 24, 32, 8)
    q = [1 + torch.rand(24, 32, generator=gen) for _ in range(4)]  # ii, ji, jj, ij
    xy_i, xy_j, conf = symmetric_correspondences(d_ii, d_ji, d_jj, d_ij, *q, subsample=4)
    n = 24 * 32
    found: dict[tuple[int, int], float] = {}
    for a, b, swap, qa, qb in [
        (d_ii, d_ji, False, q[0], q[1]),
        (d_ji, d_ii, True, q[1], q[0]),
        (d_ij, d_jj, False, q[3], q[2]),
        (d_jj, d_ij, True, q[2], q[3]),
    ]:
        for pa, pb in sorted(_reference_walk(a.numpy(), b.numpy(), 4)):
            key = (pb, pa) if swap else (pa, pb)
            c = float(np.sqrt(np.float32(qa.reshape(-1)[pa]) * np.float32(qb.reshape(-1)[pb])))
            found.setdefault(key, c)
    got_i = (xy_i[:, 1] * 32 + xy_i[:, 0]).tolist()
    got_j = (xy_j[:, 1] * 32 + xy_j[:, 0]).tolist()
    assert list(zip(got_i, got_j)) == sorted(found)
    np.testing.assert_allclose(conf.numpy(), [found[k] for k in sorted(found)], rtol=0, atol=0)
    assert max(got_i) < n and max(got_j) < n


def test_batched_pairs_equal_one_pair_at_a_time():
    gen = torch.Generator().manual_seed(2)
    items = []
    for h, w in [(24, 32), (24, 32), (32, 16)]:
        hj, wj = (w, h) if h == 32 else (h, w)
        maps = [_smooth_field(gen, *s, 12) for s in [(h, w), (hj, wj), (hj, wj), (h, w)]]
        confs = [1 + torch.rand(m.shape[:2], generator=gen) for m in maps]
        items.append(PairDescriptors(*maps, *confs))
    batched = symmetric_correspondences_batch(items, subsample=4, block_size=300)
    for item, got in zip(items, batched):
        single = symmetric_correspondences(*vars(item).values(), subsample=4)
        for g, s in zip(got, single):
            torch.testing.assert_close(g, s, rtol=0, atol=0)


def test_nonsym_conf_thr_keeps_matches_at_or_above_the_threshold(fx):
    xa, xb, conf = nonsym_correspondences(fx["desc1"], fx["desc2"], fx["conf1"], fx["conf2"])
    thr = float(np.median(conf.numpy()))
    ya, yb, c2 = nonsym_correspondences(fx["desc1"], fx["desc2"], fx["conf1"], fx["conf2"], conf_thr=thr)
    keep = conf >= thr
    assert 0 < int(keep.sum()) < conf.numel()
    torch.testing.assert_close(ya, xa[keep])
    torch.testing.assert_close(yb, xb[keep])
    torch.testing.assert_close(c2, conf[keep])


# ----------------------------------------------------------------------------------------------------
# Degenerate inputs and bad arguments


def test_map_smaller_than_half_a_cell_gives_well_formed_empty_outputs():
    a = F.normalize(torch.randn(3, 3, 24), dim=-1)  # no seed at y = 4
    b = F.normalize(torch.randn(16, 16, 24), dim=-1)
    xa, xb = fast_reciprocal_nns(a, b, subsample=8)
    assert xa.shape == (0, 2) and xb.shape == (0, 2) and xa.dtype == torch.int64
    ia, ib = fast_reciprocal_nns_idx(a, b)
    assert ia.shape == (0,) and ib.dtype == torch.int64
    conf = torch.ones(3, 3)
    xi, xj, c = symmetric_correspondences(a, a, a, a, conf, conf, conf, conf)
    assert xi.shape == (0, 2) and xj.shape == (0, 2) and c.shape == (0,) and c.dtype == torch.float32
    xi, xj, c = nonsym_correspondences(a, a, conf, conf)
    assert xi.shape == (0, 2) and c.shape == (0,)


def test_empty_seed_list_and_empty_database_give_empty_outputs():
    a = F.normalize(torch.randn(8, 8, 4), dim=-1)
    ia, ib = fast_reciprocal_nns_idx(a, a, seeds_xy=np.zeros((0, 2), dtype=np.int64), pixel_tol=2)
    assert ia.shape == (0,) and ib.shape == (0,)
    empty = torch.zeros(0, 5, 4)
    xa, xb = fast_reciprocal_nns(empty, empty)
    assert xa.shape == (0, 2) and xb.shape == (0, 2)
    xa, xb = fast_reciprocal_nns(a, empty, subsample=2)  # seeds, but nothing to match them to
    assert xa.shape == (0, 2) and xb.shape == (0, 2)


def test_walks_that_do_not_converge_within_max_iter_are_dropped(fx):
    one, _ = fast_reciprocal_nns_idx(fx["desc1"], fx["desc2"], max_iter=1)
    full, _ = fast_reciprocal_nns_idx(fx["desc1"], fx["desc2"])
    assert 0 < one.numel() < full.numel()


def test_bad_arguments_raise_with_the_offending_shapes():
    a = torch.randn(8, 8, 4)
    with pytest.raises(ValueError, match=r"\(H, W, D\)"):
        fast_reciprocal_nns(a[0], a)
    with pytest.raises(ValueError, match="descriptor size"):
        fast_reciprocal_nns(a, torch.randn(8, 8, 5))
    with pytest.raises(ValueError, match="explicit seeds_xy"):
        fast_reciprocal_nns(a, a, pixel_tol=3)
    with pytest.raises(ValueError, match="outside"):
        fast_reciprocal_nns(a, a, seeds_xy=np.array([[8, 0]]))
    with pytest.raises(ValueError, match="conf_b"):
        nonsym_correspondences(a, a, torch.ones(8, 8), torch.ones(8, 7))
    with pytest.raises(ValueError, match="desc_ij"):
        symmetric_correspondences(a, a, a, a[:4], *[torch.ones(8, 8)] * 4)
    with pytest.raises(ValueError, match="unknown|not a valid|Dist"):
        fast_reciprocal_nns(a, a, dist="cosine")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_equals_cpu(fx):
    t = {k: torch.from_numpy(v) for k, v in fx.items()}
    for case in ("dot_sub8_xy", "dot_sub4_xy", "dot_sub8_blocked50", "sparse_ga_extract_correspondences_sub8"):
        cpu = CASES[case](t)
        gpu = CASES[case]({k: v.cuda() for k, v in t.items()})
        for c, g in zip(cpu, gpu):
            assert g.device.type == "cuda"
            torch.testing.assert_close(g.cpu(), c, rtol=0, atol=0)
