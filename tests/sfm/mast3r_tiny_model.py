"""Shared helpers for the MASt3R tests: the tiny fixture model of ``shared/fixtures/mast3r_tiny``.

Its ~55 M weights are rebuilt from ``fixture_recipe.py`` (imported from the shared folder, checksums
verified) once per test session and shared by every test module through ``functools.cache``.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from sfm3r.sfm.mast3r.network import Mast3rNetwork

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("SFM3R_SHARED", REPO_ROOT.parent / "shared")).resolve()
FIXTURES = SHARED / "fixtures"
REFERENCE = SHARED / "reference"
TINY = FIXTURES / "mast3r_tiny"

#: golden pair -> (view1 image, view2 image) in inputs.npz
GOLDEN_PAIRS = {
    "pair_land": ("land_a", "land_b"),
    "pair_land_rev": ("land_b", "land_a"),
    "pair_port": ("port_c", "port_d"),
    "pair_mixed": ("land_e", "port_c"),
}
RTOL = 1e-4  # |got - ref| <= RTOL * (1 + |ref|), the fixtures' recommended tolerance


def require_fixtures() -> None:
    if not TINY.is_dir():
        pytest.skip(f"MASt3R fixtures not found at {TINY} (set SFM3R_SHARED)")


@functools.cache
def fixture_recipe():
    spec = importlib.util.spec_from_file_location("fixture_recipe", FIXTURES / "fixture_recipe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def tiny_model_string() -> str:
    return json.loads((TINY / "config.json").read_text())["model_str"]


@functools.cache
def tiny_state_dict() -> dict[str, torch.Tensor]:
    """The fixture weights under the official key names (verified against their sha256)."""
    arrays = fixture_recipe().rebuild_state_dict(TINY / "state_dict_checksums.json", verify=True)
    return {k: torch.from_numpy(v) for k, v in arrays.items()}


@functools.cache
def tiny_model() -> Mast3rNetwork:
    """The tiny fixture network with its weights, in eval mode (shared: do not modify)."""
    require_fixtures()
    model = Mast3rNetwork.from_model_string(tiny_model_string()).eval()
    model.load_state_dict(tiny_state_dict(), strict=True)
    return model


@functools.cache
def save_random_tiny_checkpoint(path: Path) -> Path:
    """A .pth checkpoint of the tiny architecture with random weights (seed 0), as the official code saves
    them ({"model": state dict, "args": Namespace(model=...)}): for pipeline tests that need a file."""
    import argparse

    require_fixtures()
    torch.manual_seed(0)
    model = Mast3rNetwork.from_model_string(tiny_model_string())
    torch.save({"model": model.state_dict(), "args": argparse.Namespace(model=tiny_model_string())}, path)
    return path


def tiny_inputs() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """image name -> (img (1, 3, H, W) float32, true_shape (1, 2) int32)."""
    npz = np.load(TINY / "inputs.npz")
    names = {k[len("img_"):] for k in npz.files if k.startswith("img_")}
    return {n: (torch.from_numpy(npz[f"img_{n}"]), torch.from_numpy(npz[f"true_shape_{n}"])) for n in names}


def view(name: str) -> dict:
    img, true_shape = tiny_inputs()[name]
    return {"img": img, "true_shape": true_shape, "instance": [name]}


def assert_close(got, ref, what: str, rtol: float = RTOL) -> None:
    """Element-wise |got - ref| <= rtol * (1 + |ref|), with a message naming the worst element."""
    got = got.detach().cpu().numpy() if isinstance(got, torch.Tensor) else np.asarray(got)
    ref = ref.detach().cpu().numpy() if isinstance(ref, torch.Tensor) else np.asarray(ref)
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != {ref.shape}"
    err = np.abs(got.astype(np.float64) - ref) / (1.0 + np.abs(ref))
    worst = float(err.max()) if err.size else 0.0
    assert worst <= rtol, f"{what}: max scaled error {worst:.3g} > {rtol} at {np.unravel_index(err.argmax(), err.shape)}"
