"""The options of the alignment's least-squares steps (coarse 3D alignment, 2D reprojection refinement).

They live apart from the steps' code so that an AlignConf can be built, hashed (the alignment cache's
namespace) and printed without importing torch: a rerun whose alignment is cached never imports it (~2 s).
The steps' modules import them from here (``coarse_alignment.CoarseConf`` names the same class).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class CoarseConf:
    max_iters: int = 30
    robust_scale: float = 0.03  # Cauchy scale on the relative 3D residual
    # stop when the relative cost decrease falls below. 1e-4 (was 1e-6): the coarse poses only start the 2D
    # refinement; measured on cached pairs (accuracy_settings.py `coarse-tol-1e-4`), AUC@3 of all eight real
    # cases and of the 100-frame orbit unchanged, herzjesu 4 -> 3 iterations, the orbit's alignment 48 -> 34 s
    tolerance: float = 1e-4
    outlier_threshold: float = 0.25  # drop matches with relative residual above, after solving


@dataclass(frozen=True, kw_only=True)
class ReprojectionConf:
    """Options of the 2D refinement (a) on anchor depths; the bundle adjustment (b) has its own BundleAdjustmentConf."""

    max_iters: int = 30
    robust_scale_px: float = 1.0  # Cauchy scale of the reprojection error (final); 1 px measured best on Strecha
    # > robust_scale_px: start at this scale and halve per iteration (measured: no gain on real or ring data)
    initial_robust_scale_px: float = 0.0
    # stop when the relative cost decrease falls below. 1e-4 (was 1e-6) measured on the cached pairs of real runs:
    # herzjesu 10 instead of 14 iterations, fountain 12 instead of 26, AUC@3 98.20 / 96.98 unchanged, ATE +0.02 %
    tolerance: float = 1e-4
    # ... or when an accepted step moves no camera by more than this: rotation (rad), centre (fraction of the
    # median anchor depth), log focal, principal point (fraction of the focal). The anchors' depths may still
    # creep then (0.1 % of the cost per iteration on herzjesu), the cameras no longer move. Measured (cached
    # pairs): herzjesu 10 -> 5 iterations, the 100-frame orbit 7 -> 7; AUC@3 in benchmarks/README.md §5.
    camera_step_tolerance: float = 1e-5
    outlier_px: float = 6.0  # matches with a larger error in either image are dropped from the output
    optimise_focal: bool = True
    # principal points of cameras shared by >= min_images_for_pp images. Measured (classic backend, AUC@3):
    # fountain 88.6 -> 97.0, herzjesu 91.0 -> 98.2, temple ring 69.7 -> 91.7. The 3DGS export crops the
    # images so that graphdeco 3DGS, which assumes a centred principal point, stays consistent.
    optimise_pp: bool = True
    # ... for camera groups of at least this many images: one image alone cannot separate its principal point
    # from its rotation (measured unstable with a principal point per image). 3 (was 5) measured on the 1024 px
    # Strecha subsets, AUC@3 at 5 -> 3 (benchmarks/accuracy_settings.py, benchmarks/README.md §1): herzjesu
    # sparse (4 images) 93.11 -> 96.91 (COLMAP-best 95.3), 3 / 4 images of fountain 90.8 / 89.8 -> 95.4 / 96.8,
    # of herzjesu 94.3 / 93.1 -> 95.3 / 96.9; with 2 images refining it changes nothing (fountain 90.3, herzjesu 93.1).
    min_images_for_pp: int = 3
