"""Benchmark: encode-once batched MASt3R pair inference vs the official per-pair cost structure.

Baseline ("per-pair"): for every pair, encode both images, then decode + heads in both directions
(MASt3R-SfM's symmetric inference). Ours ("encode-once"): :class:`PairInference` encodes every image once
and decodes pairs in batches. Both run the same network with the same random weights, each in a fresh
subprocess (so peak memory is per path), and the outputs are checked to agree within
``|a - b| <= 1e-4 (1 + |b|)`` (compared on every 4th pixel of every map to keep the files small).

Graph: N images, each linked to its ``--pairs-per-image`` nearest neighbours on a ring (retrieval-like),
so the pair count is about N * k / 2.

    PYTHONPATH=src python benchmarks/pair_inference.py                  # ViT-L, 512x384, 6 images, 15 pairs
    PYTHONPATH=src python benchmarks/pair_inference.py --images 4 --size 128x96   # a quick CPU run
    PYTHONPATH=src python benchmarks/pair_inference.py --device cuda --amp bf16 --images 20 --pairs-per-image 10

Prints a table and writes ``benchmarks/results/pair_inference.json``.
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

from sfm3r.sfm.mast3r_inference import PairInference
from sfm3r.sfm.mast3r_network import MAST3R_VITL_512_MODEL_STR, Mast3rConfig, Mast3rNetwork

RESULTS = Path(__file__).resolve().parent / "results" / "pair_inference.json"
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
    start = time.perf_counter()
    encodes = 0
    if opts["path"] == "encode-once":
        engine = PairInference(model, device=device, batch_size=opts["batch_size"], amp=opts["amp"], output="torch")
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
    np.savez(opts["out"], **outputs)
    return {
        "path": opts["path"],
        "pairs": len(pairs),
        "encoder_passes": encodes,
        "seconds": elapsed,
        "pairs_per_s": len(pairs) / elapsed,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_cuda_mib": torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--pairs-per-image", type=int, default=5)
    parser.add_argument("--size", default="512x384", help="network input WxH (multiples of 16)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=2, help="pairs per decoder call (encode-once path)")
    parser.add_argument("--amp", choices=["bf16", "fp16"], default=None, help="CUDA autocast (both paths)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per worker (0: torch default)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        opts = json.loads(args.worker)
        print(json.dumps(worker(opts)))
        return

    W, H = (int(v) for v in args.size.lower().split("x"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in ("per-pair", "encode-once"):
            opts = dict(path=path, images=args.images, pairs_per_image=args.pairs_per_image, size=(H, W),
                        device=args.device, batch_size=args.batch_size, amp=args.amp, threads=args.threads,
                        out=str(Path(tmp) / f"{path}.npz"))
            proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(opts)],
                                  capture_output=True, text=True, check=False)
            if proc.returncode:
                sys.exit(f"{path} worker failed:\n{proc.stderr}")
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        a, b = np.load(Path(tmp) / "encode-once.npz"), np.load(Path(tmp) / "per-pair.npz")
        assert sorted(a.files) == sorted(b.files), "the two paths produced different output sets"
        worst = max(float((np.abs(a[k].astype(np.float64) - b[k]) / (1 + np.abs(b[k]))).max()) for k in b.files)
    tol = 1e-4 if args.amp is None else 5e-2
    speedup = rows[1]["pairs_per_s"] / rows[0]["pairs_per_s"]

    print(f"MASt3R ViT-L pair inference, {W}x{H}, {args.images} images, {rows[0]['pairs']} pairs, "
          f"device {args.device}, amp {args.amp}, torch threads {args.threads or torch.get_num_threads()}")
    print(f"{'path':<12} {'encoder passes':>14} {'seconds':>9} {'pairs/s':>9} {'peak RSS MiB':>13} {'peak CUDA MiB':>14}")
    for r in rows:
        cuda = f"{r['peak_cuda_mib']:.0f}" if r["peak_cuda_mib"] is not None else "-"
        print(f"{r['path']:<12} {r['encoder_passes']:>14} {r['seconds']:>9.1f} {r['pairs_per_s']:>9.4f} "
              f"{r['peak_rss_mib']:>13.0f} {cuda:>14}")
    print(f"speed-up {speedup:.2f}x; outputs agree: max scaled difference {worst:.2e} (tolerance {tol:g})")

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "command": " ".join(sys.argv), "size_wh": [W, H], "images": args.images,
        "pairs_per_image": args.pairs_per_image, "device": args.device, "amp": args.amp,
        "batch_size": args.batch_size, "rows": rows, "speedup": speedup, "max_scaled_diff": worst,
        "outputs_agree": worst <= tol, "torch": torch.__version__,
    }, indent=1))
    if worst > tol:
        sys.exit(f"outputs differ: {worst:.3g} > {tol}")


if __name__ == "__main__":
    main()
