#!/usr/bin/env bash
# How much CPU a busy loop gets under its task's CPU request: one agent on
# loopback (isolation on, so it needs writable cgroups: root here), one
# busy task at each of 250m, 500m and 1000m at a time, each spinning for
# SPIN_S seconds and reporting the CPU time its loop used (bash `times`).
#
# Usage: scripts/bench/cpu-quota.sh      (after cargo build --release -p shoal-node)
# Env:   SPIN_S=3 BASE_PORT=27900 SHOAL_BIN=target/release/shoal
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${SHOAL_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/shoal}
SPIN_S=${SPIN_S:-3}
BASE=${BASE_PORT:-27900}
[[ -x $BIN ]] || { echo "build first: cargo build --release -p shoal-node" >&2; exit 1; }

WORK=$(mktemp -d -t shoal-cpu-quota.XXXXXX)
AGENT=
cleanup() {
  [[ -n $AGENT ]] && kill -TERM "$AGENT" 2>/dev/null && wait "$AGENT" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

API=http://127.0.0.1:$((BASE + 1))
"$BIN" agent --data "$WORK/data" --listen "127.0.0.1:$BASE" --api "127.0.0.1:$((BASE + 1))" \
  --slots 2 --membership-preset local >"$WORK/agent.log" 2>&1 &
AGENT=$!
for _ in $(seq 1 200); do
  "$BIN" members --api "$API" --json 2>/dev/null | grep -q '"isolation"' && break
  sleep 0.1
done
isolation=$("$BIN" members --api "$API" --json | grep -o '"isolation": *"[^"]*"' | head -1 | cut -d'"' -f4)
echo "isolation: ${isolation:-unknown}"

printf '%-8s %10s %10s\n' request cpu_s share_of_core
for cpu in 250m 500m 1000m; do
  id=$("$BIN" submit --api "$API" --cpu "$cpu" -- bash -c \
    "timeout $SPIN_S bash -c 'while :; do :; done'; times")
  "$BIN" wait --api "$API" --timeout 60s "$id" >/dev/null || true
  # `times` prints the shell's, then its children's, user and system time.
  child=$("$BIN" logs --api "$API" "$id" | sed -n 2p)
  secs=$(awk -v t="$child" 'BEGIN {
    n = split(t, f, " "); s = 0
    for (i = 1; i <= n; i++) { split(f[i], p, "m"); sub("s", "", p[2]); s += p[1] * 60 + p[2] }
    print s }')
  printf '%-8s %10.2f %10.2f\n' "$cpu" "$secs" "$(awk -v s="$secs" -v w="$SPIN_S" 'BEGIN { print s / w }')"
done
