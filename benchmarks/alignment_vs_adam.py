"""Our alignment optimiser vs the reference MASt3R-SfM schedule (600 Adam steps), on the same inputs.

The same synthetic scene (``tests/sfm/alignment_synthetic.py``: N cameras on an arc (default 180°; ``--arc 360`` for
a closed ring), sliding-window pairs, 150 matches per pair, 0.5 px
noise, 1 % depth noise, 20 % outlier matches, ±5 % backend focal error) is verified and turned into
canonical anchors once (``verify_edges`` + ``build_canonical``, shared by both, timed separately). Then:

- ``sfm3r``: our default path (AlignConf()): pose initialisation on a maximum spanning tree with rotation
  averaging, robust Levenberg–Marquardt on the 3D matching objective, robust LM on the 2D reprojection
  objective (what ``align_scene`` runs after the canonical step);
- ``reference``: a re-implementation, written for this benchmark from SFM_ALGORITHM.md §6–7, of the
  official sparse global alignment: kinematic tree (the reference's ``mst`` mode on match counts, root at
  the tree centre), per-image quaternion + translation relative to the parent's pivot frame (identity
  init), log-scale, log-focal, normalised principal point and anchor depths ("add" depth mode, scale
  gauge g = 1/min s, pivot at depth z = s·m·f/f_base); 300 Adam steps at lr 0.07 on the
  confidence-weighted ρ₁.₅ 3D matching loss (poses and scales only), then a fresh Adam for 300 steps at
  lr 0.01 on the ρ₀.₅ symmetric 2D reprojection loss (also focals, principal points, depths); betas
  (0.9, 0.9), cosine schedule to 0, quaternions renormalised after each step. Unlike the official code it
  is vectorised (one loss term per match, no Python loop over pairs), so its time is a lower bound.

Both end with cameras (R, C, f, pp) and world-unit anchor depths; the common yardstick is the symmetric
reprojection error of the true (non-outlier) matches, each anchor's 3D point (from its own image's depth)
projected into the other image, plus the pose accuracy against the GT (same evaluation code).

    PYTHONPATH=src python benchmarks/alignment_vs_adam.py [--sizes 10 20] [--window 4] [--arc 180] [--threads 2]

Prints a table and writes benchmarks/results/alignment_vs_adam.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import platform
import time
from pathlib import Path
from types import SimpleNamespace

import networkx as nx
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "sfm"))  # alignment_synthetic
from alignment_synthetic import make_pair_results, make_scene, neighbour_pairs  # noqa: E402

from sfm3r.sfm.align.alignment import AlignConf, _initial_intrinsics  # the same initial intrinsics as align_scene
from sfm3r.sfm.align.canonical import CanonicalData, build_canonical
from sfm3r.sfm.align.coarse_alignment import anchor_rays, coarse_align
from sfm3r.sfm.align.edge_verification import verify_edges
from sfm3r.sfm.evaluation import evaluate_poses
from sfm3r.sfm.align.pose_init import initial_poses
from sfm3r.sfm.align.reprojection_refinement import refine_reprojection
from sfm3r.types import Camera

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


# ------------------------------------------------------------------------------- reference schedule
def gamma_loss(r: torch.Tensor, gamma: float) -> torch.Tensor:
    """ρ_γ(r) = (r + o)^γ − o^γ with o = (1/γ)^(1/(γ−1)), so that ρ'(0) = 1."""
    o = (1.0 / gamma) ** (1.0 / (gamma - 1.0))
    return (r + o) ** gamma - o**gamma


def quat_to_rotmat(q: torch.Tensor) -> torch.Tensor:
    """(N, 4) unit quaternions (x, y, z, w) -> (N, 3, 3)."""
    x, y, z, w = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
    ], -1).reshape(*q.shape[:-1], 3, 3)  # fmt: skip


def kinematic_tree(canon: CanonicalData) -> tuple[int, list[tuple[int, int]]]:
    """The reference's ``mst`` mode: maximum spanning tree of match counts; root = approximate tree centre
    (double BFS sweep); edges (parent, child) in BFS order from the root."""
    N = len(canon.image_names)
    counts = np.zeros((N, N))
    np.add.at(counts, (canon.edge_i[canon.match_edge], canon.edge_j[canon.match_edge]), 1)
    g = nx.Graph()
    g.add_nodes_from(range(N))
    for i, j in zip(*np.nonzero(counts)):
        w = counts[i, j] + counts[j, i]
        g.add_edge(int(i), int(j), weight=w)
    tree = nx.maximum_spanning_tree(g)

    def bfs_order(start):
        return [start] + [v for _, v in nx.bfs_edges(tree, start)]

    a = bfs_order(0)[-1]
    order_a = bfs_order(a)
    b = order_a[-1]
    order_b = bfs_order(b)
    rank_a = {v: k for k, v in enumerate(order_a)}
    rank_b = {v: k for k, v in enumerate(order_b)}
    root = max(range(N), key=lambda v: min(rank_a[v], rank_b[v]))
    return root, list(nx.bfs_edges(tree, root))


def reference_align(canon: CanonicalData, focal0: np.ndarray, pp0: np.ndarray, sizes: np.ndarray,
                    niter1: int = 300, niter2: int = 300, lr1: float = 0.07, lr2: float = 0.01) -> dict:
    """The reference schedule on the canonical anchors. sizes: (N, 2) image (W, H). Returns cameras and
    world-unit anchor depths plus the loss histories."""
    dt = torch.float64
    N = len(canon.image_names)
    root, edges = kinematic_tree(canon)
    WH = torch.as_tensor(sizes, dtype=dt)
    diag = torch.linalg.norm(WH, dim=1)
    f_base = torch.as_tensor(focal0, dtype=dt)
    img = torch.as_tensor(canon.anchor_image)
    xy = torch.as_tensor(canon.anchor_xy, dtype=dt)
    D0 = torch.as_tensor(canon.anchor_depth, dtype=dt)  # canonical, median 1 per image -> m_i = 1
    m = torch.ones(N, dtype=dt)
    ma, mb = torch.as_tensor(canon.match_a), torch.as_tensor(canon.match_b)
    conf = torch.as_tensor(canon.match_conf, dtype=dt)

    quat = torch.zeros(N, 4, dtype=dt)
    quat[:, 3] = 1.0
    params = {
        "quat": quat.requires_grad_(),
        "trans": torch.zeros(N, 3, dtype=dt, requires_grad=True),
        "log_scale": torch.zeros(N, dtype=dt, requires_grad=True),
        "log_focal": torch.log(f_base).clone().requires_grad_(),
        "pp": (torch.as_tensor(pp0, dtype=dt) / WH).clone().requires_grad_(),
        "depth": D0.clone().requires_grad_(),
    }

    def cameras():
        p = params
        f = torch.clamp(torch.exp(p["log_focal"]), 0.25 * diag, 10 * diag)
        c = p["pp"] * WH
        s = torch.exp(p["log_scale"])
        g = 1.0 / s.min()
        z = s * m * f / f_base
        Rrel = quat_to_rotmat(p["quat"])
        R = [None] * N
        T = [None] * N
        R[root], T[root] = Rrel[root], p["trans"][root]
        for a, b in edges:  # T_b = T_a · [R_b | t_b]  (sequential along the tree, as the reference)
            R[b] = R[a] @ Rrel[b]
            T[b] = R[a] @ p["trans"][b] + T[a]
        R = torch.stack(R)  # cam-to-world rotations
        T = torch.stack(T)
        delta = z[:, None] * torch.stack([(WH[:, 0] / 2 - c[:, 0]) / f, (WH[:, 1] / 2 - c[:, 1]) / f,
                                          torch.ones_like(f)], 1)
        C = g * (T - (R @ delta[..., None])[..., 0])
        depth = g * (z[img] + (p["depth"] - 1.0) * (m * s)[img])
        return R, C, f, c, depth

    def anchor_points(R, C, f, c, depth):
        ray = torch.cat([(xy - c[img]) / f[img, None], torch.ones_like(depth)[:, None]], 1)
        return (R[img] @ (depth[:, None] * ray)[..., None])[..., 0] + C[img]

    def loss3d():
        X = anchor_points(*cameras())
        r = torch.linalg.norm(X[ma] - X[mb], dim=1)
        return (conf * gamma_loss(r, 1.5)).sum() / conf.sum()

    def project(R, C, f, c, X, obs_img):
        y = (R[obs_img].transpose(1, 2) @ (X - C[obs_img])[..., None])[..., 0]
        z = y[:, 2].clamp_min(1e-3)
        uv = f[obs_img, None] * y[:, :2] / z[:, None] + c[obs_img]
        return uv.clamp(-1000, 2000)

    def loss2d():
        R, C, f, c, depth = cameras()
        X = anchor_points(R, C, f, c, depth)
        ri = torch.linalg.norm(project(R, C, f, c, X[mb], img[ma]) - xy[ma], dim=1)
        rj = torch.linalg.norm(project(R, C, f, c, X[ma], img[mb]) - xy[mb], dim=1)
        return (conf * (gamma_loss(ri, 0.5) + gamma_loss(rj, 0.5))).sum() / (2 * conf.sum())

    def run(names, loss_fn, lr, niter):
        opt = torch.optim.Adam([params[n] for n in names], lr=lr, betas=(0.9, 0.9), weight_decay=0)
        history = []
        for t in range(niter):
            for group in opt.param_groups:
                group["lr"] = lr * (1 + math.cos(math.pi * t / niter)) / 2  # cosine from lr to 0
            opt.zero_grad()
            loss = loss_fn()
            if not torch.isfinite(loss):
                break
            loss.backward()
            opt.step()
            with torch.no_grad():
                params["quat"] /= params["quat"].norm(dim=1, keepdim=True)
            history.append(loss.item())
        return history

    t0 = time.perf_counter()
    h1 = run(["quat", "trans", "log_scale"], loss3d, lr1, niter1)
    t1 = time.perf_counter()
    h2 = run(list(params), loss2d, lr2, niter2) if niter2 else []
    t2 = time.perf_counter()
    with torch.no_grad():
        R, C, f, c, depth = cameras()
    return {"rotations": R.transpose(1, 2).numpy(), "centres": C.numpy(), "focal": f.numpy(), "pp": c.numpy(),
            "depths": depth.numpy(), "t_coarse": t1 - t0, "t_refine": t2 - t1, "loss3d": h1[-1:], "loss2d": h2[-1:]}


# ------------------------------------------------------------------------------------ yardsticks
def reprojection_errors(canon: CanonicalData, R, C, focal, pp, depth, mask) -> np.ndarray:
    """Symmetric reprojection errors (px) of the matches in `mask`: each anchor's 3D point (own depth) projected
    into the other image. R: (N, 3, 3) cam_from_world; returns (2·K,)."""
    img = canon.anchor_image
    X = np.einsum("nji,nj->ni", R[img], anchor_rays(canon, focal, pp) * depth[:, None]) + C[img]
    out = []
    for src, obs in ((canon.match_b[mask], canon.match_a[mask]), (canon.match_a[mask], canon.match_b[mask])):
        o = img[obs]
        y = np.einsum("nij,nj->ni", R[o], X[src] - C[o])
        uv = focal[o, None] * y[:, :2] / np.maximum(y[:, 2:], 1e-9) + pp[o]
        out.append(np.linalg.norm(uv - canon.anchor_xy[obs], axis=1))
    return np.concatenate(out)


def pose_metrics(names, R, C, focal, pp, sizes, gt) -> dict:
    t = -np.einsum("nij,nj->ni", R, C)
    cams = tuple(Camera(int(w), int(h), float(f), float(f), float(p[0]), float(p[1]))
                 for (w, h), f, p in zip(sizes, focal, pp))
    est = SimpleNamespace(image_names=names, rotations=R, translations=t, cameras=cams,
                          camera_of_image=np.arange(len(names)))
    m = evaluate_poses(est, gt)
    return {k: m.get(k) for k in ("AUC@3", "AUC@5", "rot_err_max_deg", "ATE", "focal_err_median")}


def run_size(n: int, window: int, arc_deg: float, max_matches: int, seed: int = 0) -> list[dict]:
    ring = arc_deg >= 360.0
    scene = make_scene(n, num_points=max(2000, 30 * n), radius=6.0, arc_deg=arc_deg, seed=seed)
    pairs = make_pair_results(scene, neighbour_pairs(n, window, cyclic=ring), backend_focal_error=0.05,
                              max_matches=max_matches, seed=seed + 1)
    conf = AlignConf()
    names = [im.name for im in scene.images]
    t0 = time.perf_counter()
    graph = verify_edges(pairs, names, conf.verify)
    images = [im for im in scene.images if im.name in set(graph.component)]
    canon = build_canonical(pairs, graph.edges, images)
    focal0, pp0, fixed, _ = _initial_intrinsics(images, canon, {}, conf)
    t_shared = time.perf_counter() - t0
    sizes = np.array([(im.width, im.height) for im in images], np.float64)
    num_pts = scene.points.shape[0]
    ida, idb = canon.anchor_id[canon.match_a], canon.anchor_id[canon.match_b]
    true = (ida == idb) & (ida < num_pts)
    gt_index = {nm: k for k, nm in enumerate(names)}
    sel = [gt_index[im.name] for im in images]
    gt = SimpleNamespace(image_names=tuple(im.name for im in images), rotations=scene.rotations[sel],
                         translations=scene.translations[sel], cameras=tuple(scene.cameras[k] for k in sel),
                         camera_of_image=np.arange(len(sel)))
    base = {"images": n, "arc_deg": arc_deg, "pairs": len(pairs), "matches": int(canon.match_a.size), "true_matches": int(true.sum()),
            "t_shared_verify_canonical": t_shared}
    rows = []

    # ours: the steps align_scene runs after the canonical data (default AlignConf)
    t0 = time.perf_counter()
    init = initial_poses(canon, graph.edges, average_rotations=conf.rotation_averaging)
    t1 = time.perf_counter()
    res = coarse_align(canon, init.rotations, init.centres, init.scales, focal0, pp0, init.root, conf.coarse)
    t2 = time.perf_counter()
    depth = canon.anchor_depth * res.scales[canon.anchor_image]
    res2 = refine_reprojection(canon, res.rotations, res.centres, depth, focal0, pp0, res.inlier_matches, fixed,
                               init.root, conf.reprojection)
    t3 = time.perf_counter()
    err = reprojection_errors(canon, res2.rotations, res2.centres, res2.focal, pp0, res2.depths, true)
    rows.append({**base, "method": "sfm3r (init + LM 3D + LM 2D)", "t_init": t1 - t0, "t_coarse": t2 - t1,
                 "t_refine": t3 - t2, "t_total": t3 - t0, "iters_coarse": len(res.cost_history) - 1,
                 "iters_refine": len(res2.cost_history) - 1, "reproj_median_px": float(np.median(err)),
                 "reproj_mean_px": float(err.mean()),
                 **pose_metrics(gt.image_names, res2.rotations, res2.centres, res2.focal, pp0, sizes, gt)})

    # reference schedule
    t0 = time.perf_counter()
    ref = reference_align(canon, focal0, pp0, sizes)
    t1 = time.perf_counter()
    err = reprojection_errors(canon, ref["rotations"], ref["centres"], ref["focal"], ref["pp"], ref["depths"], true)
    rows.append({**base, "method": "reference (Adam 300@0.07 3D + 300@0.01 2D)", "t_init": 0.0,
                 "t_coarse": ref["t_coarse"], "t_refine": ref["t_refine"], "t_total": t1 - t0,
                 "iters_coarse": 300, "iters_refine": 300, "reproj_median_px": float(np.median(err)),
                 "reproj_mean_px": float(err.mean()),
                 **pose_metrics(gt.image_names, ref["rotations"], ref["centres"], ref["focal"], ref["pp"], sizes, gt)})
    rows[0]["speedup_vs_reference"] = rows[1]["t_total"] / rows[0]["t_total"]
    return rows


def _table(rows: list[dict]) -> str:
    head = ("| N | arc ° | pairs | true matches | method | time s (init/3D/2D) | total s | speed-up | reproj median px | "
            "reproj mean px | AUC@3 | max rot err ° | ATE | focal err |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        sp = f"{r['speedup_vs_reference']:.1f}×" if "speedup_vs_reference" in r else "1×"
        lines.append(
            f"| {r['images']} | {r['arc_deg']:.0f} | {r['pairs']} | {r['true_matches']} | {r['method']} | "
            f"{r['t_init']:.2f}/{r['t_coarse']:.2f}/{r['t_refine']:.2f} | {r['t_total']:.2f} | {sp} | "
            f"{r['reproj_median_px']:.3f} | {r['reproj_mean_px']:.3f} | {r['AUC@3']:.1f} | {r['rot_err_max_deg']:.3f} | "
            f"{r['ATE']:.5f} | {r['focal_err_median']:.4f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", nargs="+", type=int, default=[10, 20])
    ap.add_argument("--window", type=int, default=4)
    ap.add_argument("--arc", type=float, default=180.0, help="camera arc in degrees (360: a closed ring)")
    ap.add_argument("--max-matches", type=int, default=150, help="matches per synthetic pair")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--output", type=Path, default=RESULTS / "alignment_vs_adam.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for n in args.sizes:
        rows += run_size(n, args.window, args.arc, args.max_matches)
        print(f"N={n}: sfm3r {rows[-2]['t_total']:.2f} s, reference {rows[-1]['t_total']:.2f} s", flush=True)
    print(_table(rows))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    info = {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": args.threads,
            "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()]}
    args.output.write_text(json.dumps({"machine": info, "rows": rows}, indent=1, default=float))
    print(f"wrote {args.output}")
    return rows


if __name__ == "__main__":
    main()
