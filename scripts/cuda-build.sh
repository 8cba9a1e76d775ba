#!/usr/bin/env bash
# Builds the `cuda` feature (burn-cuda) and runs one verify on `--device cuda`.
#
# The build is a second build of Burn with CUDA features, about 30 minutes on 2 cores, so CI only
# type-checks the feature (`cargo check --features cuda`); run this where the time is there.
# With a GPU the verify must pass at 1e-12; without one (or without a driver) the CUDA runtime
# must fail cleanly, exit 2 with a message, never a panic.
#
# Usage: bash scripts/cuda-build.sh [STORE]   (default: a 20-step gaussians run it records)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/cuda-llvm.sh
eval "$(bash scripts/cuda-llvm.sh --print-env)"
started=$(date +%s)
cargo build --release --locked --features cuda --bin replay --example gaussians
echo "cuda-build: built in $(( $(date +%s) - started )) s"
store=${1:-target/cuda-build/gaussians.zarr}
if [ -z "${1:-}" ]; then
  ./target/release/examples/gaussians --store "$store" --overwrite --per-class 100 --steps 20 \
    --test 20 > /dev/null
fi
./target/release/replay --device cuda info "$store" > /dev/null
set +e
./target/release/replay --device cuda verify "$store" --tolerance 1e-12 2>&1 | tee target/cuda-build.log
status=${PIPESTATUS[0]}
set -e
case "$status" in
  0) echo "cuda-build: verified on the GPU" ;;
  2) echo "cuda-build: no usable GPU here, and the CUDA runtime said so cleanly (exit 2)" ;;
  *) echo "cuda-build: replay --device cuda exited $status (a crash, not a clean error)" >&2
     exit 1 ;;
esac
