"""How fast the command line answers: `sfm3r --help`, `sfm3r reconstruct --help`, and a bad option.

Each command runs in a fresh process (Python start-up included), `--repeat` times; the table gives the
median and the minimum wall time, and the modules the CLI import pulled in (torch, pycolmap: should be none).

    PYTHONPATH=src python benchmarks/cli_startup.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CLI = "from sfm3r.cli.main import main; main()"
COMMANDS = {
    "sfm3r --help": ["--help"],
    "sfm3r reconstruct --help": ["reconstruct", "--help"],
    "sfm3r pairs --help": ["pairs", "--help"],
    "--scene-graph bogus (error)": ["reconstruct", str(REPO / "sample" / "images"), "/tmp/sfm3r-bench-never",
                                    "--scene-graph", "bogus"],
}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args(argv)
    env = dict(os.environ, PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeat):  # interleaved, so load changes hit every command alike
        for name, cli_args in COMMANDS.items():
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", CLI, *cli_args], env=env, capture_output=True, check=False)
            times[name].append(time.perf_counter() - start)
    heavy = subprocess.run(
        [sys.executable, "-c", "import sys, sfm3r.cli.main; print(' '.join(m for m in ('torch', 'pycolmap', "
         "'numpy', 'matplotlib', 'h5py') if m in sys.modules) or '-')"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    baseline = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)
        baseline.append(time.perf_counter() - start)
    print(f"{'command':<32} {'median s':>9} {'min s':>7}")
    rows = {}
    for name, values in times.items():
        rows[name] = {"median_s": statistics.median(values), "min_s": min(values)}
        print(f"{name:<32} {rows[name]['median_s']:>9.3f} {rows[name]['min_s']:>7.3f}")
    print(f"{'python -c pass (floor)':<32} {statistics.median(baseline):>9.3f} {min(baseline):>7.3f}")
    print(f"heavy modules loaded by `import sfm3r.cli.main`: {heavy}")
    out = HERE / "results" / "cli_startup.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"commands": rows, "python_floor_s": statistics.median(baseline), "heavy_modules": heavy,
                               "repeat": args.repeat}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
