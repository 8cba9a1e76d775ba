#!/usr/bin/env python3
"""Stores on object storage, measured side by side (docs/scale.md, feature `s3`).

    cargo build --release --bin replay --example gaussians   # `s3` is a default feature
    python3 scripts/bench_s3.py [--garage PATH] [--repeats 3] [--out target/bench]

Starts a one-node Garage 2.5 on 127.0.0.1 (scripts/s3-test.sh installs it into the cache), then
alternates the two sides of each comparison, which goes first changing each round, and prints
medians:
- recording: the gaussians example (3,000 points in 100 dimensions, a hidden layer of 64,
  minibatches of 32 with momentum: 1,880 steps of 6,659 parameters) without and with
  `--upload` (a pass at most every second): the training loop's time, and the whole run's,
  which includes the last upload pass after training;
- replay: `replay verify --points 2` of that store from its local folder and from the bucket.
Both replays must give the same report.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RELEASE = ROOT / "target" / "release"
KEY = "GK0123456789abcdef01234567"
SECRET = "0123456789abcdef" * 4


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_garage(binary, folder):
    api, rpc = free_port(), free_port()
    config = folder / "garage.toml"
    config.write_text(
        f'metadata_dir = "{folder}/meta"\ndata_dir = "{folder}/data"\ndb_engine = "sqlite"\n'
        f'replication_factor = 1\nrpc_bind_addr = "127.0.0.1:{rpc}"\n'
        f'rpc_public_addr = "127.0.0.1:{rpc}"\nrpc_secret = "{"fedcba9876543210" * 4}"\n\n'
        f'[s3_api]\ns3_region = "garage"\napi_bind_addr = "127.0.0.1:{api}"\n')
    env = dict(os.environ, GARAGE_DEFAULT_ACCESS_KEY=KEY, GARAGE_DEFAULT_SECRET_KEY=SECRET,
               GARAGE_DEFAULT_BUCKET="epk", RUST_LOG="garage=warn")
    server = subprocess.Popen([binary, "-c", config, "server", "--single-node",
                               "--default-bucket"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    client = dict(os.environ, AWS_ENDPOINT_URL=f"http://127.0.0.1:{api}",
                  AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET, AWS_REGION="garage",
                  AWS_ALLOW_HTTP="true")
    for _ in range(300):
        probe = subprocess.run([RELEASE / "replay", "info", "s3://epk/none"], env=client,
                               capture_output=True, text=True)
        if "no root metadata" in probe.stderr:
            return server, client
        time.sleep(0.1)
    server.kill()
    sys.exit("garage did not come up")


def timed(cmd, env):
    t0 = time.perf_counter()
    p = subprocess.run([str(c) for c in cmd], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed:\n{p.stderr}")
    return p.stdout, wall


def record(store, env, url=None):
    cmd = [RELEASE / "examples" / "gaussians", "--store", store, "--overwrite",
           "--optimizer", "momentum", "--batch", "32", "--epochs", "20", "--lr", "0.05"]
    if url:
        cmd += ["--upload", url, "--upload-every", "1"]
    out, wall = timed(cmd, env)
    training = float(out.split(" in ")[1].split(" s;")[0])
    return training, wall


def main():
    ap = argparse.ArgumentParser()
    cache = Path(os.environ.get("EPK_CACHE", Path.home() / ".cache" / "epk"))
    ap.add_argument("--garage", default=cache / "garage-2.5.0" / "bin" / "garage")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="target/bench")
    args = ap.parse_args()
    out = ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        server, env = start_garage(args.garage, Path(folder))
        try:
            rows = measure(out, env, args.repeats)
        finally:
            server.kill()
    print("| workload | local | with S3 | ratio |")
    print("|---|---|---|---|")
    for name, (a, b) in rows.items():
        print(f"| {name} | {a:.2f} s | {b:.2f} s | {b / a:.2f} |")


def measure(out, env, repeats):
    store = out / "s3-bench.zarr"
    times = {"training loop": ([], []), "whole run": ([], []), "verify --points 2": ([], [])}
    for r in range(repeats):
        sides = [(0, None), (1, f"s3://epk/bench-{r}.zarr")]
        for side, url in sides if r % 2 == 0 else sides[::-1]:
            training, wall = record(store, env, url)
            times["training loop"][side].append(training)
            times["whole run"][side].append(wall)
    url = f"s3://epk/bench-{repeats - 1}.zarr"
    subprocess.run([RELEASE / "replay", "upload", store, url], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    reports = {}
    for r in range(repeats):
        sides = [(0, store), (1, url)]
        for side, where in sides if r % 2 == 0 else sides[::-1]:
            report, wall = timed([RELEASE / "replay", "verify", where, "--points", "2",
                                  "--json"], env)
            times["verify --points 2"][side].append(wall)
            report = json.loads(report)
            report.pop("seconds")
            reports[side] = report
    if reports[0] != reports[1]:
        sys.exit("the bucket's replay differs from the local one")
    return {k: (statistics.median(a), statistics.median(b)) for k, (a, b) in times.items()}


if __name__ == "__main__":
    main()
