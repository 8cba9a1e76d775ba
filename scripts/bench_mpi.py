#!/usr/bin/env python3
"""Replay split over MPI ranks against one process, measured side by side (docs/scale.md).

    cargo build --release --features mpi --bin replay --example digits
    python3 scripts/bench_mpi.py [--ranks 2] [--repeats 3] [--out target/bench]

The digits CNN (momentum 0.9 and weight decay, 120 steps, the general Jacobian path) is
recorded once, then each workload runs as one process (all cores) and under
`mpirun -n RANKS` (one thread per rank), alternating which goes first, and the medians are
compared. Open MPI binds each rank to a core, and on a shared machine a process bound to a core
runs a single thread far faster than an unbound one, so the one-process side is timed both ways:
all cores (its default) and one thread bound to one core (`taskset -c 0 … --threads 1`); the
speed-up is against the faster of the two.
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
    sides = {
        "one": lambda cmd: [replay, *cmd],
        "pinned": lambda cmd: ["taskset", "-c", "0", replay, *cmd, "--threads", "1"],
        "mpi": lambda cmd: [*mpirun, replay, *cmd, "--threads", "1"],
    }
    print(f"{'workload':<20} {'1 process':>10} {'1 core':>8} {f'{args.ranks} ranks':>8} "
          f"{'speed-up':>9}  result")
    for name, cmd in workloads.items():
        walls = {side: [] for side in sides}
        outputs = {}
        for r in range(args.repeats):
            order = list(sides) if r % 2 == 0 else list(reversed(sides))
            for side in order:
                text, wall = run(sides[side](cmd), env)
                walls[side].append(wall)
                outputs[side] = json.loads(text[text.index("{"):text.rindex("}") + 1])
        med = {side: statistics.median(w) for side, w in walls.items()}
        best = min(med["one"], med["pinned"])
        key = "max_abs_error" if "max_abs_error" in outputs["one"] else "error"
        err = [outputs[s][key] for s in ("one", "mpi")]
        ranks = [[e["index"] for e in outputs[s].get("positive", [])] for s in ("one", "mpi")]
        agree = abs(err[0] - err[1]) <= 1e-14 and ranks[0] == ranks[1]
        print(f"{name:<20} {med['one']:>9.1f}s {med['pinned']:>7.1f}s {med['mpi']:>7.1f}s "
              f"{best / med['mpi']:>8.2f}×  machine error {err[0]:.2e} / {err[1]:.2e}, "
              f"{'same' if agree else 'DIFFERENT'} result")
        if not agree:
            sys.exit("the ranks' result differs from one process")


if __name__ == "__main__":
    main()
