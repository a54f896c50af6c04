"""Benchmark: encode-once batched MASt3R pair inference vs the official per-pair cost structure.

Baseline ("per-pair"): for every pair, encode both images, then decode + heads in both directions
(MASt3R-SfM's symmetric inference). Ours ("encode-once"): :class:`PairInference` encodes every image once
and decodes pairs in batches. Both run the same network with the same random weights, each in a fresh
subprocess (so peak memory is per path), and the outputs are checked to agree within
``|a - b| <= 1e-4 (1 + |b|)`` (compared on every 4th pixel of every map to keep the files small).

Graph: N images, each linked to its ``--pairs-per-image`` nearest neighbours on a ring (retrieval-like),
so the pair count is about N * k / 2.

``--sfm-outputs`` adds a third path, "encode-once+skip": :class:`PairInference` with
``view2_points=False`` (the second head's DPT skipped; view 2 carries only desc/desc_conf, all that the
SfM pipeline reads), checked against the baseline on the outputs it still produces.

``--components`` instead times the pieces in one process, interleaved (robust to a loaded machine):
one image's encoder pass and one pair's decode + heads in both directions (one stacked call, as
:class:`PairInference` does) with and without the view-2 DPT, wall and process CPU time, then projects
pairs/s for graphs of 5 and 10 pairs per image (``--pairs-per-image`` too).

    PYTHONPATH=src python benchmarks/pair_inference.py                  # ViT-L, 512x384, 6 images, 15 pairs
    PYTHONPATH=src python benchmarks/pair_inference.py --images 4 --size 128x96   # a quick CPU run
    PYTHONPATH=src python benchmarks/pair_inference.py --device cuda --amp bf16 --images 20 --pairs-per-image 10
    PYTHONPATH=src python benchmarks/pair_inference.py --sfm-outputs --images 4 --pairs-per-image 2 --size 256x192
    PYTHONPATH=src python benchmarks/pair_inference.py --components --repeats 3   # ViT-L 512x384 pieces

Prints a table and writes ``benchmarks/results/pair_inference.json`` (``pair_inference_sfm.json`` with
``--sfm-outputs``, ``pair_inference_components.json`` with ``--components``).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sfm3r.sfm.mast3r.inference import PairInference
from sfm3r.sfm.mast3r.network import MAST3R_VITL_512_MODEL_STR, Mast3rConfig, Mast3rNetwork

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SKIPPED_VIEW2 = ("pts3d_in_other_view", "conf")  # view-2 outputs that view2_points=False leaves out
STRIDE = 4  # outputs are compared on every STRIDE-th pixel


def ring_pairs(n: int, k: int) -> list[tuple[int, int]]:
    """Each image linked to its k nearest ring neighbours (k/2 each side), unordered and de-duplicated."""
    pairs = set()
    for i in range(n):
        for d in range(1, k // 2 + 1 + (k % 2)):
            j = (i + d) % n
            if i != j:
                pairs.add((min(i, j), max(i, j)))
    return sorted(pairs)


def build_model(device: str, seed: int = 0) -> Mast3rNetwork:
    """The ViT-L 512 network with deterministic random weights (N(0, 0.02), zero biases, unit norms)."""
    with torch.device("meta"):
        model = Mast3rNetwork(Mast3rConfig.from_model_string(MAST3R_VITL_512_MODEL_STR))
    model = model.to_empty(device="cpu")
    model.reset_constants()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif p.ndim == 1:
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    return model.to(device).eval()


def make_images(n: int, H: int, W: int, seed: int = 1) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return {f"img{i:03d}": (torch.rand(1, 3, H, W, generator=gen) * 2 - 1, torch.tensor([[H, W]])) for i in range(n)}


def _sub(t: torch.Tensor) -> np.ndarray:
    return t[::STRIDE, ::STRIDE].float().cpu().numpy()


def worker(opts: dict) -> dict:
    """Run one path in this process; returns timings and peak memory, saves subsampled outputs."""
    torch.set_num_threads(opts["threads"]) if opts["threads"] else None
    device = opts["device"]
    model = build_model(device)
    images = make_images(opts["images"], *opts["size"])
    names = list(images)
    pairs = [(names[i], names[j]) for i, j in ring_pairs(opts["images"], opts["pairs_per_image"])]
    with torch.inference_mode():  # warm-up (first-call kernel selection), not timed
        img = next(iter(images.values()))[0].to(device)
        enc, pos = model.encode(img)
        model.decode_and_heads(enc, pos, tuple(img.shape[2:]), enc, pos, tuple(img.shape[2:]))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    outputs = {}
    start, cpu_start = time.perf_counter(), time.process_time()
    encodes = 0
    if opts["path"] in ("encode-once", "encode-once+skip"):
        engine = PairInference(model, device=device, batch_size=opts["batch_size"], amp=opts["amp"], output="torch",
                               view2_points=opts["path"] == "encode-once")
        engine.encode(images)
        for name_i, name_j, out_ij, out_ji in engine.run_pairs(pairs):
            for tag, out in (("ij", out_ij), ("ji", out_ji)):
                for view, res in out.items():
                    for key, t in res.items():
                        outputs[f"{name_i}|{name_j}|{tag}|{view}|{key}"] = _sub(t)
        encodes = engine.num_encoded
    else:  # the official cost structure: both images encoded for every pair, two decodes
        amp = opts["amp"] if device.startswith("cuda") else None
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
        for name_i, name_j in pairs:
            (img_i, _), (img_j, _) = images[name_i], images[name_j]
            with torch.inference_mode(), torch.autocast(device.split(":")[0], dtype=dtype, enabled=dtype is not None):
                shape_i, shape_j = tuple(img_i.shape[2:]), tuple(img_j.shape[2:])
                enc_i, pos_i = model.encode(img_i.to(device))
                enc_j, pos_j = model.encode(img_j.to(device))
                encodes += 2
                r = {"ij": model.decode_and_heads(enc_i, pos_i, shape_i, enc_j, pos_j, shape_j),
                     "ji": model.decode_and_heads(enc_j, pos_j, shape_j, enc_i, pos_i, shape_i)}
            for tag, (res1, res2) in r.items():
                res2 = {("pts3d_in_other_view" if k == "pts3d" else k): v for k, v in res2.items()}
                for view, res in (("view1", res1), ("view2", res2)):
                    for key, t in res.items():
                        outputs[f"{name_i}|{name_j}|{tag}|{view}|{key}"] = _sub(t[0])
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    np.savez(opts["out"], **outputs)
    return {
        "path": opts["path"],
        "pairs": len(pairs),
        "encoder_passes": encodes,
        "seconds": elapsed,
        "pairs_per_s": len(pairs) / elapsed,
        "cpu_seconds": cpu,
        "pairs_per_cpu_s": len(pairs) / cpu,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_cuda_mib": torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None,
    }


def _timed(fn, device: str) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of fn()."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu


def components(args, H: int, W: int) -> None:
    """Interleaved in-process timings of encode / decode+heads (with and without the view-2 DPT)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    model = build_model(device)
    img = torch.cat([t for t, _ in make_images(2, H, W).values()]).to(device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp) if device.startswith("cuda") else None
    ctx = lambda: torch.autocast(device.split(":")[0], dtype=dtype, enabled=dtype is not None)  # noqa: E731
    with torch.inference_mode(), ctx():
        enc, pos = model.encode(img)
        # one pair, both directions in one call (what PairInference does for equal shapes)
        e1, p1, e2, p2 = torch.cat([enc[:1], enc[1:]]), torch.cat([pos[:1], pos[1:]]), enc.flip(0), pos.flip(0)
        tasks = {
            "encode (1 image)": lambda: model.encode(img[:1]),
            "decode+heads, full (1 pair, 2 directions)":
                lambda: model.decode_and_heads(e1, p1, (H, W), e2, p2, (H, W)),
            "decode+heads, skip view-2 DPT (1 pair, 2 directions)":
                lambda: model.decode_and_heads(e1, p1, (H, W), e2, p2, (H, W), view2_points=False),
        }
        for fn in tasks.values():  # warm-up
            fn()
        times = {name: [] for name in tasks}
        for _ in range(args.repeats):
            for name, fn in tasks.items():
                times[name].append(_timed(fn, device))
    med = {name: (float(np.median([t[0] for t in ts])), float(np.median([t[1] for t in ts])))
           for name, ts in times.items()}
    enc_t, full_t, skip_t = med.values()
    print(f"MASt3R ViT-L components, {W}x{H}, device {device}, amp {args.amp}, torch threads "
          f"{torch.get_num_threads()}, median of {args.repeats} interleaved repeats")
    print(f"{'piece':<54} {'wall s':>8} {'CPU s':>8}   all wall s")
    for name, (wall, cpu) in med.items():
        print(f"{name:<54} {wall:>8.2f} {cpu:>8.2f}   {' '.join(f'{t[0]:.2f}' for t in times[name])}")
    print(f"view-2 DPT saves {1 - skip_t[0] / full_t[0]:.1%} of the decode wall time "
          f"({1 - skip_t[1] / full_t[1]:.1%} CPU)")
    projection = []
    print("projected pairs/s (wall; CPU-time based in brackets), per pair: baseline 2 enc + full decode,"
          " encode-once N/P enc + decode")
    print(f"{'P/N':>4} {'baseline':>16} {'encode-once':>16} {'+skip view-2 DPT':>18} {'once/base':>10} "
          f"{'skip/base':>10} {'skip/once':>10}")
    for k in sorted({5, 10, args.pairs_per_image}):
        row = {"pairs_per_image": k}
        for i, unit in enumerate(("wall", "cpu")):
            base = 2 * enc_t[i] + full_t[i]
            once = enc_t[i] / k + full_t[i]
            skip = enc_t[i] / k + skip_t[i]
            row[unit] = {"baseline": 1 / base, "encode-once": 1 / once, "encode-once+skip": 1 / skip}
        w, c = row["wall"], row["cpu"]
        print(f"{k:>4} {w['baseline']:>7.4f} [{c['baseline']:.4f}] {w['encode-once']:>7.4f} [{c['encode-once']:.4f}] "
              f"{w['encode-once+skip']:>8.4f} [{c['encode-once+skip']:.4f}] "
              f"{w['encode-once'] / w['baseline']:>9.2f}x {w['encode-once+skip'] / w['baseline']:>9.2f}x "
              f"{w['encode-once+skip'] / w['encode-once']:>9.2f}x")
        projection.append(row)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "pair_inference_components.json").write_text(json.dumps({
        "command": " ".join(sys.argv), "size_wh": [W, H], "device": device, "amp": args.amp,
        "threads": torch.get_num_threads(), "repeats": args.repeats,
        "median_seconds": {name: {"wall": m[0], "cpu": m[1]} for name, m in med.items()},
        "all_seconds": {name: [{"wall": t[0], "cpu": t[1]} for t in ts] for name, ts in times.items()},
        "projection": projection, "torch": torch.__version__,
    }, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--pairs-per-image", type=int, default=5)
    parser.add_argument("--size", default="512x384", help="network input WxH (multiples of 16)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=2, help="pairs per decoder call (encode-once path)")
    parser.add_argument("--amp", choices=["bf16", "fp16"], default=None, help="CUDA autocast (both paths)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per worker (0: torch default)")
    parser.add_argument("--sfm-outputs", action="store_true",
                        help="also run encode-once with view2_points=False (only the outputs SfM reads)")
    parser.add_argument("--components", action="store_true",
                        help="time encode / decode with and without the view-2 DPT in one process, interleaved")
    parser.add_argument("--repeats", type=int, default=3, help="repeats per piece with --components")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        opts = json.loads(args.worker)
        print(json.dumps(worker(opts)))
        return

    W, H = (int(v) for v in args.size.lower().split("x"))
    if args.components:
        components(args, H, W)
        return
    paths = ("per-pair", "encode-once", "encode-once+skip") if args.sfm_outputs else ("per-pair", "encode-once")
    rows = []
    worst = {}
    with tempfile.TemporaryDirectory() as tmp:
        for path in paths:
            opts = dict(path=path, images=args.images, pairs_per_image=args.pairs_per_image, size=(H, W),
                        device=args.device, batch_size=args.batch_size, amp=args.amp, threads=args.threads,
                        out=str(Path(tmp) / f"{path}.npz"))
            proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(opts)],
                                  capture_output=True, text=True, check=False)
            if proc.returncode:
                sys.exit(f"{path} worker failed:\n{proc.stderr}")
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        b = np.load(Path(tmp) / "per-pair.npz")
        for path in paths[1:]:
            a = np.load(Path(tmp) / f"{path}.npz")
            expected = sorted(b.files)
            if path == "encode-once+skip":  # the view-2 points and confidence are left out, nothing else
                expected = [k for k in expected if not (k.split("|")[3] == "view2" and k.split("|")[4] in SKIPPED_VIEW2)]
            assert sorted(a.files) == expected, f"{path} produced a different output set than expected"
            worst[path] = max(float((np.abs(a[k].astype(np.float64) - b[k]) / (1 + np.abs(b[k]))).max())
                              for k in a.files)
    tol = 1e-4 if args.amp is None else 5e-2
    base = rows[0]
    for r in rows:
        r["speedup"] = r["pairs_per_s"] / base["pairs_per_s"]
        r["cpu_speedup"] = r["pairs_per_cpu_s"] / base["pairs_per_cpu_s"]

    print(f"MASt3R ViT-L pair inference, {W}x{H}, {args.images} images, {rows[0]['pairs']} pairs, "
          f"device {args.device}, amp {args.amp}, torch threads {args.threads or torch.get_num_threads()}")
    print(f"{'path':<17} {'encoder passes':>14} {'seconds':>9} {'CPU s':>8} {'pairs/s':>9} {'speed-up':>9} "
          f"{'CPU speed-up':>12} {'peak RSS MiB':>13} {'peak CUDA MiB':>14}")
    for r in rows:
        cuda = f"{r['peak_cuda_mib']:.0f}" if r["peak_cuda_mib"] is not None else "-"
        print(f"{r['path']:<17} {r['encoder_passes']:>14} {r['seconds']:>9.1f} {r['cpu_seconds']:>8.1f} "
              f"{r['pairs_per_s']:>9.4f} {r['speedup']:>8.2f}x {r['cpu_speedup']:>11.2f}x "
              f"{r['peak_rss_mib']:>13.0f} {cuda:>14}")
    for path, w in worst.items():
        print(f"{path}: outputs agree with per-pair: max scaled difference {w:.2e} (tolerance {tol:g})")

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    name = "pair_inference_sfm.json" if args.sfm_outputs else "pair_inference.json"
    speedup = rows[1]["speedup"]
    (RESULTS_DIR / name).write_text(json.dumps({
        "command": " ".join(sys.argv), "size_wh": [W, H], "images": args.images,
        "pairs_per_image": args.pairs_per_image, "device": args.device, "amp": args.amp,
        "batch_size": args.batch_size, "rows": rows, "speedup": speedup, "max_scaled_diff": max(worst.values()),
        "max_scaled_diff_per_path": worst, "outputs_agree": max(worst.values()) <= tol, "torch": torch.__version__,
    }, indent=1))
    if max(worst.values()) > tol:
        sys.exit(f"outputs differ: {max(worst.values()):.3g} > {tol}")


if __name__ == "__main__":
    main()
