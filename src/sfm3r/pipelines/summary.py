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
            for component in scene.get("left_out", ()):
                lines.append("  " + left_out_line(component))
    lines.append("Time: " + ", ".join(f"{stage} {seconds:.1f}s" for stage, seconds in result.timings.items()))
    lines.append(f"Output: {result.run.root}")
    return "\n".join(lines)


def left_out_line(component: dict) -> str:
    """Why one group of images stayed out of the model (run.json's counts.scene.left_out)."""
    names = ", ".join(component["images"])
    if not component["link_pairs"]:
        return f"{names}: no pair to the model in the scene graph"
    best = component["links"][0]
    putative = best.get("putative_matches")
    found = f"{best['num_inliers']} inliers" + (f" of {putative} putative matches" if putative is not None else "")
    if best["two_view_verified"]:
        found += ", rejected by the alignment's edge check"
    return (
        f"{names}: {component['internal_pairs']} verified pair(s) among them, none of the "
        f"{component['link_pairs']} to the model kept (best: {best['name_i']} / {best['name_j']}, {found})"
    )
