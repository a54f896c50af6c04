"""Reading MASt3R checkpoints: the official .pth layout, safetensors, and every way a file can be wrong."""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import pytest
import torch
from mast3r_tiny_model import TINY, assert_close, require_fixtures, tiny_model, tiny_model_string, tiny_state_dict, view

from sfm3r.errors import CheckpointError
from sfm3r.sfm.mast3r.checkpoint import (
    add_alias_keys,
    load_mast3r,
    load_weights,
    read_checkpoint,
    read_torch_pickle,
    save_safetensors,
)
from sfm3r.sfm.mast3r.network import Mast3rNetwork


@pytest.fixture(scope="module")
def official_pth(tmp_path_factory):
    """The tiny fixture weights saved in the official layout: {'model': state dict, 'args': Namespace, ...}."""
    require_fixtures()
    path = tmp_path_factory.mktemp("ckpt") / "tiny_official.pth"
    args = argparse.Namespace(model=tiny_model_string().replace("PatchEmbedDust3R", "ManyAR_PatchEmbed"),
                              lr=1e-4, batch_size=4, epochs=[1, 2], output_dir="/tmp/x")
    torch.save({"model": tiny_state_dict(), "args": args, "epoch": 7}, path)
    return path


def _golden_land_matches(model):
    ref = np.load(TINY / "pair_land.npz")
    with torch.inference_mode():
        res1, res2 = model(view("land_a"), view("land_b"))
    assert_close(res1["pts3d"], ref["view1_pts3d"], "pts3d")
    assert_close(res2["desc"], ref["view2_desc"], "desc")


def test_official_layout_with_a_namespace_loads_strictly_and_reproduces_the_fixture(official_pth):
    ckpt = read_checkpoint(official_pth)
    assert ckpt.config.enc_embed_dim == 96 and ckpt.args["batch_size"] == 4
    assert set(ckpt.state_dict) == set(tiny_state_dict())
    _golden_land_matches(load_mast3r(official_pth))


def test_safetensors_round_trip_keeps_the_config_in_metadata(tmp_path):
    path = tmp_path / "tiny.safetensors"
    save_safetensors(tiny_model(), path, tiny_model_string())
    ckpt = read_checkpoint(path)
    assert ckpt.model_str == tiny_model_string()
    assert set(ckpt.state_dict) == set(tiny_state_dict())  # the 8 dropped DPT aliases are back
    _golden_land_matches(load_mast3r(path))


def test_safetensors_config_from_a_hugging_face_style_sidecar(tmp_path):
    require_fixtures()
    from safetensors.torch import save_file

    save_file({"mask_token": torch.zeros(1, 1, 64)}, str(tmp_path / "model.safetensors"))  # no metadata
    kwargs = json.loads((TINY / "config.json").read_text())["kwargs"]
    kwargs["depth_mode"] = ["exp", float("-inf"), float("inf")]  # json.dumps writes -Infinity / Infinity
    (tmp_path / "config.json").write_text(json.dumps(kwargs))
    ckpt = read_checkpoint(tmp_path / "model.safetensors")
    assert ckpt.config == Mast3rNetwork.from_model_string(tiny_model_string()).cfg


def test_safetensors_without_any_config_asks_for_the_model_string(tmp_path):
    from safetensors.torch import save_file

    save_file({"mask_token": torch.zeros(1, 1, 64)}, str(tmp_path / "w.safetensors"))
    with pytest.raises(CheckpointError, match="model_str"):
        read_checkpoint(tmp_path / "w.safetensors")


def test_bare_state_dict_needs_and_accepts_a_model_string(tmp_path):
    require_fixtures()
    path = tmp_path / "bare.pth"
    torch.save({"module.mask_token": torch.zeros(1, 1, 64), "module.enc_norm.weight": torch.ones(96)}, path)
    with pytest.raises(CheckpointError, match="model_str"):
        read_checkpoint(path)
    ckpt = read_checkpoint(path, model_str=tiny_model_string())
    assert sorted(ckpt.state_dict) == ["enc_norm.weight", "mask_token"]  # DataParallel prefix removed


def test_dust3r_era_state_dict_gets_dec_blocks2_from_dec_blocks(tmp_path):
    require_fixtures()
    path = tmp_path / "old.pth"
    torch.save({"model": {"dec_blocks.0.norm1.weight": torch.ones(64)},
                "args": argparse.Namespace(model=tiny_model_string())}, path)
    assert "dec_blocks2.0.norm1.weight" in read_checkpoint(path).state_dict


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_file_raises_checkpoint_error(tmp_path, suffix):
    from safetensors.torch import save_file

    full, cut = tmp_path / f"full{suffix}", tmp_path / f"cut{suffix}"
    weights = {"mask_token": torch.zeros(1, 1, 64), "enc_norm.weight": torch.ones(20000)}
    if suffix == ".pth":
        torch.save({"model": weights, "args": argparse.Namespace(model=tiny_model_string())}, full)
    else:
        save_file(weights, str(full), metadata={"model": tiny_model_string()})
    read_checkpoint(full)  # readable as a whole
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        read_checkpoint(cut)


@pytest.mark.parametrize("content", [b"", b"this is a text file, not weights\n", b"\x80\x04K\x05."])
def test_not_a_checkpoint_raises_checkpoint_error(tmp_path, content):
    path = tmp_path / "weights.pth"
    path.write_bytes(content)  # empty / text / a pickled int
    with pytest.raises(CheckpointError, match=str(path.name)):
        read_checkpoint(path)


def test_missing_file_raises_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "nope.pth")


class _Evil:
    def __reduce__(self):
        return (os.getpid, ())


def test_pickled_code_is_refused_not_executed(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "args": _Evil()}, path)
    with pytest.raises(CheckpointError, match="arbitrary code"):
        read_torch_pickle(path)


def test_wrong_keys_are_listed_with_counts(tmp_path):
    require_fixtures()
    path = tmp_path / "wrong.pth"
    sd = {"mask_token": torch.zeros(1, 1, 64), "bogus.weight": torch.zeros(3)}
    torch.save({"model": sd, "args": argparse.Namespace(model=tiny_model_string())}, path)
    with pytest.raises(CheckpointError) as info:
        load_mast3r(path)
    msg = str(info.value)
    assert "764 missing key(s): patch_embed.proj.weight" in msg and "(+759 more)" in msg
    assert "1 unexpected key(s): bogus.weight" in msg


def test_wrong_shapes_are_listed():
    model = Mast3rNetwork.from_model_string(tiny_model_string())
    sd = dict(tiny_state_dict())
    sd["enc_norm.weight"] = torch.ones(5)
    with pytest.raises(CheckpointError, match=r"1 wrong shape key\(s\): enc_norm.weight \(5,\) != \(96,\)"):
        load_weights(model, sd, "test")


def test_unsupported_architecture_in_args_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "dust3r.pth"
    args = argparse.Namespace(model="AsymmetricMASt3R(pos_embed='RoPE100', head_type='dpt', output_mode='pts3d')")
    torch.save({"model": {"mask_token": torch.zeros(1)}, "args": args}, path)
    with pytest.raises(CheckpointError, match="head_type"):
        read_checkpoint(path)


def test_alias_keys_are_completed_in_both_directions():
    t1, t2 = torch.zeros(1), torch.ones(1)
    out = add_alias_keys({"h.dpt.scratch.layer1_rn.weight": t1, "h.dpt.scratch.layer_rn.3.weight": t2})
    assert out["h.dpt.scratch.layer_rn.0.weight"] is t1 and out["h.dpt.scratch.layer4_rn.weight"] is t2


# -- a model string that omits an argument gets the official constructor's default --------------------


def _tiny_string_without(key: str) -> str:
    """The tiny fixture's model string with the keyword `key` removed."""
    from sfm3r.sfm.mast3r.network import parse_constructor_string

    name, kwargs = parse_constructor_string(tiny_model_string())
    assert key in kwargs
    del kwargs[key]
    return f"{name}(" + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) + ")"


def _land_outputs(model):
    with torch.inference_mode():
        return model(view("land_a"), view("land_b"))


def test_omitted_desc_conf_mode_falls_back_to_conf_mode(tmp_path):
    require_fixtures()
    path = tmp_path / "no_desc_conf_mode.pth"  # the string as a checkpoint stores it (args.model)
    model_str = _tiny_string_without("desc_conf_mode")
    torch.save({"model": tiny_state_dict(), "args": argparse.Namespace(model=model_str)}, path)
    assert read_checkpoint(path).config.desc_conf_mode is None
    res1, _ = _land_outputs(load_mast3r(path))
    ref = np.load(TINY / "pair_land.npz")
    assert_close(res1["pts3d"], ref["view1_pts3d"], "pts3d")
    assert_close(res1["desc"], ref["view1_desc"], "desc")
    # conf_mode ('exp', 1, inf) instead of the fixture's ('exp', 0, inf): exactly one more everywhere
    assert_close(res1["desc_conf"], ref["view1_desc_conf"] + 1.0, "desc_conf")


@pytest.mark.parametrize("key, official", [("enc_num_heads", 12), ("dec_num_heads", 16)])
def test_omitted_head_counts_take_the_official_defaults(official_pth, key, official):
    """Same keys and shapes (so strict loading accepts them), other numbers: the default must be official."""
    model_str = _tiny_string_without(key)
    assert getattr(read_checkpoint(official_pth, model_str=model_str).config, key) == official
    res1, _ = _land_outputs(load_mast3r(official_pth, model_str=model_str))
    ref = np.load(TINY / "pair_land.npz")["view1_pts3d"]
    assert not np.allclose(res1["pts3d"].numpy(), ref, rtol=1e-3)


@pytest.mark.parametrize("key", ["two_confs", "enc_embed_dim", "enc_depth", "dec_embed_dim"])
def test_omitted_shape_arguments_take_official_defaults_that_strict_loading_refuses(official_pth, key):
    model_str = _tiny_string_without(key)
    want = {"two_confs": False, "enc_embed_dim": 768, "enc_depth": 12, "dec_embed_dim": 512}[key]
    assert getattr(read_checkpoint(official_pth, model_str=model_str).config, key) == want
    with pytest.raises(CheckpointError, match="does not fit"):
        load_mast3r(official_pth, model_str=model_str)


@pytest.mark.parametrize("key, official", [("pos_embed", "'cosine'"), ("head_type", "'linear'"),
                                           ("output_mode", "'pts3d'"), ("dec_depth", "8")])
def test_omitted_arguments_with_unsupported_official_defaults_are_named(official_pth, key, official):
    with pytest.raises(CheckpointError, match=f"{key}.*{official}|{key}={official}") as info:
        read_checkpoint(official_pth, model_str=_tiny_string_without(key))
    assert "omits" in str(info.value)


@pytest.mark.parametrize("key", ["depth_mode", "conf_mode", "img_size", "landscape_only", "patch_embed_cls"])
def test_omitted_arguments_whose_official_default_is_the_fixtures_change_nothing(official_pth, key):
    model_str = _tiny_string_without(key)
    if key == "img_size":
        assert read_checkpoint(official_pth, model_str=model_str).config.img_size == (224, 224)
    _golden_land_matches(load_mast3r(official_pth, model_str=model_str))
