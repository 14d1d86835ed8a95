#!/usr/bin/env bash
# End-to-end task throughput of a 3-agent mesh on loopback.
#
#   scripts/throughput.sh [TASKS] [DRIVER]      DRIVER: mock (default) or true
#
# Starts 3 agents (release build, own CA and data directories in a temp
# dir), waits until every shard group has 3 members, submits TASKS tasks
# through the HTTP API of all three nodes with 64 requests in flight
# (curl --parallel), and reports how long it took until all of them were
# `succeeded`, counted from the first submit. A submit is answered only
# after a majority persisted the task (fsync), so this is the full path.
# Completion is the sum over the agents of `shoal_attempts_succeeded_total`
# (a holder counts its attempt when the successful outcome is committed),
# polled every 20 ms; also prints `uptime` and the agents' CPU seconds.
set -euo pipefail

TASKS=${1:-2000}
DRIVER=${2:-mock}
SLOTS=${SLOTS:-64}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHOAL=${SHOAL:-${CARGO_TARGET_DIR:-$ROOT/target}/release/shoal}
[ -x "$SHOAL" ] || { echo "build first: cargo build --release -p shoal-node" >&2; exit 1; }

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

"$SHOAL" ca init --party bench --dir "$WORK/ca" 2>/dev/null
BASE=$((20000 + RANDOM % 20000))
APIS=()
for i in 1 2 3; do
    "$SHOAL" ca issue --dir "$WORK/ca" --node "n$i" --out "$WORK/tls-n$i" 2>/dev/null
    listen=127.0.0.1:$((BASE + 2 * i))
    api=127.0.0.1:$((BASE + 2 * i + 1))
    join=()
    [ "$i" -gt 1 ] && join=(--join "127.0.0.1:$((BASE + 2))")
    RUST_LOG=warn "$SHOAL" agent --name "n$i" --data "$WORK/data-n$i" --listen "$listen" \
        --api "$api" --tls-dir "$WORK/tls-n$i" --membership-preset local --slots "$SLOTS" \
        "${join[@]}" 2>"$WORK/n$i.log" &
    PIDS+=($!)
    disown
    APIS+=("http://$api")
    sleep 0.3
done

metric() { curl -s "$1/metrics" | awk -v m="$2" '$1 == m { print $2 }'; }
# One curl for the three agents: the poll itself must not load the machine.
succeeded() {
    curl -s "${APIS[@]/%//metrics}" |
        awk '$1 == "shoal_attempts_succeeded_total" { s += $2 } END { print s + 0 }'
}
cpu_s() { for p in "${PIDS[@]}"; do awk '{ s += ($14 + $15) / 100 } END { printf "%.2f ", s }' "/proc/$p/stat"; done; }

for _ in $(seq 1 480); do
    ok=0
    for a in "${APIS[@]}"; do
        [ "$(metric "$a" shoal_shard_group_min_size)" = "3" ] && ok=$((ok + 1))
    done
    [ "$ok" = 3 ] && break
    sleep 0.25
done
[ "$ok" = 3 ] || { echo "shard groups never reached 3 members" >&2; tail -n 5 "$WORK"/n*.log >&2; exit 1; }

if [ "$DRIVER" = mock ]; then
    BODY='{"driver":"mock"}'
else
    BODY='{"command":"true"}'
fi
CONFIG=$WORK/curl.conf
for i in $(seq 1 "$TASKS"); do
    echo "url = \"${APIS[$((i % 3))]}/v1/tasks\""
done >"$CONFIG"

before=$(succeeded)
cpu_before=$(cpu_s)
load=$(uptime)
start=$(date +%s.%N)
curl -s --parallel --parallel-max 64 -X POST -H 'Content-Type: application/json' \
    -d "$BODY" -K "$CONFIG" >"$WORK/answers" 2>/dev/null
submitted=$(date +%s.%N)
acked=$(grep -o '"id"' "$WORK/answers" | wc -l)

want=$((before + acked))
done_now=$before
give_up=$(($(date +%s) + ${WAIT_S:-120}))
while [ "$(date +%s)" -lt "$give_up" ]; do
    done_now=$(succeeded)
    [ "$done_now" -ge "$want" ] && break
    sleep 0.02
done
end=$(date +%s.%N)
cpu_after=$(cpu_s)

awk -v n="$TASKS" -v a="$acked" -v s="$start" -v m="$submitted" -v e="$end" -v d="$DRIVER" \
    -v got="$((done_now - before))" 'BEGIN {
    printf "%s: %d submitted, %d acknowledged, %d succeeded\n", d, n, a, got
    printf "  submit phase: %.2f s (%.0f acks/s)\n", m - s, a / (m - s)
    printf "  end to end:   %.2f s (%.0f tasks/s)\n", e - s, got / (e - s)
}'
echo "  load before:  $load"
echo "  agent CPU s:  $cpu_before-> $cpu_after"
