"""Classic two-view stage: SIFT matching, geometric verification, pairwise triangulation -> PairResult.

For one image pair (i, j) with :class:`~sfm3r.sfm.classic.sift.SiftFeatures` and prior pinhole cameras:

1. **Matching** (:func:`match_descriptors`): descriptors L2-normalised; distance = angle between them
   (radians, as COLMAP); a match is kept if it is the mutual nearest neighbour (``cross_check``), passes the
   ratio test best < ``max_ratio`` * second best in *both* directions, and best < ``max_distance``. This is
   COLMAP's SIFT matching rule. ``MatcherType.COLMAP_INDEX`` (the default) is COLMAP's own default CPU
   matcher, approximate nearest neighbours in a faiss index per image, many pairs at once on every core
   (colmap_matcher.py); ``MatcherType.TORCH`` computes the rule exactly with a chunked matrix product (CPU or
   CUDA: the choice on a GPU), ``MatcherType.PYCOLMAP`` calls COLMAP's exact brute-force matcher pair by
   pair (the reference; 30-100x slower, see PRESETS).
2. **Verification** (:func:`match_pair`): LO-RANSAC on the essential matrix with the prior intrinsics
   (``pycolmap.estimate_calibrated_two_view_geometry``, which also checks for a dominant homography and
   watermarks), giving the relative pose ``cam_j_from_cam_i`` (x_j = R x_i + t, |t| = 1). The pose is only
   as good as the prior focal: with the exact focal the median rotation error is 0.05-0.16 deg on the shared
   sets, with the 1.2 * max(W, H) default (34 % / 50 % off there) it is 8-10 deg. Images without an EXIF
   focal need their focal refined downstream (bundle adjustment) before these poses are trusted.
3. **Pairwise 3D**: each inlier is triangulated (linear DLT, normalised coordinates) in camera i's frame at
   the scale |t| = 1; ``pts_j = R pts_i + t``. Matches whose point lies behind either camera, whose
   triangulation angle is below ``min_tri_angle_deg``, or whose reprojection error exceeds
   ``max_reproj_error`` in either image are dropped; so M = ``num_inliers`` for a verified pair.
   Confidence, in (0, 1]::

       conf = (1 - exp(-(angle / angle_scale_deg)^2)) * exp(-0.5 * (reproj / max_error)^2)

   with ``angle`` the triangulation angle in degrees and ``reproj`` the larger of the two reprojection errors
   in pixels: small angles (depth poorly constrained) and large residuals get low confidence.

A pair is ``verified`` when the geometry is CALIBRATED, UNCALIBRATED, PLANAR or PLANAR_OR_PANORAMIC with a
relative pose, and at least ``min_num_inliers`` matches survive the 3D filter. A failed pair (too few
matches, pure rotation, degenerate, watermark...) is returned with ``verified=False``, NO matches (M = 0,
because no 3D can be given to them), ``num_inliers`` = the inliers its check found (0 when there were
fewer than ``min_num_inliers`` putative matches, so RANSAC did not run), and no pose: it is never silently
dropped.

Pixels are original-image pixels, COLMAP convention, on both sides (keypoints from sift.py, principal point
of the prior at (W/2, H/2)).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sfm3r.sfm.classic.colmap_matcher import match_pairs_colmap
from sfm3r.sfm.classic.sift import SiftFeatures
from sfm3r.sfm.geometry.projection import perspective_divide
from sfm3r.sfm.geometry.triangulation import triangulate_dlt
from sfm3r.types import Camera, PairResult

if TYPE_CHECKING:  # both imported where used: a cached rerun loads neither (torch ~1.5 s, pycolmap ~0.1 s)
    import pycolmap
    import torch

logger = logging.getLogger(__name__)

__all__ = [
    "BACKEND",
    "VerifyArgs",
    "DEFAULT_FOCAL_FACTOR",
    "MatcherType",
    "PRESETS",
    "TwoViewConf",
    "camera_prior",
    "match_descriptor_pairs",
    "match_descriptors",
    "match_pair",
    "triangulate_pair",
    "verify_keypoint_matches",
    "verify_matches",
]

BACKEND = "classic-sift"
# Prior focal length when EXIF gives none: DEFAULT_FOCAL_FACTOR * max(W, H), COLMAP's own default
# (ImageReaderOptions.default_focal_length_factor), i.e. a ~45 degree field of view across the long side.
from sfm3r.sfm.geometry.camera_model import DEFAULT_FOCAL_FACTOR  # noqa: E402

# pycolmap.TwoViewGeometryConfiguration names
_ACCEPTED_CONFIGS = frozenset({"CALIBRATED", "UNCALIBRATED", "PLANAR", "PLANAR_OR_PANORAMIC"})
_MATCH_CHUNK = 4096  # rows of the descriptor similarity matrix computed at once (4096 x N float32)


class MatcherType(enum.StrEnum):
    COLMAP_INDEX = "colmap-index"  # COLMAP's default CPU matcher: faiss index per image (approximate), batched
    TORCH = "torch"  # exact, chunked matrix product in torch (CPU or CUDA)
    PYCOLMAP = "pycolmap"  # COLMAP's exact brute-force SIFT matcher, pair by pair (reference, slow on CPU)


@dataclass(frozen=True, kw_only=True)
class TwoViewConf:
    """Matching, verification and pairwise-3D options. Every field changes the PairResult (cache key)."""

    # Measured on herzjesu (28 pairs of 8,192 SIFT, 2 cores): colmap-index 1.8 s wall / 3.4 s CPU in all,
    # torch 0.21 s wall per pair (6 s); colmap-index finds 97-99 % of the exact matches.
    matcher: MatcherType = MatcherType.COLMAP_INDEX
    max_ratio: float = 0.8  # ratio test on descriptor angles, both directions (COLMAP default)
    max_distance: float = 0.7  # max descriptor angle in radians (COLMAP default)
    cross_check: bool = True  # keep mutual nearest neighbours only
    # RANSAC inlier threshold in original pixels. 1 px measured best on the shared sets (median rotation
    # error 0.05 deg fountain / 0.16 deg templeRing vs 0.11 / 0.30 at COLMAP's 4 px, benchmarks/classic_backend.py).
    max_error: float = 1.0
    # Fewer matches left after the 3D filter -> verified=False. COLMAP uses 15; 30 rejected the one spurious
    # "verification" (18 inliers, 68 deg rotation error) of a non-overlapping templeRing pair at no loss.
    min_num_inliers: int = 30
    min_inlier_ratio: float = 0.0  # inliers / putative matches below this -> verified=False
    ransac_seed: int = 0  # fixed seed: the same inputs give the same result (resumable runs)
    min_tri_angle_deg: float = 0.0  # drop matches whose triangulation angle is smaller
    max_reproj_error: float = 8.0  # drop matches reprojecting further than this (pixels) in either image
    angle_scale_deg: float = 2.0  # triangulation angle at which the angle term of conf reaches 1 - 1/e

    def __post_init__(self) -> None:
        if not 0 < self.max_ratio <= 1 or self.max_distance <= 0 or self.max_error <= 0:
            raise ValueError(f"invalid matching thresholds in {self}")
        if self.min_num_inliers < 5 or self.angle_scale_deg <= 0 or self.max_reproj_error <= 0:
            raise ValueError(f"min_num_inliers must be >= 5, angle_scale_deg and max_reproj_error > 0: {self}")
        object.__setattr__(self, "matcher", MatcherType(self.matcher))


PRESETS: dict[str, TwoViewConf] = {
    "default": TwoViewConf(),
    # COLMAP's exact brute-force matcher, pair by pair: the reference of the exact rule. Same matches as the
    # torch matcher (3299 vs 3304 on fountain 0000/0001), but 30-100x slower on this CPU build (27-120 s per
    # pair of 7-8k keypoints). The default's COLMAP_INDEX is COLMAP's default (approximate, batched) matcher.
    "colmap": TwoViewConf(matcher=MatcherType.PYCOLMAP),
}

# The arguments of verify_keypoint_matches as one picklable tuple (a worker process's job): (name_i, name_j,
# keypoints_i (N_i, 2), keypoints_j (N_j, 2), prior_i, prior_j, putative matches (M, 2), conf)
VerifyArgs = tuple[str, str, np.ndarray, np.ndarray, Camera, Camera, np.ndarray, TwoViewConf]


def camera_prior(width: int, height: int, focal_px: float | None = None) -> Camera:
    """Prior pinhole camera of an image: focal = EXIF focal if known, else DEFAULT_FOCAL_FACTOR * max(W, H);
    principal point at the image centre (W/2, H/2), COLMAP convention."""
    f = float(focal_px) if focal_px else DEFAULT_FOCAL_FACTOR * max(width, height)
    return Camera(width=width, height=height, fx=f, fy=f, cx=width / 2, cy=height / 2)


# --------------------------------------------------------------------------------------------- matching
def match_descriptors(
    desc_i: np.ndarray,  # (N_i, 128) uint8 or float, SIFT descriptors of image i
    desc_j: np.ndarray,  # (N_j, 128) uint8 or float
    conf: TwoViewConf = TwoViewConf(),
    *,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Putative matches (M, 2) int64: rows (keypoint index in i, keypoint index in j), sorted by index in i."""
    if desc_i.ndim != 2 or desc_j.ndim != 2 or desc_i.shape[1] != desc_j.shape[1]:
        raise ValueError(f"descriptors must be (N, D) with the same D, got {desc_i.shape} and {desc_j.shape}")
    if len(desc_i) == 0 or len(desc_j) == 0:
        return np.zeros((0, 2), np.int64)
    if conf.matcher is MatcherType.COLMAP_INDEX:
        return match_descriptor_pairs({"i": desc_i, "j": desc_j}, [("i", "j")], conf)[0]
    if conf.matcher is MatcherType.PYCOLMAP:
        return _match_pycolmap(desc_i, desc_j, conf)
    import torch

    return _match_torch(desc_i, desc_j, conf, torch.device(device))


def match_descriptor_pairs(
    descriptors: Mapping[str, np.ndarray],  # image name -> (N, 128) uint8 (or float: normalised, COLMAP format)
    pairs: Sequence[tuple[str, str]],  # (name_i, name_j)
    conf: TwoViewConf = TwoViewConf(),
    *,
    device: str | torch.device = "cpu",
    on_done: Callable[[int], None] | None = None,  # called with the number of pairs done so far
    scratch_dir: Path | None = None,  # COLMAP_INDEX: where its temporary database goes (None: system temp)
) -> list[np.ndarray]:
    """Putative matches of many pairs -> one (M, 2) int64 per pair, as :func:`match_descriptors`.

    ``MatcherType.COLMAP_INDEX`` matches all pairs in one batch (each image indexed once, all cores);
    the other matchers go pair by pair.
    """
    if conf.matcher is not MatcherType.COLMAP_INDEX:
        found = []
        for k, (a, b) in enumerate(pairs):
            found.append(match_descriptors(descriptors[a], descriptors[b], conf, device=device))
            if on_done is not None:
                on_done(k + 1)
        return found
    usable = {name: _colmap_descriptors(descriptors[name]) for pair in pairs for name in pair}
    return match_pairs_colmap(
        usable, pairs, max_ratio=conf.max_ratio, max_distance=conf.max_distance, cross_check=conf.cross_check,
        on_done=on_done, scratch_dir=scratch_dir,
    )  # fmt: skip


def _colmap_descriptors(desc: np.ndarray) -> np.ndarray:
    """(N, D) descriptors -> COLMAP's uint8 format (L2-normalised * 512, rounded); uint8 input unchanged."""
    if desc.dtype == np.uint8:
        return desc
    unit = desc / np.maximum(np.linalg.norm(desc, axis=1, keepdims=True), 1e-12)
    return np.clip(np.round(unit * 512), 0, 255).astype(np.uint8)


def _match_torch(desc_i: np.ndarray, desc_j: np.ndarray, conf: TwoViewConf, device: torch.device) -> np.ndarray:
    """COLMAP's rule in two matrix products: every row of i against j (best two per row), then only the
    columns that some row chose (best two per such column, as rows of the transposed product).

    The second product covers the ~30 % of j that are a passing row's best, and both top-2 searches run
    along contiguous rows; the result equals the full-matrix row and column search exactly.
    """
    import torch

    a = torch.nn.functional.normalize(torch.tensor(desc_i, dtype=torch.float32, device=device), dim=1)
    b = torch.nn.functional.normalize(torch.tensor(desc_j, dtype=torch.float32, device=device), dim=1)
    row_val, row_idx = _top2_rows(a, b)  # (N_i, k)
    best_j = row_idx[:, 0]
    keep = _passes(row_val, conf)
    if conf.cross_check and bool(keep.any()):
        cand = torch.unique(best_j[keep])  # (C,) sorted column ids chosen by a passing row
        col_val, col_idx = _top2_rows(b[cand], a)  # (C, k): best two rows of i per chosen column
        col_ok = _passes(col_val, conf)
        rows = torch.nonzero(keep).squeeze(1)
        pos = torch.searchsorted(cand, best_j[rows])
        mutual = (col_idx[pos, 0] == rows) & col_ok[pos]
        keep = torch.zeros_like(keep)
        keep[rows[mutual]] = True
    idx_i = torch.nonzero(keep).squeeze(1)
    return torch.stack([idx_i, best_j[idx_i]], dim=1).cpu().numpy().astype(np.int64)


def _top2_rows(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Best two cosine similarities of each row of a (N, D) among the rows of b (M, D) -> (N, k), (N, k)."""
    import torch

    k = min(2, len(b))
    val = torch.empty((len(a), k), device=a.device)
    idx = torch.empty((len(a), k), dtype=torch.int64, device=a.device)
    for start in range(0, len(a), _MATCH_CHUNK):
        sim = a[start : start + _MATCH_CHUNK] @ b.T  # (c, M)
        val[start : start + len(sim)], idx[start : start + len(sim)] = sim.topk(k, dim=1)
    return val, idx


def _passes(val: torch.Tensor, conf: TwoViewConf) -> torch.Tensor:
    """(n, k) similarities, best first -> (n,) bool: max distance and ratio test on descriptor angles."""
    import torch

    dist = torch.arccos(val.clamp(-1.0, 1.0))
    ok = dist[:, 0] <= conf.max_distance
    if val.shape[1] > 1:
        ok &= dist[:, 0] < conf.max_ratio * dist[:, 1]
    return ok


def _match_pycolmap(desc_i: np.ndarray, desc_j: np.ndarray, conf: TwoViewConf) -> np.ndarray:
    import pycolmap

    opts = pycolmap.FeatureMatchingOptions()
    opts.sift.max_ratio = conf.max_ratio
    opts.sift.max_distance = conf.max_distance
    opts.sift.cross_check = conf.cross_check
    matcher = pycolmap.FeatureMatcher.create(opts, device=pycolmap.Device.cpu)

    def wrap(desc: np.ndarray) -> tuple:
        desc = _colmap_descriptors(desc)  # COLMAP matches its own uint8 format (RootSIFT * 512)
        kps = pycolmap.keypoints_from_matrix(np.zeros((len(desc), 4), np.float32))
        return kps, pycolmap.FeatureDescriptors(pycolmap.FeatureExtractorType.SIFT, np.ascontiguousarray(desc))

    m = matcher.match(*wrap(desc_i), *wrap(desc_j)).astype(np.int64).reshape(-1, 2)
    return m[np.argsort(m[:, 0], kind="stable")]


# ----------------------------------------------------------------------------------------- triangulation
def triangulate_pair(
    xy_i: np.ndarray,  # (M, 2) pixels of image i, COLMAP convention
    xy_j: np.ndarray,  # (M, 2) pixels of image j
    cam_i: Camera,
    cam_j: Camera,
    rotation: np.ndarray,  # (3, 3) float64, cam_j_from_cam_i
    translation: np.ndarray,  # (3,) float64, cam_j_from_cam_i
) -> dict[str, np.ndarray]:
    """Linear (DLT) two-view triangulation in camera i's frame, with per-match diagnostics.

    Returns a dict of (M,) / (M, 3) float64 arrays: ``pts_i``, ``pts_j`` (= R pts_i + t), ``depth_i``,
    ``depth_j``, ``angle_deg`` (triangulation angle), ``reproj`` (max reprojection error of the two images,
    pixels). Points at infinity get non-finite coordinates (and are filtered by the caller).
    """
    rotation = np.asarray(rotation, np.float64)
    translation = np.asarray(translation, np.float64).reshape(3)
    ui = (np.asarray(xy_i, np.float64) - (cam_i.cx, cam_i.cy)) / (cam_i.fx, cam_i.fy)
    uj = (np.asarray(xy_j, np.float64) - (cam_j.cx, cam_j.cy)) / (cam_j.fx, cam_j.fy)
    proj_i = np.hstack([np.eye(3), np.zeros((3, 1))])
    proj_j = np.hstack([rotation, translation[:, None]])
    pts_i = triangulate_dlt(ui, uj, proj_i, proj_j)  # (M, 3)
    pts_j = pts_i @ rotation.T + translation
    centre_j = -rotation.T @ translation  # camera j's centre in camera i's frame
    ray_i, ray_j = pts_i, pts_i - centre_j
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.einsum("md,md->m", ray_i, ray_j) / (np.linalg.norm(ray_i, axis=1) * np.linalg.norm(ray_j, axis=1))
        angle = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
        err_i = np.linalg.norm(perspective_divide(pts_i)[0] - ui, axis=1) * np.sqrt(cam_i.fx * cam_i.fy)
        err_j = np.linalg.norm(perspective_divide(pts_j)[0] - uj, axis=1) * np.sqrt(cam_j.fx * cam_j.fy)
    return {
        "pts_i": pts_i,
        "pts_j": pts_j,
        "depth_i": pts_i[:, 2],
        "depth_j": pts_j[:, 2],
        "angle_deg": angle,
        "reproj": np.maximum(err_i, err_j),
    }


# ---------------------------------------------------------------------------------------------- one pair
def match_pair(
    name_i: str,
    name_j: str,
    feats_i: SiftFeatures,
    feats_j: SiftFeatures,
    camera_prior_i: Camera,  # prior intrinsics of image i, original pixels (see camera_prior)
    camera_prior_j: Camera,
    conf: TwoViewConf = TwoViewConf(),
    *,
    device: str | torch.device = "cpu",  # torch device for the descriptor matching
) -> PairResult:
    """Match, verify and triangulate one pair -> PairResult (``verified=False`` if it fails; see module doc)."""
    _check_prior(name_i, feats_i, camera_prior_i)
    _check_prior(name_j, feats_j, camera_prior_j)
    matches = match_descriptors(feats_i.descriptors, feats_j.descriptors, conf, device=device)
    return verify_matches(name_i, name_j, feats_i, feats_j, camera_prior_i, camera_prior_j, matches, conf)


def verify_matches(
    name_i: str,
    name_j: str,
    feats_i: SiftFeatures,
    feats_j: SiftFeatures,
    camera_prior_i: Camera,
    camera_prior_j: Camera,
    matches: np.ndarray,  # (M, 2) int, putative matches (keypoint index in i, in j), e.g. match_descriptors
    conf: TwoViewConf = TwoViewConf(),
) -> PairResult:
    """Geometric verification and pairwise 3D of given putative matches (the second half of match_pair)."""
    _check_prior(name_i, feats_i, camera_prior_i)
    _check_prior(name_j, feats_j, camera_prior_j)
    return verify_keypoint_matches(
        name_i, name_j, feats_i.keypoints, feats_j.keypoints, camera_prior_i, camera_prior_j, matches, conf
    )


def verify_keypoint_matches(
    name_i: str,
    name_j: str,
    keypoints_i: np.ndarray,  # (N_i, 2) float32, pixels of image i (SiftFeatures.keypoints)
    keypoints_j: np.ndarray,  # (N_j, 2) float32
    camera_prior_i: Camera,
    camera_prior_j: Camera,
    matches: np.ndarray,  # (M, 2) int, putative matches (keypoint index in i, in j)
    conf: TwoViewConf = TwoViewConf(),
) -> PairResult:
    """:func:`verify_matches` on the keypoints alone (what a worker process is sent: no descriptors)."""
    import pycolmap

    matches = np.asarray(matches, dtype=np.int64).reshape(-1, 2)
    if len(matches) < conf.min_num_inliers:
        logger.debug("%s / %s: %d putative matches, too few", name_i, name_j, len(matches))
        return _failed(name_i, name_j, 0)

    geometry = _estimate_geometry(keypoints_i, keypoints_j, camera_prior_i, camera_prior_j, matches, conf)
    inliers = np.asarray(geometry.inlier_matches, dtype=np.int64).reshape(-1, 2)
    config = pycolmap.TwoViewGeometryConfiguration(geometry.config)
    pose = geometry.cam2_from_cam1
    if (
        config.name not in _ACCEPTED_CONFIGS
        or pose is None
        or len(inliers) < conf.min_num_inliers
        or len(inliers) < conf.min_inlier_ratio * len(matches)
        or np.linalg.norm(pose.translation) < 1e-12
    ):
        logger.debug("%s / %s: %s with %d/%d inliers, failed", name_i, name_j, config.name, len(inliers), len(matches))
        return _failed(name_i, name_j, len(inliers))

    rotation = np.asarray(pose.rotation.matrix(), np.float64)
    translation = np.asarray(pose.translation, np.float64)
    translation = translation / np.linalg.norm(translation)
    xy_i = keypoints_i[inliers[:, 0]]
    xy_j = keypoints_j[inliers[:, 1]]
    tri = triangulate_pair(xy_i, xy_j, camera_prior_i, camera_prior_j, rotation, translation)
    keep = (
        np.isfinite(tri["pts_i"]).all(axis=1)
        & (tri["depth_i"] > 0)
        & (tri["depth_j"] > 0)
        & (tri["angle_deg"] >= conf.min_tri_angle_deg)
        & (tri["reproj"] <= conf.max_reproj_error)
    )
    if keep.sum() < conf.min_num_inliers:
        logger.debug(
            "%s / %s: %d/%d inliers left after the 3D filter, failed", name_i, name_j, keep.sum(), len(inliers)
        )
        return _failed(name_i, name_j, int(keep.sum()))
    angle, reproj = tri["angle_deg"][keep], tri["reproj"][keep]
    confidence = (1.0 - np.exp(-((angle / conf.angle_scale_deg) ** 2))) * np.exp(-0.5 * (reproj / conf.max_error) ** 2)
    return PairResult(
        name_i=name_i,
        name_j=name_j,
        backend=BACKEND,
        xy_i=np.ascontiguousarray(xy_i[keep], np.float32),
        xy_j=np.ascontiguousarray(xy_j[keep], np.float32),
        idx_i=np.ascontiguousarray(inliers[keep, 0]),
        idx_j=np.ascontiguousarray(inliers[keep, 1]),
        conf=confidence.astype(np.float32),
        pts_i=tri["pts_i"][keep].astype(np.float32),
        pts_j=tri["pts_j"][keep].astype(np.float32),
        verified=True,
        num_inliers=int(keep.sum()),
        rel_rotation=rotation,
        rel_translation=translation,
    )


def _check_prior(name: str, feats: SiftFeatures, cam: Camera) -> None:
    if (cam.width, cam.height) != (feats.width, feats.height):
        raise ValueError(
            f"camera prior of {name!r} is {cam.width}x{cam.height} but its features come from a "
            f"{feats.width}x{feats.height} image: build the prior from the same image"
        )


def _estimate_geometry(
    keypoints_i: np.ndarray,  # (N_i, 2)
    keypoints_j: np.ndarray,  # (N_j, 2)
    cam_i: Camera,
    cam_j: Camera,
    matches: np.ndarray,
    conf: TwoViewConf,
) -> pycolmap.TwoViewGeometry:
    import pycolmap

    opts = pycolmap.TwoViewGeometryOptions()
    opts.compute_relative_pose = True
    opts.min_num_inliers = conf.min_num_inliers
    opts.ransac.max_error = conf.max_error
    opts.ransac.random_seed = conf.ransac_seed
    opts.ransac.num_threads = 1
    pc_i, pc_j = _pycolmap_camera(cam_i), _pycolmap_camera(cam_j)
    args = (
        pc_i,
        np.asarray(keypoints_i, np.float64),
        pc_j,
        np.asarray(keypoints_j, np.float64),
        matches.astype(np.uint32),
        opts,
    )
    return pycolmap.estimate_calibrated_two_view_geometry(*args)


def _pycolmap_camera(cam: Camera) -> pycolmap.Camera:
    import pycolmap

    pc = pycolmap.Camera(
        model="PINHOLE", width=cam.width, height=cam.height, params=[cam.fx, cam.fy, cam.cx, cam.cy]
    )
    pc.has_prior_focal_length = True
    return pc


def _failed(name_i: str, name_j: str, num_inliers: int) -> PairResult:
    return PairResult(
        name_i=name_i,
        name_j=name_j,
        backend=BACKEND,
        xy_i=np.zeros((0, 2), np.float32),
        xy_j=np.zeros((0, 2), np.float32),
        idx_i=np.zeros(0, np.int64),
        idx_j=np.zeros(0, np.int64),
        conf=np.zeros(0, np.float32),
        pts_i=np.zeros((0, 3), np.float32),
        pts_j=np.zeros((0, 3), np.float32),
        verified=False,
        num_inliers=num_inliers,
    )
