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
from mast3r_tiny_model import require_fixtures, tiny_model_string  # noqa: E402

from sfm3r.sfm.mast3r_network import Mast3rNetwork  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[2] / "sample" / "images"


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    require_fixtures()
    torch.manual_seed(0)
    model = Mast3rNetwork.from_model_string(tiny_model_string())
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    torch.save({"model": model.state_dict(), "args": argparse.Namespace(model=tiny_model_string())}, path)
    return path


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
