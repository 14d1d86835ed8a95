#!/usr/bin/env bash
# Builds shoal and runs the demo: a local 5-node mesh, a batch of tasks, the
# busiest node killed with kill -9, failover shown as it happens.
#   scripts/demo.sh [--nodes N] [--tasks N] [--keep] [--membership-only]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p shoal-node --bin shoal >&2
exec "${CARGO_TARGET_DIR:-target}/release/shoal" demo "$@"
