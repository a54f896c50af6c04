"""Shared test fixtures: where the read-only shared data lives, and small helpers."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SFM3R_SHARED", REPO_ROOT.parent / "shared")).resolve()
FIXTURES = SHARED / "fixtures"
DATA = SHARED / "data"
REFERENCE = SHARED / "reference"

# The synthetic scenes (alignment_synthetic, ba_synthetic) and other test helpers live in tests/sfm; tests of
# other folders import them too, whatever order pytest collects in.
sys.path.insert(0, str(Path(__file__).resolve().parent / "sfm"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared data not found at {SHARED} (set SFM3R_SHARED)")
    return SHARED


@pytest.fixture
def one_torch_thread():
    """torch with one thread for the test: small batched ops are much slower with several on a shared 2-core box."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
