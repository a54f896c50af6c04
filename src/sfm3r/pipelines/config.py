"""The configuration of one reconstruction: named presets plus typed overrides (no eval, no strings to parse).

`ReconstructConf` gathers every stage's options. The CLI picks a preset (`fast`, `default`, `accurate`)
and replaces the fields the user set; the resolved config is saved in OUT/run.json.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sfm3r.errors import InputError
from sfm3r.io.downscale import check_downscale_factors
from sfm3r.sfm.align import alignment as alignment_module
from sfm3r.sfm.classic import sift as sift_module
from sfm3r.sfm.align.alignment import AlignConf, Lens
from sfm3r.sfm.align.camera_groups import CameraMode
from sfm3r.sfm.geometry.camera_model import WRITTEN_MODELS, CameraModel
from sfm3r.sfm.classic.sift import SiftConf
from sfm3r.sfm.classic.two_view import TwoViewConf


__all__ = [
    "Backend", "CameraMode", "CameraModel", "PRESETS", "RayConf", "ReconstructConf", "WRITTEN_MODELS", "Workers",
    "conf_to_dict", "preset_conf",
]  # fmt: skip


class Backend(enum.StrEnum):
    AUTO = "auto"  # mast3r when a checkpoint is given, else classic
    CLASSIC = "classic"  # SIFT + two-view geometry (pycolmap), no network weights
    MAST3R = "mast3r"  # MASt3R network (needs --checkpoint)


# --camera-model -> the lens model the alignment estimates
_LENS = {CameraModel.PINHOLE: Lens.NONE, CameraModel.SIMPLE_PINHOLE: Lens.NONE,
         CameraModel.SIMPLE_RADIAL: Lens.SIMPLE_RADIAL, CameraModel.RADIAL: Lens.RADIAL,
         CameraModel.OPENCV: Lens.OPENCV, CameraModel.AUTO: Lens.AUTO}  # fmt: skip


class Workers(enum.StrEnum):
    LOCAL = "local"  # every stage in this process
    RAY = "ray"  # per-image and per-pair stages on a Ray cluster (pipelines/distributed.py)


@dataclass(frozen=True, kw_only=True)
class RayConf:
    """Where and how ``--workers ray`` runs (see docs/distributed.md)."""

    address: str | None = None  # None: start a local cluster on this machine; "auto" or "HOST:PORT": connect
    num_cpus: int | None = None  # local cluster only: CPUs it may use (None: all of this machine)
    chunk_pairs: int = 0  # pairs (features: images) per task; 0: auto, about 4 chunks per worker, <= 64
    max_retries: int = 3  # retries of a chunk whose worker died

    def __post_init__(self) -> None:
        if self.num_cpus is not None and self.num_cpus < 1:
            raise InputError(f"the Ray cluster needs at least 1 CPU, got num_cpus={self.num_cpus}")
        if self.chunk_pairs < 0 or self.max_retries < 0:
            raise InputError("chunk_pairs and max_retries must be >= 0")


# Up to this many images the default scene graph matches every pair (as `colmap exhaustive_matcher`);
# beyond, retrieval keeps the pair count linear in the number of images.
COMPLETE_GRAPH_MAX_IMAGES = 40
DEFAULT_RETRIEVAL_GRAPH = "retrieval-20-10"


@dataclass(frozen=True, kw_only=True)
class ReconstructConf:
    # Inputs
    recursive: bool = False  # look for images in sub-folders too
    skip_bad_images: bool = False  # warn and skip unreadable images instead of stopping
    # Pairs
    scene_graph: str = "auto"  # "auto": complete up to COMPLETE_GRAPH_MAX_IMAGES images, else retrieval
    pairs_file: Path | None = None  # user-given pairs ("name1 name2" per line); overrides scene_graph
    # Pairwise backend
    backend: Backend = Backend.AUTO
    checkpoint: Path | None = None  # MASt3R checkpoint (.pth or .safetensors)
    retrieval_checkpoint: Path | None = None  # MASt3R retrieval head (*_retrieval_trainingfree.pth)
    codebook: Path | None = None  # ASMK codebook (.pkl) for the retrieval head
    net_image_size: int = 512  # MASt3R input size (512 or 224)
    batch_size: int = 4  # MASt3R decoder pairs per batch
    amp: str = "auto"  # "auto" (bf16 on CUDA, off on CPU), "bf16", "fp16" or "off"
    sift: SiftConf = field(default_factory=SiftConf)
    two_view: TwoViewConf = field(default_factory=TwoViewConf)
    # Alignment
    align: AlignConf = field(default_factory=AlignConf)
    known_intrinsics: Path | None = None  # COLMAP model folder or cameras.txt with known cameras
    camera_model: CameraModel = CameraModel.PINHOLE  # written model (SIMPLE_PINHOLE averages fx, fy); lens models are estimated
    # Output and execution
    device: str = "auto"  # "auto" (cuda if available), "cpu", "cuda", "cuda:1", ...
    write_text: bool = False  # also write the COLMAP model as .txt
    downscales: tuple[int, ...] = ()  # factors of the 3DGS folder's downscaled copies images_<f>/ (io.downscale)
    overwrite: bool = False  # delete an earlier run's outputs and cache in OUT first
    workers: Workers = Workers.LOCAL  # where the per-image and per-pair stages run (not part of any cache key)
    # local worker processes for SIFT and two-view verification (pycolmap holds the GIL); None: one per core,
    # at most 8 (pipelines/process_pool.py); 1: everything in this process. Not part of any cache key.
    processes: int | None = None
    ray: RayConf = field(default_factory=RayConf)  # with workers = ray

    def __post_init__(self) -> None:
        object.__setattr__(self, "backend", Backend(self.backend))
        try:
            object.__setattr__(self, "camera_model", CameraModel(self.camera_model))
        except ValueError:
            raise InputError(
                f"camera_model must be one of {', '.join(WRITTEN_MODELS)}; got {self.camera_model!r}"
            ) from None
        object.__setattr__(self, "workers", Workers(self.workers))
        if self.processes is not None and self.processes < 1:
            raise InputError(f"processes must be >= 1 (or None: one per core), got {self.processes}")
        object.__setattr__(self, "downscales", check_downscale_factors(self.downscales))
        if self.net_image_size not in (224, 512):
            raise InputError(f"net_image_size must be 224 or 512, got {self.net_image_size}")
        if self.batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.amp not in ("auto", "bf16", "fp16", "off"):
            raise InputError(f"amp must be one of auto, bf16, fp16, off; got {self.amp!r}")

    @property
    def lens(self) -> Lens:
        """The lens distortion model the alignment estimates for `camera_model`."""
        return _LENS[self.camera_model]

    @property
    def resolved_backend(self) -> Backend:
        if self.backend == Backend.AUTO:
            return Backend.MAST3R if self.checkpoint is not None else Backend.CLASSIC
        return self.backend


PRESETS: dict[str, ReconstructConf] = {
    # Fewer features and no refinement beyond the coarse alignment: previews, large collections.
    "fast": ReconstructConf(sift=sift_module.PRESETS["fast"], align=alignment_module.PRESETS["fast"]),
    "default": ReconstructConf(),
    # COLMAP-sized SIFT and the most thorough alignment.
    "accurate": ReconstructConf(sift=sift_module.PRESETS["colmap"], align=alignment_module.PRESETS["accurate"]),
}


def preset_conf(name: str, **overrides: Any) -> ReconstructConf:
    """The preset `name` with the given fields replaced (None values are ignored: "not set by the user")."""
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    given = {key: value for key, value in overrides.items() if value is not None}
    unknown = sorted(set(given) - {f.name for f in dataclasses.fields(ReconstructConf)})
    if unknown:
        raise InputError(f"unknown option(s) {unknown} for the reconstruction config")
    return dataclasses.replace(PRESETS[name], **given)


def conf_to_dict(conf: Any) -> Any:
    """A JSON-ready view of a (nested) config dataclass: enums as values, paths as strings."""
    if dataclasses.is_dataclass(conf):
        return {f.name: conf_to_dict(getattr(conf, f.name)) for f in dataclasses.fields(conf)}
    if isinstance(conf, enum.Enum):
        return conf.value
    if isinstance(conf, Path):
        return str(conf)
    if isinstance(conf, (tuple, list)):
        return [conf_to_dict(v) for v in conf]
    if isinstance(conf, dict):
        return {str(k): conf_to_dict(v) for k, v in conf.items()}
    return conf

