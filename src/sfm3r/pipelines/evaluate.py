"""Evaluation and inspection of COLMAP models: `sfm3r evaluate` and `sfm3r info`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sfm3r.io.colmap import read_colmap_model
from sfm3r.pipelines.run_folder import write_json_atomic
from sfm3r.sfm.evaluation import evaluate_poses
from sfm3r.types import Scene


def model_folder(path: Path) -> Path:
    """A model folder as given, or the model inside a run folder (OUT/sparse/0)."""
    path = Path(path)
    inner = path / "sparse" / "0"
    return inner if inner.is_dir() and not (path / "images.bin").exists() and not (path / "images.txt").exists() else path


def evaluate_models(estimate: Path, ground_truth: Path, json_path: Path | None = None) -> dict[str, Any]:
    """Pose metrics of the model `estimate` against `ground_truth` (see sfm.evaluation.evaluate_poses)."""
    est = read_colmap_model(model_folder(estimate))
    gt = read_colmap_model(model_folder(ground_truth))
    metrics: dict[str, Any] = evaluate_poses(est, gt)
    metrics["unregistered"] = sorted(set(gt.image_names) - set(est.image_names))
    if json_path is not None:
        write_json_atomic(Path(json_path), metrics)
    return metrics


def format_metrics(metrics: dict[str, Any]) -> str:
    """A readable table of the metrics (percentages for rates and AUCs)."""
    lines = []
    for key, value in metrics.items():
        if key == "unregistered":
            lines.append(f"{key:>22}: {', '.join(value) if value else '-'}")
        elif isinstance(value, float):
            lines.append(f"{key:>22}: {value:.4g}")
        else:
            lines.append(f"{key:>22}: {value}")
    return "\n".join(lines)


def describe_scene(scene: Scene) -> dict[str, Any]:
    """Counts and errors of a model, as a dict."""
    lengths = np.bincount(scene.obs_point, minlength=scene.num_points) if scene.num_points else np.zeros(0)
    errors = scene.points_error[np.isfinite(scene.points_error)]
    return {
        "cameras": len(scene.cameras),
        "registered_images": scene.num_images,
        "points": scene.num_points,
        "observations": int(scene.obs_point.size),
        "mean_track_length": float(lengths.mean()) if lengths.size else 0.0,
        "mean_reprojection_error_px": float(errors.mean()) if errors.size else float("nan"),
        "camera_models": sorted({c.colmap_model()[0] for c in scene.cameras}),
    }


def describe_model(path: Path) -> str:
    folder = model_folder(path)
    summary = describe_scene(read_colmap_model(folder))
    lines = [f"COLMAP model {folder}"]
    for key, value in summary.items():
        text = f"{value:.3f}" if isinstance(value, float) else ", ".join(value) if isinstance(value, list) else value
        lines.append(f"  {key.replace('_', ' ')}: {text}")
    return "\n".join(lines)
