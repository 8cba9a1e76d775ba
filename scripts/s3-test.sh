#!/usr/bin/env bash
# Object storage against a real S3 server (issue #15, feature `s3`; docs/scale.md): a run
# uploaded while it trains, a killed upload and a stopped server, each replayed from the bucket
# and verified at 1e-12. The server is Garage 2.5 (AGPL-3.0, a test tool only: never linked),
# built from crates.io once into a cache folder; tests/s3.rs starts its own one-node servers.
#
#   bash scripts/s3-test.sh              # installs Garage if needed (20–40 min on 2 cores)
#   bash scripts/s3-test.sh --if-cached  # CI: runs the tests only when Garage is installed
#
# The cache is $EPK_CACHE (default ~/.cache/epk); Garage lands in $EPK_CACHE/garage-2.5.0.
set -euo pipefail
cd "$(dirname "$0")/.."
cache=${EPK_CACHE:-$HOME/.cache/epk}
garage="$cache/garage-2.5.0/bin/garage"
# The feature is on by default, so these reuse the README's test build (a `-p` or a feature
# switch here would resolve other features under Burn and rebuild it). A kill at every request
# of an upload pass, against object_store's in-memory bucket, and the remote module's doctests:
cargo test --release --locked --workspace remote
if [ ! -x "$garage" ]; then
  if [ "${1:-}" = "--if-cached" ]; then
    echo "s3: tests skipped, no Garage at $garage (bash scripts/s3-test.sh installs it)"
    exit 0
  fi
  cargo install garage@2.5.0 --locked --root "$cache/garage-2.5.0"
fi
"$garage" --version
EPK_GARAGE="$garage" cargo test --release --locked --features garage --test s3
