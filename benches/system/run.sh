#!/usr/bin/env bash
# drover's whole-system benchmark, run by hand (not in CI):   bash benches/system/run.sh
#
# On loopback (127.0.0.1 only), one after another on distinct ports, with the same wrk
# settings for all:
#   baseline  benches/system/prefork_baseline.rs: WORKERS processes x THREADS threads blocking
#             in accept() on one shared socket, no supervisor (the best a prefork design does)
#   embedded  drover's embedded runtime: os/examples/hello.rs
#   command   `drover run` with benches/system/command_worker.rs (a Rust worker serving the
#             same bytes from fd 3, so drover is measured and not a language runtime)
# All three serve the same HTTP/1.1 keep-alive answer (hello's parser and response bytes).
# It measures requests/s (median of RUNS wrk runs, as a ratio to the baseline), kill -9 of
# a worker -> its replacement answering (median of TRIALS, on 1-worker pools), failed
# requests across rolling restarts (USR1) under wrk load, supervisor RSS, supervisor
# wake-ups and CPU while idle for IDLE seconds with the heartbeat watchdog on, and failed
# requests across live upgrades (`drover upgrade`, one after another) under wrk load; then
# prints a markdown table with the machine and the date.
#
# Installs wrk (apt-get) if missing and builds the release binaries. Every process it starts
# is stopped on exit, live-upgrade successors included (they are not this script's children:
# found through the pid files). About 3.5 minutes after the build with the defaults. Knobs
# (env):
#   WORKERS=4 THREADS=4 CONNS=WORKERS*THREADS DURATION=10 RUNS=3 TRIALS=10 RESTARTS=3
#   UPGRADES=3 IDLE=10 HEARTBEAT=10 PORT_BASE=18080
#   LIBC=gnu|musl   musl: every binary is built static for x86_64-unknown-linux-musl (the
#                   target is added with rustup if missing); a static supervisor maps no
#                   shared C library, which is most of a glibc supervisor's resident memory
# CONNS must not exceed WORKERS*THREADS: every server here gives a connection a thread of
# its own, so a connection beyond the threads would wait in the accept queue.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/../.."

WORKERS=${WORKERS:-4}
THREADS=${THREADS:-4}
CONNS=${CONNS:-$((WORKERS * THREADS))}
DURATION=${DURATION:-10}
RUNS=${RUNS:-3}
TRIALS=${TRIALS:-10}
RESTARTS=${RESTARTS:-3}
UPGRADES=${UPGRADES:-3}
IDLE=${IDLE:-10}
HEARTBEAT=${HEARTBEAT:-10}
PORT_BASE=${PORT_BASE:-18080}
WRK_THREADS=2
LIBC=${LIBC:-gnu}
case $LIBC in
  gnu) TRIPLE=() TARGET=${CARGO_TARGET_DIR:-target}/release ;;
  musl)
    TRIPLE=(--target x86_64-unknown-linux-musl)
    TARGET=${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-musl/release
    ;;
  *)
    printf 'run.sh: LIBC=%s: use gnu or musl\n' "$LIBC" >&2
    exit 2
    ;;
esac

P_BASE=$PORT_BASE
P_EMB=$((PORT_BASE + 1))
P_CMD=$((PORT_BASE + 2))
P_EMB1=$((PORT_BASE + 3))
P_CMD1=$((PORT_BASE + 4))

say() { printf '== %s\n' "$*"; }

if ((CONNS > WORKERS * THREADS)); then
  die "CONNS=$CONNS exceeds WORKERS*THREADS=$((WORKERS * THREADS)) (one thread per connection)"
fi

# ------------------------------------------------------------------ tools and binaries

for tool in wrk curl jq; do apt_install $tool; done

if [ "$LIBC" = musl ] && ! rustup target list --installed | grep -qx x86_64-unknown-linux-musl; then
  say "adding the x86_64-unknown-linux-musl target"
  rustup target add x86_64-unknown-linux-musl >/dev/null || die "cannot add the musl target"
fi
# criterion's `alloca` (a dependency of the benches crate's examples) compiles C.
[ "$LIBC" = musl ] && apt_install x86_64-linux-musl-gcc musl-tools
say "building release binaries ($LIBC)"
cargo build --release -q "${TRIPLE[@]}" -p drover-os --bin drover --example hello || die "build failed"
cargo build --release -q "${TRIPLE[@]}" -p drover-benches --example prefork_baseline \
  --example command_worker --example replace_probe || die "build failed"
DROVER=$TARGET/drover
HELLO=$TARGET/examples/hello
BASELINE=$TARGET/examples/prefork_baseline
WORKER=$TARGET/examples/command_worker
PROBE=$TARGET/examples/replace_probe

# ------------------------------------------------------------------ processes

TMP=$(mktemp -d /tmp/drover-sysbench.XXXXXX)
STARTED=()    # pids of the servers this script started
SUCCESSORS=() # pids of the drovers that live upgrades started (children of a drover, not ours)

# Stops one server: TERM (drover drains its workers), then KILL after 10 s; its children
# (workers die with their parent anyway: PR_SET_PDEATHSIG) are killed if any is left.
stop_server() { stop_tree "$1" 10; }

cleanup() {
  local pid f
  if [ -n "${WRK_PID:-}" ]; then
    # A background run_wrk is a subshell running timeout, which passes TERM on to wrk.
    pkill -TERM -P "$WRK_PID" 2>/dev/null
    kill -TERM "$WRK_PID" 2>/dev/null
  fi
  # The drover named by each pid file first (after a live upgrade, a successor), then every
  # successor seen and every server started here; stop_server skips the dead ones.
  for f in "$TMP"/*.pid; do
    [ -f "$f" ] || continue
    pid=$(tr -dc 0-9 <"$f")
    [ -n "$pid" ] && stop_server "$pid"
  done
  for pid in ${SUCCESSORS[@]+"${SUCCESSORS[@]}"} ${STARTED[@]+"${STARTED[@]}"}; do stop_server "$pid"; done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# start NAME PORT COMMAND...: starts a server in the background, logs to $TMP/NAME.log,
# sets LAST_PID.
start() {
  local name=$1 port=$2
  shift 2
  port_free "$port" || die "port $port is in use (set PORT_BASE)"
  "$@" >"$TMP/$name.log" 2>&1 &
  LAST_PID=$!
  STARTED+=("$LAST_PID")
}

# wait_http PORT: until the server answers 200 (10 s at most).
wait_http() {
  local i
  for ((i = 0; i < 100; i++)); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$1/")" = 200 ] && return 0
    sleep 0.1
  done
  die "nothing answers on port $1"
}

status() { "$DROVER" status --json --control "$1" 2>/dev/null; }

# pool_settled SOCKET N [MIN_GENERATION]: drover reports N Ready workers of its current
# generation (at least MIN_GENERATION) and no other worker process.
pool_settled() {
  local s
  s=$(status "$1") || return 1
  jq -e --argjson n "$2" --argjson min "${3:-0}" '
    .generation as $g | $g >= $min and .ready == $n and .target == $n and
    ([.workers[] | select(.pid != null)] | length == $n and all(.generation == $g))
  ' <<<"$s" >/dev/null 2>&1
}
# wait_pool SOCKET N: until the pool has settled (10 s at most).
wait_pool() {
  local i
  for ((i = 0; i < 100; i++)); do
    pool_settled "$1" "$2" && return 0
    sleep 0.1
  done
  die "the pool behind $1 did not settle at $2 Ready workers"
}

run_wrk() { # PORT SECONDS OUTFILE
  timeout $(($2 + 20)) wrk -t"$WRK_THREADS" -c"$CONNS" -d"$2s" --timeout 2s \
    "http://127.0.0.1:$1/" >"$3" 2>&1
}


# ------------------------------------------------------------------ start the three servers

machine_facts

say "machine: $NPROC cores, ${CPU:-unknown CPU}, $KERNEL; drover $COMMIT ($LIBC); $DATE"
A=$(acct_now)
sleep 2
OTHER_BEFORE=$(others_since "$A")
if ((OTHER_BEFORE > 5)); then
  say "WARNING: other processes use ${OTHER_BEFORE}% of the machine: every figure will be skewed"
fi
say "pools: $WORKERS workers x $THREADS threads; wrk -t$WRK_THREADS -c$CONNS -d${DURATION}s, median of $RUNS; heartbeat watchdog ${HEARTBEAT}s"

start baseline "$P_BASE" "$BASELINE" --listen "127.0.0.1:$P_BASE" --workers "$WORKERS" --threads "$THREADS"
PID_BASE=$LAST_PID
start embedded "$P_EMB" "$HELLO" --listen "127.0.0.1:$P_EMB" --workers "$WORKERS" --threads "$THREADS" \
  --heartbeat-timeout "$HEARTBEAT" --control "$TMP/embedded.sock" --pid-file "$TMP/embedded.pid"
PID_EMB=$LAST_PID
start command "$P_CMD" "$DROVER" run --listen "127.0.0.1:$P_CMD" --workers "$WORKERS" --threads "$THREADS" \
  --readiness notify --heartbeat-timeout "$HEARTBEAT" --control "$TMP/command.sock" \
  --pid-file "$TMP/command.pid" -- "$WORKER" --threads "$THREADS"
PID_CMD=$LAST_PID
wait_http "$P_BASE"
wait_http "$P_EMB"
wait_http "$P_CMD"
wait_pool "$TMP/embedded.sock" "$WORKERS"
wait_pool "$TMP/command.sock" "$WORKERS"

# ------------------------------------------------------------------ 1. requests/s

declare -A PORT=([baseline]=$P_BASE [embedded]=$P_EMB [command]=$P_CMD)
MODES=(baseline embedded command)
say "warm-up: 2 s of wrk on each"
for m in "${MODES[@]}"; do run_wrk "${PORT[$m]}" 2 "$TMP/warm-$m.txt"; done

declare -A RPS ERRS
A=$(acct_now)
for ((r = 1; r <= RUNS; r++)); do
  # Interleaved, each round starting with the next server, so a drift of the machine (or
  # a cost of going first) hits all three alike.
  for ((k = 0; k < 3; k++)); do
    m=${MODES[$(((r - 1 + k) % 3))]}
    f=$TMP/wrk-$m-$r.txt
    run_wrk "${PORT[$m]}" "$DURATION" "$f" || die "wrk failed on $m: $(cat "$f")"
    rps=$(rps_of "$f")
    [ -n "$rps" ] || die "no Requests/sec from wrk on $m: $(cat "$f")"
    RPS[$m]="${RPS[$m]:-} $rps"
    ERRS[$m]=$((${ERRS[$m]:-0} + $(failed_of "$f")))
    printf '   run %d %-9s %12s req/s  (non-2xx + socket errors: %s)\n' "$r" "$m" "$rps" "$(failed_of "$f")"
  done
done
OTHER_LOAD=$(others_since "$A")
say "other processes used ${OTHER_LOAD}% of the machine during the throughput runs"
declare -A MED RATIO
declare -A LO HI
for m in "${MODES[@]}"; do
  MED[$m]=$(tr ' ' '\n' <<<"${RPS[$m]}" | grep . | median)
  LO[$m]=$(tr ' ' '\n' <<<"${RPS[$m]}" | grep . | sort -g | head -1)
  HI[$m]=$(tr ' ' '\n' <<<"${RPS[$m]}" | grep . | sort -g | tail -1)
done
for m in "${MODES[@]}"; do
  RATIO[$m]=$(awk -v a="${MED[$m]}" -v b="${MED[baseline]}" 'BEGIN {printf "%.3f", a / b}')
  printf '   %-9s median %12s req/s  %s x baseline\n' "$m" "${MED[$m]}" "${RATIO[$m]}"
done

# RSS after load (kB)
rss_of() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
hwm_of() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
declare -A SUP=([baseline]=$PID_BASE [embedded]=$PID_EMB [command]=$PID_CMD)
# "PSS PRIVATE ANON" (kB) from smaps_rollup: VmRSS counts the shared libraries' and the
# binary's mapped pages in full (embedded workers share the supervisor's), PSS divides
# each shared page among its mappers, PRIVATE is what only this process maps.
mem_of() {
  awk '/^Pss:/ {p = $2} /^Private_(Clean|Dirty):/ {u += $2} /^Anonymous:/ {a = $2} END {print p + 0, u + 0, a + 0}' \
    "/proc/$1/smaps_rollup" 2>/dev/null
}
declare -A RSS HWM PSS USS ANON
for m in "${MODES[@]}"; do
  RSS[$m]=$(rss_of "${SUP[$m]}")
  HWM[$m]=$(hwm_of "${SUP[$m]}")
  read -r PSS[$m] USS[$m] ANON[$m] <<<"$(mem_of "${SUP[$m]}")"
  printf '   %-9s supervisor pid %s: VmRSS %s kB, VmHWM %s kB, PSS %s kB, private %s kB, anonymous %s kB\n' \
    "$m" "${SUP[$m]}" "${RSS[$m]}" "${HWM[$m]}" "${PSS[$m]}" "${USS[$m]}" "${ANON[$m]}"
done

# ------------------------------------------------------------------ 2. kill -9 -> replacement

# One-worker pools, so only the replacement can answer. Default settings: a Ready worker
# killed from outside is no failure of the program and is replaced at once, however often
# (docs/ARCHITECTURE.md section 10, restart policy).
declare -A REPL REPL_ALL
replace_trials() { # MODE PORT
  "$PROBE" --addr "127.0.0.1:$2" --trials "$TRIALS" --cooldown-ms 1000 >"$TMP/replace-$1.txt" 2>&1 ||
    die "replacement probe failed on $1: $(tail -3 "$TMP/replace-$1.txt")"
  REPL[$1]=$(sed -n 's/^median_us=\([0-9]*\).*/\1/p' "$TMP/replace-$1.txt")
  REPL_ALL[$1]=$(sed -n 's/.* answered after \([0-9]*\) us$/\1/p' "$TMP/replace-$1.txt" |
    awk '{printf "%s%.2f", (NR > 1 ? " " : ""), $1 / 1000}')
  printf '   %-9s %s\n   %-9s trials (ms): %s\n' "$1" "$(tail -1 "$TMP/replace-$1.txt")" "" "${REPL_ALL[$1]}"
}
say "kill -9 of a worker -> replacement answering: $TRIALS trials each, 1-worker pools"
start embedded1 "$P_EMB1" "$HELLO" --listen "127.0.0.1:$P_EMB1" --workers 1 --threads "$THREADS" \
  --heartbeat-timeout "$HEARTBEAT" --control "$TMP/embedded1.sock"
PID_EMB1=$LAST_PID
wait_pool "$TMP/embedded1.sock" 1
replace_trials embedded "$P_EMB1"
stop_server "$PID_EMB1"
start command1 "$P_CMD1" "$DROVER" run --listen "127.0.0.1:$P_CMD1" --workers 1 --threads "$THREADS" \
  --readiness notify --heartbeat-timeout "$HEARTBEAT" \
  --control "$TMP/command1.sock" -- "$WORKER" --threads "$THREADS"
PID_CMD1=$LAST_PID
wait_pool "$TMP/command1.sock" 1
replace_trials command "$P_CMD1"
stop_server "$PID_CMD1"

# ------------------------------------------------------------------ 3. rolling restarts

RESTART_SECS=$((2 + RESTARTS * 3 + 2))
declare -A RFAIL RREQS RDETAIL RDONE
say "rolling restarts: $RESTARTS x USR1 under wrk -c$CONNS for ${RESTART_SECS}s, per mode"
for m in embedded command; do
  sock=$TMP/$m.sock
  f=$TMP/wrk-restart-$m.txt
  run_wrk "${PORT[$m]}" "$RESTART_SECS" "$f" &
  WRK_PID=$!
  sleep 2
  done_n=0
  for ((i = 1; i <= RESTARTS; i++)); do
    g=$(status "$sock" | jq .generation)
    t0=$(date +%s%N)
    kill -USR1 "${SUP[$m]}"
    settled=0
    for ((k = 0; k < 80; k++)); do # 8 s at most
      if pool_settled "$sock" "$WORKERS" $((g + 1)); then
        settled=1
        break
      fi
      sleep 0.1
    done
    if ((settled)); then
      done_n=$((done_n + 1))
      printf '   %-9s restart %d: generation %d -> %d settled in %d ms\n' "$m" "$i" "$g" $((g + 1)) \
        $((($(date +%s%N) - t0) / 1000000))
    else
      printf '   %-9s restart %d: did not settle within 8 s\n' "$m" "$i"
    fi
    sleep 1
  done
  wait "$WRK_PID"
  WRK_PID=""
  read -r c rd w t <<<"$(sockerr_of "$f")"
  RFAIL[$m]=$(failed_of "$f")
  RREQS[$m]=$(reqs_of "$f")
  RDONE[$m]=$done_n
  RDETAIL[$m]="non-2xx $(non2xx_of "$f"), connect $c, read $rd, write $w, timeout $t"
  printf '   %-9s %s failed of %s requests (%s)\n' "$m" "${RFAIL[$m]}" "${RREQS[$m]}" "${RDETAIL[$m]}"
done

# ------------------------------------------------------------------ 4. idle supervisor

# Per supervisor, summed over its threads: times scheduled onto a CPU (wake-ups; the
# third field of /proc/PID/task/TID/schedstat), context switches, and CPU time (ns).
runs_of() { cat /proc/"$1"/task/*/schedstat | awk '{s += $3} END {print s}'; }
cpu_ns_of() { cat /proc/"$1"/task/*/schedstat | awk '{s += $1} END {printf "%.0f", s}'; }
ctxt_of() { cat /proc/"$1"/task/*/status | awk '/^(non)?voluntary_ctxt_switches:/ {s += $2} END {print s}'; }
say "idle: ${IDLE}s with no load, heartbeat watchdog ${HEARTBEAT}s"
sleep 2 # let the last load reports and connection closes pass
declare -A R0 C0 N0 WAKE CTXT CPU_US
for m in embedded command; do
  R0[$m]=$(runs_of "${SUP[$m]}")
  C0[$m]=$(ctxt_of "${SUP[$m]}")
  N0[$m]=$(cpu_ns_of "${SUP[$m]}")
done
A=$(acct_now)
sleep "$IDLE"
OTHER_IDLE=$(others_since "$A")
for m in embedded command; do
  WAKE[$m]=$(($(runs_of "${SUP[$m]}") - ${R0[$m]}))
  CTXT[$m]=$(($(ctxt_of "${SUP[$m]}") - ${C0[$m]}))
  CPU_US[$m]=$((($(cpu_ns_of "${SUP[$m]}") - ${N0[$m]}) / 1000))
  printf '   %-9s %s wake-ups (scheduled in), %s context switches, %s us CPU in %ss\n' \
    "$m" "${WAKE[$m]}" "${CTXT[$m]}" "${CPU_US[$m]}" "$IDLE"
done

# ------------------------------------------------------------------ 5. live upgrades

# Last, since each upgrade replaces the supervisor (the figures above are the first one's).
# Under the same wrk load as the rolling restarts, UPGRADES times in a row per mode:
# `drover upgrade` (answers once the successor took over), then wait until the old drover
# has exited, the pid file names the successor and its pool is settled.
pid_in() { tr -dc 0-9 <"$1" 2>/dev/null; }
UPGRADE_SECS=$((2 + UPGRADES * 3 + 2))
declare -A UFAIL UREQS UDETAIL UDONE UHAND UEXIT URSS UPIDS
say "live upgrades: $UPGRADES x \`drover upgrade\` under wrk -c$CONNS for ${UPGRADE_SECS}s, per mode"
for m in embedded command; do
  sock=$TMP/$m.sock
  pidf=$TMP/$m.pid
  f=$TMP/wrk-upgrade-$m.txt
  run_wrk "${PORT[$m]}" "$UPGRADE_SECS" "$f" &
  WRK_PID=$!
  sleep 2
  done_n=0
  UPIDS[$m]=$(pid_in "$pidf")
  for ((i = 1; i <= UPGRADES; i++)); do
    old=$(pid_in "$pidf")
    t0=$(date +%s%N)
    answer=$(timeout 30 "$DROVER" upgrade --control "$sock" 2>&1)
    t_hand=$((($(date +%s%N) - t0) / 1000000))
    new=$(jq -r 'select(.ok == true) | .successor_pid // empty' <<<"$answer" 2>/dev/null)
    if [ -z "$new" ]; then
      printf '   %-9s upgrade %d: refused or failed: %s\n' "$m" "$i" "$(tr '\n' ' ' <<<"$answer")"
      sleep 1
      continue
    fi
    SUCCESSORS+=("$new")
    settled=0
    t_exit=""
    for ((k = 0; k < 200; k++)); do # 10 s at most
      if [ -z "$t_exit" ] && ! alive "$old"; then t_exit=$((($(date +%s%N) - t0) / 1000000)); fi
      if [ -n "$t_exit" ] && [ "$(pid_in "$pidf")" = "$new" ] && pool_settled "$sock" "$WORKERS"; then
        settled=1
        break
      fi
      sleep 0.05
    done
    # The old drover, when it is this script's child (the first upgrade), tells its code.
    code=""
    [ "$old" = "${SUP[$m]}" ] && { wait "$old" 2>/dev/null; code=" (exit code $?)"; }
    if ((settled)); then
      done_n=$((done_n + 1))
      UHAND[$m]="${UHAND[$m]:-} $t_hand"
      UEXIT[$m]="${UEXIT[$m]:-} $t_exit"
      UPIDS[$m]="${UPIDS[$m]} $new"
      printf '   %-9s upgrade %d: pid %s -> %s: took over after %d ms, old drover gone after %d ms%s\n' \
        "$m" "$i" "$old" "$new" "$t_hand" "$t_exit" "$code"
    else
      printf '   %-9s upgrade %d: pid %s -> %s did not settle within 10 s (old drover %s; pid file %s)\n' \
        "$m" "$i" "$old" "$new" "$(alive "$old" && echo alive || echo gone)" "$(pid_in "$pidf")"
    fi
    sleep 1
  done
  wait "$WRK_PID"
  WRK_PID=""
  read -r c rd w t <<<"$(sockerr_of "$f")"
  UFAIL[$m]=$(failed_of "$f")
  UREQS[$m]=$(reqs_of "$f")
  UDONE[$m]=$done_n
  UDETAIL[$m]="non-2xx $(non2xx_of "$f"), connect $c, read $rd, write $w, timeout $t"
  cur=$(pid_in "$pidf")
  URSS[$m]=$(rss_of "$cur" 2>/dev/null)
  printf '   %-9s %s failed of %s requests (%s); supervisor now pid %s, VmRSS %s kB\n' \
    "$m" "${UFAIL[$m]}" "${UREQS[$m]}" "${UDETAIL[$m]}" "$cur" "${URSS[$m]:-?}"
done

# ------------------------------------------------------------------ table

mb() { awk -v k="$1" 'BEGIN {printf "%.1f MB", k / 1024}'; }
ms() { awk -v u="$1" 'BEGIN {printf "%.2f ms", u / 1000}'; }
verdict() { if [ "$1" = 1 ]; then echo "met"; else echo "**not met**"; fi; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN {print (a >= b) ? 1 : 0}'; }
le() { awk -v a="$1" -v b="$2" 'BEGIN {print (a <= b) ? 1 : 0}'; }
fmt_rps() { awk -v r="$1" 'BEGIN {printf "%.0f", r}' | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta'; }

# "embedded: met; command: **not met**" from two 0/1 results
both() { echo "embedded: $(verdict "$1"); command: $(verdict "$2")"; }
# The spread of the runs, in % of the median: larger than the goal's 2% margin means the
# ratio can only be judged as "within noise".
spread_of() { awk -v lo="${LO[$1]}" -v hi="${HI[$1]}" -v m="${MED[$1]}" 'BEGIN {printf "%.0f", 100 * (hi - lo) / m}'; }
SPREAD=$(spread_of baseline)
((${SPREAD} < $(spread_of embedded))) && SPREAD=$(spread_of embedded)
V_RATIO=$(verdict "$(ge "${RATIO[embedded]}" 0.98)")
((SPREAD > 2)) && V_RATIO="$V_RATIO, but the runs spread over ${SPREAD}% of the median"
V_REPL=$(both "$(le "${REPL[embedded]}" 2000)" "$(le "${REPL[command]}" 2000)")
V_FAIL=$(both "$([ "${RFAIL[embedded]}" = 0 ] && echo 1)" "$([ "${RFAIL[command]}" = 0 ] && echo 1)")
V_UFAIL=$(both "$([ "${UFAIL[embedded]}" = 0 ] && [ "${UDONE[embedded]}" = "$UPGRADES" ] && echo 1)" \
  "$([ "${UFAIL[command]}" = 0 ] && [ "${UDONE[command]}" = "$UPGRADES" ] && echo 1)")
V_RSS=$(both "$([ "${RSS[embedded]}" -le 2048 ] && echo 1)" "$([ "${RSS[command]}" -le 2048 ] && echo 1)")
# The goal is per 10 s: scale when IDLE is another length.
V_WAKE=$(both "$(le $((WAKE[embedded] * 10)) $((3 * IDLE)))" "$(le $((WAKE[command] * 10)) $((3 * IDLE)))")

echo
echo "Whole-system benchmark, $DATE: $NPROC cores (${CPU:-unknown CPU}), $KERNEL, drover $COMMIT, $LIBC build."
echo "Loopback; $WORKERS workers x $THREADS threads each; wrk -t$WRK_THREADS -c$CONNS -d${DURATION}s, median of $RUNS"
echo "runs (interleaved); wrk shares the $NPROC cores with the servers. Heartbeat watchdog ${HEARTBEAT}s."
echo
echo "| measure | baseline (prefork, no supervisor) | embedded \`hello\` | \`drover run\` + Rust command worker | goal | goal met? |"
echo "|---|---|---|---|---|---|"
span() { echo "$(fmt_rps "${MED[$1]}") ($(fmt_rps "${LO[$1]}")–$(fmt_rps "${HI[$1]}"))"; }
echo "| requests/s, median (min–max) of $RUNS | $(span baseline) | $(span embedded) | $(span command) | | |"
echo "| ratio to the baseline | 1.000 | ${RATIO[embedded]} | ${RATIO[command]} | embedded ≥ 0.98 | $V_RATIO |"
echo "| \`kill -9\` of a worker → replacement answering (median of $TRIALS) | — (nothing replaces) | $(ms "${REPL[embedded]}") | $(ms "${REPL[command]}") | ≤ 2 ms | $V_REPL |"
echo "| failed requests across $RESTARTS rolling restarts (USR1) under wrk | — | ${RFAIL[embedded]} of ${RREQS[embedded]} | ${RFAIL[command]} of ${RREQS[command]} | 0 | $V_FAIL |"
echo "| failed requests across $UPGRADES live upgrades (\`drover upgrade\`) under wrk | — | ${UFAIL[embedded]} of ${UREQS[embedded]} | ${UFAIL[command]} of ${UREQS[command]} | 0 | $V_UFAIL |"
echo "| supervisor RSS after load (VmRSS) | $(mb "${RSS[baseline]}") (parent that only waits) | $(mb "${RSS[embedded]}") | $(mb "${RSS[command]}") | ≤ 2 MB | $V_RSS |"
echo "| supervisor wake-ups in ${IDLE} s idle, watchdog on | — | ${WAKE[embedded]} | ${WAKE[command]} | ≤ 3 per 10 s | $V_WAKE |"
echo "| supervisor CPU in ${IDLE} s idle | — | $(ms "${CPU_US[embedded]}") | $(ms "${CPU_US[command]}") | | |"
echo
echo "Replacement trials (ms): embedded ${REPL_ALL[embedded]}; command ${REPL_ALL[command]}."
echo "Rolling restarts settled: embedded ${RDONE[embedded]}/$RESTARTS, command ${RDONE[command]}/$RESTARTS;"
echo "failures by kind: embedded (${RDETAIL[embedded]}); command (${RDETAIL[command]})."
echo "Live upgrades completed: embedded ${UDONE[embedded]}/$UPGRADES, command ${UDONE[command]}/$UPGRADES; successor took over after"
echo "(ms) embedded${UHAND[embedded]:- —}, command${UHAND[command]:- —}; old drover gone after (ms) embedded${UEXIT[embedded]:- —},"
echo "command${UEXIT[command]:- —}; supervisor pids: embedded ${UPIDS[embedded]}, command ${UPIDS[command]};"
echo "failures by kind: embedded (${UDETAIL[embedded]}); command (${UDETAIL[command]});"
echo "last successor's VmRSS after the load: embedded $(mb "${URSS[embedded]:-0}"), command $(mb "${URSS[command]:-0}")."
echo "Supervisor memory after load, PSS / private / anonymous: baseline $(mb "${PSS[baseline]}") / $(mb "${USS[baseline]}") / $(mb "${ANON[baseline]}"),"
echo "embedded $(mb "${PSS[embedded]}") / $(mb "${USS[embedded]}") / $(mb "${ANON[embedded]}"), command $(mb "${PSS[command]}") / $(mb "${USS[command]}") / $(mb "${ANON[command]}")."
echo "Throughput runs: non-2xx + socket errors: baseline ${ERRS[baseline]}, embedded ${ERRS[embedded]}, command ${ERRS[command]}."
echo "Idle context switches in ${IDLE} s: embedded ${CTXT[embedded]}, command ${CTXT[command]}."
echo "CPU used by other processes (not this benchmark's): ${OTHER_BEFORE}% of the machine before the run, ${OTHER_LOAD}% during the"
echo "throughput runs, ${OTHER_IDLE}% during the idle window (anything above a few % skews the figures)."
