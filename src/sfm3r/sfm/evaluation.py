"""Pose accuracy metrics against ground truth (pure numpy; images matched by name).

Pairwise relative poses (as in the IMC / MASt3R-SfM evaluations): for every pair of GT images, the
relative rotation error (degrees) and the angle between the relative translation directions (degrees);
a pair with an unregistered image counts as an infinite error.

- RRA@τ / RTA@τ: fraction of pairs with rotation / translation-direction error below τ degrees.
- mAA@30: mean over τ = 1..30 degrees of the fraction of pairs with max(rot, trans) error below τ.
- AUC@τ: area under the accuracy curve of max(rot, trans) error from 0 to τ degrees, divided by τ
  (trapezoidal integration over the sorted errors, the usual pose-AUC).
- ATE: mean distance between camera centres after the Sim(3) alignment of the estimated centres onto the
  GT centres (Umeyama), divided by the GT scene extent (max distance of a GT centre to their mean).
- Focal error: median of |f_est/f_gt − 1| over registered images (when both sides give cameras).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sfm3r.sfm.geometry.similarity import fit_similarity_batch


def _names_rt(x: Any) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray | None]:
    names = list(x.image_names)
    R = np.asarray(x.rotations, np.float64)
    t = np.asarray(x.translations, np.float64)
    focal = None
    cams = getattr(x, "cameras", None)
    if cams is not None:
        coi = getattr(x, "camera_of_image", None)
        coi = np.arange(len(names)) if coi is None else np.asarray(coi)
        focal = np.array([(cams[c].fx + cams[c].fy) / 2 for c in coi])
    return names, R, t, focal


def rotation_angle_deg(R: np.ndarray) -> np.ndarray:
    """Angle in degrees of rotation matrices (..., 3, 3)."""
    c = (np.trace(R, axis1=-2, axis2=-1) - 1) / 2
    return np.degrees(np.arccos(np.clip(c, -1.0, 1.0)))


def pose_auc(errors: np.ndarray, thresholds: list[float]) -> list[float]:
    """Area under the recall-vs-error curve up to each threshold, normalised to [0, 1]."""
    errors = np.sort(np.asarray(errors, np.float64))
    recall = (np.arange(errors.size) + 1) / errors.size
    errors = np.concatenate([[0.0], errors])
    recall = np.concatenate([[0.0], recall])
    out = []
    for t in thresholds:
        last = np.searchsorted(errors, t)
        r = np.concatenate([recall[:last], [recall[last - 1]]])
        e = np.concatenate([errors[:last], [t]])
        out.append(float(np.trapezoid(r, x=e) / t))
    return out


def relative_pose_errors(
    R_est: np.ndarray, t_est: np.ndarray, R_gt: np.ndarray, t_gt: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Rotation and translation-direction errors (degrees) of all pairs i<j. Inputs (N, 3, 3), (N, 3)."""
    i, j = np.triu_indices(R_gt.shape[0], 1)

    def rel(R, t):
        Rij = R[j] @ np.transpose(R[i], (0, 2, 1))
        tij = t[j] - np.einsum("nab,nb->na", Rij, t[i])
        return Rij, tij

    Re, te = rel(R_est, t_est)
    Rg, tg = rel(R_gt, t_gt)
    rot = rotation_angle_deg(Re @ np.transpose(Rg, (0, 2, 1)))
    ne = np.linalg.norm(te, axis=1)
    ng = np.linalg.norm(tg, axis=1)
    cos = np.einsum("na,na->n", te, tg) / np.maximum(ne * ng, 1e-300)
    trans = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    trans[(ne < 1e-12) | (ng < 1e-12)] = 180.0
    return rot, trans


def evaluate_poses(est: Any, gt: Any, *, thresholds: tuple[float, ...] = (3.0, 5.0, 10.0)) -> dict[str, float]:
    """Compare estimated poses with ground truth.

    `est` and `gt` are Scene-like: ``image_names`` (N,), ``rotations`` (N, 3, 3) and ``translations``
    (N, 3) cam_from_world, optional ``cameras`` + ``camera_of_image`` for the focal error. GT images
    missing from `est` count as unregistered. Returns a flat dict of metrics (percentages for rates/AUC).
    """
    gn, gR, gt_t, gf = _names_rt(gt)
    en, eR, et, ef = _names_rt(est)
    pos = {n: k for k, n in enumerate(en)}
    have = np.array([n in pos for n in gn])
    idx = np.array([pos.get(n, 0) for n in gn])
    R_est = np.where(have[:, None, None], eR[idx] if len(en) else np.eye(3), np.eye(3))
    t_est = np.where(have[:, None], et[idx] if len(en) else 0.0, 0.0)
    rot, trans = relative_pose_errors(R_est, t_est, gR, gt_t)
    i, j = np.triu_indices(len(gn), 1)
    bad = ~(have[i] & have[j])
    rot[bad] = np.inf
    trans[bad] = np.inf
    err = np.maximum(rot, trans)
    out: dict[str, float] = {
        "num_images": float(len(gn)),
        "registration_rate": 100.0 * float(have.mean()) if len(gn) else 0.0,
        "num_pairs": float(err.size),
    }
    for tau in (5.0, 15.0):
        out[f"RRA@{tau:g}"] = 100.0 * float((rot < tau).mean())
        out[f"RTA@{tau:g}"] = 100.0 * float((trans < tau).mean())
    out["mAA@30"] = 100.0 * float(np.mean([(err < tau).mean() for tau in range(1, 31)]))
    for tau, auc in zip(thresholds, pose_auc(err, list(thresholds)), strict=True):
        out[f"AUC@{tau:g}"] = 100.0 * auc
    out["median_rot_err_deg"] = float(np.median(rot)) if rot.size else float("nan")
    out["median_trans_err_deg"] = float(np.median(trans)) if trans.size else float("nan")
    if have.sum() >= 3:
        c_gt = -np.einsum("nji,nj->ni", gR[have], gt_t[have])
        c_est = -np.einsum("nji,nj->ni", R_est[have], t_est[have])
        s, R, t = fit_similarity_batch(c_est[None], c_gt[None], np.ones((1, len(c_est))))
        s, R, t = float(s[0]), R[0], t[0]  # estimated centres onto GT (no error on degenerate input)
        aligned = s * c_est @ R.T + t
        extent = np.max(np.linalg.norm(c_gt - c_gt.mean(0), axis=1))
        d = np.linalg.norm(aligned - c_gt, axis=1)
        out["ATE"] = float(d.mean() / max(extent, 1e-300))
        out["ATE_max"] = float(d.max() / max(extent, 1e-300))
        # absolute rotation error after the alignment (degrees)
        rerr = rotation_angle_deg(R_est[have] @ R.T @ np.transpose(gR[have], (0, 2, 1)))
        out["rot_err_max_deg"] = float(rerr.max())
        out["rot_err_median_deg"] = float(np.median(rerr))
    if gf is not None and ef is not None and have.any():
        rel = np.abs(ef[idx[have]] / gf[have] - 1.0)
        out["focal_err_median"] = float(np.median(rel))
        out["focal_err_max"] = float(rel.max())
    return out
