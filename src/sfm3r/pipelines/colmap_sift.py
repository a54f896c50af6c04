"""SIFT of image files through COLMAP's own extraction pipeline, in threads of this process.

COLMAP's pipeline (``pycolmap.extract_features``: its image reader, grey conversion, downscaling and SIFT)
releases the GIL, so threads run it on every core without worker processes, whose start (~0.5 s of CPU
each: an interpreter, numpy, pycolmap) and pickled results cost more than the threads' share of the run
(herzjesu, 8 images, 2 cores: 5.5 s against 6.3-6.7 s through two workers; benchmarks/README.md §5). Its
features equal :func:`sift.extract_sift` of the same pixels (tested), so the cache does not tell them apart.

Each call extracts ONE image into its own temporary database: COLMAP's reader and writer threads lock the
database while they run (reading it meanwhile aborts the process), and one image per call keeps the
progress, the cache commits and Ctrl-C per image, as with the workers. A call costs ~10 ms more than its
share of one call for all images.

Only files that COLMAP decodes to the pixels ``read_image`` gives qualify
(:func:`io.images.decoded_alike_by_colmap`: upright 8-bit RGB or grey JPEG / PNG); the pipeline extracts
the others from ``read_image``'s array.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pycolmap

from sfm3r.io.images import decoded_alike_by_colmap, read_image
from sfm3r.pipelines.process_pool import map_in_threads
from sfm3r.sfm.classic.sift import SiftConf, SiftFeatures, extract_sift, extraction_options, features_from_colmap

__all__ = ["colmap_reads_alike", "colmap_sift_of_file", "colmap_sift_of_files", "sift_of_image_file"]


def colmap_reads_alike(path: Path) -> bool:
    """Whether the SIFT of this file goes through COLMAP's pipeline: its reader decodes the file alike, and this
    pycolmap extracts on the CPU (a CUDA build's SiftGPU goes through ``extract_sift``, as before)."""
    return not pycolmap.has_cuda and decoded_alike_by_colmap(path)


def sift_of_image_file(path: Path, conf: SiftConf, scratch_dir: Path) -> SiftFeatures:
    """SIFT of one file by the route :func:`classic.extract_features` takes for it (a Ray worker's unit), so
    that a cache unit holds the same bytes wherever it was computed."""
    features = colmap_sift_of_file(path, conf, scratch_dir) if colmap_reads_alike(path) else None
    return features if features is not None else extract_sift(read_image(path), conf)


def colmap_sift_of_file(
    path: Path,
    conf: SiftConf,
    scratch_dir: Path,  # where the temporary database goes (a few MB, deleted after the call)
    cancel: pycolmap.CancellationToken | None = None,
) -> SiftFeatures | None:
    """SIFT features of one image file by COLMAP's extraction pipeline; None when COLMAP could not read it."""
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="sfm3r-sift-", dir=scratch_dir) as tmp:
        db_path = Path(tmp) / "features.db"
        pycolmap.extract_features(
            db_path, path.parent, image_names=[path.name], camera_mode=pycolmap.CameraMode.PER_IMAGE,
            extraction_options=extraction_options(conf, num_threads=1), device=pycolmap.Device.cpu,
            cancellation_token=cancel,
        )  # fmt: skip
        with pycolmap.Database.open(str(db_path)) as db:
            images = db.read_all_images()
            if len(images) != 1 or not db.exists_keypoints(images[0].image_id):
                return None  # COLMAP's reader skipped the file (it logs why)
            image_id = images[0].image_id
            camera = db.read_camera(images[0].camera_id)
            keypoints = db.read_keypoints(image_id)
            descriptors = db.read_descriptors(image_id).data if db.exists_descriptors(image_id) else None
    if descriptors is None or len(descriptors) != len(keypoints):
        return None
    return features_from_colmap(keypoints, descriptors, int(camera.width), int(camera.height), conf)


def colmap_sift_of_files(
    paths: Sequence[Path],
    conf: SiftConf,
    scratch_dir: Path,
    workers: int | None = None,  # threads; None: one per usable core
) -> Iterator[SiftFeatures | None]:
    """:func:`colmap_sift_of_file` of each path, in threads, yielded in order as they finish.

    When the caller stops early (Ctrl-C, an error), the images in flight are cancelled and the rest not started.
    """
    cancel = pycolmap.CancellationToken()
    extract = functools.partial(colmap_sift_of_file, conf=conf, scratch_dir=scratch_dir, cancel=cancel)
    results = map_in_threads(extract, paths, workers=workers)
    try:
        yield from results
    finally:
        cancel.cancel()  # harmless once every image is done
        results.close()  # waits for the calls in flight, drops those not started
