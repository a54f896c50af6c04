"""The quick benchmark subset (`make bench`): about 10 minutes on an idle 2-core CPU machine (about 20 under load).

Runs, each in its own process, and prints their tables:

1. ``accuracy.py --quick``: sfm3r vs pycolmap incremental and global mapping on the fountain's sparse
   variant (6 images) and 8 images of the temple ring's sparse variant;
2. ``scaling.py --sizes 100 300``: retrieval -> scene graph -> (synthetic pairs) -> alignment -> writers;
3. ``alignment_vs_adam.py --sizes 10``: our alignment optimiser vs the reference 600-step Adam schedule;
4. ``matcher.py --pairs 1``: the symmetric reciprocal matcher vs the official cost structure.

Results land in benchmarks/results/*.json (+ scaling.png). ``--skip NAME`` leaves a part out.

    SFM3R_SHARED=/work/shared PYTHONPATH=src python benchmarks/run_quick.py [--skip matcher ...]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PARTS = {
    "accuracy": ["accuracy.py", "--quick"],
    "scaling": ["scaling.py", "--sizes", "100", "300"],
    "alignment_vs_adam": ["alignment_vs_adam.py", "--sizes", "10"],
    "matcher": ["matcher.py", "--pairs", "1"],
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--skip", nargs="*", default=[], choices=list(PARTS))
    args = ap.parse_args(argv)
    env = dict(os.environ, PYTHONPATH=str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    summary, failed = [], 0
    start = time.perf_counter()
    for name, cmd in PARTS.items():
        if name in args.skip:
            continue
        script = HERE / cmd[0]
        if not script.exists():
            summary.append((name, "missing", 0.0))
            continue
        print(f"\n=== {name}: {' '.join(cmd)}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.run([sys.executable, str(script), *cmd[1:]], env=env, cwd=REPO, check=False).returncode
        failed += rc != 0
        summary.append((name, "ok" if rc == 0 else f"exit {rc}", time.perf_counter() - t0))
    print("\n| part | status | wall s |\n|---|---|---|")
    for name, status, wall in summary:
        print(f"| {name} | {status} | {wall:.0f} |")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"total {time.perf_counter() - start:.0f} s on {os.cpu_count()} CPUs (load average now {load})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
