"""One MASt3R pair, both decoder passes -> the pipeline's ``PairResult`` and two ``DenseView``s.

For an unordered pair (i, j) the network runs its decoder twice (MASt3R-SfM §1 step 4):

- pass i->j (i is view 1): ``view1`` holds image i in camera i (``pts3d`` = X_ii, ``conf`` = C_ii,
  ``desc`` = d_ii, ``desc_conf`` = q_ii); ``view2`` holds image j *expressed in camera i*
  (``pts3d_in_other_view`` = X_ji, ``conf`` = C_ji, ``desc`` = d_ji, ``desc_conf`` = q_ji);
- pass j->i: the same with the roles swapped (X_jj, ..., and X_ij in camera j).

Matches come from :func:`sfm3r.sfm.mast3r.matching.symmetric_correspondences` on the four descriptor maps
(as the official SfM does). Each match carries its 3D point in both cameras: ``pts_i = X_ii`` at the
pixel of i (pass i->j) and ``pts_j = X_jj`` at the pixel of j (pass j->i); the two passes have their own
scale, so ``pts_j ≈ s (R pts_i + t)`` for the relative pose (R, t) and a scale s.

Verification (cheap, 3D only): the kernel's Sim(3) RANSAC of that similarity ``pts_i -> pts_j``
(geometry.ransac: 3-point hypotheses, inlier if the residual is below ``inlier_thr`` times the point's
distance from camera j, then confidence-weighted refits on the inliers). The pair is ``verified`` when enough matches agree;
``num_inliers`` counts them, and the fit gives the relative pose estimate. All matches are kept
(the official pipeline weights them by confidence instead of dropping them); alignment decides what
to trust.

Pixels: matches are found at network resolution and converted to original-image pixels (COLMAP
convention) by ``NetView.net_to_original`` only; ``idx_i``/``idx_j`` are flat network pixel indices
``y * W + x``, the per-image keypoint ids shared by all pairs of that image.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from sfm3r.sfm.geometry.ransac import sim3_ransac
from sfm3r.sfm.mast3r.matching import DEFAULT_BLOCK_SIZE, symmetric_correspondences
from sfm3r.types import DenseView, NetView, PairResult

logger = logging.getLogger(__name__)

__all__ = ["BACKEND", "Mast3rPairConf", "Mast3rPairOutput", "mast3r_pair_result"]

BACKEND = "mast3r"

ViewOutput = Mapping[str, torch.Tensor | np.ndarray]
PassOutput = Mapping[str, ViewOutput] | Sequence[ViewOutput]


@dataclass(frozen=True, kw_only=True)
class Mast3rPairConf:
    """How a pair's matches are extracted and checked."""

    subsample: int = 8  # seed grid step of the reciprocal matcher (official: 8)
    block_size: int = DEFAULT_BLOCK_SIZE  # similarity tile edge (memory bound of the matcher)
    ransac_iters: int = 128  # 3-point similarity hypotheses
    inlier_thr: float = 0.05  # inlier if |s R p_i + t - p_j| <= inlier_thr * |p_j| (relative 3D error)
    min_inliers: int = 20  # verified needs at least this many inliers ...
    min_inlier_ratio: float = 0.25  # ... and at least this fraction of the matches
    seed: int = 0  # RANSAC sampling seed (results are deterministic)


@dataclass(frozen=True)
class Mast3rPairOutput:
    """What one pair contributes: sparse matches with 3D points, and each image's own-frame pointmap."""

    pair: PairResult
    dense_i: DenseView  # X_ii, C_ii from pass i->j (camera i)
    dense_j: DenseView  # X_jj, C_jj from pass j->i (camera j)


# ----------------------------------------------------------------------------------------------------
# Input handling


def _split_pass(out: PassOutput, label: str) -> tuple[ViewOutput, ViewOutput]:
    if isinstance(out, Mapping):
        if "view1" not in out or "view2" not in out:
            raise ValueError(f"{label} must have keys 'view1' and 'view2', got {sorted(out)}")
        return out["view1"], out["view2"]
    if isinstance(out, Sequence) and len(out) == 2:
        return out[0], out[1]
    raise ValueError(f"{label} must be {{'view1': ..., 'view2': ...}} or the forward's (res1, res2)")


def _get(view: ViewOutput, keys: Sequence[str], label: str, shape: tuple[int, ...]) -> torch.Tensor:
    for key in keys:
        if key in view:
            value = torch.as_tensor(view[key])
            break
    else:
        raise ValueError(f"{label} lacks '{keys[0]}' (keys present: {sorted(view)})")
    ok = value.ndim == len(shape) and all(s in (-1, v) for s, v in zip(shape, value.shape))
    if not ok:
        want = tuple("D" if s == -1 else s for s in shape)
        hint = " (remove the batch dimension)" if value.ndim == len(shape) + 1 else ""
        raise ValueError(f"{label}['{key}'] must have shape {want}, got {tuple(value.shape)}{hint}")
    return value


def _read_view(view: ViewOutput, label: str, hw: tuple[int, int], points: bool) -> dict:
    """The view's ``desc``/``desc_conf``, and with ``points`` its ``pts3d``/``conf`` (view 2's are unused)."""
    h, w = hw
    out = {}
    if points:
        out["pts3d"] = _get(view, ("pts3d",), label, (h, w, 3))
        out["conf"] = _get(view, ("conf",), label, (h, w))
    out["desc"] = _get(view, ("desc",), label, (h, w, -1))
    out["desc_conf"] = _get(view, ("desc_conf",), label, (h, w))
    return out


def _numpy32(x: torch.Tensor) -> np.ndarray:
    return x.detach().to("cpu", torch.float32).numpy()


# ----------------------------------------------------------------------------------------------------
# The pair


def mast3r_pair_result(
    name_i: str,
    name_j: str,
    pass_ij: PassOutput,
    pass_ji: PassOutput,
    view_i: NetView,
    view_j: NetView,
    conf: Mast3rPairConf | None = None,
    *,
    device: torch.device | str | None = None,
) -> Mast3rPairOutput:
    """Matches, 3D points and dense pointmaps of one unordered pair from its two decoder passes.

    Args:
        name_i, name_j: the images (``name_i`` is view 1 of ``pass_ij``).
        pass_ij: decoder pass with i as view 1, batch dimension removed: ``{'view1': {...},
            'view2': {...}}`` or the forward's ``(res1, res2)``. view1 (image i): ``pts3d`` (H_i, W_i, 3),
            ``conf`` (H_i, W_i), ``desc`` (H_i, W_i, D), ``desc_conf`` (H_i, W_i); view2 (image j):
            ``desc`` (H_j, W_j, D), ``desc_conf`` (H_j, W_j) (its ``pts3d_in_other_view`` and ``conf``
            are not used and may be absent: ``PairInference(view2_points=False)``). Tensors (any
            device) or arrays.
        pass_ji: the pass with j as view 1 (same layout, roles swapped).
        view_i, view_j: how the network saw each image; (H, W) must match the outputs.
        conf: matching and verification settings.
        device: where to match (default: the device of the descriptors).

    Returns:
        :class:`Mast3rPairOutput`: the ``PairResult`` (xy in original pixels, ``conf`` = match
        confidence sqrt(q_i q_j), ``pts_i``/``pts_j`` in cameras i/j, verification, relative pose
        ``cam_j_from_cam_i`` at the scale of ``pts_i``) and the ``DenseView``s of i and j.
    """
    conf = conf or Mast3rPairConf()
    hw_i = (view_i.net_height, view_i.net_width)
    hw_j = (view_j.net_height, view_j.net_width)
    v1, v2 = _split_pass(pass_ij, "pass_ij")
    ii = _read_view(v1, "pass_ij view1 (image i)", hw_i, points=True)
    ji = _read_view(v2, "pass_ij view2 (image j)", hw_j, points=False)
    v1, v2 = _split_pass(pass_ji, "pass_ji")
    jj = _read_view(v1, "pass_ji view1 (image j)", hw_j, points=True)
    ij = _read_view(v2, "pass_ji view2 (image i)", hw_i, points=False)

    xy_i, xy_j, match_conf = symmetric_correspondences(
        desc_ii=ii["desc"],
        desc_ji=ji["desc"],
        desc_jj=jj["desc"],
        desc_ij=ij["desc"],
        conf_ii=ii["desc_conf"],
        conf_ji=ji["desc_conf"],
        conf_jj=jj["desc_conf"],
        conf_ij=ij["desc_conf"],
        subsample=conf.subsample,
        block_size=conf.block_size,
        device=device,
    )
    net_xy_i, net_xy_j = xy_i.cpu().numpy(), xy_j.cpu().numpy()
    idx_i = net_xy_i[:, 1] * hw_i[1] + net_xy_i[:, 0]
    idx_j = net_xy_j[:, 1] * hw_j[1] + net_xy_j[:, 0]
    x_ii, x_jj = _numpy32(ii["pts3d"]), _numpy32(jj["pts3d"])
    pts_i = x_ii.reshape(-1, 3)[idx_i]
    pts_j = x_jj.reshape(-1, 3)[idx_j]
    weights = _numpy32(match_conf)

    verified, num_inliers, rel_r, rel_t = False, 0, None, None
    finite = np.isfinite(pts_i).all(1) & np.isfinite(pts_j).all(1)
    if finite.sum() >= 3:
        fit = sim3_ransac(pts_i[finite], pts_j[finite], weights[finite], rng=np.random.default_rng(conf.seed),
                          iters=conf.ransac_iters, thr=conf.inlier_thr)
        num_inliers = fit.num_inliers if fit is not None else 0
        m = len(pts_i)
        verified = num_inliers >= conf.min_inliers and num_inliers >= conf.min_inlier_ratio * m
        if fit is not None and num_inliers >= 3 and fit.scale > 0:
            rel_r, rel_t = fit.rotation, fit.translation / fit.scale
    logger.debug(
        "%s-%s: %d matches, %d inliers, verified=%s", name_i, name_j, len(pts_i), num_inliers, verified
    )

    pair = PairResult(
        name_i=name_i,
        name_j=name_j,
        backend=BACKEND,
        xy_i=view_i.net_to_original(net_xy_i).astype(np.float32).reshape(-1, 2),
        xy_j=view_j.net_to_original(net_xy_j).astype(np.float32).reshape(-1, 2),
        idx_i=idx_i.astype(np.int64),
        idx_j=idx_j.astype(np.int64),
        conf=weights,
        pts_i=pts_i,
        pts_j=pts_j,
        verified=bool(verified),
        num_inliers=num_inliers,
        rel_rotation=rel_r,
        rel_translation=rel_t,
    )
    dense_i = DenseView(name=name_i, partner=name_j, net_pts3d=x_ii, net_conf=_numpy32(ii["conf"]))
    dense_j = DenseView(name=name_j, partner=name_i, net_pts3d=x_jj, net_conf=_numpy32(jj["conf"]))
    return Mast3rPairOutput(pair=pair, dense_i=dense_i, dense_j=dense_j)
