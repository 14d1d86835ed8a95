#!/usr/bin/env bash
# Long chaos run against real agents: kill -9 (restart with and without the
# data directory), kill -STOP/-CONT and partitions, then a summary: tasks,
# failovers, failover p50/p99 (kill -9 -> the task running again elsewhere,
# measured from a log the tasks write outside shoal), double runs, lost.
#
#   scripts/chaos.sh [--duration S] [--tasks N] [--seed N] [other `shoal chaos` flags]
#
# Defaults: 600 s, 2400 tasks of 3 s, a fault every ~4 s (about 80 kill -9,
# each catching several running tasks: well over 100 failovers).
# Partitions need root (iptables); without it they are skipped and said so.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=600
tasks=2400
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration="$2"; shift 2 ;;
    --tasks) tasks="$2"; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
cargo build --release -p shoal-node --bin shoal >&2
target="${CARGO_TARGET_DIR:-target}"
exec "$target/release/shoal" chaos --duration "$duration" --tasks "$tasks" "${args[@]}"
