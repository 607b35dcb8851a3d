#!/usr/bin/env bash
# Instruction profile of weft under one benchmark load, with callgrind:
# instruction counts do not depend on what else the machine is doing.
#
#   bench/callgrind.sh durable [weft flags...]     2 docs, closed loop, 25 s
#   bench/callgrind.sh fanout [weft flags...]      1 writer -> 4 readers at a fixed 1,000 updates/s, 20 s
#   bench/callgrind.sh manydocs [weft flags...]    100 docs x 4 clients x 1 edit/s, 20 s
#
# Environment: OUT (default target/callgrind), SECS, WEFT (default
# target/release/weft), BENCH (default target/release/weft-bench).
# Writes OUT/<scenario><tag>.cg (TAG env var), the load generator's JSON,
# weft's /metrics at the end, and prints the inclusive top of the profile
# and instructions per applied update.
set -euo pipefail
cd "$(dirname "$0")/.."
scenario=${1:?scenario: durable, fanout or manydocs}
shift
OUT=${OUT:-target/callgrind}
WEFT=${WEFT:-target/release/weft}
BENCH=${BENCH:-target/release/weft-bench}
TAG=${TAG:-}
mkdir -p "$OUT"
name="$scenario$TAG"
db="$OUT/$name.db"
rm -f "$db" "$db-wal" "$db-shm"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
addr="127.0.0.1:$port"

taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$OUT/$name.cg" \
    "$WEFT" --addr "$addr" --db "$db" --log warn --rate-limit 0 --max-connections-per-ip 0 "$@" \
    >"$OUT/$name.log" 2>&1 &
pid=$!
cleanup() { kill -TERM "$pid" 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 1 300); do
    if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$port),0.2)" 2>/dev/null; then break; fi
    sleep 0.2
done

url="ws://$addr"
case "$scenario" in
    durable) taskset -c 1 "$BENCH" durable --url "$url" --docs 2 --secs "${SECS:-25}" --pid "$pid" ;;
    fanout) taskset -c 1 "$BENCH" fanout --url "$url" --readers 4 --rate "${RATE:-1000}" --secs "${SECS:-20}" --pid "$pid" ;;
    manydocs) taskset -c 1 "$BENCH" many-docs --url "$url" --docs 100 --clients 4 --secs "${SECS:-20}" --pid "$pid" ;;
    *) echo "unknown scenario $scenario" >&2; exit 2 ;;
esac >"$OUT/$name.json"

curl -s "http://$addr/metrics" >"$OUT/$name.metrics" || true
kill -TERM "$pid"
for _ in $(seq 1 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
trap - EXIT

total=$(callgrind_annotate "$OUT/$name.cg" 2>/dev/null | sed -n 's/^\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' | tr -d ,)
updates=$(sed -n 's/^weft_updates_applied_total \([0-9]*\).*/\1/p' "$OUT/$name.metrics")
echo "$name: $total instructions, $updates updates applied, $(( total / (updates > 0 ? updates : 1) )) per update"
