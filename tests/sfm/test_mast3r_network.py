"""The MASt3R network against the official key layout and the golden outputs of shared/fixtures."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from mast3r_tiny_model import (
    GOLDEN_PAIRS,
    REFERENCE,
    TINY,
    assert_close,
    require_fixtures,
    tiny_model,
    tiny_model_string,
    view,
)

from sfm3r.sfm.mast3r.network import (
    MAST3R_VITL_512_MODEL_STR,
    Mast3rConfig,
    Mast3rNetwork,
    apply_rope,
    parse_constructor_string,
    patch_positions,
    RoPE2D,
)


# -- configuration ----------------------------------------------------------------------------------


def test_model_string_of_the_released_checkpoint_gives_the_vitl_512_config():
    cfg = Mast3rConfig.from_model_string(MAST3R_VITL_512_MODEL_STR)
    assert cfg == Mast3rConfig()  # the defaults are the released model
    assert (cfg.enc_embed_dim, cfg.enc_depth, cfg.dec_embed_dim, cfg.desc_dim) == (1024, 24, 768, 24)
    assert cfg.depth_mode == ("exp", -math.inf, math.inf)
    assert cfg.desc_conf_mode == ("exp", 0, math.inf)
    assert cfg.dpt_hooks == (0, 6, 9, 12)


def test_tiny_fixture_model_string_matches_its_json_kwargs():
    require_fixtures()
    kwargs = json.loads((TINY / "config.json").read_text())["kwargs"]
    fixed = {k: tuple(float(e) if e in ("inf", "-inf") else e for e in v) if isinstance(v, list) else v
             for k, v in kwargs.items()}
    assert Mast3rConfig.from_model_string(tiny_model_string()) == Mast3rConfig.from_kwargs(fixed)


def test_parser_reads_literals_and_infinities_without_eval():
    name, kw = parse_constructor_string("M(a=1, b=-2.5, c=('exp', -inf, inf), d=[1, 2], e=None, f=True)")
    assert name == "M"
    assert kw == {"a": 1, "b": -2.5, "c": ("exp", -math.inf, math.inf), "d": (1, 2), "e": None, "f": True}


@pytest.mark.parametrize(
    "text, message",
    [
        ("AsymmetricMASt3R(enc_depth=__import__('os').getpid())", "not a literal"),
        ("AsymmetricMASt3R(norm_layer=partial(nn.LayerNorm, eps=1e-6))", "not a literal"),
        ("AsymmetricMASt3R(1024)", "positional"),
        ("AsymmetricMASt3R(**cfg)", "kwargs"),
        ("AsymmetricMASt3R(enc_depth=24", "cannot parse"),
        ("AsymmetricCroCo3DStereo(enc_depth=24)", "not supported"),
        (MAST3R_VITL_512_MODEL_STR.replace("two_confs", "bogus_option"), "unknown MASt3R constructor argument"),
        (MAST3R_VITL_512_MODEL_STR.replace("'catmlp+dpt'", "'linear'"), "head_type"),
        (MAST3R_VITL_512_MODEL_STR.replace("'RoPE100'", "'cosine'"), "pos_embed"),
        (MAST3R_VITL_512_MODEL_STR.replace("depth_mode=('exp', -inf", "depth_mode=('exp', 0"), "depth_mode"),
        (MAST3R_VITL_512_MODEL_STR.replace("dec_depth=12", "dec_depth=8"), "dec_depth > 9"),
    ],
)
def test_bad_model_strings_raise_clear_errors(text, message):
    with pytest.raises(ValueError, match=message):
        Mast3rConfig.from_model_string(text)


# -- building blocks --------------------------------------------------------------------------------


def test_token_positions_are_row_major_y_then_x():
    pos = patch_positions(2, 3)
    assert pos.tolist() == [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]


def test_rope_is_a_rotation_that_depends_on_relative_position_only():
    rope = RoPE2D(head_dim=16, base=100.0)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 1, 16, generator=g), torch.randn(1, 1, 1, 16, generator=g)

    def score(pq, pk):
        rq, rk = rope(torch.tensor([[pq]])), rope(torch.tensor([[pk]]))
        return float((apply_rope(q, rq) * apply_rope(k, rk)).sum())

    assert torch.allclose(apply_rope(q, rope(torch.tensor([[[3, 5]]]))).norm(), q.norm())
    assert score((1, 2), (4, 7)) == pytest.approx(score((11, 12), (14, 17)), abs=1e-5)
    assert score((1, 2), (4, 7)) != pytest.approx(score((1, 2), (4, 8)), abs=1e-3)
    assert torch.equal(apply_rope(q, rope(torch.zeros(1, 1, 2, dtype=torch.long))), q)


def test_rope_tables_are_non_persistent_buffers():
    model = Mast3rNetwork(Mast3rConfig(enc_embed_dim=32, enc_depth=1, enc_num_heads=2, dec_embed_dim=32,
                                       dec_depth=10, dec_num_heads=2))
    assert not any("inv_freq" in k for k in model.state_dict())
    assert any("inv_freq" in name for name, _ in model.named_buffers())


# -- official key layout ----------------------------------------------------------------------------


def test_vitl_512_model_has_exactly_the_official_keys_and_shapes():
    manifest_path = REFERENCE / "mast3r_vitl_512_keys.json"
    if not manifest_path.is_file():
        pytest.skip(f"{manifest_path} not found")
    manifest = json.loads(manifest_path.read_text())
    with torch.device("meta"):
        model = Mast3rNetwork.from_model_string(manifest["checkpoint_args_model"])
    got = [(k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()]
    want = [(e["key"], e["shape"], e["dtype"]) for e in manifest["keys"]]
    assert got == want  # same keys, same order, same shapes and dtypes
    assert len(got) == manifest["num_keys"] == 1017
    assert sum(p.numel() for p in model.parameters()) == manifest["numel_unique_parameters"]
    for a, b in manifest["alias_groups"]:  # the DPT aliases are one tensor under two names
        assert model.get_parameter(a) is model.get_parameter(b)


# -- golden outputs ---------------------------------------------------------------------------------


# pair_land_rev and pair_port are also checked in the default suite through PairInference
# (tests/sfm/test_mast3r_inference.py), so here they only run with the slow tests.
@pytest.mark.parametrize(
    "pair", [p if p in ("pair_land", "pair_mixed") else pytest.param(p, marks=pytest.mark.slow) for p in GOLDEN_PAIRS]
)
def test_tiny_model_reproduces_the_official_outputs(pair):
    """Every output key of the official forward, for landscape, reversed, portrait and mixed-size pairs."""
    model = tiny_model()
    name1, name2 = GOLDEN_PAIRS[pair]
    ref = np.load(TINY / f"{pair}.npz")
    with torch.inference_mode():
        res1, res2 = model(view(name1), view(name2))
    assert sorted(res1) == ["conf", "desc", "desc_conf", "pts3d"]
    assert sorted(res2) == ["conf", "desc", "desc_conf", "pts3d_in_other_view"]
    for key in ref.files:
        side, out_key = key.split("_", 1)
        assert_close((res1 if side == "view1" else res2)[out_key], ref[key], f"{pair} {key}")


def test_tiny_model_intermediates_match_the_official_token_lists():
    """Localises a failure of the golden test: encoder, every decoder layer, DPT and MLP outputs."""
    model = tiny_model()
    ref = np.load(TINY / "pair_land_intermediates.npz")
    v1, v2 = view("land_a"), view("land_b")
    with torch.inference_mode():
        enc1, pos1 = model.encode(v1["img"])
        enc2, pos2 = model.encode(v2["img"])
        assert torch.equal(pos1, torch.from_numpy(ref["pos1"]))
        assert_close(enc1, ref["enc1"], "enc1")
        assert_close(enc2, ref["enc2"], "enc2")
        tokens1, tokens2 = model.decode(enc1, pos1, enc2, pos2)
        assert len(tokens1) == len(tokens2) == 13
        for i in range(13):
            assert_close(tokens1[i], ref[f"dec1_{i:02d}"], f"dec1_{i:02d}")
            assert_close(tokens2[i], ref[f"dec2_{i:02d}"], f"dec2_{i:02d}")
        assert_close(model.downstream_head1.dpt(tokens1, 48, 64), ref["head1_dpt_raw"], "head1_dpt_raw")
        assert_close(model.downstream_head2.dpt(tokens2, 48, 64), ref["head2_dpt_raw"], "head2_dpt_raw")
        cat = torch.cat([tokens1[0], tokens1[-1]], dim=-1)
        assert_close(model.downstream_head1.head_local_features(cat), ref["head1_localfeat_mlp_out"], "mlp")


@pytest.mark.slow
def test_stacked_batch_gives_the_same_outputs_as_single_pairs():
    model = tiny_model()
    a, b, c, d = view("land_a"), view("land_b"), view("land_b"), view("land_a")
    batch1 = {"img": torch.cat([a["img"], c["img"]]), "true_shape": torch.cat([a["true_shape"], c["true_shape"]])}
    batch2 = {"img": torch.cat([b["img"], d["img"]]), "true_shape": torch.cat([b["true_shape"], d["true_shape"]])}
    with torch.inference_mode():
        r1, r2 = model(batch1, batch2)
        s1, s2 = model(c, d)
    for k in s1:
        assert_close(r1[k][1:], s1[k], f"view1 {k}")
    for k in s2:
        assert_close(r2[k][1:], s2[k], f"view2 {k}")


def test_forward_rejects_a_true_shape_that_disagrees_with_the_image():
    model = tiny_model()
    v1, v2 = view("land_a"), view("land_b")
    v2 = {**v2, "true_shape": torch.tensor([[64, 48]])}
    with pytest.raises(ValueError, match="true_shape"):
        model(v1, v2)
