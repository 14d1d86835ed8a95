#!/usr/bin/env bash
# Profile one shoal agent under the benchmark's throughput load.
#
# Runs `shoal-load throughput` (3-agent mesh, mock zero-duration tasks) and,
# once the load is on, `perf record --call-graph dwarf` on agent bench0 for PERF_S seconds;
# writes target/bench/perf-agent.data and the top of `perf report` to
# target/bench/perf-agent.txt. Needs the release build of shoal-bench and
# shoal (scripts/bench/etcd-vs-shoal.sh builds both) and linux-perf.
#
# Usage: scripts/bench/profile-shoal.sh
# Env:   TASKS=6000 PERF_S=15 BENCH_CONCURRENCY=12 BENCH_SHOAL_BASE_PORT=27600
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
OUT=$ROOT/target/bench
TASKS=${TASKS:-6000}
PERF_S=${PERF_S:-15}
CONC=${BENCH_CONCURRENCY:-12}
BASE=${BENCH_SHOAL_BASE_PORT:-27600}
command -v perf >/dev/null || { apt-get update -qq && apt-get install -y -qq linux-perf >/dev/null; }
[[ -x $BIN/shoal-load && -x $BIN/shoal ]] || { echo "build first: cargo build --release -p shoal-bench -p shoal-node" >&2; exit 1; }

WORK=$(mktemp -d -t shoal-profile.XXXXXX)
LOAD_PID=
cleanup() {
  [[ -n $LOAD_PID ]] && kill -TERM "$LOAD_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$OUT"

"$BIN/shoal-load" throughput --shoal-bin "$BIN/shoal" --dir "$WORK/mesh" --base-port "$BASE" \
  --tasks "$TASKS" --submitters "$CONC" --workers "$CONC" >"$OUT/perf-load.json" &
LOAD_PID=$!

# The load starts once the mesh has formed and warmed up: wait for the first
# real task beyond the three warm-up ones.
api=http://127.0.0.1:$((BASE + 100))
for _ in $(seq 1 600); do
  n=$(curl -sf --max-time 1 "$api/metrics" 2>/dev/null | awk '$1 == "shoal_tasks{state=\"succeeded\"}" {print $2}' || true)
  [[ ${n:-0} -gt 3 ]] && break
  sleep 0.1
done
AGENT=$(pgrep -f "agent --name bench0 --data $WORK/mesh/data-0" | head -1 || true)
[[ -n $AGENT ]] || { echo "agent bench0 not found" >&2; exit 1; }
curl -sf --max-time 2 "$api/metrics" >"$WORK/m0" || true
perf record -F 499 --call-graph "${PERF_CALLGRAPH:-dwarf,8192}" -p "$AGENT" -o "$OUT/perf-agent.data" -- sleep "$PERF_S" 2>/dev/null
curl -sf --max-time 2 "$api/metrics" >"$WORK/m1" || true
# Work per completed task on bench0 during the profile: store commits,
# datagrams and bytes sent, against tasks that reached `succeeded`.
awk 'NR == FNR { if ($1 !~ /^#/) a[$1] = $2; next }
     $1 !~ /^#/ && ($1 in a) { d[$1] = $2 - a[$1] }
     END {
       t = d["shoal_tasks{state=\"succeeded\"}"]
       printf "tasks succeeded during the profile: %d\n", t
       for (k in d) if (t > 0 && d[k] > 0 && k ~ /(commit_seconds_count|datagrams_out|bytes_out|renewals|claims|attempts_started)/)
         printf "  %-50s %12.0f  (%.2f per task)\n", k, d[k], d[k] / t
     }' "$WORK/m0" "$WORK/m1" >"$OUT/perf-agent-work.txt" || true
wait "$LOAD_PID" || true
LOAD_PID=
perf report -i "$OUT/perf-agent.data" --stdio --no-children --percent-limit 1 -g none 2>/dev/null >"$OUT/perf-agent.txt"
perf report -i "$OUT/perf-agent.data" --stdio --children --percent-limit 3 -g none 2>/dev/null >"$OUT/perf-agent-children.txt"
echo "load: $(cat "$OUT/perf-load.json")"
cat "$OUT/perf-agent-work.txt"
echo "self time (top):"; grep -v '^#' "$OUT/perf-agent.txt" | grep -v '^$' | head -25
