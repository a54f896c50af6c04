"""Tables the commands print: `evaluate` (labelled metrics) and `info` (cameras, images, tracks)."""

from __future__ import annotations

import math

from rich.console import Console
from rich.table import Table


def print_metrics(rows, console: Console | None = None) -> None:
    """`rows`: pipelines.evaluate.MetricRow list -> one table (metric, value, unit, meaning)."""
    table = Table(title="Pose accuracy against the ground truth", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("unit")
    table.add_column("meaning", style="dim")
    for row in rows:
        table.add_row(row.label, row.value, row.unit, row.meaning)
    (console or Console()).print(table)


def print_model_stats(stats, console: Console | None = None, max_images: int = 200) -> None:
    """`stats`: pipelines.inspect.ModelStats -> totals, cameras, per-image and track-length tables."""
    console = console or Console()
    scene = stats.scene
    finite = scene.points_error[~(scene.points_error != scene.points_error)]  # drop NaN
    lengths = sum(length * count for length, count in stats.track_lengths.items())
    total = Table(title=f"COLMAP model {stats.folder}", title_justify="left", show_header=False)
    total.add_column("what", style="bold")
    total.add_column("value", justify="right")
    total.add_row("cameras", str(len(stats.cameras)))
    total.add_row("registered images", f"{stats.num_registered} of {len(stats.images)}")
    total.add_row("points", str(scene.num_points))
    total.add_row("observations", str(scene.obs_point.size))
    total.add_row("mean track length", f"{lengths / scene.num_points:.2f}" if scene.num_points else "-")
    total.add_row("mean reprojection error", f"{finite.mean():.3f} px" if finite.size else "n/a")
    console.print(total)

    cameras = Table(title="Cameras", title_justify="left")
    for column in ("#", "model", "size", "params", "images"):
        cameras.add_column(column, justify="right" if column in ("#", "images") else "left")
    for cam in stats.cameras:
        params = ", ".join(f"{p:.2f}" if abs(p) >= 1 else f"{p:.4g}" for p in cam.params)
        cameras.add_row(str(cam.index), cam.model, f"{cam.width}x{cam.height}", params, str(cam.num_images))
    console.print(cameras)

    images = Table(title="Images", title_justify="left")
    for column in ("image", "registered", "camera", "observations", "mean error px"):
        images.add_column(column, justify="left" if column == "image" else "right")
    for row in stats.images[:max_images]:
        error = "-" if math.isnan(row.mean_error_px) else f"{row.mean_error_px:.3f}"
        images.add_row(row.name, "yes" if row.registered else "[red]no", "-" if row.camera is None else str(row.camera),
                       str(row.observations), error)  # fmt: skip
    if len(stats.images) > max_images:
        images.add_row(f"... {len(stats.images) - max_images} more", "", "", "", "")
    console.print(images)

    tracks = Table(title="Track lengths (images per 3D point)", title_justify="left")
    tracks.add_column("length", justify="right")
    tracks.add_column("points", justify="right")
    tracks.add_column("")
    peak = max(stats.track_lengths.values(), default=1)
    for length, count in sorted(stats.track_lengths.items()):
        tracks.add_row(str(length), str(count), "█" * max(1, round(40 * count / peak)))
    console.print(tracks)
