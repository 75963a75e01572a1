#!/usr/bin/env bash
# What the operations features cost the supervisor, run by hand (not in CI):
#   bash benches/system/ops_cost.sh
#
# The same pool (WORKERS x THREADS, heartbeat watchdog HEARTBEAT s) in four modes, for
# command workers (`drover run ... -- command_worker`) and embedded workers (`hello`):
#   off      no metrics endpoint, workers' output inherited, log on stderr (as before)
#   metrics  --metrics-listen 127.0.0.1:PORT
#   log      --log-file FILE --worker-output log
#   both     metrics and log
# Per run: start, wait until the pool is Ready, LOAD seconds of wrk, 2 s to settle, then
# the supervisor's wake-ups (times scheduled in, /proc/PID/task/*/schedstat) and CPU over
# IDLE seconds with nothing happening, its VmRSS and PSS after that; with metrics on, also
# the wake-ups over IDLE seconds while Prometheus-style scrapes come once a second (wake-ups
# per scrape = the difference / IDLE). ROUNDS rounds, the modes interleaved in each, medians
# printed as a markdown table. Every process it starts is stopped on exit.
# BEFORE=DIR adds a mode `before`: the same pool run by the release binaries in DIR (drover,
# examples/hello, examples/command_worker), built from an earlier commit, to tell a
# regression of `off` from the machine's noise.
# Knobs (env): WORKERS=4 THREADS=4 HEARTBEAT=10 LOAD=5 IDLE=10 ROUNDS=3 PORT_BASE=18180
# BEFORE=
set -uo pipefail
. "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/../.."

WORKERS=${WORKERS:-4}
THREADS=${THREADS:-4}
HEARTBEAT=${HEARTBEAT:-10}
LOAD=${LOAD:-5}
IDLE=${IDLE:-10}
ROUNDS=${ROUNDS:-3}
PORT_BASE=${PORT_BASE:-18180}
TARGET=${CARGO_TARGET_DIR:-target}/release
BEFORE=${BEFORE:-}
MODES=(off metrics log both)
if [ -n "$BEFORE" ]; then
  [ -x "$BEFORE/drover" ] || { printf 'ops_cost.sh: no drover in BEFORE=%s\n' "$BEFORE" >&2; exit 1; }
  MODES=(before "${MODES[@]}")
fi
KINDS=(command embedded)

say() { printf '== %s\n' "$*"; }

for tool in wrk curl jq; do apt_install $tool; done
say "building release binaries"
cargo build --release -q -p drover-os --bin drover --example hello || die "build failed"
cargo build --release -q -p drover-benches --example command_worker || die "build failed"
DROVER=$TARGET/drover

TMP=$(mktemp -d /tmp/drover-ops-cost.XXXXXX)
PID=""
cleanup() {
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
    kill -TERM "$PID" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PID" 2>/dev/null
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

runs_of() { cat /proc/"$1"/task/*/schedstat | awk '{s += $3} END {print s}'; }
cpu_ns_of() { cat /proc/"$1"/task/*/schedstat | awk '{s += $1} END {printf "%.0f", s}'; }
rss_of() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
pss_of() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup"; }

# settled SOCKET: WORKERS Ready workers and no other (an earlier drover prints its status
# as JSON without --json).
settled() {
  { "$DROVER" status --json --control "$1" 2>/dev/null || "$DROVER" status --control "$1" 2>/dev/null; } |
    jq -e --argjson n "$WORKERS" \
      '.ready == $n and ([.workers[] | select(.pid != null)] | length == $n)' >/dev/null 2>&1
}

# one KIND MODE ROUND: prints "wake cpu_us rss pss scrape_wake" for one run.
one() {
  local kind=$1 mode=$2 round=$3 port=$((PORT_BASE)) mport=$((PORT_BASE + 1))
  local sock=$TMP/control.sock flags=() i r0 n0 r1 n1 s0
  port_free "$port" || die "port $port is in use (set PORT_BASE)"
  case $mode in
    metrics) flags=(--metrics-listen "127.0.0.1:$mport") ;;
    log) flags=(--log-file "$TMP/$kind-$mode-$round.log" --worker-output log) ;;
    both) flags=(--metrics-listen "127.0.0.1:$mport" --log-file "$TMP/$kind-$mode-$round.log" --worker-output log) ;;
  esac
  local common=(--listen "127.0.0.1:$port" --workers "$WORKERS" --threads "$THREADS"
    --heartbeat-timeout "$HEARTBEAT" --control "$sock" ${flags[@]+"${flags[@]}"})
  local bin=$TARGET
  [ "$mode" = before ] && bin=$BEFORE
  if [ "$kind" = command ]; then
    "$bin/drover" run "${common[@]}" --readiness notify -- "$bin/examples/command_worker" \
      --threads "$THREADS" >"$TMP/stderr.log" 2>&1 &
  else
    "$bin/examples/hello" "${common[@]}" >"$TMP/stderr.log" 2>&1 &
  fi
  PID=$!
  for ((i = 0; i < 100; i++)); do
    settled "$sock" && break
    sleep 0.1
  done
  settled "$sock" || die "$kind/$mode: the pool did not settle ($(tail -3 "$TMP/stderr.log"))"
  timeout $((LOAD + 20)) wrk -t2 -c$((WORKERS * THREADS)) -d"${LOAD}s" "http://127.0.0.1:$port/" >/dev/null 2>&1
  sleep 2
  r0=$(runs_of "$PID")
  n0=$(cpu_ns_of "$PID")
  sleep "$IDLE"
  r1=$(runs_of "$PID")
  n1=$(cpu_ns_of "$PID")
  local wake=$((r1 - r0)) cpu=$(((n1 - n0) / 1000)) rss pss scrape="-"
  rss=$(rss_of "$PID")
  pss=$(pss_of "$PID")
  if [ "$mode" = metrics ] || [ "$mode" = both ]; then
    s0=$(runs_of "$PID")
    for ((i = 0; i < IDLE; i++)); do
      curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$mport/metrics"
      sleep 1
    done
    scrape=$(awk -v w=$(($(runs_of "$PID") - s0 - wake)) -v n="$IDLE" 'BEGIN {printf "%.1f", w / n}')
  fi
  kill -TERM "$PID"
  wait "$PID" 2>/dev/null
  PID=""
  echo "$wake $cpu $rss $pss $scrape"
}

declare -A OUT
for ((round = 1; round <= ROUNDS; round++)); do
  for kind in "${KINDS[@]}"; do
    for mode in "${MODES[@]}"; do
      res=$(one "$kind" "$mode" "$round") || exit 1
      say "round $round $kind $mode: wake-ups cpu_us rss_kB pss_kB wake-ups/scrape = $res"
      OUT[$kind.$mode]+="$res"$'\n'
    done
  done
done

col() { awk -v c="$2" 'NF {print $c}' <<<"${OUT[$1]}" | median; }
echo
echo "$(date -u +%F) $(git rev-parse --short HEAD), $(nproc) cores, $(uname -r), medians of $ROUNDS interleaved rounds"
echo
echo "| workers | mode | wake-ups in ${IDLE} s idle | CPU in ${IDLE} s idle | VmRSS | PSS | extra wake-ups per scrape |"
echo "|---|---|---|---|---|---|---|"
for kind in "${KINDS[@]}"; do
  for mode in "${MODES[@]}"; do
    printf '| %s | %s | %s | %s us | %s kB | %s kB | %s |\n' "$kind" "$mode" \
      "$(col "$kind.$mode" 1)" "$(col "$kind.$mode" 2)" "$(col "$kind.$mode" 3)" \
      "$(col "$kind.$mode" 4)" "$(awk -v c=5 'NF {print $c}' <<<"${OUT[$kind.$mode]}" | grep -v -- - | median | sed 's/nan/-/')"
  done
done
