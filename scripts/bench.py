#!/usr/bin/env python3
"""Reproduces the README's benchmark table in one command.

    python3 scripts/bench.py [--quick] [--out target/bench]

1. Recording overhead: `examples/bench_record` (training with and without the recorder in
   back-to-back pairs; the median of the pairs' ratios) on the toy, the digits CNN and a
   1e6-parameter MLP, with the store on the working disk and in memory (tmpfs).
2. Replay against the JAX float64 reference (`benches/peers/epk_jax.py`, jax.vmap of jax.jacrev,
   XLA-compiled) on the same job: the paper's toy (3 Gaussian classes in 100 dimensions, 3000
   training points, width 64, 100 full-batch steps, lr 0.1, 100 held-out points), rules mid:100
   and gauss:8, both on this machine in this run; then epk's time to a verified 1e-12 with its
   default rule (auto).
3. Memory: peak RSS of `replay verify` on 50- and 500-step runs.
4. Cores: the same replay with one worker thread and with all cores.
5. The digits CNN (`examples/digits.rs`, 120 steps of momentum SGD): `examples/bench_replay`
   replays 10 held-out points with `auto` at 1e-12 on the structured, batched path and on the
   general path, alternating, and `replay verify` explains all 30 held-out points, twice with
   the model's declared degree and twice with `--orders-only`, alternating (once each with
   --quick); then 10 held-out points (4 with --quick) against the JAX float64 reference of the
   same CNN on the same store (`benches/peers/epk_jax_cnn.py`), rules gauss:8 and mid:100 on
   both sides, each JAX run between two of epk's, and epk's auto at 1e-12.
6. Long runs: 3,000 and 30,000 full-batch steps of a 387-parameter MLP (as CI's long run;
   300 and 3,000 with --quick),
   `replay verify` with `auto` at 1e-12: time per step and peak RSS at both lengths.
7. Burn's guide model at its own size (531,178 parameters, hidden 512; 240 Adam steps on 3,840
   MNIST images): `replay verify` of 10 held-out points at 1e-12 (2 with --quick), with the
   default adjoint budget and with `--adjoint-memory 256MiB`; about 20 minutes on 2 cores
   (--no-guide skips it).

Each figure is a ratio of two timings taken in the same run. JAX is installed into a virtual
environment under --out on first use (pip, jax[cpu]==0.10.2, and zarr==3.1.6 for the CNN
reference, which reads the store); --no-jax skips both comparisons.
"""

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RELEASE = ROOT / "target" / "release"


def sh(cmd, **kw):
    print("+", " ".join(str(c) for c in cmd), file=sys.stderr, flush=True)
    return subprocess.run([str(c) for c in cmd], check=True, text=True, **kw)


LAST_CPU = {}


def timed(cmd):
    """Runs cmd under /usr/bin/time; returns (stdout, wall seconds, peak RSS in MB) and keeps
    the CPU time (user + system) over wall time in LAST_CPU["use"]."""
    t0 = time.perf_counter()
    p = sh(["/usr/bin/time", "-f", "%M %U %S"] + cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wall = time.perf_counter() - t0
    rss_kb, user, system = p.stderr.strip().splitlines()[-1].split()
    LAST_CPU["use"] = (float(user) + float(system)) / wall
    return p.stdout, wall, int(rss_kb) / 1024


def verify(store, rule, tolerance, extra=()):
    out, wall, rss = timed([RELEASE / "replay", "verify", store, "--rule", rule,
                            "--tolerance", tolerance, "--json", *extra])
    report = json.loads(out[out.index("{"):out.rindex("}") + 1])
    return report, wall, rss


def train_toy(store, steps, extra=()):
    sh([RELEASE / "examples" / "gaussians", "--store", store, "--overwrite", "--steps", steps,
        *extra], stdout=subprocess.DEVNULL)


def jax_python(out, skip):
    if skip:
        return None
    venv = out / "jaxenv"
    python = venv / "bin" / "python"
    if not python.exists():
        sh([sys.executable, "-m", "venv", venv])
        sh([python, "-m", "pip", "install", "--quiet", "jax[cpu]==0.10.2", "numpy"])
    # The CNN reference reads the store itself (zarr-python 3, as CI's reader).
    if subprocess.run([python, "-c", "import zarr"], capture_output=True).returncode != 0:
        sh([python, "-m", "pip", "install", "--quiet", "zarr==3.1.6"])
    return python


def jax_cnn(python, store, rule, points):
    """benches/peers/epk_jax_cnn.py on the store: its JSON row (best of 2 runs in one process,
    the first including XLA's compilation)."""
    res = sh([python, ROOT / "benches" / "peers" / "epk_jax_cnn.py", store, "--rules", rule,
              "--points", points, "--repeat", "2", "--json"], stdout=subprocess.PIPE).stdout
    return json.loads([line for line in res.splitlines() if line.startswith("{")][-1])


def train_digits(out):
    """The digits CNN's store (examples/digits.rs at its defaults), recorded again."""
    digits = out / "digits.zarr"
    if digits.exists():
        shutil.rmtree(digits)
    sh([RELEASE / "examples" / "digits", "--store", digits], stdout=subprocess.DEVNULL, cwd=ROOT)
    return digits


def cnn_against_jax(python, digits, points):
    """The JAX float64 reference of the same CNN on the same store and points: each rule on epk,
    then JAX, then epk again (epk's time is the better of its two); epk's auto at 1e-12 before
    and after them all. Returns ({rule: JAX row}, {rule: epk (report, wall, rss)})."""
    if python is None:
        return {}, {}
    cnn_jax, cnn_epk = {}, {}
    first = verify(digits, "auto", "1e-12", ["--points", points])
    for rule in ["gauss:8", "mid:100"]:
        before = verify(digits, rule, "1", ["--points", points])
        cnn_jax[rule] = jax_cnn(python, digits, rule, points)
        after = verify(digits, rule, "1", ["--points", points])
        cnn_epk[rule] = min(before, after, key=lambda r: r[1])
    last = verify(digits, "auto", "1e-12", ["--points", points])
    cnn_epk["auto"] = min(first, last, key=lambda r: r[1])
    return cnn_jax, cnn_epk


def print_cnn_against_jax(cnn_jax, cnn_epk):
    if not cnn_jax:
        return
    print()
    print("| replay, digits CNN against JAX (same store and points) | points | epk s | JAX s "
          "(best of 2; first incl. compile) | JAX / epk | epk max error | JAX max error |")
    print("|---|---|---|---|---|---|---|")
    for rule, j in cnn_jax.items():
        report, wall, _ = cnn_epk[rule]
        print(f"| {rule} | {report['points']} | {wall:.1f} | {j['seconds_best']:.1f} "
              f"({j['seconds_first']:.1f}) | {j['seconds_best'] / wall:.2f} | "
              f"{report['max_abs_error']:.2e} | {j['max_abs_err']:.2e} |")
    report, wall, _ = cnn_epk["auto"]
    vs = ", ".join(f"{j['seconds_best'] / wall:.2f} vs JAX {r}" for r, j in cnn_jax.items())
    print(f"| auto, verified at 1e-12 | {report['points']} | {wall:.1f} | – | {vs} | "
          f"{report['max_abs_error']:.2e} (passed: {report['passed']}) | – |")
    check = max(j["attr_vs_path"] for j in cnn_jax.values())
    dl = max(j["dloss_vs_store"] for j in cnn_jax.values())
    print(f"\nJAX's own checks: its attributions and decay share rebuild its prediction to "
          f"{check:.1e}; its dl/df of every step's samples match the store's to {dl:.1e}.")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=ROOT / "target" / "bench", type=Path)
    ap.add_argument("--repeats", type=int, default=7, help="bench_record repetitions")
    ap.add_argument("--no-jax", action="store_true")
    ap.add_argument("--no-guide", action="store_true", help="skip section 7 (Burn's guide model)")
    ap.add_argument("--quick", action="store_true", help="fewer points and repeats (a smoke run)")
    ap.add_argument("--only", choices=["cnn-jax"],
                    help="run one comparison alone: cnn-jax, the digits CNN against JAX (section 5's last table)")
    a = ap.parse_args()
    out = a.out
    out.mkdir(parents=True, exist_ok=True)
    points = ["--points", "10"] if a.quick else []
    sh(["cargo", "build", "--release", "--locked", "--bin", "replay", "--example", "gaussians",
        "--example", "bench_record", "--example", "digits", "--example", "bench_replay",
        "--example", "guide"], cwd=ROOT)
    rows = []
    cpu = platform.processor() or platform.machine()
    print(f"date {date.today()}, {os.cpu_count()} cores, {cpu}", file=sys.stderr)
    if a.only == "cnn-jax":
        digits = train_digits(out)
        cnn_jax, cnn_epk = cnn_against_jax(jax_python(out, False), digits, "4" if a.quick else "10")
        print(f"Measured {date.today()} on {os.cpu_count()} cores ({cpu}); "
              f"`python3 scripts/bench.py --only cnn-jax`{' --quick' if a.quick else ''}.")
        print_cnn_against_jax(cnn_jax, cnn_epk)
        return

    # 1. Recording overhead: the store on the working disk, and in memory (tmpfs), which
    # separates what the recorder costs the training threads from what the file system costs.
    record = []
    places = [("disk", None)] + ([("tmpfs", "/dev/shm")] if Path("/dev/shm").is_dir() else [])
    for place, tmp in places:
        env = dict(os.environ, **({"TMPDIR": tmp} if tmp else {}))
        rec = sh([RELEASE / "examples" / "bench_record", "--repeats", 2 if a.quick else a.repeats,
                  "--json"], stdout=subprocess.PIPE, cwd=ROOT, env=env).stdout
        record += [dict(json.loads(line), store=place) for line in rec.splitlines()
                   if line.startswith("{")]
        # Burn's guide model as Burn trains it by default: float32, stored as f32.
        rec = sh([RELEASE / "examples" / "bench_record", "--repeats", 2 if a.quick else a.repeats,
                  "--json", "--f32", "--only", "guide"], stdout=subprocess.PIPE, cwd=ROOT,
                 env=env).stdout
        record += [dict(json.loads(line), store=place) for line in rec.splitlines()
                   if line.startswith("{")]

    # 2. Replay against JAX on the same toy.
    toy = out / "toy.zarr"
    train_toy(toy, 100)
    epk = {}
    cpu_use = {}
    for rule in ["mid:100", "gauss:8"]:
        report, wall, _ = verify(toy, rule, "1", points)
        epk[rule] = (report, wall)
        cpu_use[rule] = LAST_CPU["use"]
    auto, auto_wall, _ = verify(toy, "auto", "1e-12", points)
    cpu_use["auto"] = LAST_CPU["use"]
    python = jax_python(out, a.no_jax)
    jax = {}
    if python is not None:
        test = ["--test", "10"] if a.quick else []
        res = sh([python, ROOT / "benches" / "peers" / "epk_jax.py", "--rules", "mid:100,gauss:8",
                  "--json", "--repeat", "2", *test], stdout=subprocess.PIPE).stdout
        for line in res.splitlines():
            if line.startswith("{"):
                r = json.loads(line)
                jax[r["rule"]] = r

    # 3. Memory flat in steps (20 held-out points, gauss:8: the step loop is what is measured).
    rss = {}
    for steps in [50, 500]:
        store = out / f"toy-{steps}.zarr"
        train_toy(store, steps, ["--per-class", "300", "--test", "20"])
        _, _, rss[steps] = verify(store, "gauss:8", "1")

    # 4. Both cores: one worker thread against the default (all cores).
    cores = {}
    for threads in ["1", str(os.cpu_count())]:
        _, cores[threads], _ = verify(toy, "auto", "1e-12", ["--points", "20", "--threads", threads])

    # 5. The digits CNN: the structured, batched Jacobian path against the general one on the
    # same store, alternating (examples/bench_replay.rs), and the whole verify of 30 points.
    digits = train_digits(out)
    cnn = json.loads(sh([RELEASE / "examples" / "bench_replay", digits, "--json", "--points",
                         "4" if a.quick else "10", "--repeats", "2"],
                        stdout=subprocess.PIPE, cwd=ROOT).stdout.strip().splitlines()[-1])
    # The whole verify with the model's declared degree (one order per piece) and with
    # `--orders-only` (two orders agreeing), alternating.
    orders_runs, degree_runs = [], []
    for _ in range(1 if a.quick else 2):
        orders_runs.append(verify(digits, "auto", "1e-12", [*points, "--orders-only"]))
        degree_runs.append(verify(digits, "auto", "1e-12", points))
    cnn_all, cnn_wall, cnn_rss = min(degree_runs, key=lambda r: r[1])
    cnn_jax, cnn_epk = cnn_against_jax(python, digits, "4" if a.quick else "10")
    orders_all, orders_wall, orders_rss = min(orders_runs, key=lambda r: r[1])
    degree_ratio = statistics.median(o[1] / d[1] for o, d in zip(orders_runs, degree_runs))

    # 6. Long runs: verified at 1e-12, time linear and memory flat in the number of steps.
    long = {}
    lengths = [300, 3000] if a.quick else [3000, 30000]
    for steps in lengths:
        store = out / f"long-{steps}.zarr"
        train_toy(store, steps, ["--per-class", "100", "--width", "16", "--dim", "20", "--test", "2"])
        long[steps] = verify(store, "auto", "1e-12")

    # 7. Burn's guide model at its own size, with the default and a smaller adjoint budget.
    guide = {}
    if not a.no_guide:
        store = out / "guide.zarr"
        sh([RELEASE / "examples" / "guide", "--store", store, "--overwrite", "--train", "3840",
            "--epochs", "4", "--explain", "10"], stdout=subprocess.DEVNULL, cwd=ROOT)
        n = ["--points", "2" if a.quick else "10"]
        for budget in ["512MiB", "256MiB"]:
            guide[budget] = verify(store, "auto", "1e-12", [*n, "--adjoint-memory", budget])

    print(f"Measured {date.today()} on {os.cpu_count()} cores ({cpu}); "
          f"`python3 scripts/bench.py`{' --quick' if a.quick else ''}.\n")
    print("| recording | store on | P | steps | without s | with s | overhead | stalls | bytes/step | weights compression |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in record:
        print(f"| {r['case']} | {r['store']} | {r['params']} | {r['steps']} | {r['baseline_s']:.3f} | "
              f"{r['recorded_s']:.3f} | {r['overhead_percent']:+.1f} % | {r['stalls']} | "
              f"{r['bytes_per_step']} | {r['weights_compression']:.2f}× |")
    print()
    print("| replay, toy (P = 6659, 3000 train, 100 steps) | points | epk s | JAX s (best of 2; first incl. compile) | JAX / epk | epk max error | JAX max error |")
    print("|---|---|---|---|---|---|---|")
    for rule, (report, wall) in epk.items():
        j = jax.get(rule)
        js = f"{j['seconds_best']:.1f} ({j['seconds_first']:.1f})" if j else "not run"
        ratio = f"{j['seconds_best'] / wall:.2f}" if j else "–"
        je = f"{j['max_abs_err']:.2e}" if j else "–"
        print(f"| {rule} | {report['points']} | {wall:.1f} | {js} | {ratio} | "
              f"{report['max_abs_error']:.2e} | {je} |")
    print(f"| auto, verified at 1e-12 | {auto['points']} | {auto_wall:.1f} | – | "
          f"{(jax['mid:100']['seconds_best'] / auto_wall) if 'mid:100' in jax else float('nan'):.2f} vs JAX mid:100 | "
          f"{auto['max_abs_error']:.2e} (passed: {auto['passed']}) | – |")
    print()
    print(f"| memory: replay verify, 900 train, 20 points, gauss:8 | peak RSS MB |")
    print("|---|---|")
    for steps, mb in rss.items():
        print(f"| {steps} steps | {mb:.1f} |")
    print(f"| 500 / 50 | {rss[500] / rss[50]:.3f} |")
    print()
    one, all_ = cores["1"], cores[str(os.cpu_count())]
    print(f"| cores ({os.cpu_count()}) | CPU time / wall time |")
    print("|---|---|")
    for rule, use in cpu_use.items():
        print(f"| replay verify, {rule}, all points | {use:.2f} |")
    print(f"| auto, 20 points: `--threads 1` vs `--threads {os.cpu_count()}` (points split across "
          f"workers; Burn and ndarray keep their own threads) | {one:.1f} s vs {all_:.1f} s |")
    print()
    print("| replay, digits CNN (P = 1898, 120 steps, momentum), auto at 1e-12 | points | s | "
          "max error | evals/step/point |")
    print("|---|---|---|---|---|")
    print(f"| general path (one backward pass per output, point and node) | {cnn['points']} | "
          f"{cnn['general_s']:.1f} | {cnn['general_error']:.2e} | {cnn['general_evals']:.2f} |")
    print(f"| structured path, points side by side | {cnn['points']} | {cnn['structured_s']:.1f} | "
          f"{cnn['structured_error']:.2e} | {cnn['structured_evals']:.2f} |")
    print(f"| general / structured (median of alternating pairs) | | {cnn['ratio']:.2f}× | "
          f"attributions agree to {cnn['attribution_gap']:.1e} | |")
    print(f"| `replay verify --orders-only`, all held-out points (peak RSS {orders_rss:.0f} MB) | "
          f"{orders_all['points']} | {orders_wall:.1f} | {orders_all['max_abs_error']:.2e} "
          f"(passed: {orders_all['passed']}) | {orders_all['evals_per_step_per_point']:.2f} |")
    print(f"| `replay verify`, exact by degree (peak RSS {cnn_rss:.0f} MB) | {cnn_all['points']} | "
          f"{cnn_wall:.1f} | {cnn_all['max_abs_error']:.2e} (passed: {cnn_all['passed']}) | "
          f"{cnn_all['evals_per_step_per_point']:.2f} |")
    print(f"| orders-only / by degree (median of alternating pairs; times above are the best of "
          f"each side) | | {degree_ratio:.2f}× | | |")
    print_cnn_against_jax(cnn_jax, cnn_epk)
    print()
    print("| long run, MLP (P = 387, 300 train, full batch), auto at 1e-12, 2 points | s | ms/step | "
          "peak RSS MB | machine error | rounding floor |")
    print("|---|---|---|---|---|---|")
    for steps, (report, wall, mb) in long.items():
        print(f"| {steps} steps | {wall:.1f} | {1e3 * wall / steps:.2f} | {mb:.1f} | "
              f"{report['max_abs_error']:.2e} (passed: {report['passed']}) | "
              f"{report['rounding_floor']:.1e} |")
    (_, ws, ms), (_, wl, ml) = long[lengths[0]], long[lengths[1]]
    print(f"| {lengths[1]} / {lengths[0]} | {wl / ws:.2f} (10 if linear) | | {ml / ms:.3f} | | |")
    if guide:
        print()
        print("| Burn's guide (P = 531,178, 240 Adam steps), auto at 1e-12 | points | s | peak RSS MB | "
              "machine error | evals/step/point |")
        print("|---|---|---|---|---|---|")
        for budget, (report, wall, mb) in guide.items():
            print(f"| `--adjoint-memory {budget}` | {report['points']} | {wall:.1f} | {mb:.0f} | "
                  f"{report['max_abs_error']:.2e} (passed: {report['passed']}) | "
                  f"{report['evals_per_step_per_point']:.2f} |")
    (out / "results.json").write_text(json.dumps({
        "digits": {**cnn, "verify_s": cnn_wall, "verify_rss_mb": cnn_rss,
                   "orders_only_s": orders_wall, "degree_ratio": degree_ratio},
        "digits_jax": cnn_jax,
        "digits_epk": {k: {"seconds": w, "max_abs_error": r["max_abs_error"], "points": r["points"]}
                       for k, (r, w, _) in cnn_epk.items()},
        "record": record, "epk": {k: {"seconds": w, **{x: r[x] for x in ("points", "max_abs_error")}}
                                  for k, (r, w) in epk.items()},
        "auto": {"seconds": auto_wall, "max_abs_error": auto["max_abs_error"], "passed": auto["passed"]},
        "jax": jax, "rss_mb": rss, "threads_s": cores, "cpu_use": cpu_use,
        "long": {k: {"seconds": w, "rss_mb": m, "max_abs_error": r["max_abs_error"],
                     "passed": r["passed"]} for k, (r, w, m) in long.items()},
        "guide": {k: {"seconds": w, "rss_mb": m, "max_abs_error": r["max_abs_error"],
                      "passed": r["passed"]} for k, (r, w, m) in guide.items()}}, indent=1))


if __name__ == "__main__":
    main()
