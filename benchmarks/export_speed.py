"""Speed of the export stage's parts (issue 16): the preview PNG, the binary COLMAP writer and the point-colour
bookkeeping, this tree's code against the same modules at an earlier commit, interleaved in one process.

Run from the repository root:

    PYTHONPATH=src python benchmarks/export_speed.py --against 5cb1d09 --model OUT/sparse/0 --repeats 5

`--against REV` loads ``io/preview.py``, ``io/colmap.py`` and ``pipelines/colors.py`` as they were at REV
(``git show``) beside the current ones; each repeat times both, alternating which goes first. The preview's
"cold" time is a fresh interpreter's import of the module plus its first call (what a run pays once); the
others are warm calls. Scenes: the model at `--model` (e.g. a herzjesu run folder's sparse/0), its points
resampled to 30k and 300k, and synthetic scenes for the writer and the colours (random tracks; the colours
read a constant image, so only the bookkeeping is timed). Prints a table and writes
benchmarks/results/export_speed.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from io_formats import _random_scene

from sfm3r.io.colmap import read_colmap_model
from sfm3r.types import Scene

REPO = Path(__file__).resolve().parents[1]
MODULES = {
    "preview": "src/sfm3r/io/preview.py",
    "colmap": "src/sfm3r/io/colmap.py",
    "colors": "src/sfm3r/pipelines/colors.py",
}
_COLD = """
import sys, time
from pathlib import Path
import numpy as np, PIL.Image, sfm3r.io.images
sys.path.insert(0, {bench!r})
from export_speed import _load, _resampled
from sfm3r.io.colmap import read_colmap_model
scene = _resampled(read_colmap_model(Path({model!r})), {points!r})
start = time.perf_counter()
module = _load(Path({path!r}), "preview_cold")
module.write_preview(scene, Path({out!r}))
print(time.perf_counter() - start)
"""


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _resampled(scene: Scene, points: int | None) -> Scene:
    """`scene` with its points resampled (with 3 mm jitter) to `points`, no observations; as is for None."""
    if points is None:
        return scene
    rng = np.random.default_rng(0)
    pick = rng.integers(0, scene.num_points, points)
    return dataclasses.replace(
        scene, points_xyz=scene.points_xyz[pick] + rng.normal(scale=0.003, size=(points, 3)),
        points_rgb=scene.points_rgb[pick], points_error=np.zeros(points), obs_point=np.zeros(0, np.int64),
        obs_image=np.zeros(0, np.int64), obs_xy=np.zeros((0, 2)),
    )  # fmt: skip


def _interleaved(repeats: int, calls: dict) -> dict[str, list[float]]:
    """{name: [seconds per repeat]} of each call, alternating which goes first."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for repeat in range(repeats):
        for name in list(calls) if repeat % 2 == 0 else list(calls)[::-1]:
            start = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - start)
    return times


def _cold_preview(path: Path, model: Path, points: int | None, out: Path) -> float:
    code = _COLD.format(bench=str(Path(__file__).parent), model=str(model), points=points, path=str(path), out=str(out))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(done.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True, help="the earlier commit (e.g. 5cb1d09)")
    parser.add_argument("--model", type=Path, required=True, help="a COLMAP model folder (a run's sparse/0)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        paths = {}
        for key, rel in MODULES.items():
            old = tmp / f"{key}_old.py"
            git_show = ["git", "-C", str(REPO), "show", f"{args.against}:{rel}"]
            shown = subprocess.run(git_show, capture_output=True, text=True)
            if shown.returncode != 0:
                sys.exit(f"cannot read {rel} at {args.against}: {shown.stderr.strip()}")
            old.write_text(shown.stdout)
            paths[key] = {"before": old, "now": REPO / rel}
        mods = {
            key: {which: _load(path, f"{key}_{which}") for which, path in pair.items()} for key, pair in paths.items()
        }
        model = read_colmap_model(args.model)

        for points in (None, 30_000, 300_000):
            scene = _resampled(model, points)
            size = f"{scene.num_images} images, {scene.num_points} points"
            cold: dict[str, list[float]] = {"before": [], "now": []}
            for repeat in range(args.repeats):
                for which in ("before", "now") if repeat % 2 == 0 else ("now", "before"):
                    cold[which].append(
                        _cold_preview(paths["preview"][which], args.model, points, tmp / f"c_{which}.png")
                    )
            rows.append(("preview, fresh process (import + call)", size, cold))
            warm = _interleaved(args.repeats, {w: (lambda m=m, w=w: m.write_preview(scene, tmp / f"w_{w}.png"))
                                               for w, m in mods["preview"].items()})  # fmt: skip
            rows.append(("preview, warm call", size, warm))

        writer_scenes = [
            ("model", model),
            ("synthetic", _random_scene(8, 30_000, 4)),
            ("synthetic", _random_scene(100, 300_000, 4)),
        ]
        for label, scene in writer_scenes:
            size = f"{label}: {scene.num_images} images, {scene.num_points} points, {len(scene.obs_point)} obs"
            times = _interleaved(args.repeats, {w: (lambda m=m, w=w: m.write_colmap_model(scene, tmp / f"m_{w}"))
                                                for w, m in mods["colmap"].items()})  # fmt: skip
            same = all((tmp / "m_before" / f).read_bytes() == (tmp / "m_now" / f).read_bytes()
                       for f in ("cameras.bin", "images.bin", "points3D.bin", "rigs.bin", "frames.bin"))  # fmt: skip
            rows.append((f"COLMAP binary writer{'' if same else ' (FILES DIFFER)'}", size, times))

        rgb = np.random.default_rng(1).integers(0, 256, size=(1024, 1024, 3), dtype=np.uint8)
        for n_images, n_points in ((8, 30_000), (200, 200_000), (1000, 300_000)):
            scene = _random_scene(n_images, n_points, 4)
            scene = dataclasses.replace(
                scene, obs_xy=np.random.default_rng(0).uniform(0, 1000, size=scene.obs_xy.shape)
            )
            names = {name: Path(name) for name in scene.image_names}
            size = f"synthetic: {n_images} images, {n_points} points, {len(scene.obs_point)} obs"
            times = _interleaved(args.repeats, {w: (lambda m=m: m.color_points(scene, names, lambda p: rgb))
                                                for w, m in mods["colors"].items()})  # fmt: skip
            rows.append(("point colours (bookkeeping only)", size, times))

    print(
        f"against {args.against}, {args.repeats} interleaved repeats, load average {os.getloadavg()[0]:.1f} at the end"
    )
    print(f"{'what':42s} {'size':58s} {'before s':>9s} {'now s':>9s} {'ratio':>6s}")
    for what, size, times in rows:
        before, now = statistics.median(times["before"]), statistics.median(times["now"])
        print(f"{what:42s} {size:58s} {before:9.3f} {now:9.3f} {before / now:6.1f}")
    out = REPO / "benchmarks" / "results" / "export_speed.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "against": args.against, "repeats": args.repeats, "machine": platform.machine(), "cpus": os.cpu_count(),
        "python": platform.python_version(), "load_average_end": os.getloadavg(),
        "rows": [{"what": w, "size": s, "seconds": t} for w, s, t in rows],
    }, indent=1))  # fmt: skip
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
