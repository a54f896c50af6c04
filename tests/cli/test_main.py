import pytest
from click.testing import CliRunner

from sfm3r import __version__
from sfm3r.cli.main import cli

COMMANDS = ["reconstruct", "pairs", "match", "align", "export", "evaluate", "info"]


def test_help_lists_the_tool_and_every_command():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert "COLMAP" in result.output
    for command in COMMANDS:
        assert command in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.output


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_missing_input_folder_is_one_line_error(tmp_path):
    result = CliRunner().invoke(cli, ["reconstruct", str(tmp_path / "nope"), str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "does not exist" in result.output
    assert "Traceback" not in result.output


def test_empty_folder_is_one_line_error(tmp_path):
    (tmp_path / "photos").mkdir()
    result = CliRunner().invoke(cli, ["reconstruct", str(tmp_path / "photos"), str(tmp_path / "out"), "-q"])
    assert result.exit_code == 2
    assert "Error:" in result.output and "photos" in result.output
    assert "Traceback" not in result.output


def test_output_that_is_a_file_is_one_line_error(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "out").write_text("")
    result = CliRunner().invoke(cli, ["reconstruct", str(tmp_path / "photos"), str(tmp_path / "out"), "-q"])
    assert result.exit_code == 2
    assert "is a file" in result.output


def test_unknown_scene_graph_is_one_line_error(tmp_path):
    import shutil
    from pathlib import Path

    photos = tmp_path / "photos"
    photos.mkdir()
    sample = Path(__file__).resolve().parents[2] / "sample" / "images"
    for name in ("0003.jpg", "0004.jpg"):
        shutil.copy(sample / name, photos / name)
    result = CliRunner().invoke(cli, ["pairs", str(photos), str(tmp_path / "out"), "--scene-graph", "bogus", "-q"])
    assert result.exit_code == 2
    assert "bogus" in result.output


def test_contradicting_camera_options_are_one_line_error(tmp_path):
    (tmp_path / "photos").mkdir()
    args = ["reconstruct", str(tmp_path / "photos"), str(tmp_path / "out"), "--shared-intrinsics",
            "--camera-mode", "per-image", "-q"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert "contradicts" in result.output and "Traceback" not in result.output


def test_camera_options_reach_the_alignment_config():
    from sfm3r.cli.main import _conf_from_options
    from sfm3r.pipelines.config import CameraMode

    base = {"preset": "default", "max_image_size": None, "quiet": False, "verbose": False,
            "shared_intrinsics": None, "camera_mode": None, "fixed_principal_point": None}
    default = _conf_from_options(dict(base))
    assert default.align.camera_mode == CameraMode.AUTO and default.align.reprojection.optimise_pp
    single = _conf_from_options({**base, "shared_intrinsics": True})
    assert single.align.camera_mode == CameraMode.SINGLE
    per_image = _conf_from_options({**base, "camera_mode": "per-image", "fixed_principal_point": True})
    assert per_image.align.camera_mode == CameraMode.PER_IMAGE and not per_image.align.reprojection.optimise_pp
    assert default.align.min_track_length == 3
    assert _conf_from_options({**base, "min_track_length": 2}).align.min_track_length == 2


def test_min_track_length_below_two_is_a_usage_error(tmp_path):
    (tmp_path / "photos").mkdir()
    args = ["reconstruct", str(tmp_path / "photos"), str(tmp_path / "out"), "--min-track-length", "1", "-q"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert "--min-track-length" in result.output and "Traceback" not in result.output


_CONSOLE_SCRIPT = """
import atexit, sys, threading, time
atexit.register(lambda: print("atexit function ran", flush=True))
if "--slow-thread" in sys.argv:
    sys.argv.remove("--slow-thread")
    threading.Thread(target=lambda: (time.sleep(0.5), print("thread finished", flush=True))).start()
from sfm3r.cli.main import main
sys.argv[0] = "sfm3r"
main()
"""


def _console_script(*args: str):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", _CONSOLE_SCRIPT, *args], capture_output=True, text=True, timeout=120)


def test_the_console_script_ends_like_sys_exit_without_the_teardown(tmp_path):
    """main() skips the interpreter's module teardown but keeps what a normal exit does: the exit status, the
    output flushed (also without a newline at the end), the atexit functions, and a non-daemon thread waited for."""
    done = _console_script("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"sfm3r, version {__version__}", "atexit function ran"]
    done = _console_script("evaluate", str(tmp_path / "missing"), str(tmp_path))  # a user error: exit status 2
    assert done.returncode == 2
    assert "does not exist" in done.stderr and "atexit function ran" in done.stdout
    done = _console_script("--slow-thread", "--version")
    assert done.returncode == 0
    assert done.stdout.splitlines()[-2:] == ["thread finished", "atexit function ran"]


def test_exit_now_reports_a_message_as_sys_exit_does(capsys, monkeypatch):
    """sys.exit("message") prints the message and exits with status 1; _exit_now does the same."""
    import os

    from sfm3r.cli import main as module

    ended = []
    monkeypatch.setattr(module.threading, "enumerate", lambda: [module.threading.main_thread()])
    monkeypatch.setattr(os, "_exit", lambda status: ended.append(status))
    monkeypatch.setattr(module.atexit, "_run_exitfuncs", lambda: ended.append("atexit"))
    module._exit_now("something went wrong")
    assert ended == ["atexit", 1]
    assert "something went wrong" in capsys.readouterr().err
    module._exit_now(None)
    module._exit_now(3)
    assert ended[2:] == ["atexit", 0, "atexit", 3]
