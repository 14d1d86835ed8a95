#!/usr/bin/env bash
# Footprint of a mesh of shoal agents on one machine (loopback).
#
# Starts N agents (default 30) joining through the first, waits until the
# first lists all N alive, lets the mesh settle, then measures over a window:
# resident memory (VmRSS), CPU share of one core (utime+stime from
# /proc/PID/stat) and membership traffic (shoal_bytes_in/out_total from
# /metrics). Prints one row per agent and a summary line.
#
# Usage: scripts/mesh-footprint.sh
# Then (DETECT=1, the default) kills the last agent with SIGKILL and reports
# how long until every other agent lists it down (sweeps of all APIs, so
# the figure is rounded up by one sweep, about 0.3 s for 30 agents).
#
# Env:   N=30 PRESET=lan SETTLE_S=20 MEASURE_S=30 BASE_PORT=27000 DETECT=1
#        SHOAL_BIN=path/to/shoal (default: target/release/shoal if built,
#        else target/debug/shoal; CARGO_TARGET_DIR is honoured)
set -euo pipefail

N=${N:-30}
PRESET=${PRESET:-lan}
SETTLE_S=${SETTLE_S:-20}
MEASURE_S=${MEASURE_S:-30}
BASE_PORT=${BASE_PORT:-27000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
if [[ -z "${SHOAL_BIN:-}" ]]; then
  if [[ -x "$TARGET/release/shoal" ]]; then SHOAL_BIN=$TARGET/release/shoal; else SHOAL_BIN=$TARGET/debug/shoal; fi
fi
[[ -x "$SHOAL_BIN" ]] || { echo "no shoal binary at $SHOAL_BIN (cargo build -p shoal-node)" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl is required" >&2; exit 1; }

WORK=$(mktemp -d -t shoal-footprint.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  sleep 1
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

"$SHOAL_BIN" ca init --party footprint --dir "$WORK/ca" 2>/dev/null
SEED=127.0.0.1:$BASE_PORT
for i in $(seq 1 "$N"); do
  name=f$i
  "$SHOAL_BIN" ca issue --dir "$WORK/ca" --node "$name" --out "$WORK/tls-$name" 2>/dev/null
  join=()
  [[ $i -gt 1 ]] && join=(--join "$SEED")
  RUST_LOG=warn "$SHOAL_BIN" agent --name "$name" --data "$WORK/data-$name" \
    --listen "127.0.0.1:$((BASE_PORT + i - 1))" --api "127.0.0.1:$((BASE_PORT + 1000 + i - 1))" \
    --tls-dir "$WORK/tls-$name" --membership-preset "$PRESET" "${join[@]}" \
    2>"$WORK/$name.log" &
  PIDS+=($!)
  disown "$!"
done

api() { echo "http://127.0.0.1:$((BASE_PORT + 1000 + $1 - 1))"; }
alive_count() { curl -sf --max-time 2 "$(api "$1")/v1/members" | grep -o '"state":"alive"' | wc -l; }

echo "started $N agents ($SHOAL_BIN, preset $PRESET); waiting for the mesh to form" >&2
formed=0
for _ in $(seq 1 120); do
  if [[ $(alive_count 1) -eq $N && $(alive_count "$N") -eq $N ]]; then formed=1; break; fi
  sleep 0.5
done
[[ $formed -eq 1 ]] || { echo "mesh did not form: agent 1 lists $(alive_count 1) alive" >&2; exit 1; }
echo "mesh formed; settling ${SETTLE_S}s, measuring ${MEASURE_S}s" >&2
sleep "$SETTLE_S"

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
metric() { curl -sf --max-time 2 "$(api "$1")/metrics" | awk -v m="$2" '$1 == m {print $2}'; }
declare -a T0 IN0 OUT0 WIN0 WOUT0
for i in $(seq 1 "$N"); do
  T0[$i]=$(ticks "${PIDS[$((i - 1))]}")
  IN0[$i]=$(metric "$i" shoal_bytes_in_total)
  OUT0[$i]=$(metric "$i" shoal_bytes_out_total)
  WIN0[$i]=$(metric "$i" shoal_udp_bytes_in_total)
  WOUT0[$i]=$(metric "$i" shoal_udp_bytes_out_total)
done
sleep "$MEASURE_S"
HZ=$(getconf CLK_TCK)
# IN/OUT: membership frame bytes; WIRE: UDP payload bytes (QUIC included).
printf "%-6s %8s %8s %10s %10s %10s %10s %6s\n" AGENT RSS_MB CPU_% IN_B/S OUT_B/S WIRE_IN WIRE_OUT ALIVE
summary=$(for i in $(seq 1 "$N"); do
  pid=${PIDS[$((i - 1))]}
  rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
  t1=$(ticks "$pid")
  in1=$(metric "$i" shoal_bytes_in_total)
  out1=$(metric "$i" shoal_bytes_out_total)
  win1=$(metric "$i" shoal_udp_bytes_in_total)
  wout1=$(metric "$i" shoal_udp_bytes_out_total)
  alive=$(alive_count "$i")
  awk -v a="f$i" -v rss="$rss_kb" -v dt="$((t1 - T0[i]))" -v hz="$HZ" -v s="$MEASURE_S" \
      -v in0="${IN0[$i]}" -v in1="$in1" -v o0="${OUT0[$i]}" -v o1="$out1" \
      -v win0="${WIN0[$i]}" -v win1="$win1" -v wo0="${WOUT0[$i]}" -v wo1="$wout1" -v alive="$alive" 'BEGIN {
    printf "%-6s %8.1f %8.2f %10.0f %10.0f %10.0f %10.0f %6d\n", a, rss/1024, dt/hz/s*100,
      (in1-in0)/s, (o1-o0)/s, (win1-win0)/s, (wo1-wo0)/s, alive
  }'
done)
echo "$summary"
echo "$summary" | awk '{rss+=$2; cpu+=$3; bin+=$4; bout+=$5; win+=$6; wout+=$7; if ($2>mrss) mrss=$2; if ($3>mcpu) mcpu=$3; n++}
  END {printf "mean: RSS %.1f MB (max %.1f), CPU %.2f%% of a core (max %.2f), frames in %.0f / out %.0f B/s, wire in %.0f / out %.0f B/s per agent\n",
       rss/n, mrss, cpu/n, mcpu, bin/n, bout/n, win/n, wout/n}'

if [[ ${DETECT:-1} == 1 ]]; then
  victim=$N
  state_of() { curl -sf --max-time 2 "$(api "$1")/v1/members" | grep -o "\"name\":\"f$victim\"[^}]*\"state\":\"[a-z]*\"" | grep -o '"state":"[a-z]*"' | cut -d'"' -f4; }
  kill -KILL "${PIDS[$((victim - 1))]}"
  start=$(date +%s.%N)
  detected=0
  for _ in $(seq 1 600); do
    all=1
    for i in $(seq 1 $((N - 1))); do
      [[ $(state_of "$i") == down ]] || { all=0; break; }
    done
    if [[ $all == 1 ]]; then detected=1; break; fi
    sleep 0.05
  done
  took=$(echo "$(date +%s.%N) - $start" | bc)
  if [[ $detected == 1 ]]; then
    echo "kill -9 f$victim: listed down by all $((N - 1)) others after ${took}s (preset $PRESET)"
  else
    echo "kill -9 f$victim: not down everywhere after ${took}s" >&2
  fi
fi
