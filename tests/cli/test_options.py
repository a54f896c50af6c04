"""The CLI answers early: no heavy imports to print help, options checked before work, per-stage options."""

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from sfm3r.cli import options
from sfm3r.cli.main import cli

SAMPLE = Path(__file__).resolve().parents[2] / "sample"
SRC = Path(__file__).resolve().parents[2] / "src"


def test_choices_match_the_config():
    from sfm3r.pipelines.config import PRESETS, Backend, CameraMode, CameraModel

    assert options.PRESET_NAMES == tuple(PRESETS)
    assert options.BACKENDS == tuple(b.value for b in Backend)
    assert options.CAMERA_MODES == tuple(m.value for m in CameraMode)
    assert set(options.CAMERA_MODELS) == {m.value for m in CameraModel}


def test_cli_import_loads_neither_torch_nor_pycolmap():
    code = (
        "import sys; import sfm3r.cli.main as m; "
        "m.cli.main(['reconstruct', '--help'], standalone_mode=False); "
        "print(sorted(k for k in ('torch', 'pycolmap', 'h5py', 'matplotlib') if k in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert out.stdout.strip().splitlines()[-1] == "[]"


@pytest.fixture
def two_photos(tmp_path) -> Path:
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("0003.jpg", "0004.jpg", "0005.jpg"):
        shutil.copy(SAMPLE / "images" / name, photos / name)
    return photos


@pytest.mark.parametrize(
    "args, word",
    [(["--scene-graph", "bogus"], "bogus"), (["--scene-graph", "swin-0"], "window"), (["--device", "gpu"], "gpu"),
     (["--processes", "0"], "processes")],  # fmt: skip
)
def test_bad_option_fails_before_any_work(two_photos, tmp_path, args, word):
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["reconstruct", str(two_photos), str(out), *args])
    assert result.exit_code == 2
    assert word in result.output and "Traceback" not in result.output
    assert not out.exists()  # nothing was started: no run folder, no log


def test_stage_commands_show_only_their_options():
    def listed(command: str) -> str:
        result = CliRunner().invoke(cli, [command, "--help"], terminal_width=200)
        assert result.exit_code == 0
        return result.output

    pairs, match, reconstruct = listed("pairs"), listed("match"), listed("reconstruct")
    for option in ("--camera-model", "--batch-size", "--known-intrinsics", "--fixed-principal-point", "--text"):
        assert option not in pairs
        assert option in reconstruct
    assert "--batch-size" in match and "--camera-model" not in match
    assert "--scene-graph" in pairs and "--overwrite" in pairs


def test_pairs_with_a_window_graph_extracts_no_features(two_photos, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["pairs", str(two_photos), str(out), "--scene-graph", "swin-1", "-q"])
    assert result.exit_code == 0, result.output
    run = json.loads((out / "run.json").read_text())
    assert "features" not in run["timings_s"] and "features" not in run["counts"]
    assert run["counts"]["pairs"]["pairs"] == 3  # swin-1 on 3 images, cyclic
    assert not list((out / "cache").glob("*sift*"))


def test_processes_one_matches_without_worker_processes(two_photos, tmp_path, monkeypatch):
    """--processes 1: SIFT and verification in this process (the pool is never started), same outputs."""
    from sfm3r.pipelines import process_pool

    started = []
    real = process_pool._start_worker
    monkeypatch.setattr(process_pool, "_start_worker", lambda: (started.append(1), real())[1])
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["match", str(two_photos), str(out), "--processes", "1", "-q"])
    assert result.exit_code == 0, result.output
    assert started == []
    assert json.loads((out / "run.json").read_text())["config"]["processes"] == 1


def test_a_first_run_loads_the_alignment_steps_while_sift_runs_and_a_rerun_or_match_does_not(two_photos, tmp_path, monkeypatch):
    """The alignment's steps (scipy) load in a background thread during a first run's SIFT, and torch (~1-2 s to
    import) with them only when the alignment is predicted to run on torch; only when the run goes on to the
    alignment and has features to extract (a rerun of a finished run must not import them)."""
    from sfm3r.pipelines import reconstruct as module

    loaded, asked, solvers = [], [], []
    monkeypatch.setattr(module, "load_alignment_steps", lambda with_torch: loaded.append(with_torch))
    monkeypatch.setattr(module, "load_solvers", lambda: solvers.append("scipy.optimize"))
    out = tmp_path / "small"  # three pairs: the alignment runs on numpy, torch is not preloaded
    assert CliRunner().invoke(cli, ["align", str(two_photos), str(out), "-q"]).exit_code == 0
    assert loaded == [False]
    assert solvers == ["scipy.optimize"]  # no EXIF focal: the self-calibration's optimisers load with them
    monkeypatch.setattr(module, "needs_torch", lambda num_pairs, device: asked.append(num_pairs) or True)
    loaded.clear()
    result = CliRunner().invoke(cli, ["match", str(two_photos), str(tmp_path / "m"), "-q"])
    assert result.exit_code == 0, result.output
    assert loaded == []  # stops before the alignment
    out = tmp_path / "a"
    assert CliRunner().invoke(cli, ["align", str(two_photos), str(out), "-q"]).exit_code == 0
    assert loaded == [True] and asked == [3]  # three photos, complete graph
    assert CliRunner().invoke(cli, ["align", str(two_photos), str(out), "-q"]).exit_code == 0
    assert loaded == [True]  # every feature cached: nothing preloaded
    assert solvers == ["scipy.optimize"] * 2  # the first run of `small`, then of `a`


_SIGTERM_AFTER_PYCOLMAP = """
import os, signal, sys, time
from sfm3r.cli.main import Signalled, install_signal_handlers
install_signal_handlers()
assert "pycolmap" not in sys.modules  # setting the handlers does not load it
import pycolmap  # installs glog's SIGTERM handler (a C stack dump): ours must be set again after it
names = list(sys.modules)
assert names.index("PIL.Image") < names.index("pycolmap")  # PIL first (see cli.main)
try:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)
except Signalled as interrupt:
    print("signalled", interrupt.signum)
"""


def test_sigterm_after_a_later_pycolmap_import_still_unwinds_like_ctrl_c():
    done = subprocess.run([sys.executable, "-c", _SIGTERM_AFTER_PYCOLMAP], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"signalled {int(signal.SIGTERM)}", done.stderr
    assert "stack trace" not in done.stderr
