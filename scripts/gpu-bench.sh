#!/usr/bin/env bash
# The same replay on a GPU and on the same machine's CPU cores, alternating, in one run.
#
# Usage: bash scripts/gpu-bench.sh REPLAY STORE [POINTS] [PAIRS]
#   REPLAY  a replay binary built with `--features cuda` (it serves both sides: --device cpu|cuda)
#   STORE   a recorded store, e.g. the digits CNN's (`digits --store S`)
# Each side runs `replay --device D verify STORE --points POINTS --tolerance 1e-12`; the first
# GPU run (kernel compilation and autotuning, which Burn may cache for later runs) is reported
# apart (BENCH_WARMUP_POINTS sets its points; POINTS by default). Prints one line per run and a Markdown table of the medians.
# BENCH_LOGS=DIR keeps each run's full output in DIR/cpu.log and DIR/cuda.log.
# A side that passes BENCH_TIMEOUT seconds (default 200) is stopped and reported as such.
set -uo pipefail
replay=${1:?replay binary}
store=${2:?store}
points=${3:-30}
pairs=${4:-2}
limit=${BENCH_TIMEOUT:-200}
warmup=${BENCH_WARMUP_POINTS:-$points}

keep() { # log device: appends a run's output to BENCH_LOGS/DEVICE.log, if asked, and drops it
  if [ -n "${BENCH_LOGS:-}" ]; then cat "$1" >>"$BENCH_LOGS/$2.log"; fi
  rm -f "$1"
}

run() { # device [points] -> prints "seconds error pass", or "timeout-or-error"
  local device=$1 n=${2:-$points} log started ended error verdict
  log=$(mktemp)
  started=$(date +%s.%N)
  timeout "$limit" "$replay" --device "$device" verify "$store" --points "$n" \
    --tolerance 1e-12 >"$log" 2>&1
  ended=$(date +%s.%N)
  # verify exits 1 on FAIL with its report printed; anything else without a verdict is an error.
  verdict=$(grep -oE "^(PASS|FAIL)" "$log" | head -n 1)
  if [ -z "$verdict" ]; then
    echo "timeout-or-error"
    tail -n 5 "$log" >&2
  else
    error=$(grep "vs network" "$log" | grep -oE "[0-9.]+e[-+]?[0-9]+" | head -n 1)
    echo "$(awk -v a="$started" -v b="$ended" 'BEGIN {printf "%.1f", b - a}') ${error:-?} $verdict"
  fi
  keep "$log" "$device"
}

echo "# $(nproc) CPU cores; $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null)"
echo "# warm-up, cuda, $warmup points: $(run cuda "$warmup")"
cpu=()
gpu=()
for i in $(seq "$pairs"); do
  c=$(run cpu)
  g=$(run cuda)
  echo "# pair $i: cpu $c | cuda $g"
  cpu+=("${c%% *}")
  gpu+=("${g%% *}")
done
median() { printf '%s\n' "$@" | grep -E '^[0-9.]+$' | sort -g | awk '{a[NR]=$1} END {print (NR == 0 ? "nan" : NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
mc=$(median "${cpu[@]}")
mg=$(median "${gpu[@]}")
mapfile -t cpu_ok < <(printf '%s\n' "${cpu[@]}" | grep -E '^[0-9.]+$')
mapfile -t gpu_ok < <(printf '%s\n' "${gpu[@]}" | grep -E '^[0-9.]+$')
echo
echo "| $points points, auto at 1e-12 | --device cpu ($(nproc) cores) | --device cuda | CPU / GPU time |"
echo "|---|---|---|---|"
ratio=$(awk -v c="$mc" -v g="$mg" 'BEGIN {if (c + 0 > 0 && g + 0 > 0) printf "%.2f", c / g; else printf "n/a"}')
echo "| median of the runs that finished, $pairs alternating pairs | ${mc} s (${#cpu_ok[@]} runs) | ${mg} s (${#gpu_ok[@]} runs) | $ratio |"
