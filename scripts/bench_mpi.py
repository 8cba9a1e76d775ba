#!/usr/bin/env python3
"""Replay split over MPI ranks against one process, measured side by side (docs/scale.md).

    cargo build --release --features mpi --bin replay --example digits
    python3 scripts/bench_mpi.py [--ranks 2] [--repeats 3] [--out target/bench]

The digits CNN (momentum 0.9 and weight decay, 120 steps, the general Jacobian path) is
recorded once, then each workload runs as one process (all cores) and under
`mpirun -n RANKS` (one thread per rank), alternating which goes first, and the medians are
compared:
- `attribute --point 0`: one point, which one process cannot split over its threads;
- `verify --points 2`: two points, which one process already splits over two threads.
Each mpirun result must equal the one-process machine (same pass, machine error within 1e-15).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RELEASE = ROOT / "target" / "release"


def run(cmd, env):
    t0 = time.perf_counter()
    p = subprocess.run([str(c) for c in cmd], env=env, text=True, capture_output=True)
    wall = time.perf_counter() - t0
    if p.returncode not in (0, 1):
        sys.exit(f"{' '.join(map(str, cmd))} failed:\n{p.stderr}")
    return p.stdout, wall


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="target/bench")
    args = ap.parse_args()
    out = ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    store = out / "digits-mpi.zarr"
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    if not (store / "zarr.json").exists():
        subprocess.run([RELEASE / "examples" / "digits", "--store", store, "--overwrite",
                        "--explain", "2"], check=True, env=env, stdout=subprocess.DEVNULL)
    replay = RELEASE / "replay"
    mpirun = ["mpirun", "-n", str(args.ranks), "--oversubscribe"]
    workloads = {
        "attribute, 1 point": ["attribute", store, "--point", "0", "--json"],
        "verify, 2 points": ["verify", store, "--points", "2", "--json"],
    }
    print(f"{'workload':<20} {'1 process':>10} {f'{args.ranks} ranks':>10} {'speed-up':>9}  "
          f"result")
    for name, cmd in workloads.items():
        walls = {"one": [], "mpi": []}
        outputs = {}
        for r in range(args.repeats):
            order = ["one", "mpi"] if r % 2 == 0 else ["mpi", "one"]
            for side in order:
                full = [replay, *cmd] if side == "one" else \
                    [*mpirun, replay, *cmd, "--threads", "1"]
                text, wall = run(full, env)
                walls[side].append(wall)
                outputs[side] = json.loads(text[text.index("{"):text.rindex("}") + 1])
        one, mpi = statistics.median(walls["one"]), statistics.median(walls["mpi"])
        key = "max_abs_error" if "max_abs_error" in outputs["one"] else "error"
        err = [outputs[s][key] for s in ("one", "mpi")]
        ranks = [[e["index"] for e in outputs[s].get("positive", [])] for s in ("one", "mpi")]
        agree = abs(err[0] - err[1]) <= 1e-14 and ranks[0] == ranks[1]
        print(f"{name:<20} {one:>9.1f}s {mpi:>9.1f}s {one / mpi:>8.2f}×  machine error "
              f"{err[0]:.2e} / {err[1]:.2e}, {'same' if agree else 'DIFFERENT'} result")
        if not agree:
            sys.exit("the ranks' result differs from one process")


if __name__ == "__main__":
    main()
