"""`sfm3r export`: a Gaussian Splatting folder from any COLMAP model and its images; and what a new export
removes of an earlier one in the same folder."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

from sfm3r.errors import InputError
from sfm3r.io.colmap import check_text_names, read_colmap_model
from sfm3r.io.downscale import downscaled_paths
from sfm3r.io.export import export_gaussian_splatting_scene
from sfm3r.io.images import load_image_infos
from sfm3r.io.nerfstudio import written_paths as nerfstudio_paths
from sfm3r.pipelines.evaluate import model_folder
from sfm3r.pipelines.output_manifest import OutputManifest, open_output
from sfm3r.types import ImageInfo, Scene

logger = logging.getLogger(__name__)

_IMAGE_FOLDER = re.compile(r"images(_[0-9]+)?")  # images/ and its downscaled copies images_<f>/
_NERFSTUDIO = {p.name for p in nerfstudio_paths(Path("."))}  # transforms.json, sparse_pc.ply


def check_downscales_fit(images: Sequence[ImageInfo], downscales: Sequence[int]) -> None:
    """Refuse, before any work, a downscale factor larger than a photo (the export would refuse it at the end).

    Raises:
        InputError: naming the factor, the photo and its size.
    """
    for info in images:
        for factor in downscales:
            if factor > min(info.width, info.height):
                raise InputError(
                    f"--downscales {factor} is larger than the image {info.name} ({info.width}x{info.height} "
                    "pixels); give smaller factors"
                )


def remove_stale_export_files(
    manifest: OutputManifest | None, exported: Scene | None = None, downscales: Sequence[int] = ()
) -> int:
    """Delete the files an earlier export wrote that the current one did not: images no longer exported,
    downscaled copies of factors no longer asked for; with `exported` None (the folder no longer holds an
    export: `sfm3r align`), every exported image and nerfstudio's files. Returns how many were deleted.

    Trainers list these folders: gsplat pairs images/ with images_<f>/ by sorted file name (one stale file
    shifts every later image), nerfstudio picks images_2/4/8 by their existence. Only files listed in the
    run folder's manifest are deleted; a user's file stays.
    """
    if manifest is None:
        return 0
    keep: set[str] = set()
    if exported is not None:
        root = manifest.root
        keep = {p.relative_to(root).as_posix() for p in downscaled_paths(root, exported.image_names, downscales)}
        keep |= {f"images/{name}" for name in exported.image_names}
        keep |= {p.relative_to(root).as_posix() for p in nerfstudio_paths(root)}
    stale = {
        rel for rel in manifest.files
        if rel not in keep and ("/" in rel and _IMAGE_FOLDER.fullmatch(rel.split("/")[0]) or rel in _NERFSTUDIO)
    }  # fmt: skip
    removed = manifest.delete_owned_files(stale)
    if removed:
        folders = sorted({rel.split("/")[0] + ("/" if "/" in rel else "") for rel in stale})
        logger.info(
            "removed %d file(s) of an earlier export that this one did not write (%s)", removed, ", ".join(folders)
        )
    return removed


def export_model(
    model: Path,
    images_dir: Path,
    out: Path,
    text: bool = False,
    recursive: bool = False,
    centre_principal_points: bool = True,
    downscales: Sequence[int] = (),
) -> Path:
    """Write `out`/images, `out`/sparse/0, `out`/points.ply and nerfstudio's `out`/transforms.json from the
    model folder `model`, and `out`/images_<f> for each factor of `downscales`.

    With `centre_principal_points` the images of a camera with an off-centre principal point are
    cropped so that it is centred (see :mod:`sfm3r.io.export`). `out` follows the written-files contract
    (:mod:`sfm3r.pipelines.output_manifest`): new, empty or an earlier sfm3r output folder, nothing
    written into the model or image folders; files of an earlier export there that this one does not
    write again are removed.
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
        exported = export_gaussian_splatting_scene(
            scene, infos, output.root, text=text, centre_principal_points=centre_principal_points,
            claim=output.claim, written=output.made_from, downscales=downscales,
        )  # fmt: skip
        remove_stale_export_files(output, exported, downscales)
    finally:
        output.save()
    return output.root
