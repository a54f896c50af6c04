"""`sfm3r view`: serve a model in the browser until Ctrl-C (viser; the optional `viewer` extra)."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import click

from sfm3r.cli.options import EXISTING_DIR


@click.command("view")
@click.argument("model", type=EXISTING_DIR)
@click.option("--images", "images_dir", type=EXISTING_DIR, default=None,
              help="The images, for thumbnails and the click view [default: MODEL/images of a run folder].")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True, help="Port to serve on.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; 0.0.0.0 to reach it from other machines.")  # fmt: skip
def view(model: Path, images_dir: Path | None, port: int, host: str) -> None:
    """Look at MODEL (a run folder or any COLMAP model folder) in 3D in the browser.

    Cameras are drawn as frustums with their images, points in their colours; the panel colours both by
    reprojection error, lists the unregistered images, and shows a camera's image and numbers when you
    click it. Needs viser: pip install 'sfm3r[viewer]'.
    """
    from sfm3r.pipelines.viewer import import_viser, serve

    import_viser()  # the install hint before any reading
    try:
        server, scene = serve(model, images_dir=images_dir, host=host, port=port)
    except OSError as error:
        if "address" in str(error).lower() or getattr(error, "errno", None) in (98, 48):
            raise click.UsageError(f"port {port} is in use; choose another with --port") from None
        raise
    shown = "localhost" if host in ("0.0.0.0", "127.0.0.1") else host
    try:  # Ctrl-C may come as soon as the address is printed
        click.echo(f"Viewer of {model}: {len(scene.frustums)} cameras, {scene.num_points_shown} points")
        click.echo(f"Open http://{shown}:{server.get_port()} in a browser (Ctrl-C to stop)")
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        click.echo("Viewer stopped.")
    finally:
        _stop(server)


_STOP_SECONDS = 10.0  # viser's shutdown joins its event-loop threads; a viewer has nothing to save


def _stop(server) -> None:
    """Stop the server; if its shutdown hangs (seen once under heavy load), leave without it."""
    stopper = threading.Thread(target=server.stop, daemon=True)
    stopper.start()
    stopper.join(_STOP_SECONDS)
    if stopper.is_alive():
        sys.stdout.flush()
        os._exit(0)
