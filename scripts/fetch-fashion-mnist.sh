#!/usr/bin/env bash
# Fetches Fashion-MNIST (Xiao, Rasul & Vollgraf 2017; MIT) from Debian's `dataset-fashion-mnist`
# package into data/fashion-mnist/, checking the package's and every file's SHA-256 against
# data/fashion-mnist/README.md. Needs curl (or apt-get), sha256sum (GNU coreutils) and dpkg-deb
# (or ar and tar). The package comes from Debian's pool, or from snapshot.debian.org once the
# pool no longer holds this version.
set -euo pipefail
cd "$(dirname "$0")/.."
out=data/fashion-mnist
version=0.0~git20200523.55506a9-1
deb="dataset-fashion-mnist_${version}_all.deb"
deb_sha=39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0
declare -A sha=(
  [train-images-idx3-ubyte.gz]=b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7
  [train-labels-idx1-ubyte.gz]=0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056
  [t10k-images-idx3-ubyte.gz]=cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa
  [t10k-labels-idx1-ubyte.gz]=8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05
)
check() { # file, expected sha256
  echo "$2  $1" | sha256sum --check --quiet --strict
}

have_all=1
for f in "${!sha[@]}"; do
  if [ ! -f "$out/$f" ] || ! check "$out/$f" "${sha[$f]}" 2>/dev/null; then have_all=0; fi
done
if [ "$have_all" = 1 ]; then
  echo "fetch-fashion-mnist: $out already holds the four files"
  exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pool="pool/main/d/dataset-fashion-mnist/${deb//\~/%7E}"
if ! curl -fsSL --retry 3 -o "$tmp/$deb" "https://deb.debian.org/debian/$pool" &&
  ! curl -fsSL --retry 3 -o "$tmp/$deb" \
    "https://snapshot.debian.org/archive/debian/20240101T000000Z/$pool"; then
  (cd "$tmp" && apt-get download "dataset-fashion-mnist=$version")
fi
check "$tmp/$deb" "$deb_sha"
mkdir -p "$tmp/x"
if command -v dpkg-deb >/dev/null; then
  dpkg-deb -x "$tmp/$deb" "$tmp/x"
else
  (cd "$tmp" && ar x "$deb" && tar -xf data.tar.* -C x)
fi
mkdir -p "$out"
for f in "${!sha[@]}"; do
  check "$tmp/x/usr/share/datasets/fashion-mnist/$f" "${sha[$f]}"
  cp "$tmp/x/usr/share/datasets/fashion-mnist/$f" "$out/$f"
done
echo "fetch-fashion-mnist: wrote the four files to $out"
