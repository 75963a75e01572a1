#!/usr/bin/env bash
# The sim-to-real check (issue 15), run by hand (not in CI):   bash benches/system/simreal.sh
#
# Does drover-sim predict the real thing? One recorded trace is replayed, for each of three
# pool policies, twice:
#   real  `drover run` on 127.0.0.1 with benches/system/sleep_worker.rs (boots for BOOT_MS,
#         says READY=1, then per connection reads `GET <service_us> <connect_ns>`, sleeps the
#         service time, answers its accept instant, and reports its load at every change),
#         driven by benches/system/replay_client.rs (one new connection per request at its
#         arrival instant, the queue wait = the worker's accept instant - the client's
#         connect instant, both CLOCK_MONOTONIC on this machine);
#   sim   `drover-sim compare POLICY.toml --load-trace TRACE --speed SPEED --boot-time BOOT_MS
#         --backlog <drover's effective backlog> --spawn-cost <the real run's median> --csv`.
# Both take the pool keys from one TOML file per policy (drover run --config, drover-sim's
# POLICY), with readiness = "notify"; the pool starts when the first request arrives in
# both (the client starts as soon as drover has logged its start).
# Then benches/system/simreal_report.rs puts them side by side: served and refused, queue
# wait p50/p95/p99/max, spawns, and the pool size (worker processes spawned and not yet
# reaped, from drover's log; booting+idle+busy+stopping in the simulator) at the simulator's
# sample instants (400 over the run), with the RMS of the difference, and whether the
# issue's goals hold: served within 5 %, p50 and p99 wait within 20 % or 10 ms, pool-size
# RMS difference <= 1 worker. Markdown, with the machine, the date, the commit, and how much
# of the machine other processes used during each real run.
#
# Builds the release binaries (honours CARGO_TARGET_DIR). Every process it starts is stopped
# on exit. With the defaults (example.csv: 5 minutes, at SPEED=2 so 2.5 minutes per
# policy; twice the traffic: the static pool is overloaded in the bursts) about 8 minutes
# after the build. Knobs (env):
#   TRACE=sim/traces/example.csv   any trace drover-sim --load-trace reads
#   SPEED=2                        replay this many times faster (arrivals only, as --speed)
#   BOOT_MS=300                    the worker's boot time, and the simulator's --boot-time
#   THREADS=1                      threads per worker (the `threads` key, --threads of the worker)
#   LOAD_REPORT=change             the worker's X_DROVER_LOAD: change, none, or every MS
#                                  (drover-sim's workers report every 2 s: LOAD_REPORT=2000)
#   ACCEPT=blocking                how the worker waits: blocking (accept(2): the idle threads
#                                  take turns) or epoll (EPOLLEXCLUSIVE: the first registered
#                                  idle one takes it, as drover-sim's lowest worker does)
#   HEARTBEAT=                     heartbeat_timeout in seconds (off); drover-sim's workers
#                                  then report their load every third of it (2 s without)
#   POLICIES="static dynamic ondemand"   any subset, in this order
#   STATIC_KEYS="workers=8"
#   DYNAMIC_KEYS="min=2 max=16 min_spare=2 max_spare=6 max_spawn_rate=8"
#   ONDEMAND_KEYS="max=16 idle_timeout=10"      (key=value, as the config file's pool keys)
#   BACKLOG=1024                   drover's --backlog (its default); the simulator gets
#                                  min(BACKLOG, net.core.somaxconn), what the kernel uses
#   SPAWN_COST=                    the simulator's --spawn-cost (default: the real run's median)
#   REQUEST_COST=270us             the simulator's --request-cost: what a real request costs
#                                  its worker beyond its service time (accept, read, write,
#                                  close; 0.27 ms median measured on this machine, see
#                                  docs/benchmarks.md); the simulator's --accept-order and
#                                  --load-report follow ACCEPT and LOAD_REPORT
#   SEED=1 PORT=19700 OUT=         OUT=DIR keeps every log and CSV there
set -uo pipefail
. "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/../.."

TRACE=${TRACE:-sim/traces/example.csv}
SPEED=${SPEED:-2}
BOOT_MS=${BOOT_MS:-300}
THREADS=${THREADS:-1}
LOAD_REPORT=${LOAD_REPORT:-change}
ACCEPT=${ACCEPT:-blocking}
HEARTBEAT=${HEARTBEAT:-}
POLICIES=${POLICIES:-static dynamic ondemand}
STATIC_KEYS=${STATIC_KEYS:-workers=8}
DYNAMIC_KEYS=${DYNAMIC_KEYS:-min=2 max=16 min_spare=2 max_spare=6 max_spawn_rate=8}
ONDEMAND_KEYS=${ONDEMAND_KEYS:-max=16 idle_timeout=10}
BACKLOG=${BACKLOG:-1024}
SPAWN_COST=${SPAWN_COST:-}
REQUEST_COST=${REQUEST_COST:-270us}
SEED=${SEED:-1}
PORT=${PORT:-19700}
OUT=${OUT:-}
TARGET=${CARGO_TARGET_DIR:-target}/release

say() { printf '== %s\n' "$*" >&2; }
usage() {
  printf 'simreal.sh: %s\n' "$*" >&2
  exit 2
}

# ------------------------------------------------------------------ knobs

[ -r "$TRACE" ] || usage "TRACE=$TRACE: no such readable file"
[[ $SPEED =~ ^[0-9]+([.][0-9]+)?$ ]] && awk -v s="$SPEED" 'BEGIN {exit !(s >= 0.001 && s <= 1000)}' ||
  usage "SPEED=$SPEED: want a number, 0.001..1000"
[[ $BOOT_MS =~ ^[0-9]+$ ]] && ((BOOT_MS <= 3600000)) || usage "BOOT_MS=$BOOT_MS: want milliseconds, 0..3600000"
[[ $THREADS =~ ^[0-9]+$ ]] && ((THREADS >= 1 && THREADS <= 1024)) || usage "THREADS=$THREADS: want 1..1024"
[[ $LOAD_REPORT =~ ^(change|none|[0-9]+)$ ]] || usage "LOAD_REPORT=$LOAD_REPORT: want change, none or milliseconds"
[[ $ACCEPT =~ ^(blocking|epoll)$ ]] || usage "ACCEPT=$ACCEPT: want blocking or epoll"
[[ $REQUEST_COST =~ ^[0-9.]+(us|ms|s)?$ ]] || usage "REQUEST_COST=$REQUEST_COST: want a duration (e.g. 270us)"
# The simulator's model of the same worker: blocking accept(2) hands a connection to the
# thread waiting longest, EPOLLEXCLUSIVE to the first registered idle one; a worker that
# reports at every change (or never: the pool then sees no load) against one at a pace.
if [ "$ACCEPT" = blocking ]; then SIM_ACCEPT=fifo; else SIM_ACCEPT=lowest; fi
case $LOAD_REPORT in
  change) SIM_REPORT=(--load-report change) ;;
  *) SIM_REPORT=(--load-report pace) ;;
esac
[ -z "$HEARTBEAT" ] || { [[ $HEARTBEAT =~ ^[0-9]+([.][0-9]+)?$ ]] && awk -v h="$HEARTBEAT" 'BEGIN {exit !(h >= 0.1)}'; } ||
  usage "HEARTBEAT=$HEARTBEAT: want seconds, at least 0.1"
[[ $BACKLOG =~ ^[0-9]+$ ]] && ((BACKLOG >= 1)) || usage "BACKLOG=$BACKLOG: want a whole number >= 1"
[[ $SEED =~ ^[0-9]+$ ]] || usage "SEED=$SEED: want a whole number"
[[ $PORT =~ ^[0-9]+$ ]] && ((PORT >= 1024 && PORT <= 65535)) || usage "PORT=$PORT: want 1024..65535"
[ -z "$SPAWN_COST" ] || [[ $SPAWN_COST =~ ^[0-9]+(us|ms)$ ]] || usage "SPAWN_COST=$SPAWN_COST: want e.g. 1500us or 2ms"
for p in $POLICIES; do
  case $p in static | dynamic | ondemand) ;; *) usage "POLICIES: unknown policy $p (static, dynamic, ondemand)" ;; esac
done
[ -n "${POLICIES// /}" ] || usage "POLICIES is empty"
keys_of() {
  case $1 in static) echo "$STATIC_KEYS" ;; dynamic) echo "$DYNAMIC_KEYS" ;; ondemand) echo "$ONDEMAND_KEYS" ;; esac
}
for p in $POLICIES; do
  for kv in $(keys_of "$p"); do
    [[ $kv =~ ^[a-z_.]+=[^=]+$ ]] || usage "${p^^}_KEYS: '$kv' is not key=value"
  done
done

# ------------------------------------------------------------------ binaries

say "building release binaries"
cargo build --release -q -p drover-os --bin drover || die "build failed"
cargo build --release -q -p drover-sim || die "build failed"
cargo build --release -q -p drover-benches --example sleep_worker --example replay_client \
  --example simreal_report || die "build failed"
TARGET=$(realpath -m "$TARGET")
DROVER=$TARGET/drover
SIM=$TARGET/drover-sim
WORKER=$TARGET/examples/sleep_worker
CLIENT=$TARGET/examples/replay_client
REPORT=$TARGET/examples/simreal_report

# ------------------------------------------------------------------ processes

if [ -n "$OUT" ]; then
  mkdir -p "$OUT" || usage "OUT=$OUT: cannot create it"
  TMP=$(realpath "$OUT")
else
  TMP=$(mktemp -d /tmp/drover-simreal.XXXXXX)
fi
STARTED=()

# TERM (drover drains its workers; the client just ends), KILL after 40 s (drover's own
# ladder KILLs at 30 s), then any child left.
stop_proc() { stop_tree "$1" 40; }

cleanup() {
  local pid
  for pid in ${STARTED[@]+"${STARTED[@]}"}; do stop_proc "$pid"; done
  if [ -z "$OUT" ]; then rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# ------------------------------------------------------------------ the runs

machine_facts
SOMAXCONN=$(cat /proc/sys/net/core/somaxconn 2>/dev/null || echo 4096)
SIM_BACKLOG=$((BACKLOG < SOMAXCONN ? BACKLOG : SOMAXCONN))
ROWS=$TMP/rows.md
: >"$ROWS"
declare -A OTHER SPAWN CLIENT_LINE

say "machine: $NPROC cores, ${CPU:-unknown CPU}, $KERNEL; drover $COMMIT; $DATE"
say "trace $TRACE at speed $SPEED; boot ${BOOT_MS} ms; $THREADS thread(s) per worker; load reports: $LOAD_REPORT; accept: $ACCEPT; heartbeat: ${HEARTBEAT:-off}; backlog $BACKLOG (somaxconn $SOMAXCONN)"

for p in $POLICIES; do
  toml=$TMP/$p.toml
  {
    echo "policy = \"$p\""
    for kv in $(keys_of "$p"); do echo "${kv%%=*} = ${kv#*=}"; done
    echo "threads = $THREADS"
    [ -z "$HEARTBEAT" ] || echo "heartbeat_timeout = $HEARTBEAT"
    echo 'readiness = "notify"'
  } >"$toml"
  port_free "$PORT" || die "port $PORT is in use (set PORT)"
  say "$p: $(tr '\n' ' ' <"$toml")"

  A=$(acct_now)
  "$DROVER" run --config "$toml" --listen "127.0.0.1:$PORT" --backlog "$BACKLOG" -- \
    "$WORKER" --boot "$BOOT_MS" --threads "$THREADS" --load-report "$LOAD_REPORT" --accept "$ACCEPT" \
    >"$TMP/$p.log" 2>&1 &
  DPID=$!
  STARTED+=("$DPID")
  # The client starts once drover has bound the listener and begun its pool, as drover-sim's
  # first arrival meets a pool that starts with it (10 s at most).
  for ((i = 0; i < 1000; i++)); do
    grep -q ': drover started: ' "$TMP/$p.log" 2>/dev/null && break
    alive "$DPID" || die "drover exited at start: $(tail -3 "$TMP/$p.log")"
    sleep 0.01
  done
  grep -q ': drover started: ' "$TMP/$p.log" || die "drover did not start in 10 s: $(tail -3 "$TMP/$p.log")"
  "$CLIENT" --trace "$TRACE" --addr "127.0.0.1:$PORT" --speed "$SPEED" --out "$TMP/client-$p.csv" \
    >"$TMP/client-$p.txt" 2>&1 &
  CPID=$!
  STARTED+=("$CPID")
  # The client bounds itself (the trace's span + 61 s); wait for it.
  wait "$CPID"
  crc=$?
  CLIENT_LINE[$p]=$(cat "$TMP/client-$p.txt")
  ((crc == 0)) || die "$p: the client failed ($crc): ${CLIENT_LINE[$p]}"
  say "$p: ${CLIENT_LINE[$p]}"
  stop_proc "$DPID"
  OTHER[$p]=$(others_since "$A")
  say "$p: other processes used ${OTHER[$p]}% of the machine during the real run"

  if [ -n "$SPAWN_COST" ]; then
    SPAWN[$p]=$SPAWN_COST
  else
    us=$("$REPORT" spawn-cost --log "$TMP/$p.log") || die "$p: no spawn in drover's log"
    SPAWN[$p]=${us}us
  fi
  "$SIM" compare "$toml" --load-trace "$TRACE" --speed "$SPEED" --boot-time "${BOOT_MS}ms" \
    --backlog "$SIM_BACKLOG" --spawn-cost "${SPAWN[$p]}" --seed "$SEED" --csv "$TMP/sim-$p" \
    --request-cost "$REQUEST_COST" --accept-order "$SIM_ACCEPT" "${SIM_REPORT[@]}" \
    >"$TMP/sim-$p.txt" 2>&1 || die "$p: drover-sim failed: $(tail -3 "$TMP/sim-$p.txt")"
  "$REPORT" compare --label "$p" --log "$TMP/$p.log" --client "$TMP/client-$p.csv" \
    --sim-dir "$TMP/sim-$p" --sim-table "$TMP/sim-$p.txt" --series "$TMP/pool-$p.csv" \
    --row "$ROWS" >"$TMP/report-$p.md" || die "$p: the report failed"
done

# ------------------------------------------------------------------ the tables

echo
echo "## Sim against real: $DATE, drover $COMMIT"
echo
echo "Machine: $NPROC cores, ${CPU:-unknown CPU}, $KERNEL. Trace \`$TRACE\` at speed $SPEED ($(head -1 "$TMP/sim-${POLICIES%% *}.txt" | sed 's/^trace [^(]*(\([^)]*\)).*/\1/')); worker boot $BOOT_MS ms, $THREADS thread(s), load reports: $LOAD_REPORT, accept: $ACCEPT, heartbeat: ${HEARTBEAT:-off}; backlog $BACKLOG (simulated: $SIM_BACKLOG); simulated request cost $REQUEST_COST, accept order $SIM_ACCEPT, load reports ${SIM_REPORT[1]}; seed $SEED."
echo
echo "| policy | served sim / real | refused sim / real | p50 ms sim / real | p95 ms sim / real | p99 ms sim / real | pool RMS diff | goals |"
echo "|---|---|---|---|---|---|---|---|"
cat "$ROWS"
echo
for p in $POLICIES; do
  echo "$p: $(tr '\n' ' ' <"$TMP/$p.toml"); simulated spawn cost ${SPAWN[$p]}; other processes used ${OTHER[$p]}% of the machine during the real run."
  echo "$p client: ${CLIENT_LINE[$p]}"
done
echo
for p in $POLICIES; do cat "$TMP/report-$p.md"; done
[ -n "$OUT" ] && say "logs and CSVs kept in $TMP"
exit 0
