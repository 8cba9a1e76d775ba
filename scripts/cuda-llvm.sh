#!/usr/bin/env bash
# Prepares an offline build of the `cuda` feature.
#
# burn-cuda 0.22 links LLVM (NVPTX) through tracel-llvm-bundler, whose build script downloads a
# prebuilt LLVM from a code host that sandboxed machines cannot reach. It skips the download when
# its install folder already holds an LLVM prefix (bin/llvm-config, static libraries) and the
# marker `.tracel-llvm-installed`. The PyPI wheels mlc-llvm-static(-extra-targets) 23.1.1.post0
# ship exactly such a prefix, so this script unpacks them there. It also unpacks the CUDA
# toolkit's libdevice (PyPI nvidia-cuda-nvcc-cu12), which the LLVM path needs at run time for
# exp/log, and prints the CUDA_PATH to export.
#
# Usage: bash scripts/cuda-llvm.sh [--print-env]
# Idempotent: a completed install is left alone.
set -euo pipefail

llvm_version=23.1.1.post0
nvcc_version=12.9.86
# The folder name follows tracel-llvm-bundler's version (see Cargo.lock).
bundle=tracel-llvm-23.1.0-4
data_home="${XDG_DATA_HOME:-$HOME/.local/share}"
prefix="$data_home/tracel/$bundle"
cuda_home="$data_home/epk/cuda-nvcc-$nvcc_version"
wheels="$data_home/epk/wheels"

if [ "${1:-}" = "--print-env" ]; then
  echo "export CUDA_PATH=$cuda_home"
  exit 0
fi

if ! grep -q "name = \"tracel-llvm-bundler\"" Cargo.lock 2>/dev/null ||
   ! grep -A1 "name = \"tracel-llvm-bundler\"" Cargo.lock | grep -q "version = \"${bundle#tracel-llvm-}\""; then
  echo "cuda-llvm: Cargo.lock does not pin tracel-llvm-bundler ${bundle#tracel-llvm-}; update this script" >&2
  exit 1
fi

unpack() { # wheel file, destination
  python3 -m zipfile -e "$1" "$2"
}

python=python3
if ! python3 -m pip --version >/dev/null 2>&1; then
  python3 -m venv "$data_home/epk/venv"
  python="$data_home/epk/venv/bin/python"
fi

mkdir -p "$wheels"
if [ ! -e "$prefix/.tracel-llvm-installed" ] || [ ! -e "$cuda_home/nvvm/libdevice/libdevice.10.bc" ]; then
  "$python" -m pip download --quiet --no-deps --only-binary=:all: --dest "$wheels" \
    "mlc-llvm-static==$llvm_version" "mlc-llvm-static-extra-targets==$llvm_version" \
    "nvidia-cuda-nvcc-cu12==$nvcc_version"
fi

if [ ! -e "$prefix/.tracel-llvm-installed" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  unpack "$wheels"/mlc_llvm_static-"$llvm_version"-*.whl "$work"
  # The extra targets (NVPTX among them) unpack into the same prefix.
  unpack "$wheels"/mlc_llvm_static_extra_targets-"$llvm_version"-*.whl "$work"
  rm -rf "$prefix"
  mkdir -p "$(dirname "$prefix")"
  mv "$work/mlc_llvm_static/static" "$prefix"
  # Wheels do not keep the run bit.
  chmod +x "$prefix"/bin/*
  "$prefix/bin/llvm-config" --version >/dev/null
  "$prefix/bin/llvm-config" --targets-built | grep -qw NVPTX || {
    echo "cuda-llvm: the LLVM prefix has no NVPTX target" >&2
    exit 1
  }
  touch "$prefix/.tracel-llvm-installed"
fi

if [ ! -e "$cuda_home/nvvm/libdevice/libdevice.10.bc" ]; then
  work=$(mktemp -d)
  unpack "$wheels"/nvidia_cuda_nvcc_cu12-"$nvcc_version"-*.whl "$work"
  rm -rf "$cuda_home"
  mkdir -p "$(dirname "$cuda_home")"
  mv "$work/nvidia/cuda_nvcc" "$cuda_home"
  rm -rf "$work"
fi

echo "cuda-llvm: LLVM $("$prefix/bin/llvm-config" --version) in $prefix"
echo "cuda-llvm: libdevice in $cuda_home/nvvm/libdevice; export CUDA_PATH=$cuda_home"
