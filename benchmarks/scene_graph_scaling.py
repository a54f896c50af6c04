"""Time to build the retrieval scene graph (codebook + ASMK similarity + graph) for 100/300/1000 images.

Synthetic images: 128-d descriptors, images grouped in "places" of 10 that share a pool of 400 base
descriptors (each image draws its descriptors from its place's pool, + Gaussian noise), so the
retrieval graph is meaningful and its precision can be checked (fraction of kNN pairs within a place).

Stages timed separately: `train_codebook` (faiss k-means, 10 iterations on ≤ 64 descriptors per word),
`asmk_similarity` (word assignment, aggregation, all-to-all scoring), `build_scene_graph`
(`retrieval-20-10` + connectivity check). Defaults are reduced for the shared 2-core machine and
stated in the output: 500 descriptors per image (realistic SIFT: 1000–4000) and a fixed codebook of
1024 words, so that only N changes between rows (`--codebook rule` uses `codebook_size_for`).
Costs: training O(K²·D) (fixed here), assignment O(N·n·K·D) (linear in N), scoring O(N²·n²/K)
in principle (pairs of images sharing a word) but with a small constant, graph O(N²) on the matrix.

Run: PYTHONPATH=src python benchmarks/scene_graph_scaling.py [--sizes 100 300 1000] [--descriptors 500]
Writes benchmarks/results/scene_graph_scaling.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from sfm3r.sfm.graph import retrieval
from sfm3r.sfm.graph import scene_graph

RESULTS = Path(__file__).resolve().parent / "results"
PLACE_SIZE, POOL, DIM = 10, 400, 128


def synthetic(n_images: int, n_desc: int, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    n_places = (n_images + PLACE_SIZE - 1) // PLACE_SIZE
    feats, place = [], np.arange(n_images) // PLACE_SIZE
    pools = rng.standard_normal((n_places, POOL, DIM), dtype=np.float32)
    for i in range(n_images):
        v = pools[place[i], rng.integers(0, POOL, n_desc)] + 0.3 * rng.standard_normal((n_desc, DIM), dtype=np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        feats.append(v)
    return feats, place


def run(n_images: int, n_desc: int, codebook: str) -> dict:
    feats, place = synthetic(n_images, n_desc)
    total = n_images * n_desc
    size = retrieval.codebook_size_for(total) if codebook == "rule" else int(codebook)
    t0 = time.perf_counter()
    cb = retrieval.train_codebook(feats, retrieval.CodebookConf(size=size))
    t1 = time.perf_counter()
    sim = retrieval.asmk_similarity(feats, cb)
    t2 = time.perf_counter()
    names = [f"img_{i:05d}.jpg" for i in range(n_images)]
    pairs, report = scene_graph.build_scene_graph(names, "retrieval-20-10", sim)
    t3 = time.perf_counter()
    index = {n: i for i, n in enumerate(names)}
    knn = [(index[a], index[b]) for (a, b), s in zip(pairs.pairs, pairs.sources) if s == "knn"]
    knn_precision = float(np.mean([place[i] == place[j] for i, j in knn])) if knn else float("nan")
    return {
        "images": n_images,
        "descriptors_per_image": n_desc,
        "codebook": size,
        "codebook_s": round(t1 - t0, 2),
        "asmk_s": round(t2 - t1, 2),
        "graph_s": round(t3 - t2, 3),
        "total_s": round(t3 - t0, 2),
        "asmk_ms_per_image": round(1000 * (t2 - t1) / n_images, 1),
        "pairs": len(pairs),
        "components_before": report.components_before,
        "knn_pairs_same_place": round(knn_precision, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", nargs="*", type=int, default=[100, 300, 1000])
    ap.add_argument("--descriptors", type=int, default=500, help="descriptors per image")
    ap.add_argument("--codebook", default="1024", help="codebook size, or 'rule' for codebook_size_for")
    args = ap.parse_args()
    rows = []
    print(f"{'N':>5s} {'desc':>5s} {'K':>5s} {'codebook':>9s} {'asmk':>8s} {'ms/img':>7s} {'graph':>7s} {'total':>8s} {'pairs':>6s} {'kNN ok':>6s}")
    for n in args.sizes:
        r = run(n, args.descriptors, args.codebook)
        rows.append(r)
        print(
            f"{r['images']:5d} {r['descriptors_per_image']:5d} {r['codebook']:5d} {r['codebook_s']:8.1f}s "
            f"{r['asmk_s']:7.1f}s {r['asmk_ms_per_image']:7.1f} {r['graph_s']:6.2f}s {r['total_s']:7.1f}s "
            f"{r['pairs']:6d} {r['knn_pairs_same_place']:6.3f}",
            flush=True,
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "scene_graph_scaling.json"
    command = (
        f"PYTHONPATH=src python benchmarks/scene_graph_scaling.py --sizes {' '.join(map(str, args.sizes))} "
        f"--descriptors {args.descriptors} --codebook {args.codebook}"
    )
    runs = json.loads(path.read_text()).get("runs", []) if path.exists() else []
    runs = [r for r in runs if r.get("command") != command]  # one entry per configuration
    runs.append({"command": command, "machine": platform.platform(), "rows": rows})
    path.write_text(json.dumps({"benchmark": "scene_graph_scaling", "runs": runs}, indent=2))

if __name__ == "__main__":
    main()
