"""Retrieval quality of the weight-free SIFT + ASMK similarity against ground-truth co-visibility.

Data: /work/shared/data sets `middlebury_templeRing` (47 images, 640×480, object on a ring) and
`sacre_coeur` (10 internet photos). SIFT (pycolmap, RootSIFT, ≤ 4096 per image, long side ≤ 1024)
is extracted once and cached in the temp folder (`sfm3r_bench_sift_<set>.npz`).

Ground-truth co-visibility (GT neighbours of image i, ranked):
- geometric (templeRing, whose GT has no points): the scene centre X0 is the least-squares point
  nearest to all optical axes. Images i, j are co-visible if the angle between their viewing
  directions is < 60° and X0 lies in front of both cameras and inside both images. GT neighbours are
  ranked by that angle (smallest first). 60°: on templeRing's ring the object's visible side changes
  slowly, and SIFT still matches views ~45° apart; beyond 60° the views show different faces.
- shared points (sacre_coeur, whose full COLMAP model has tracks: `gt_full_colmap_model`): co-visible
  if they share ≥ 15 GT 3D points; ranked by the number of shared points.

Metrics, per query image i, averaged over images (self excluded everywhere; k clipped to N−1):
- precision@k = |R_k(i) ∩ G(i)| / k: fraction of the top-k retrieved images that are co-visible;
- recall@k   = |R_k(i) ∩ T_k(i)| / |T_k(i)|: of the k GT-nearest co-visible images T_k(i) (all of
  G(i) when it has fewer than k), the fraction found among the top-k retrieved R_k(i).
- graph recall: fraction of the GT pairs {i, T_10(i)} contained in the `retrieval-Na-k` graph
  (Na = min(20, N), k = min(10, N−1)), next to its size relative to the complete graph.
"Complete" (exhaustive matching) has recall 1 and precision = the co-visible fraction of all pairs;
"random" is the expected precision of a random top-k.

Run (from the repo root): PYTHONPATH=src python benchmarks/retrieval_recall.py [--sizes 256 512 ...]
Writes benchmarks/results/retrieval_recall.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pycolmap
from PIL import Image

from sfm3r.sfm.graph import retrieval
from sfm3r.sfm.graph import scene_graph

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if not DATA.is_dir():
    DATA = Path("/work/shared/data")
RESULTS = Path(__file__).resolve().parent / "results"
SETS = ("middlebury_templeRing", "sacre_coeur")
MAX_SIZE, MAX_FEATURES = 1024, 4096
ANGLE_DEG, MIN_SHARED_POINTS = 60.0, 15
KS = (5, 10)


def extract_sift(image_dir: Path, names: list[str]) -> list[np.ndarray]:
    """RootSIFT descriptors per image, (n_i, 128) float32 unit norm, cached in the temp folder."""
    cache = Path(tempfile.gettempdir()) / f"sfm3r_bench_sift_{image_dir.parent.name}_{MAX_SIZE}_{MAX_FEATURES}.npz"
    if cache.exists():
        z = np.load(cache)
        if all(n in z for n in names):
            return [z[n] for n in names]
    pycolmap.logging.minloglevel = 2
    opts = pycolmap.FeatureExtractionOptions()
    opts.sift.max_num_features = MAX_FEATURES
    opts.num_threads = 2
    extractor = pycolmap.FeatureExtractor.create(opts, device=pycolmap.Device.cpu)
    out = {}
    for n in names:
        img = Image.open(image_dir / n).convert("L")
        s = MAX_SIZE / max(img.size)
        if s < 1:
            img = img.resize((round(img.width * s), round(img.height * s)), Image.Resampling.LANCZOS)
        _, desc = extractor.extract(pycolmap.Bitmap.from_array(np.asarray(img)))
        d = desc.data[:MAX_FEATURES].astype(np.float32) / 512.0  # pycolmap: uint8 = round(512 · RootSIFT)
        out[n] = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
    np.savez(cache, **out)
    return [out[n] for n in names]


def gt_geometric(rec: pycolmap.Reconstruction, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(covisible (N, N) bool, rank key (N, N) float: smaller = nearer) from viewing angles."""
    by_name = {im.name: im for im in rec.images.values()}
    ims = [by_name[n] for n in names]
    R = np.stack([im.cam_from_world().rotation.matrix() for im in ims])
    t = np.stack([im.cam_from_world().translation for im in ims])
    centres = -np.einsum("nji,nj->ni", R, t)
    dirs = R[:, 2, :]  # camera z axis in world coordinates
    # least-squares point nearest to all optical axes: Σ (I − d dᵀ)(x − c) = 0
    proj = np.eye(3)[None] - dirs[:, :, None] * dirs[:, None, :]
    x0 = np.linalg.solve(proj.sum(0), np.einsum("nij,nj->i", proj, centres))
    inside = np.zeros(len(ims), bool)
    for i, im in enumerate(ims):
        cam = rec.cameras[im.camera_id]
        xc = R[i] @ x0 + t[i]
        if xc[2] > 0:
            uv = cam.img_from_cam(xc[None, :])[0]
            inside[i] = 0 <= uv[0] < cam.width and 0 <= uv[1] < cam.height
    angle = np.degrees(np.arccos(np.clip(dirs @ dirs.T, -1, 1)))
    covis = (angle < ANGLE_DEG) & inside[:, None] & inside[None, :]
    np.fill_diagonal(covis, False)
    return covis, angle


def gt_shared_points(rec: pycolmap.Reconstruction, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(covisible (N, N) bool, rank key (N, N)) from GT tracks: ≥ MIN_SHARED_POINTS shared points."""
    index = {im.image_id: names.index(im.name) for im in rec.images.values() if im.name in names}
    shared = np.zeros((len(names), len(names)), np.int64)
    for p in rec.points3D.values():
        ids = sorted({index[e.image_id] for e in p.track.elements if e.image_id in index})
        for a in ids:
            for b in ids:
                shared[a, b] += a != b
    covis = shared >= MIN_SHARED_POINTS
    return covis, -shared.astype(np.float64)


def evaluate(sim: np.ndarray, covis: np.ndarray, key: np.ndarray, k: int) -> dict:
    n = len(sim)
    k = min(k, n - 1)
    s = 0.5 * (sim + sim.T)
    np.fill_diagonal(s, -np.inf)
    prec, rec = [], []
    for i in range(n):
        top = np.argsort(-s[i], kind="stable")[:k]
        gt = np.flatnonzero(covis[i])
        if len(gt) == 0:
            continue
        nearest = gt[np.argsort(key[i, gt], kind="stable")[:k]]
        prec.append(np.isin(top, gt).mean())
        rec.append(np.isin(nearest, top).mean())
    return {"k": k, "precision": float(np.mean(prec)), "recall": float(np.mean(rec))}


def graph_recall(names: list[str], sim: np.ndarray, covis: np.ndarray, key: np.ndarray) -> dict:
    n = len(names)
    na, kk = min(20, n), min(10, n - 1)
    pairs, report = scene_graph.build_scene_graph(names, f"retrieval-{na}-{kk}", sim)
    got = {(names.index(a), names.index(b)) for a, b in pairs.pairs}
    want = set()
    for i in range(n):
        gt = np.flatnonzero(covis[i])
        for j in gt[np.argsort(key[i, gt], kind="stable")[:10]]:
            want.add((min(i, j), max(i, j)))
    return {
        "graph": f"retrieval-{na}-{kk}",
        "pairs": len(pairs),
        "complete_pairs": n * (n - 1) // 2,
        "gt_top10_pairs_recall": len(got & want) / max(len(want), 1),
        "covisible_pairs_precision": float(np.mean([covis[i, j] for i, j in got])) if got else 0.0,
    }


def run_set(name: str, sizes: list[int | None], kmeans: list[tuple[int, int]] = ()) -> list[dict]:
    root = DATA / name
    names = sorted(p.name for p in (root / "images").iterdir())
    t0 = time.perf_counter()
    desc = extract_sift(root / "images", names)
    t_sift = time.perf_counter() - t0
    full = root / "gt_full_colmap_model"
    if full.is_dir() and pycolmap.Reconstruction(full).num_points3D() > 0:
        covis, key = gt_shared_points(pycolmap.Reconstruction(full), names)
        gt_kind = f"shared GT points >= {MIN_SHARED_POINTS}"
    else:
        covis, key = gt_geometric(pycolmap.Reconstruction(root / "gt"), names)
        gt_kind = f"view angle < {ANGLE_DEG:.0f} deg, centre in both frustums"
    n = len(names)
    density = covis.sum() / (n * (n - 1))
    rows = []
    default = retrieval.CodebookConf()
    variants = [(size, default.points_per_centroid, default.niter) for size in sizes]
    variants += [(None, ppc, niter) for ppc, niter in kmeans]
    for size, ppc, niter in variants:
        t0 = time.perf_counter()
        codebook_conf = retrieval.CodebookConf(size=size, points_per_centroid=ppc, niter=niter)
        res = retrieval.sift_retrieval(desc, codebook_conf=codebook_conf)
        dt = time.perf_counter() - t0
        row = {
            "set": name,
            "images": n,
            "descriptors_per_image": float(np.mean([len(d) for d in desc])),
            "gt": gt_kind,
            "covisible_fraction": float(density),
            "codebook": int(res.codebook.shape[0]),
            "codebook_rule": size is None,
            "kmeans_points_per_centroid": ppc,
            "kmeans_niter": niter,
            "retrieval_s": round(dt, 2),
            "sift_s": round(t_sift, 2),
        }
        for k in KS:
            m = evaluate(res.similarity, covis, key, k)
            row[f"precision@{k}"] = round(m["precision"], 4)
            row[f"recall@{k}"] = round(m["recall"], 4)
            row[f"random_precision@{k}"] = round(float(density), 4)
        row["complete"] = {"precision": round(float(density), 4), "recall": 1.0, "pairs": n * (n - 1) // 2}
        row["retrieval_graph"] = graph_recall(names, res.similarity, covis, key)
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", nargs="*", type=int, default=[], help="extra codebook sizes to compare")
    ap.add_argument("--sets", nargs="*", default=list(SETS))
    ap.add_argument("--kmeans", nargs="*", default=[], metavar="PPC:NITER",
                    help="extra k-means settings to compare (points per centroid : iterations), e.g. 64:10")
    args = ap.parse_args()
    sizes: list[int | None] = [None, *args.sizes]
    kmeans = [tuple(int(v) for v in text.split(":")) for text in args.kmeans]
    rows = [r for s in args.sets for r in run_set(s, sizes, kmeans)]
    head = f"{'set':24s} {'N':>3s} {'K':>5s} {'ppc:it':>8s} {'P@5':>6s} {'R@5':>6s} {'P@10':>6s} {'R@10':>6s} {'rand':>5s} {'graph':>14s} {'pairs':>9s} {'gR':>5s} {'time':>6s}"
    print(head)
    for r in rows:
        g = r["retrieval_graph"]
        print(
            f"{r['set']:24s} {r['images']:3d} {r['codebook']:5d}{'*' if r['codebook_rule'] else ' '}"
            f"{r['kmeans_points_per_centroid']:>4d}:{r['kmeans_niter']:<3d}"
            f"{r['precision@5']:6.3f} {r['recall@5']:6.3f} {r['precision@10']:6.3f} {r['recall@10']:6.3f} "
            f"{r['covisible_fraction']:5.2f} {g['graph']:>14s} {g['pairs']:4d}/{g['complete_pairs']:<4d} "
            f"{g['gt_top10_pairs_recall']:5.3f} {r['retrieval_s']:5.1f}s"
        )
    print("K* = codebook size from retrieval.codebook_size_for; rand = precision of a random top-k;")
    print("complete matching: recall 1, precision = rand; gR = GT top-10 pairs kept by the retrieval graph")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {
        "benchmark": "retrieval_recall",
        "machine": platform.platform(),
        "command": "PYTHONPATH=src python benchmarks/retrieval_recall.py " + " ".join(map(str, args.sizes)),
        "rows": rows,
    }
    (RESULTS / "retrieval_recall.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
