"""Evaluation and inspection of COLMAP models: `sfm3r evaluate` and `sfm3r info`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sfm3r.errors import InputError
from sfm3r.io.colmap import read_colmap_model
from sfm3r.pipelines.run_folder import write_json_atomic
from sfm3r.pipelines.scene_stats import describe_scene
from sfm3r.sfm.evaluation import evaluate_poses


def model_folder(path: Path) -> Path:
    """A model folder as given, or the model inside a run folder (OUT/sparse/0)."""
    path = Path(path)
    inner = path / "sparse" / "0"
    return inner if inner.is_dir() and not (path / "images.bin").exists() and not (path / "images.txt").exists() else path


def evaluate_models(estimate: Path, ground_truth: Path, json_path: Path | None = None) -> dict[str, Any]:
    """Pose metrics of the model `estimate` against `ground_truth` (see sfm.evaluation.evaluate_poses)."""
    est = read_colmap_model(model_folder(estimate))
    gt = read_colmap_model(model_folder(ground_truth))
    if not set(est.image_names) & set(gt.image_names):
        raise InputError(
            f"the estimate {estimate} and the ground truth {ground_truth} share no image name (e.g. "
            f"{est.image_names[0]!r} vs {gt.image_names[0]!r}); images are matched by name: compare models of "
            "the same photos"
            if est.image_names and gt.image_names else
            f"the estimate {estimate} or the ground truth {ground_truth} holds no image"
        )
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


def describe_model(path: Path) -> str:
    folder = model_folder(path)
    summary = describe_scene(read_colmap_model(folder))
    lines = [f"COLMAP model {folder}"]
    for key, value in summary.items():
        text = f"{value:.3f}" if isinstance(value, float) else ", ".join(value) if isinstance(value, list) else value
        lines.append(f"  {key.replace('_', ' ')}: {text}")
    return "\n".join(lines)
