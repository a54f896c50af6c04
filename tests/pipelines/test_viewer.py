"""`sfm3r view`: the viser scene of a model, and the page in a real headless Chromium."""

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from report_scenes import arc_scene
from sfm3r.cli.main import cli
from sfm3r.io.colmap import write_colmap_model
from sfm3r.pipelines.viewer import error_colors, rotation_to_wxyz

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_rotation_to_wxyz_matches_scipy():
    from scipy.spatial.transform import Rotation

    for R in Rotation.random(50, random_state=0).as_matrix():
        x, y, z, w = Rotation.from_matrix(R).as_quat()
        q = rotation_to_wxyz(R)
        assert np.allclose(q, [w, x, y, z], atol=1e-9) or np.allclose(q, [-w, -x, -y, -z], atol=1e-9)


def test_error_colours_run_green_to_red_grey_unknown():
    c = error_colors(np.array([0.0, 2.0, 10.0, np.nan]))
    assert tuple(c[0]) == (0, 255, 0) and tuple(c[2]) == (255, 0, 0) and c[1, 0] == c[1, 1] == 255
    assert c[3, 0] == c[3, 1] == c[3, 2]


def test_view_without_viser_is_a_one_line_error(tmp_path, monkeypatch):
    write_colmap_model(arc_scene(), tmp_path / "model")
    monkeypatch.setitem(sys.modules, "viser", None)  # import viser -> ImportError
    result = CliRunner().invoke(cli, ["view", str(tmp_path / "model")])
    assert result.exit_code == 2
    assert "pip install" in result.output and "viser" in result.output and "Traceback" not in result.output


@pytest.fixture
def run_folder(tmp_path) -> Path:
    """A run-like folder: sparse/0, images/ (flat colour images), run.json listing one unregistered image."""
    import json

    scene = arc_scene()
    out = tmp_path / "out"
    write_colmap_model(scene, out / "sparse" / "0")
    (out / "images").mkdir()
    for k, name in enumerate(scene.image_names):
        Image.new("RGB", (640, 480), (60 * k, 120, 200)).save(out / "images" / name)
    names = [*scene.image_names, "lost.jpg"]
    (out / "run.json").write_text(json.dumps({"images": [{"name": n} for n in names]}))
    return out


@pytest.fixture
def served(run_folder):
    pytest.importorskip("viser", reason="viser not installed (pip install 'sfm3r[viewer]')")
    from sfm3r.pipelines.viewer import serve

    server, view = serve(run_folder, port=_free_port())
    yield server, view
    server.stop()


def test_view_holds_every_camera_and_point(served):
    server, view = served
    assert len(view.frustums) == 4 and view.num_points_shown == 80
    points = server.scene.get_handle_by_name("/points")
    assert points is not None and points.points.shape == (80, 3)
    for k, name in enumerate(sorted(view.frustums)):
        handle = server.scene.get_handle_by_name(f"/cameras/{k:05d}")
        assert handle is view.frustums[name] and handle.image is not None  # thumbnail from OUT/images
    view.show("0002.jpg")  # what a click on that camera does
    assert "0002.jpg" in view.details.content and "observations" in view.details.content


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium browser here (Debian: apt-get install chromium)")
def test_page_loads_in_headless_chromium(served, tmp_path):
    server, view = served
    clients = []
    server.on_client_connect(lambda client: clients.append(client.client_id))
    # Headless Chromium sometimes takes its screenshot before the camera frustums arrive over the websocket
    # (1 run in ~6 of the CI suite on 2026-12-07: the points drawn, 0 red pixels): a second page load decides.
    for attempt in range(2):
        shot = tmp_path / f"viewer_{attempt}.png"  # kept under pytest's tmp folder for a look
        command = [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader",
            "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={tmp_path / f'profile_{attempt}'}", f"--screenshot={shot}",
            "--window-size=1280,800", "--virtual-time-budget=15000", f"http://127.0.0.1:{server.get_port()}",
        ]  # fmt: skip
        subprocess.run(command, capture_output=True, timeout=180, check=False)
        assert clients, "the page never opened its websocket to the viewer"
        image = np.asarray(Image.open(shot).convert("RGB")).astype(np.int32)
        assert image.shape[:2] == (800, 1280)
        # the 3D view (left of the panel) is not blank: many non-white pixels, of several colours
        scene_area = image[150:750, 300:900]
        drawn = (scene_area < 235).any(axis=2)
        r, g, b = scene_area[..., 0], scene_area[..., 1], scene_area[..., 2]
        reds = (r > g + 60) & (r > b + 60)  # the red camera frustums
        if drawn.mean() > 0.002 and reds.sum() > 200:
            break
    assert drawn.mean() > 0.002, f"only {drawn.mean():.2%} of the scene area is drawn"
    assert reds.sum() > 200, f"{reds.sum()} red pixels"


def test_view_command_prints_the_url_and_stops_on_ctrl_c(run_folder):
    pytest.importorskip("viser", reason="viser not installed (pip install 'sfm3r[viewer]')")
    import os
    import signal
    import time

    port = _free_port()
    src = Path(__file__).resolve().parents[2] / "src"
    proc = subprocess.Popen(
        [sys.executable, "-c", "from sfm3r.cli.main import main; main()", "view", str(run_folder), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ, PYTHONPATH=str(src)),
        # a shell's background job (e.g. `make test &`) ignores SIGINT and its children inherit that: give the
        # viewer the terminal's Ctrl-C back, as a user's shell does
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    lines = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "Open http://" in line:
            break
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    output = "".join(lines) + rest
    assert f"http://localhost:{port}" in output, output
    assert "4 cameras, 80 points" in output and "Viewer stopped" in output
    assert proc.returncode == 0
