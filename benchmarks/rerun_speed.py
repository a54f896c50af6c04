"""A rerun of a finished run against the first run: wall time, CPU time and peak RSS of the whole CLI process.

For each image set: one first run of ``sfm3r reconstruct IMAGES OUT`` into a fresh folder, then ``--reruns``
reruns of the same command into that folder (every unit cached). Each run is a fresh process under
``/usr/bin/time -v``, interpreter start-up and imports included, default options (classic backend, device
auto). With ``--baseline-src DIR`` (the ``src/`` of another commit, e.g. ``git archive COMMIT src | tar -x
-C /tmp/base``) the first run's folder is copied and reruns of that code into the copy are interleaved with
ours (base, ours, base, ours, ...), so that a load change hits both alike.

    PYTHONPATH=src python benchmarks/rerun_speed.py [--sets demo herzjesu] [--reruns 3] [--baseline-src DIR]

Prints a table (and the ratio rerun / first run, median over the reruns) and writes
benchmarks/results/rerun_speed.json. Sets: ``demo`` = sample/images (6 photos, 768 px), ``herzjesu`` =
$SFM3R_SHARED/data/strecha_herzjesu_P8/images_1024 (8 photos).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARED = Path(os.environ.get("SFM3R_SHARED", "/work/shared"))
SETS = {"demo": REPO / "sample" / "images", "herzjesu": SHARED / "data" / "strecha_herzjesu_P8" / "images_1024"}
HEAVY = ("torch", "roma", "faiss", "asmk", "matplotlib", "scipy", "pycolmap")
# The CLI's main, then one line on stderr: which heavy modules the run imported.
DRIVER = f"""
import json, sys
from sfm3r.cli.main import main
sys.argv = ["sfm3r", *sys.argv[1:]]
try:
    main()
except SystemExit as exit:
    code = exit.code
print("RERUN_SPEED " + json.dumps({{"exit": code, "loaded": [m for m in {HEAVY!r} if m in sys.modules]}}), file=sys.stderr)
"""
_TIME_FIELDS = {
    "user_s": r"User time \(seconds\): ([\d.]+)",
    "sys_s": r"System time \(seconds\): ([\d.]+)",
    "rss_kb": r"Maximum resident set size \(kbytes\): (\d+)",
    "wall": r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)",
}


def _seconds(clock: str) -> float:
    """'1:02:03.4' or '2:03.4' -> seconds."""
    value = 0.0
    for part in clock.split(":"):
        value = 60 * value + float(part)
    return value


def run_once(src: Path, images: Path, out: Path) -> dict:
    """One `sfm3r reconstruct images out` process with `src` first on the path: its /usr/bin/time figures,
    the heavy modules it imported and run.json's cache unit counts."""
    env = dict(os.environ, PYTHONPATH=str(src))
    cmd = ["/usr/bin/time", "-v", sys.executable, "-c", DRIVER, "reconstruct", str(images), str(out), "--quiet"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    found = {key: re.search(pattern, done.stderr) for key, pattern in _TIME_FIELDS.items()}
    report = next((json.loads(line.split(" ", 1)[1]) for line in done.stderr.splitlines()
                   if line.startswith("RERUN_SPEED ")), None)  # fmt: skip
    if done.returncode != 0 or report is None or report["exit"] != 0 or not all(found.values()):
        raise RuntimeError(f"run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    counts = json.loads((out / "run.json").read_text())["counts"]
    user, system = float(found["user_s"].group(1)), float(found["sys_s"].group(1))
    return {
        "wall_s": _seconds(found["wall"].group(1)),
        "cpu_s": user + system,
        "peak_rss_mb": int(found["rss_kb"].group(1)) / 1024,
        "units": counts.get("units"),
        "loaded": report["loaded"],
        "load": os.getloadavg()[0],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", nargs="+", choices=sorted(SETS), default=["demo", "herzjesu"])
    ap.add_argument("--reruns", type=int, default=3)
    ap.add_argument("--baseline-src", type=Path, default=None, help="src/ of the code to compare reruns with")
    args = ap.parse_args(argv)
    codes = {"this": REPO / "src"} | ({"base": args.baseline_src.resolve()} if args.baseline_src else {})
    rows = []
    with tempfile.TemporaryDirectory(prefix="sfm3r-rerun-") as tmp:
        for name in args.sets:
            first_out = Path(tmp) / name / "this"
            first = run_once(codes["this"], SETS[name], first_out)
            rows.append({"set": name, "code": "this", "run": "first"} | first)
            print(rows[-1], flush=True)
            outs = {"this": first_out}
            if "base" in codes:
                outs["base"] = Path(tmp) / name / "base"
                shutil.copytree(first_out, outs["base"])
            for index in range(args.reruns):
                for code in sorted(codes):  # "base" first, then "this"
                    row = {"set": name, "code": code, "run": f"rerun {index + 1}"}
                    rows.append(row | run_once(codes[code], SETS[name], outs[code]))
                    print(rows[-1], flush=True)

    print(f"\n{'set':<9} {'code':<5} {'run':<8} {'wall s':>7} {'CPU s':>6} {'RSS MB':>7} {'computed/reused':>16} "
          f"{'load':>5}  heavy modules imported")  # fmt: skip
    for r in rows:
        units = f"{r['units']['computed']}/{r['units']['reused']}" if r["units"] else "-"
        print(f"{r['set']:<9} {r['code']:<5} {r['run']:<8} {r['wall_s']:>7.2f} {r['cpu_s']:>6.2f} "
              f"{r['peak_rss_mb']:>7.0f} {units:>16} {r['load']:>5.1f}  {' '.join(r['loaded']) or '-'}")  # fmt: skip
    summary = {}
    print()
    for name in args.sets:
        first = next(r for r in rows if r["set"] == name and r["run"] == "first")
        for code in codes:
            reruns = [r for r in rows if r["set"] == name and r["code"] == code and r["run"] != "first"]
            wall = statistics.median(r["wall_s"] for r in reruns)
            cpu = statistics.median(r["cpu_s"] for r in reruns)
            summary[f"{name}/{code}"] = {"rerun_wall_s": wall, "rerun_cpu_s": cpu, "first_wall_s": first["wall_s"],
                                         "first_cpu_s": first["cpu_s"], "wall_ratio": wall / first["wall_s"],
                                         "cpu_ratio": cpu / first["cpu_s"]}  # fmt: skip
            print(f"{name} ({code} code): rerun / first run = {100 * wall / first['wall_s']:.1f} % wall "
                  f"({wall:.2f} / {first['wall_s']:.2f} s), {100 * cpu / first['cpu_s']:.1f} % CPU "
                  f"({cpu:.2f} / {first['cpu_s']:.2f} s), median of {len(reruns)} reruns")  # fmt: skip
    out = HERE / "results" / "rerun_speed.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "summary": summary}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
