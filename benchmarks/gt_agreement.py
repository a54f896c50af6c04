"""How far the ground truth resolves pose accuracy: models of one set against the GT and against each other.

Reads the models kept by `accuracy.py --keep DIR` (sfm3r's `run/sparse/0`, COLMAP's `colmap-*/largest`) of
the full image sets (variant `all`); cases of one scene at two resolutions (`herzjesu` and `herzjesu_full`)
are compared too (image names by stem; the GT extrinsics are the same). For every scene it prints

- each model against the GT and against every other model: AUC@3 and the mean pair error (max of the relative
  rotation and translation-direction errors, degrees, as in accuracy.py);
- the correlation of the models' per-pair errors against the GT (errors that the GT causes are shared by all
  models; independent ones are not);
- the consensus model (every model brought onto the first by a similarity of the camera centres, rotations
  averaged by their chordal mean, centres averaged) against the GT: what the GT gives a model whose
  independent errors average out.

If the models agree with each other far better than with the GT, the GT (or an error every method shares)
limits what AUC@3 against it can show. Writes benchmarks/results/gt_agreement.json.

Usage (the first two commands make the models, ~4 min here):
    SFM3R_SHARED=/work/shared PYTHONPATH=src python benchmarks/accuracy.py --sets herzjesu fountain \
        --variants all --methods sfm3r colmap-best --keep /tmp/keep1024
    SFM3R_SHARED=/work/shared PYTHONPATH=src python benchmarks/accuracy.py --sets herzjesu_full fountain_full \
        --variants all --methods sfm3r colmap-best --keep /tmp/keepfull
    SFM3R_SHARED=/work/shared PYTHONPATH=src python benchmarks/gt_agreement.py --keep /tmp/keep1024 /tmp/keepfull
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accuracy  # the sets and their GT folders

from sfm3r.io.colmap import read_colmap_model
from sfm3r.sfm.evaluation import evaluate_poses, pose_auc, relative_pose_errors
from sfm3r.sfm.geometry.similarity import fit_similarity_batch


def _poses(model_dir: Path, stems: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """(N, 3, 3) rotations and (N, 3) translations (cam_from_world) in the order of `stems`; None when the
    model lacks an image."""
    scene = read_colmap_model(model_dir)
    index = {Path(name).stem: k for k, name in enumerate(scene.image_names)}
    if any(stem not in index for stem in stems):
        return None
    order = [index[stem] for stem in stems]
    return np.asarray(scene.rotations)[order], np.asarray(scene.translations)[order]


def _pair_errors(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """(N(N-1)/2,) degrees: max of the relative rotation and translation-direction errors between two models."""
    rot, trans = relative_pose_errors(a[0], a[1], b[0], b[1])
    return np.maximum(rot, trans)


def _consensus(models: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Every model brought onto the first by a similarity of its camera centres; chordal-mean rotations and
    mean centres -> (N, 3, 3) rotations, (N, 3) translations."""

    def centres(R, t):
        return -np.einsum("nji,nj->ni", R, t)

    reference = centres(*models[0])
    rotations, centre_sets = [], []
    for R, t in models:
        c = centres(R, t)
        scale, rot, shift = fit_similarity_batch(c[None], reference[None], np.ones((1, len(c))))
        rotations.append(R @ rot[0].T)  # cam_from_world of the moved world
        centre_sets.append(float(scale[0]) * c @ rot[0].T + shift[0])
    u, _, vt = np.linalg.svd(np.mean(rotations, axis=0))
    signs = np.ones((len(u), 3))
    signs[:, 2] = np.sign(np.linalg.det(u @ vt))  # the nearest rotation, not a reflection
    rotation = (u * signs[:, None, :]) @ vt
    centre = np.mean(centre_sets, axis=0)
    return rotation, -np.einsum("nij,nj->ni", rotation, centre)


def _auc3(errors: np.ndarray) -> float:
    return 100.0 * pose_auc(errors, [3.0])[0]


def _models_of(keep_dirs: list[Path]) -> dict[str, dict[str, Path]]:
    """{scene: {label: model folder}} of the kept `all` cases; scene = set name without `_full`."""
    found: dict[str, dict[str, Path]] = {}
    for keep in keep_dirs:
        for case in sorted(keep.glob("*_all")):
            set_name = case.name[: -len("_all")]
            if set_name not in accuracy.SETS:
                continue
            scene = set_name.removesuffix("_full")
            resolution = "full" if set_name.endswith("_full") else "1024"
            if (case / "run" / "sparse" / "0").is_dir():
                found.setdefault(scene, {})[f"sfm3r@{resolution}"] = case / "run" / "sparse" / "0"
            for colmap in sorted(case.glob("colmap-*/largest")):
                found.setdefault(scene, {})[f"{colmap.parent.name}@{resolution}"] = colmap
    return found


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keep", type=Path, nargs="+", required=True, help="folders of `accuracy.py --keep`")
    ap.add_argument("--output", type=Path, default=accuracy.RESULTS / "gt_agreement.json")
    args = ap.parse_args(argv)

    report: dict = {}
    for scene, folders in _models_of(args.keep).items():
        gt_dir = accuracy.DATA / accuracy.SETS[scene][1]
        gt = read_colmap_model(gt_dir)
        stems = sorted(Path(name).stem for name in gt.image_names)
        gt_poses = _poses(gt_dir, stems)
        models = {label: poses for label, folder in folders.items() if (poses := _poses(folder, stems)) is not None}
        if len(models) < 2:
            print(f"{scene}: fewer than 2 models with every image, skipped")
            continue
        labels = list(models)
        rows = []
        print(f"\n## {scene} ({len(stems)} images, {len(labels)} models)\n")
        print("| model A | model B | AUC@3 | mean pair error ° |\n|---|---|---|---|")
        against_gt = {}
        for label in labels:
            errors = _pair_errors(models[label], gt_poses)
            against_gt[label] = errors
            rows.append({"a": label, "b": "GT", "AUC@3": _auc3(errors), "mean_error_deg": float(errors.mean())})
        for a, b in itertools.combinations(labels, 2):
            errors = _pair_errors(models[a], models[b])
            rows.append({"a": a, "b": b, "AUC@3": _auc3(errors), "mean_error_deg": float(errors.mean())})
        consensus = _consensus([models[label] for label in labels])
        metrics = evaluate_poses(
            SimpleNamespace(image_names=stems, rotations=consensus[0], translations=consensus[1]),
            SimpleNamespace(image_names=stems, rotations=gt_poses[0], translations=gt_poses[1]),
        )  # fmt: skip
        errors = _pair_errors(consensus, gt_poses)
        rows.append({"a": "consensus", "b": "GT", "AUC@3": metrics["AUC@3"], "mean_error_deg": float(errors.mean())})
        for row in rows:
            print(f"| {row['a']} | {row['b']} | {row['AUC@3']:.2f} | {row['mean_error_deg']:.4f} |")
        correlation = np.corrcoef(np.array([against_gt[label] for label in labels]))
        print("\ncorrelation of the per-pair errors against the GT:\n")
        print("| | " + " | ".join(labels) + " |\n|---|" + "---|" * len(labels))
        for label, line in zip(labels, correlation, strict=True):
            print(f"| {label} | " + " | ".join(f"{v:.2f}" for v in line) + " |")
        report[scene] = {"images": len(stems), "rows": rows, "correlation": correlation.tolist(), "labels": labels}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"machine": accuracy.machine(), "scenes": report}, indent=1))
    print(f"\nwrote {args.output}")
    return report


if __name__ == "__main__":
    main()
