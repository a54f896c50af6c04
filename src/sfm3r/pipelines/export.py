"""`sfm3r export`: a Gaussian Splatting folder from any COLMAP model and its images."""

from __future__ import annotations

from pathlib import Path

from sfm3r.io.colmap import check_text_names, read_colmap_model
from sfm3r.io.export import export_gaussian_splatting_folder
from sfm3r.io.images import load_image_infos
from sfm3r.pipelines.evaluate import model_folder
from sfm3r.pipelines.output_manifest import open_output


def export_model(
    model: Path,
    images_dir: Path,
    out: Path,
    text: bool = False,
    recursive: bool = False,
    centre_principal_points: bool = True,
) -> Path:
    """Write `out`/images, `out`/sparse/0 and `out`/points.ply from the model folder `model`.

    With `centre_principal_points` the images of a camera with an off-centre principal point are
    cropped so that it is centred (see :mod:`sfm3r.io.export`). `out` follows the written-files contract
    (:mod:`sfm3r.pipelines.output_manifest`): new, empty or an earlier sfm3r output folder, nothing
    written into the model or image folders.
    """
    model_dir = model_folder(model)
    scene = read_colmap_model(model_dir)
    if text:
        check_text_names(scene.image_names)
    output = open_output(Path(out), [images_dir, model_dir])
    wanted = set(scene.image_names)
    recursive = recursive or any("/" in name for name in wanted)
    infos = [info for info in load_image_infos(images_dir, recursive=recursive) if info.name in wanted]
    try:  # images an earlier export into `out` wrote identically are kept (io.export, "Reruns")
        return export_gaussian_splatting_folder(
            scene, infos, output.root, text=text, centre_principal_points=centre_principal_points,
            claim=output.claim, written=output.made_from,
        )  # fmt: skip
    finally:
        output.save()
