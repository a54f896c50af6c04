"""Counts and errors of a reconstructed scene, reported by `sfm3r reconstruct` (run.json) and `sfm3r info`."""

from __future__ import annotations

from typing import Any

import numpy as np

from sfm3r.types import Scene

__all__ = ["describe_scene"]


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
