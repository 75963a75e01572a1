#!/usr/bin/env bash
# What drover costs a bring-your-own server, run by hand (not in CI):
#   bash benches/system/byo_cost.sh
#
# The axum example (os/examples/axum.rs: `Server::serve`, `LoadLayer`) under drover, against
# the same app without drover (benches/system/axum_baseline.rs, same handler, same listener
# options) in two shapes, on 127.0.0.1:
#   drover   WORKERS workers x THREADS tokio threads, supervised
#   prefork  WORKERS forked processes x THREADS tokio threads, no supervisor
#   single   one process with WORKERS*THREADS tokio threads
# and two workloads: keep-alive (CONNS connections, many requests each) and new-connection
# (`Connection: close`: one request per accepted connection). ROUNDS rounds, the variants
# interleaved in each; per run 2 s of warm-up, then SECS s of wrk. For each run: requests
# per second, and requests per server-CPU-second (user + system time of the server's
# processes, supervisor and workers, over the measured window). Prints each run, then the
# medians and their ratios to the prefork of the same shape (the issue's goal: drover
# >= 0.95x of it).
#
# Knobs (env): WORKERS=2 THREADS=2 CONNS=32 SECS=10 ROUNDS=5 PORT=18531
set -euo pipefail
WORKERS=${WORKERS:-2}
THREADS=${THREADS:-2}
CONNS=${CONNS:-32}
SECS=${SECS:-10}
ROUNDS=${ROUNDS:-5}
PORT=${PORT:-18531}
cd "$(dirname "$0")/../.."
# Both sides are built as a user's own program is: at opt-level 3, in a target directory of
# their own. The workspace's release profile builds drover-os for size ("s": the
# supervisor's resident memory is mostly its code) and the baselines in drover-benches at 3;
# with fat LTO each binary is optimized at its own crate's level, so the examples of
# drover-os would run tokio, hyper and rustls at "s" against a baseline at 3.
export CARGO_PROFILE_RELEASE_OPT_LEVEL=3
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}/o3
TARGET=$CARGO_TARGET_DIR/release
for tool in wrk curl; do
  command -v $tool >/dev/null || { echo "byo_cost.sh: needs $tool (apt-get install $tool)" >&2; exit 1; }
done
echo "== building release binaries"
cargo build --release -q -p drover-os --features tower --example axum
cargo build --release -q -p drover-benches --example axum_baseline
DROVER_AXUM=$TARGET/examples/axum
BASELINE=$TARGET/examples/axum_baseline

TMP=$(mktemp -d /tmp/drover-byo-cost.XXXXXX)
pid=
cleanup() {
  if [ -n "$pid" ]; then
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# CPU ticks (user + system) of a process and its children, live ones.
ticks_of_tree() {
  local root=$1 t=0 p
  for p in $root $(pgrep -P "$root" | tr '\n' ' '); do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$t"
}
HZ=$(getconf CLK_TCK)

start() { # VARIANT
  case $1 in
    drover) "$DROVER_AXUM" --listen "127.0.0.1:$PORT" --workers "$WORKERS" --threads "$THREADS" 2>"$TMP/server.log" & ;;
    prefork) "$BASELINE" --listen "127.0.0.1:$PORT" --workers "$WORKERS" --threads "$THREADS" 2>"$TMP/server.log" & ;;
    single) "$BASELINE" --listen "127.0.0.1:$PORT" --workers 1 --threads $((WORKERS * THREADS)) 2>"$TMP/server.log" & ;;
  esac
  pid=$!
  local i
  for ((i = 0; i < 200; i++)); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$PORT/")" = 200 ] && return 0
    sleep 0.05
  done
  echo "byo_cost.sh: $1 does not answer; its log:" >&2
  cat "$TMP/server.log" >&2
  exit 1
}

stop() {
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  pid=
}

run() { # VARIANT WORKLOAD -> prints "VARIANT WORKLOAD RPS RPS_PER_CPU_S ERRORS"
  local variant=$1 workload=$2 header=() out t0 t1 rps reqs cpu errors non2xx
  [ "$workload" = new-conn ] && header=(-H 'Connection: close')
  start "$variant"
  wrk -t2 -c"$CONNS" -d2s "${header[@]}" "http://127.0.0.1:$PORT/" >/dev/null
  t0=$(ticks_of_tree "$pid")
  out=$(wrk -t2 -c"$CONNS" -d"${SECS}s" "${header[@]}" "http://127.0.0.1:$PORT/")
  t1=$(ticks_of_tree "$pid")
  stop
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  cpu=$(awk -v t=$((t1 - t0)) -v hz="$HZ" 'BEGIN {printf "%.3f", t / hz}')
  errors=$( (grep -o 'Socket errors.*' <<<"$out" || true) | tr -d ',' | awk '{s = 0; for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+$/) s += $i; print s + 0}')
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  reqs=$(awk '/ requests in / {print $1}' <<<"$out")
  echo "$variant $workload $rps $(awk -v n="$reqs" -v c="$cpu" 'BEGIN {printf "%.0f", (c > 0 ? n / c : 0)}') $((${errors:-0} + ${non2xx:-0}))"
}

echo "== $ROUNDS rounds, $WORKERS x $THREADS, $CONNS connections, ${SECS}s per run"
echo "variant workload rps rps_per_cpu_s errors"
for ((r = 1; r <= ROUNDS; r++)); do
  for workload in keep-alive new-conn; do
    for variant in drover prefork single; do
      run "$variant" "$workload" | tee -a "$TMP/runs"
    done
  done
done

median() { sort -g | awk '{a[NR] = $1} END {if (NR == 0) print "nan"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
echo
echo "| workload | variant | req/s (median) | req per CPU-s (median) | x prefork req/s | x prefork req/CPU-s | errors |"
echo "|---|---|---:|---:|---:|---:|---:|"
for workload in keep-alive new-conn; do
  base_rps=$(awk -v w="$workload" '$1 == "prefork" && $2 == w {print $3}' "$TMP/runs" | median)
  base_cpu=$(awk -v w="$workload" '$1 == "prefork" && $2 == w {print $4}' "$TMP/runs" | median)
  for variant in drover prefork single; do
    rps=$(awk -v v="$variant" -v w="$workload" '$1 == v && $2 == w {print $3}' "$TMP/runs" | median)
    cpu=$(awk -v v="$variant" -v w="$workload" '$1 == v && $2 == w {print $4}' "$TMP/runs" | median)
    errs=$(awk -v v="$variant" -v w="$workload" '$1 == v && $2 == w {s += $5} END {print s + 0}' "$TMP/runs")
    awk -v w="$workload" -v v="$variant" -v r="$rps" -v c="$cpu" -v br="$base_rps" -v bc="$base_cpu" -v e="$errs" \
      'BEGIN {printf "| %s | %s | %.0f | %.0f | %.3f | %.3f | %d |\n", w, v, r, c, (br > 0 ? r / br : 0), (bc > 0 ? c / bc : 0), e}'
  done
done
echo
echo "$(date -u +%Y-%m-%d) commit $(git rev-parse --short HEAD) on $(nproc) cores: $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
