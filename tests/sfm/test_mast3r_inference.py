"""The encode-once batched pair inference equals the plain per-pair forward of the network."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mast3r_tiny_model import TINY, assert_close, tiny_inputs, tiny_model, view

from sfm3r.sfm.mast3r.inference import LRUTokenStore, PairInference
from sfm3r.sfm.mast3r.network import Mast3rConfig, Mast3rNetwork
from sfm3r.sfm.mast3r.pairs import mast3r_pair_result
from sfm3r.types import NetView

# land_* are 48x64 (land_e 32x64), port_* 64x48: equal-shape, mixed-shape and swapped-orientation pairs
# With batch_size=2, ("port_c", "land_a") and ("land_b", "port_d") share a decoder call in opposite orientations.
PAIRS = [("land_a", "land_b"), ("port_c", "land_a"), ("land_b", "port_d"), ("land_e", "port_c")]


def _reference(model, name_1, name_2):
    with torch.inference_mode():
        return model(view(name_1), view(name_2))


def _check_direction(out, ref, what):
    res1, res2 = ref
    assert sorted(out["view1"]) == sorted(res1) and sorted(out["view2"]) == sorted(res2)
    for k in res1:
        assert_close(out["view1"][k], res1[k][0], f"{what} view1 {k}")
    for k in res2:
        assert_close(out["view2"][k], res2[k][0], f"{what} view2 {k}")


def test_engine_reproduces_the_official_golden_pairs_in_both_directions():
    """Every golden pair from one engine run: equal shapes batched (land), portrait, and a mixed-size pair
    given in the reverse orientation (so the engine swaps it internally and must swap it back)."""
    engine = PairInference(tiny_model(), device="cpu", batch_size=2)
    engine.encode(tiny_inputs())
    pairs = [("land_a", "land_b"), ("port_c", "port_d"), ("port_c", "land_e"), ("land_b", "land_a")]
    results = {(i, j): (out_ij, out_ji) for i, j, out_ij, out_ji in engine.run_pairs(pairs)}
    assert sorted(results) == sorted(pairs) and engine.num_encoded == 5
    golden = {  # golden file -> (pair, direction index in (out_ij, out_ji))
        "pair_land": [(("land_a", "land_b"), 0), (("land_b", "land_a"), 1)],
        "pair_land_rev": [(("land_a", "land_b"), 1), (("land_b", "land_a"), 0)],
        "pair_port": [(("port_c", "port_d"), 0)],
        "pair_mixed": [(("port_c", "land_e"), 1)],
    }
    for name, uses in golden.items():
        ref = np.load(TINY / f"{name}.npz")
        for pair, direction in uses:
            out = results[pair][direction]
            for key in ref.files:
                side, out_key = key.split("_", 1)
                assert_close(out[side][out_key], ref[key][0], f"{name} {pair} {key}")


@pytest.mark.slow
def test_encode_once_batched_pairs_equal_the_per_pair_forward():
    model = tiny_model()
    engine = PairInference(model, device="cpu", batch_size=2)
    engine.encode(tiny_inputs())
    assert engine.num_encoded == 5
    results = list(engine.run_pairs(PAIRS))
    assert engine.num_encoded == 5  # nothing re-encoded
    assert sorted((i, j) for i, j, _, _ in results) == sorted(PAIRS)  # caller's orientation kept
    for name_i, name_j, out_ij, out_ji in results:
        _check_direction(out_ij, _reference(model, name_i, name_j), f"{name_i}->{name_j}")
        _check_direction(out_ji, _reference(model, name_j, name_i), f"{name_j}->{name_i}")


def test_skipping_view2_points_keeps_every_other_output_and_the_pair_result():
    """view2_points=False: view2 carries only desc/desc_conf, everything produced equals the full forward
    (equal-shape pair batched in both directions, and a mixed-shape pair), and the SfM pair result built
    from it is the same as from the full forward."""
    model = tiny_model()
    engine = PairInference(model, batch_size=2, view2_points=False)
    engine.encode(tiny_inputs())
    for name_i, name_j, out_ij, out_ji in engine.run_pairs([("land_a", "land_b"), ("port_c", "land_a")]):
        full = []
        for (a, b), out in (((name_i, name_j), out_ij), ((name_j, name_i), out_ji)):
            res1, res2 = _reference(model, a, b)
            assert sorted(out["view1"]) == sorted(res1)
            assert sorted(out["view2"]) == ["desc", "desc_conf"]  # no pts3d_in_other_view, no conf
            for k in res1:
                assert_close(out["view1"][k], res1[k][0], f"{a}->{b} view1 {k}")
            for k in out["view2"]:
                assert_close(out["view2"][k], res2[k][0], f"{a}->{b} view2 {k}")
            full.append(({k: v[0] for k, v in res1.items()}, {k: v[0] for k, v in res2.items()}))
        views = {}
        for name in (name_i, name_j):
            h, w = tiny_inputs()[name][0].shape[2:]
            views[name] = NetView(net_height=h, net_width=w, scale_x=1.0, scale_y=1.0, crop_left=0, crop_top=0)
        got = mast3r_pair_result(name_i, name_j, out_ij, out_ji, views[name_i], views[name_j]).pair
        ref = mast3r_pair_result(name_i, name_j, *full, views[name_i], views[name_j]).pair
        assert ref.num_matches > 0
        np.testing.assert_array_equal(got.idx_i, ref.idx_i)
        np.testing.assert_array_equal(got.idx_j, ref.idx_j)
        assert_close(got.pts_i, ref.pts_i, "pts_i")
        assert_close(got.pts_j, ref.pts_j, "pts_j")
        assert_close(got.conf, ref.conf, "match conf")


def test_skipping_view2_points_without_a_separate_desc_conf_still_gives_desc_conf():
    """With two_confs=False desc_conf is the DPT's conf, so the DPT must still run for view 2."""
    torch.manual_seed(0)
    cfg = Mast3rConfig(enc_embed_dim=32, enc_depth=1, enc_num_heads=2, dec_embed_dim=32, dec_depth=12,
                       dec_num_heads=2, two_confs=False)
    model = Mast3rNetwork(cfg).eval()
    img = torch.rand(2, 3, 32, 48) * 2 - 1
    with torch.inference_mode():
        enc, pos = model.encode(img)
        full = model.decode_and_heads(enc[:1], pos[:1], (32, 48), enc[1:], pos[1:], (32, 48))
        skip = model.decode_and_heads(enc[:1], pos[:1], (32, 48), enc[1:], pos[1:], (32, 48), view2_points=False)
    assert sorted(skip[1]) == ["desc", "desc_conf"]
    for k in full[0]:
        assert_close(skip[0][k], full[0][k], f"view1 {k}")
    for k in skip[1]:
        assert_close(skip[1][k], full[1][k], f"view2 {k}")
    assert_close(skip[1]["desc_conf"], full[1]["conf"], "desc_conf = conf")


def test_bounded_store_re_encodes_dropped_images_from_the_image_source():
    model = tiny_model()
    inputs = tiny_inputs()
    engine = PairInference(model, batch_size=1, store=LRUTokenStore(max_images=2), image_source=inputs.__getitem__)
    pairs = [("land_a", "land_b"), ("port_c", "port_d"), ("port_c", "land_a")]
    results = {(i, j): (o1, o2) for i, j, o1, o2 in engine.run_pairs(pairs)}
    assert len(engine.store) == 2
    assert engine.num_encoded == 5  # land_a was dropped by the store and encoded again
    out_ij, _ = results[("port_c", "land_a")]
    _check_direction(out_ij, _reference(model, "port_c", "land_a"), "port_c->land_a")


def test_missing_tokens_without_an_image_source_name_the_image():
    engine = PairInference(tiny_model())
    with pytest.raises(KeyError, match="land_a"):
        list(engine.run_pairs([("land_a", "land_b")]))


def test_any_mutable_mapping_can_store_the_tokens():
    store: dict = {}
    engine = PairInference(tiny_model(), store=store, output="torch")
    engine.encode({"land_a": tiny_inputs()["land_a"]})
    assert set(store) == {"land_a"}
    tokens = store["land_a"]
    assert tokens.tokens.shape == (12, 96) and tokens.pos.shape == (12, 2) and tokens.shape == (48, 64)


def test_bad_inputs_raise():
    model = tiny_model()
    with pytest.raises(ValueError, match="amp"):
        PairInference(model, amp="fp8")
    engine = PairInference(model)
    img, _ = tiny_inputs()["land_a"]
    with pytest.raises(ValueError, match="true_shape"):
        engine.encode({"x": (img, torch.tensor([[64, 48]]))})
    engine.encode({"x": (img, None)})
    with pytest.raises(ValueError, match="itself"):
        list(engine.run_pairs([("x", "x")]))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("amp", [None, "bf16"])
def test_cuda_inference_matches_the_cpu_forward(amp):
    import copy

    model = copy.deepcopy(tiny_model())
    engine = PairInference(model, device="cuda", batch_size=2, amp=amp)
    engine.encode(tiny_inputs())
    cpu = tiny_model()
    for name_i, name_j, out_ij, _ in engine.run_pairs(PAIRS[:3]):
        res1, res2 = _reference(cpu, name_i, name_j)
        if amp is None:
            _check_direction(out_ij, (res1, res2), f"cuda {name_i}->{name_j}")
        else:  # bf16: loose agreement, unit descriptors
            cos = (torch.from_numpy(out_ij["view1"]["desc"]) * res1["desc"][0]).sum(-1)
            assert float(cos.mean()) > 0.9
            assert torch.from_numpy(out_ij["view2"]["conf"]).isfinite().all()
