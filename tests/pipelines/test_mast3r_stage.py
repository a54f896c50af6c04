"""The MASt3R backend through the pipeline: a small random-weight checkpoint in the official layout (the
compute path is the real one; the weights are not), cached per pair and resumed without recomputation."""

import argparse
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from sfm3r.cli.main import cli

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sfm"))
from mast3r_tiny_model import save_random_tiny_checkpoint  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[2] / "sample" / "images"


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return save_random_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pth")


def test_mast3r_matching_is_cached_and_resumed(tiny_checkpoint, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("0003.jpg", "0004.jpg", "0005.jpg"):
        shutil.copy(SAMPLE / name, photos / name)
    out = tmp_path / "out"
    args = ["match", str(photos), str(out), "--checkpoint", str(tiny_checkpoint), "--net-image-size", "224", "-q"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    run = json.loads((out / "run.json").read_text())
    assert run["backend"] == "mast3r"
    assert run["counts"]["matching"] == {"total": 3, "cached": 0, "computed": 3, "verified": run["counts"]["matching"]["verified"]}
    assert "encoder ran 3 times for 3 images" in (out / "log.txt").read_text()  # encode once, not per pair
    again = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert again.exit_code == 0
    counts = json.loads((out / "run.json").read_text())["counts"]["matching"]
    assert (counts["cached"], counts["computed"]) == (3, 0)


def test_retrieval_graph_from_the_mast3r_retrieval_head(tiny_checkpoint, tmp_path):
    """--retrieval-checkpoint: the head's local features + the release's codebook give the retrieval graph."""
    import pickle

    import numpy as np

    from sfm3r.sfm.mast3r.retrieval import RetrievalConfig, RetrievalHead

    args = argparse.Namespace(pretrained="tiny.pth", prewhiten=1, hdims="", residual=False, postwhiten=None,
                              featweights="l2norm", nfeat=5, imsize=512, nclusters=8)  # fmt: skip
    torch.manual_seed(1)
    head = RetrievalHead(RetrievalConfig.from_args(vars(args)), backbone_dim=96)
    retrieval = tmp_path / "tiny_retrieval_trainingfree.pth"
    torch.save({"model": head.state_dict(), "args": args}, retrieval)
    centroids = np.random.default_rng(0).normal(size=(8, 96)).astype(np.float32)
    codebook = {"type": "Codebook", "params": {"size": 8}, "state": {"centroids": centroids}}
    (tmp_path / "tiny_retrieval_codebook.pkl").write_bytes(pickle.dumps(codebook))

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("0002.jpg", "0003.jpg", "0004.jpg", "0005.jpg"):
        shutil.copy(SAMPLE / name, photos / name)
    out = tmp_path / "out"
    args_cli = ["pairs", str(photos), str(out), "--checkpoint", str(tiny_checkpoint), "--retrieval-checkpoint",
                str(retrieval), "--scene-graph", "retrieval-1-1", "--net-image-size", "224", "-q"]  # fmt: skip
    result = CliRunner().invoke(cli, args_cli, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    pairs = (out / "pairs.txt").read_text().split("\n")
    assert 3 <= len([p for p in pairs if p.strip() and not p.startswith("#")]) <= 6  # key star + 1-NN, connected
    run = json.loads((out / "run.json").read_text())
    assert run["counts"]["pairs"]["graph"] == "retrieval-1-1"
    assert "features" not in run["counts"]  # no SIFT needed: the similarity came from the network


def test_retrieval_checkpoint_without_checkpoint_is_a_user_error(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (tmp_path / "r.pth").write_bytes(b"x")
    result = CliRunner().invoke(cli, ["pairs", str(photos), str(tmp_path / "o"), "--retrieval-checkpoint",
                                      str(tmp_path / "r.pth"), "-q"])  # fmt: skip
    assert result.exit_code == 2
    assert "--checkpoint" in result.output
