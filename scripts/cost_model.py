#!/usr/bin/env python3
"""Measures the replay cost model of docs/scale.md on the examples' stores.

    cargo build --release --bin replay --examples
    python3 scripts/cost_model.py [--points 2] [--out target/bench]

Per store: parameters P, outputs K, steps, batch; bytes on disk per step (weights, and the
per-step data: dL/df and batch indices); then `replay verify --points N` (time, Jacobian
evaluations per step per point, peak memory) and the same job as two shards of one stretch
each (`replay shard --count 2`: each shard's peak memory and the size of its tile record).
Stores missing under --out are recorded first with the examples' own commands.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "target" / "release" / "examples"
REPLAY = ROOT / "target" / "release" / "replay"

STORES = {
    "toy MLP, GD": ("gaussians", ["--steps", "100"]),
    "digits CNN, momentum": ("digits", ["--explain", "4"]),
    "guide CNN h32, Adam": ("guide", ["--train", "1000", "--hidden", "32", "--explain", "4"]),
    "text transformer, Adam": ("text", ["--epochs", "1", "--no-explain"]),
}


def timed(cmd):
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-f", "%M"] + [str(c) for c in cmd], text=True,
                       capture_output=True)
    wall = time.perf_counter() - t0
    if p.returncode not in (0, 1):
        sys.exit(f"{' '.join(map(str, cmd))} failed:\n{p.stderr}")
    return p.stdout, wall, int(p.stderr.strip().splitlines()[-1]) / 1024


def du(path):
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=2)
    ap.add_argument("--out", default="target/bench")
    args = ap.parse_args()
    out = ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    print("| run | P | K | steps | batch | weights B/step | data B/step | verify s | "
          "evals/step/pt | s/step/pt | RSS MB | shard RSS MB | tile record MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, (example, flags) in STORES.items():
        store = out / f"cost-{example}.zarr"
        if not (store / "zarr.json").exists():
            subprocess.run([EXAMPLES / example, "--store", store, "--overwrite", *flags],
                           check=True, stdout=subprocess.DEVNULL)
        info = json.loads(subprocess.run([REPLAY, "info", store, "--json"], check=True,
                                         text=True, capture_output=True).stdout)
        steps = info["steps"]
        weights = du(store / "weights") / steps
        data = (du(store / "dloss") + du(store / "batch_index")) / steps
        text, wall, rss = timed([REPLAY, "verify", store, "--points", args.points, "--json"])
        report = json.loads(text[text.index("{"):text.rindex("}") + 1])
        shard_rss = []
        for i in range(2):
            _, _, r = timed([REPLAY, "shard", store, "--count", "2", "--index", i, "--points",
                             args.points, "--job", "cost", "--quiet"])
            shard_rss.append(r)
        record = max(f.stat().st_size for f in (store / "partials" / "cost").glob("tile-*.bin"))
        subprocess.run(["rm", "-rf", store / "partials"], check=True)
        per = report["seconds"] / steps / args.points
        print(f"| {name} | {info['num_params']:,} | {info['outputs']} | {steps} | "
              f"{info['max_batch']} | {weights:,.0f} | {data:,.0f} | {report['seconds']:.1f} | "
              f"{report['evals_per_step_per_point']:.1f} | {per * 1e3:.1f} ms | {rss:.0f} | "
              f"{max(shard_rss):.0f} | {record / 2**20:.1f} |", flush=True)


if __name__ == "__main__":
    main()
