"""The terminal a user sees: log lines and progress bars through one console, none cut or glued to a bar.

The CLI runs in a pseudo-terminal 120 columns wide; its output is replayed on a small terminal model
(tests/cli/cli_terminal.py) and every message of the run's log.txt must appear whole on the final screen.
"""

import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from cli_terminal import replay, run_in_pty

REPO = Path(__file__).resolve().parents[2]
NAMES = ["0003.jpg", "0004.jpg", "0005.jpg"]
COLUMNS = 120
_BAR = "━"
_LEVEL = re.compile(r"\b(DEBUG|INFO|WARNING|ERROR)\b")
_GLOG = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d")


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in NAMES:
        shutil.copy(REPO / "sample" / "images" / name, folder / name)
    return folder


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _run(args: list[str]) -> tuple[int, list[str], str]:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    code, raw = run_in_pty([sys.executable, "-c", "from sfm3r.cli.main import main; main()", *args], env, COLUMNS)
    return code, replay(raw, COLUMNS), raw


def _check_screen(screen: list[str], log_txt: Path, stages: list[str], debug: bool) -> None:
    text = _squash("\n".join(screen))
    messages = []
    for line in log_txt.read_text().splitlines():
        head = re.match(r"^\d{4}-\d\d-\d\d [\d:,]+ (DEBUG|INFO|WARNING|ERROR) ([\w.]+): (.*)$", line)
        if head and (debug or head[1] != "DEBUG"):
            messages.append(head[3])
    assert len(messages) > 5
    for message in messages:  # every record shown whole (wrapping moves words, never drops or splits them)
        assert _squash(message) in text, f"log line cut or glued on screen: {message!r}\n" + "\n".join(screen)
    for line in screen:
        assert not (_BAR in line and _LEVEL.search(line)), f"log line glued to a bar: {line!r}"
        assert not _GLOG.match(line), f"raw glog line on screen: {line!r}"
        assert len(line) <= COLUMNS
    rows = [line for line in screen if _BAR in line and line.startswith("✓")]
    for stage in stages:  # the stage list: every stage finished, with its elapsed time
        assert any(re.match(rf"✓ {stage}\s+{_BAR}+.*\d+:\d\d:\d\d", row) for row in rows), (stage, rows)
    assert any("Stages" in line for line in screen) and any("total" in line for line in screen)


def test_terminal_shows_whole_log_lines_above_the_stage_bars(photos, tmp_path):
    out = tmp_path / "out"
    code, screen, raw = _run(["match", str(photos), str(out), "--preset", "fast", "--max-image-size", "320", "-v"])
    assert code == 0, "\n".join(screen)
    _check_screen(screen, out / "log.txt", ["images", "pairs", "features", "self_calibration", "matching"], True)
    assert "Creating SIFT" in "\n".join(screen)  # pycolmap's glog line, as a DEBUG record
    assert "Creating SIFT" in (out / "log.txt").read_text()


@pytest.mark.slow
def test_terminal_of_a_whole_reconstruction(photos, tmp_path):
    out = tmp_path / "out"
    code, screen, raw = _run(["reconstruct", str(photos), str(out)])
    assert code == 0, "\n".join(screen)
    _check_screen(screen, out / "log.txt", ["features", "self_calibration", "matching", "alignment", "export"], False)
    assert any("mean reprojection error" in line for line in screen)


def test_pipe_gets_plain_lines_without_bars(photos, tmp_path):
    import subprocess

    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    done = subprocess.run(
        [sys.executable, "-c", "from sfm3r.cli.main import main; main()", "match", str(photos), str(out)],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert _BAR not in done.stderr and "\x1b[" not in done.stderr
    assert re.search(r"^\d\d:\d\d:\d\d INFO\s+pairs done in", done.stderr, re.M), done.stderr
    # one line per stage: COLMAP's matcher reports into the putative_matching stage, not a row of its own
    assert len(re.findall(r"INFO\s+putative_matching done in", done.stderr)) == 1, done.stderr
    assert "putative matching done" not in done.stderr
