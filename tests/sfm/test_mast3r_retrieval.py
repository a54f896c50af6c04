"""The retrieval head over the MASt3R encoder: key layouts, golden outputs, checkpoint and codebook files."""

from __future__ import annotations

import argparse
import json
import os
import pickle

import numpy as np
import pytest
import torch
from mast3r_tiny_model import FIXTURES, REFERENCE, assert_close, fixture_recipe, require_fixtures, tiny_inputs, tiny_model

from sfm3r.errors import CheckpointError
from sfm3r.sfm.mast3r.checkpoint import load_weights
from sfm3r.sfm.mast3r.retrieval import (
    RetrievalConfig,
    RetrievalHead,
    RetrievalModel,
    codebook_path,
    load_retrieval,
    read_codebook,
)

RETRIEVAL = FIXTURES / "retrieval_tiny"


def _variants() -> dict:
    require_fixtures()
    return json.loads((RETRIEVAL / "config.json").read_text())["variants"]


def _recipe_state_dict(variant: dict) -> dict[str, torch.Tensor]:
    recipe = fixture_recipe()
    out = {}
    for e in variant["state_dict"]:
        arr = recipe.recipe_tensor(e["recipe_name"], e["shape"], e["dtype"])
        assert recipe.sha256_of(arr) == e["sha256"], e["key"]
        out[e["key"]] = torch.from_numpy(arr)
    return out


def _tiny_retrieval(name: str) -> RetrievalModel:
    variant = _variants()[name]
    head = RetrievalHead(RetrievalConfig.from_args(variant["ctor_kwargs"]), backbone_dim=96)
    load_weights(head, _recipe_state_dict(variant), name)
    assert head.dim == variant["output_dim"]
    return RetrievalModel(tiny_model(), head.eval())


@pytest.mark.parametrize("variant", ["prewhiten_only", "full"])
def test_retrieval_head_reproduces_the_official_features(variant):
    model = _tiny_retrieval(variant)
    ref = np.load(RETRIEVAL / "retrieval.npz")
    for image in ("land_a", "port_c"):
        img, _ = tiny_inputs()[image]
        key = f"{variant}__{image}__"
        feat, attn = model.features(img)
        assert_close(feat, ref[key + "all_feat"], key + "all_feat")
        assert_close(attn, ref[key + "all_attn"], key + "all_attn")
        local = model.local_features(img)
        np.testing.assert_array_equal(local.token_idx, ref[key + "local_idx"][0])
        assert_close(local.feat, ref[key + "local_feat"][0], key + "local_feat")
        assert_close(local.attn, ref[key + "local_attn"][0], key + "local_attn")
        assert local.feat.dtype == np.float32 and local.feat.shape == (5, model.head.dim)
        assert_close(model.global_descriptor(img), ref[key + "global"], key + "global")
        # the same from encoder tokens computed elsewhere (e.g. PairInference's token store)
        with torch.inference_mode():
            tokens, _ = tiny_model().encode(img)
        np.testing.assert_array_equal(model.local_features(img, tokens=tokens[0]).token_idx, local.token_idx)


def test_every_official_key_variant_loads_strictly():
    manifest = json.loads((REFERENCE / "mast3r_retrieval_keys.json").read_text())["variants"]
    for name, variant in manifest.items():
        head = RetrievalHead(RetrievalConfig.from_args(variant["ctor_kwargs"]), backbone_dim=1024)
        got = [(k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in head.state_dict().items()]
        assert got == [(e["key"], e["shape"], e["dtype"]) for e in variant["keys"]], name
        assert head.dim == variant["output_dim"]


def test_official_style_retrieval_checkpoint_loads_and_bad_keys_are_listed(tmp_path):
    variant = _variants()["full"]
    args = argparse.Namespace(pretrained="x.pth", freeze_backbone=1, prewhiten=0, hdims="128_64", residual=False,
                              postwhiten=0, featweights="l2norm", nfeat=5, imsize=512, nclusters=4)
    path = tmp_path / "tiny_retrieval_trainingfree.pth"
    torch.save({"model": _recipe_state_dict(variant), "args": args}, path)
    model = load_retrieval(path, tiny_model())
    assert model.head.cfg.hdims == (128, 64) and model.head.cfg.nclusters == 4
    ref = np.load(RETRIEVAL / "retrieval.npz")
    assert_close(model.local_features(tiny_inputs()["land_a"][0]).feat, ref["full__land_a__local_feat"][0], "feat")

    args.hdims = ""  # now the file has projector/postwhiten keys the args do not ask for
    args.postwhiten = None
    torch.save({"model": _recipe_state_dict(variant), "args": args}, path)
    with pytest.raises(CheckpointError, match="unexpected key"):
        load_retrieval(path, tiny_model())


def test_nfeat_fraction_and_config_errors():
    from sfm3r.sfm.mast3r.retrieval import select_local

    feat, attn = torch.randn(1, 10, 4), torch.rand(1, 10)
    f, a, i = select_local(feat, attn, -0.5)
    assert f.shape == (1, 5, 4) and torch.all(a[:, :-1] >= a[:, 1:])
    with pytest.raises(ValueError, match="postwhiten"):
        RetrievalConfig(hdims=(), postwhiten=True)


def _codebook(size=4, dim=3):
    return {"type": "Codebook", "params": {"size": size}, "state": {"centroids": np.arange(size * dim, dtype=np.float32).reshape(size, dim)}}


def test_codebook_is_read_from_numpy2_and_numpy1_pickles(tmp_path):
    path = tmp_path / "m_retrieval_codebook.pkl"
    path.write_bytes(pickle.dumps(_codebook()))
    np.testing.assert_array_equal(read_codebook(path, nclusters=4), _codebook()["state"]["centroids"])
    old = pickle.dumps(_codebook(), protocol=2).replace(b"numpy._core", b"numpy.core")  # as numpy 1.x wrote it
    assert b"numpy.core.multiarray" in old
    path.write_bytes(old)
    assert read_codebook(path).shape == (4, 3)
    with pytest.raises(CheckpointError, match="size 4"):
        read_codebook(path, nclusters=65536)
    assert codebook_path(tmp_path / "m_retrieval_trainingfree.pth") == path


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("payload", [pickle.dumps({"state": _Evil()}), b"\x80\x04\x95", pickle.dumps([1, 2])])
def test_bad_codebooks_raise_checkpoint_error(tmp_path, payload):
    path = tmp_path / "cb.pkl"
    path.write_bytes(payload)
    with pytest.raises(CheckpointError):
        read_codebook(path)
