"""Shared helpers of the reliability tests: small real photos built on the fly, CLI calls, checks."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
from click.testing import CliRunner, Result
from PIL import Image

from sfm3r.cli.main import cli

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "sample"
SAMPLE_NAMES = ["0002.jpg", "0003.jpg", "0004.jpg", "0005.jpg", "0006.jpg", "0007.jpg"]
# Cheap settings: small images, few features, the fast alignment.
FAST = ("--preset", "fast", "--max-image-size", "384", "--quiet")


def sample_photo(name: str, size: tuple[int, int] = (384, 256)) -> Image.Image:
    """One sample photo (fountain-P11, 768x512) resized to `size` (RGB)."""
    with Image.open(SAMPLE / "images" / name) as image:
        return image.convert("RGB").resize(size, Image.Resampling.LANCZOS)


def photo_folder(folder: Path, names: list[str], size: tuple[int, int] = (384, 256)) -> Path:
    """`folder` with the given sample photos at `size`, as JPEG under their own names."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        sample_photo(name, size).save(folder / name, quality=95)
    return folder


def invoke(*args) -> Result:
    """Run the CLI in-process; unexpected exceptions are caught (and fail `assert_*` below)."""
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_user_error(result: Result, *words: str) -> str:
    """Exit code 2, exactly one "Error:" line holding every word (case-insensitive), no traceback."""
    assert result.exception is None or isinstance(result.exception, SystemExit), _describe(result)
    assert result.exit_code == 2, _describe(result)
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    for word in words:
        assert word.lower() in lines[0].lower(), (word, lines[0])
    return lines[0]


def assert_success(result: Result) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), _describe(result)
    assert result.exit_code == 0, _describe(result)


def _describe(result: Result) -> str:
    import traceback

    text = result.output
    if result.exc_info and not isinstance(result.exception, SystemExit):
        text += "".join(traceback.format_exception(*result.exc_info))
    return text


def run_json(out: Path) -> dict:
    return json.loads((out / "run.json").read_text())


def cli_command() -> list[str]:
    """The `sfm3r` console script as a subprocess command (this worktree's sources first)."""
    return [sys.executable, "-c", "from sfm3r.cli.main import main; main()"]


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", "1")
    return env


def poses_of(model_dir: Path) -> dict[str, np.ndarray]:
    """{image name: (3, 4) cam_from_world} of a COLMAP model folder."""
    from sfm3r.io.colmap import read_colmap_model

    scene = read_colmap_model(model_dir)
    return {
        name: np.concatenate([scene.rotations[k], scene.translations[k][:, None]], axis=1)
        for k, name in enumerate(scene.image_names)
    }
