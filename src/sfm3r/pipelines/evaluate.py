"""Evaluation and inspection of COLMAP models: `sfm3r evaluate` and `sfm3r info`."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sfm3r.errors import InputError
from sfm3r.io.colmap import read_colmap_model
from sfm3r.pipelines.inspect import model_folder
from sfm3r.pipelines.run_folder import write_json_atomic
from sfm3r.sfm.evaluation import evaluate_poses


# metric key -> (label, unit, what it means, scale applied to the value for display)
METRICS: dict[str, tuple[str, str, str, float]] = {
    "num_images": ("ground-truth images", "images", "images in the ground truth (matched by name)", 1),
    "registration_rate": ("registered", "%", "ground-truth images present in the estimate", 1),
    "num_pairs": ("pairs compared", "pairs", "all pairs of ground-truth images (a missing image fails its pairs)", 1),
    "RRA@5": ("RRA@5°", "%", "pairs whose relative rotation is within 5°", 1),
    "RTA@5": ("RTA@5°", "%", "pairs whose relative translation direction is within 5°", 1),
    "RRA@15": ("RRA@15°", "%", "pairs whose relative rotation is within 15°", 1),
    "RTA@15": ("RTA@15°", "%", "pairs whose relative translation direction is within 15°", 1),
    "mAA@30": ("mAA@30°", "%", "mean over 1°..30° of the pairs within it (max of rotation, direction error)", 1),
    "AUC@3": ("AUC@3°", "%", "area under the pair pose-error curve up to 3°", 1),
    "AUC@5": ("AUC@5°", "%", "area under the pair pose-error curve up to 5°", 1),
    "AUC@10": ("AUC@10°", "%", "area under the pair pose-error curve up to 10°", 1),
    "median_rot_err_deg": ("pair rotation error, median", "°", "relative rotation error over all pairs", 1),
    "median_trans_err_deg": ("pair direction error, median", "°", "relative translation direction error, all pairs", 1),
    "ATE": ("ATE, mean", "% radius", "camera centre error after a similarity fit, of the GT cameras' radius", 100),
    "ATE_max": ("ATE, max", "% radius", "largest camera centre error after the fit, of the GT cameras' radius", 100),
    "rot_err_median_deg": ("camera rotation error, median", "°", "absolute rotation error after the fit", 1),
    "rot_err_max_deg": ("camera rotation error, max", "°", "largest absolute rotation error after the fit", 1),
    "focal_err_median": ("focal error, median", "%", "|f_est / f_gt - 1| over registered images", 100),
    "focal_err_max": ("focal error, max", "%", "largest |f_est / f_gt - 1|", 100),
}


@dataclass(frozen=True)
class MetricRow:
    key: str  # the JSON key
    label: str
    value: str  # formatted, in `unit`
    unit: str
    meaning: str


def evaluate_models(estimate: Path, ground_truth: Path, json_path: Path | None = None) -> dict[str, Any]:
    """Pose metrics of the model `estimate` against `ground_truth` (see sfm.evaluation.evaluate_poses).

    The JSON (when `json_path` is given) holds the metrics under their keys plus a `table` of labelled
    rows (label, value, unit, meaning) as printed.
    """
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
        table = [dataclasses.asdict(row) for row in metric_rows(metrics)]
        write_json_atomic(Path(json_path), metrics | {"table": table})
    return metrics


def metric_rows(metrics: dict[str, Any]) -> list[MetricRow]:
    """The metrics as labelled rows, in the order of METRICS (unknown keys last, as given)."""
    rows = []
    for key in [k for k in METRICS if k in metrics] + [k for k in metrics if k not in METRICS]:
        value = metrics[key]
        if key == "unregistered":
            rows.append(MetricRow(key, "not registered", ", ".join(value) if value else "-", "", "GT images missing"))
            continue
        label, unit, meaning, scale = METRICS.get(key, (key, "", "", 1))
        if isinstance(value, float) and (unit in ("images", "pairs")):
            text = f"{value:.0f}"
        elif isinstance(value, float):
            text = "n/a" if math.isnan(value) else f"{value * scale:.3g}" if abs(value * scale) < 1 else f"{value * scale:.2f}"
        else:
            text = str(value)
        rows.append(MetricRow(key, label, text, unit, meaning))
    return rows


def format_metrics(metrics: dict[str, Any]) -> str:
    """The labelled rows as plain text, one metric a line."""
    rows = metric_rows(metrics)
    width = max(len(row.label) for row in rows)
    return "\n".join(f"{row.label:>{width}}: {row.value} {row.unit}".rstrip() + (f"  ({row.meaning})" if row.meaning else "")
                     for row in rows)  # fmt: skip


