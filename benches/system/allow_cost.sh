#!/usr/bin/env bash
# What an --allow list costs accepted connections, run by hand (not in CI):
#   bash benches/system/allow_cost.sh
#
# The embedded `hello` (2 workers x 2 threads) on 127.0.0.1, without a list and with a
# 3-entry list whose matching entry is the last (10.0.0.0/8, 192.168.0.0/16, 127.0.0.1/32),
# ROUNDS rounds interleaved; per run 2 s of warm-up, then SECS s of wrk with a fresh
# connection per request (`Connection: close`, 16 connections). Prints requests per second
# per run; every request is a new accepted connection, so that is accepts per second.
set -euo pipefail
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-8}
PORT=${PORT:-18431}
cd "$(dirname "$0")/../.."
TARGET=${CARGO_TARGET_DIR:-target}
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 1; }
cargo build --release -q -p drover-os --example hello
BIN=$TARGET/release/examples/hello
pid=
trap '[ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null; wait' EXIT
run() { # LABEL [FLAGS...]
  local label=$1; shift
  "$BIN" --listen "127.0.0.1:$PORT" --workers 2 --threads 2 "$@" 2>/dev/null &
  pid=$!
  for _ in $(seq 1 200); do
    curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break
    sleep 0.05
  done
  wrk -t1 -c16 -d2s -H 'Connection: close' "http://127.0.0.1:$PORT/" >/dev/null
  local out
  out=$(wrk -t1 -c16 -d"${SECS}s" -H 'Connection: close' "http://127.0.0.1:$PORT/")
  kill -TERM "$pid"; wait "$pid" || true; pid=
  echo "$label $(awk '/Requests\/sec/ {print $2}' <<<"$out") $(grep -o 'Socket errors.*' <<<"$out" || echo 'no socket errors')"
}
for _ in $(seq 1 "$ROUNDS"); do
  run off
  run allow3 --allow 10.0.0.0/8 --allow 192.168.0.0/16 --allow 127.0.0.1/32
done
