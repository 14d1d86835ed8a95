#!/usr/bin/env bash
# Side by side: shoal against workers claiming tasks through etcd leases.
#
# Installs etcd (Debian's etcd-server/etcd-client) and protoc if missing,
# starts a 3-member etcd cluster on loopback in a temporary directory, builds
# the bench crate and the shoal binary in release, then runs, interleaved
# (etcd, shoal, etcd, shoal, ...):
#   - throughput: zero-duration tasks claimed and completed per second;
#   - failover: kill -9 of a holder (etcd: a worker process; shoal: an agent),
#     time until its tasks run elsewhere (etcd lease TTL 2 s, shoal default);
#   - pause: SIGSTOP of a holder for 4 s, then SIGCONT; double runs counted.
# Prints the table and writes target/bench/etcd-vs-shoal.json.
#
# Usage: scripts/bench/etcd-vs-shoal.sh [--quick]
# Env:   CARGO_TARGET_DIR (honoured), BENCH_ETCD_BASE_PORT=23780,
#        BENCH_SHOAL_BASE_PORT=27400, BENCH_CONCURRENCY=12 (submitters = workers)
set -euo pipefail

QUICK=0
case "${1:-}" in
  --quick) QUICK=1 ;;
  "") ;;
  *) echo "usage: $0 [--quick]" >&2; exit 2 ;;
esac

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=$ROOT/target/bench
ETCD_BASE=${BENCH_ETCD_BASE_PORT:-23780}
SHOAL_BASE=${BENCH_SHOAL_BASE_PORT:-27400}
CONC=${BENCH_CONCURRENCY:-12}

if [[ $QUICK -eq 1 ]]; then
  REPS=2; TASKS=600; KILL_CHUNKS=2; KILLS_PER_CHUNK=3; PAUSE_TRIALS=1; MODE=quick
else
  REPS=5; TASKS=2000; KILL_CHUNKS=6; KILLS_PER_CHUNK=5; PAUSE_TRIALS=3; MODE=full
fi

log() { echo "[bench $(date -u +%H:%M:%S)] $*" >&2; }

# --- tools -------------------------------------------------------------------
need_apt=()
command -v etcd >/dev/null || need_apt+=(etcd-server)
command -v etcdctl >/dev/null || need_apt+=(etcd-client)
command -v protoc >/dev/null || need_apt+=(protobuf-compiler)
if [[ ${#need_apt[@]} -gt 0 ]]; then
  log "installing ${need_apt[*]} from Debian"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# Debian's package may start a system etcd on 2379; ours uses other ports, but
# do not leave a second cluster competing for the cores.
if command -v systemctl >/dev/null && systemctl is-active --quiet etcd 2>/dev/null; then
  log "stopping the system etcd service"
  systemctl stop etcd || true
  systemctl disable etcd 2>/dev/null || true
fi

log "building shoal-bench and shoal (release)"
(cd "$ROOT" && cargo build --release -q -p shoal-bench -p shoal-node)
BIN=$TARGET/release
SHOAL_BIN=$BIN/shoal

# --- etcd cluster --------------------------------------------------------------
WORK=$(mktemp -d -t shoal-bench.XXXXXX)
ETCD_PIDS=()
cleanup() {
  for pid in "${ETCD_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  sleep 0.5
  for pid in "${ETCD_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

cluster=""
endpoints=""
for i in 1 2 3; do
  peer=$((ETCD_BASE + 2 * i + 1))
  client=$((ETCD_BASE + 2 * i))
  cluster+="${cluster:+,}e$i=http://127.0.0.1:$peer"
  endpoints+="${endpoints:+,}http://127.0.0.1:$client"
done
for i in 1 2 3; do
  peer=$((ETCD_BASE + 2 * i + 1))
  client=$((ETCD_BASE + 2 * i))
  etcd --name "e$i" --data-dir "$WORK/etcd-$i" \
    --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token shoal-bench \
    --log-level warn >"$WORK/etcd-$i.log" 2>&1 &
  ETCD_PIDS+=($!)
  disown "$!"
done
healthy=0
for _ in $(seq 1 100); do
  if ETCDCTL_API=3 etcdctl --endpoints "$endpoints" endpoint health >/dev/null 2>&1; then healthy=1; break; fi
  sleep 0.2
done
[[ $healthy -eq 1 ]] || { echo "etcd cluster did not become healthy; logs in $WORK" >&2; tail -5 "$WORK"/etcd-*.log >&2; exit 1; }
log "etcd $(etcd --version | head -1 | awk '{print $3}') cluster up: $endpoints"

# --- measurements --------------------------------------------------------------
mkdir -p "$OUT"
RECORDS=$OUT/etcd-vs-shoal.records.jsonl
: >"$RECORDS"
SHOAL_FAILED=0
etcd_run() { "$BIN/etcd-pool" "$@" --endpoints "$endpoints" >>"$RECORDS"; }
shoal_run() {
  local sub=$1; shift
  if ! "$BIN/shoal-load" "$sub" --shoal-bin "$SHOAL_BIN" --dir "$WORK/mesh" --base-port "$SHOAL_BASE" "$@" >>"$RECORDS" 2>"$WORK/shoal-load.err"; then
    SHOAL_FAILED=1
    log "shoal $sub failed: $(tail -3 "$WORK/shoal-load.err" | tr '\n' ' ')"
    cp "$WORK/shoal-load.err" "$OUT/shoal-load.err" || true
    cp "$WORK"/mesh/agent-*.log "$OUT/" 2>/dev/null || true
  fi
}

for r in $(seq 1 "$REPS"); do
  log "throughput rep $r/$REPS: etcd ($TASKS tasks, $CONC submitters, $CONC workers)"
  etcd_run throughput --tasks "$TASKS" --submitters "$CONC" --workers "$CONC"
  log "throughput rep $r/$REPS: shoal"
  shoal_run throughput --tasks "$TASKS" --submitters "$CONC" --workers "$CONC"
done
for c in $(seq 1 "$KILL_CHUNKS"); do
  log "failover chunk $c/$KILL_CHUNKS: etcd ($KILLS_PER_CHUNK kills, TTL 2 s)"
  etcd_run failover --kills "$KILLS_PER_CHUNK" --ttl-s 2
  log "failover chunk $c/$KILL_CHUNKS: shoal ($KILLS_PER_CHUNK kills, default lease)"
  shoal_run failover --kills "$KILLS_PER_CHUNK"
done
log "pause (SIGSTOP 4 s): etcd, $PAUSE_TRIALS trials"
etcd_run pause --trials "$PAUSE_TRIALS" --pause-ms 4000 --log "$WORK/etcd-pause.log"
log "pause (SIGSTOP 4 s): shoal, $PAUSE_TRIALS trials"
shoal_run pause --trials "$PAUSE_TRIALS" --pause-ms 4000 --log "$WORK/shoal-pause.log"
cp "$WORK"/*-pause.log "$OUT/" 2>/dev/null || true

note="mode=$MODE reps=$REPS tasks=$TASKS concurrency=$CONC kills=$((KILL_CHUNKS * KILLS_PER_CHUNK)) pause_trials=$PAUSE_TRIALS etcd_ttl_s=2"
[[ $SHOAL_FAILED -eq 1 ]] && note+=" shoal_side_incomplete=see target/bench/shoal-load.err"
"$BIN/bench-report" --records "$RECORDS" --out "$OUT/etcd-vs-shoal.json" --note "$note"
