"""The summary printed at the end of a run."""

from __future__ import annotations

import math

from sfm3r.pipelines.reconstruct import ReconstructResult


def format_summary(result: ReconstructResult) -> str:
    """A few lines: what was registered, how good it is, how long each stage took, where the output is."""
    lines = [f"Backend: {result.backend.value}; images: {len(result.images)}"]
    pairs = result.counts.get("pairs")
    if pairs:
        lines.append(f"Pairs: {pairs['pairs']} ({pairs['graph']})")
    matching = result.counts.get("matching")
    if matching:
        lines.append(
            f"Matched pairs: {matching['verified']} verified of {matching['total']} "
            f"({matching['cached']} from the cache)"
        )
    scene = result.counts.get("scene")
    if scene:
        error = scene["mean_reprojection_error_px"]
        lines.append(
            f"Registered: {scene['registered']} of {scene['images']} images; {scene['points']} points; "
            f"mean reprojection error {'n/a' if math.isnan(error) else f'{error:.2f} px'}"
        )
        if scene["unregistered"]:
            lines.append(f"Not registered: {', '.join(scene['unregistered'])}")
    lines.append("Time: " + ", ".join(f"{stage} {seconds:.1f}s" for stage, seconds in result.timings.items()))
    lines.append(f"Output: {result.run.root}")
    return "\n".join(lines)
