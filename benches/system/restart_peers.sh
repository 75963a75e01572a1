#!/usr/bin/env bash
# drover's restart benchmark against its peers, run by hand (not in CI):
#   bash benches/system/restart_peers.sh
#
# How fast a prefork master replaces workers killed with SIGKILL, with every server at its
# DEFAULT settings but the worker count, on loopback (127.0.0.1 only), one server after
# another on distinct ports:
#   embedded  drover's embedded runtime: os/examples/hello.rs (workers are forks of the
#             supervisor, like the peers' workers are forks of their master)
#   command   `drover run` with benches/system/command_worker.rs (fork + exec of a small
#             Rust worker: drover's own cost, not a language runtime's)
#   python    `drover run` with a 20-line Python worker (fork + exec + Python's start-up:
#             what a peer avoids by forking an interpreter that is already up)
#   unicorn   Debian's unicorn, `worker_processes N`, a one-line config.ru answering its pid
#   puma      Debian's puma in cluster mode, `-w N`, default threads (0:5 in puma 5)
#   gunicorn  Debian's gunicorn, `-w N`, default (sync) workers, a WSGI app answering its pid
# Every answer names the answering worker's pid (`pid=N`). Client load is wrk with CONNS
# connections and `Connection: close` (a new connection per request, so that no keep-alive
# connection pins a server's only thread; unicorn and gunicorn's sync workers close anyway).
#
# 1. five-kill: WORKERS_FIVE (2) workers under wrk load; KILLS (5) SIGKILLs of a random
#    worker, KILL_INTERVAL_MS (1500) apart. Per kill, benches/system/kill_probe.rs times
#    (i) kill -> the master has forked a new worker (dated by the kernel's process events,
#    the proc connector, as root; else by polling /proc/MASTER/task/*/children every 20 us),
#    with the victim's exit and the new process's exec beside it, and (ii) kill -> the new
#    worker answers one of the probe's requests (sent one after another on new connections;
#    the survivor answers the others). Median and max of each.
# 2. storm: WORKERS_STORM (4) workers under wrk load, SIGKILL of a random live worker every
#    STORM_PERIOD_MS (100) for STORM_SECS (15); live workers sampled every SAMPLE_MS (10):
#    average alive (live children) and serving (live children that answered a probe
#    request) during the storm; time from the last kill until the pool is whole again
#    (WORKERS_STORM live children that all answered; for drover also that many Ready in
#    `status`), at most SETTLE_SECS (20); failed requests (wrk's non-2xx + socket errors)
#    against the number of kills.
# 3. bad release: a worker that exits 1 as it starts (drover: `sh -c 'exit 1'`, with the
#    default readiness and with `--readiness notify`; the peers: an app that raises as it
#    loads), 2 workers, BAD_SECS (10): how many starts (each appends a line to a file) and
#    whether the master is still up; then drover with `on_crash_loop = "exit"` in a config
#    file, which must exit (waited for at most CRASHLOOP_WAIT, 60 s).
# Then prints markdown tables with the machine, the date and every version.
#
# Installs what is missing with apt-get (wrk unicorn puma gunicorn ruby; one apt-get update)
# and builds the release binaries (honours CARGO_TARGET_DIR), the probe among them. Every
# process it starts is stopped on exit. About 4
# minutes after the build with the defaults. Knobs (env):
#   SERVERS="embedded command python unicorn puma gunicorn"  (any subset, in this order)
#   WORKERS_FIVE=2 KILLS=5 KILL_INTERVAL_MS=1500 WORKERS_STORM=4 STORM_SECS=15
#   STORM_PERIOD_MS=100 SAMPLE_MS=10 SETTLE_SECS=20 BAD_SECS=10 CRASHLOOP_WAIT=60
#   CONNS=4 WRK_THREADS=1 PORT_BASE=19100 PARTS="five storm bad" (any subset)
set -uo pipefail
. "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/../.."

SERVERS=${SERVERS:-embedded command python unicorn puma gunicorn}
PARTS=${PARTS:-five storm bad}
WORKERS_FIVE=${WORKERS_FIVE:-2}
KILLS=${KILLS:-5}
KILL_INTERVAL_MS=${KILL_INTERVAL_MS:-1500}
WORKERS_STORM=${WORKERS_STORM:-4}
STORM_SECS=${STORM_SECS:-15}
STORM_PERIOD_MS=${STORM_PERIOD_MS:-100}
SAMPLE_MS=${SAMPLE_MS:-10}
SETTLE_SECS=${SETTLE_SECS:-20}
BAD_SECS=${BAD_SECS:-10}
CRASHLOOP_WAIT=${CRASHLOOP_WAIT:-60}
CONNS=${CONNS:-4}
WRK_THREADS=${WRK_THREADS:-1}
PORT_BASE=${PORT_BASE:-19100}
TARGET=${CARGO_TARGET_DIR:-target}/release
PY=/usr/bin/python3 # Debian's, the one gunicorn runs on

say() { printf '== %s\n' "$*"; }
has_part() { [[ " $PARTS " == *" $1 "* ]]; }

# ------------------------------------------------------------------ tools and binaries

sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
missing=()
for tool in wrk unicorn puma gunicorn ruby curl jq; do
  command -v $tool >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
  say "installing ${missing[*]}"
  $sudo apt-get update -qq || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq wrk unicorn puma gunicorn ruby curl jq >/dev/null ||
    die "cannot install wrk unicorn puma gunicorn ruby"
fi
[ -x $PY ] || die "$PY is missing (Debian's python3, which gunicorn uses)"

say "building release binaries"
cargo build --release -q -p drover-os --bin drover --example hello || die "build failed"
cargo build --release -q -p drover-benches --example command_worker --example kill_probe || die "build failed"
TARGET=$(realpath -m "$TARGET") # absolute: some servers start from another directory
DROVER=$TARGET/drover
HELLO=$TARGET/examples/hello
WORKER=$TARGET/examples/command_worker
PROBE=$TARGET/examples/kill_probe

# ------------------------------------------------------------------ processes

TMP=$(mktemp -d /tmp/drover-restart.XXXXXX)
STARTED=()
WRK_PID=""

# TERM (every master here stops its workers on TERM), KILL after 10 s, then any child left.
stop_server() { stop_tree "$1" 10; }

cleanup() {
  local pid
  if [ -n "$WRK_PID" ]; then
    pkill -TERM -P "$WRK_PID" 2>/dev/null
    kill -TERM "$WRK_PID" 2>/dev/null
    wait "$WRK_PID" 2>/dev/null
  fi
  for pid in ${STARTED[@]+"${STARTED[@]}"}; do stop_server "$pid"; done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# The peers' apps: a Rack app and a WSGI app answering their pid, and bad releases of both
# that record each start in $STARTS_FILE and raise as they load; a Python worker for
# `drover run` (os/examples/worker.py, answering its pid).
cat >"$TMP/app.ru" <<'EOF'
run lambda { |env| [200, {"content-type" => "text/plain"}, ["pid=#{Process.pid}\n"]] }
EOF
cat >"$TMP/bad.ru" <<'EOF'
File.open(ENV.fetch("STARTS_FILE"), "a") { |f| f.puts Process.pid }
raise "bad release"
EOF
cat >"$TMP/app.py" <<'EOF'
import os
def app(environ, start_response):
    body = ("pid=%d\n" % os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
EOF
cat >"$TMP/bad.py" <<'EOF'
import os
with open(os.environ["STARTS_FILE"], "a") as f:
    f.write("%d\n" % os.getpid())
raise RuntimeError("bad release")
EOF
cat >"$TMP/pid_worker.py" <<'EOF'
import os, signal, socket, time
notify_path = os.environ.get("NOTIFY_SOCKET")
def notify(msg):
    if notify_path:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s: s.sendto(msg.encode(), notify_path)
listener = socket.socket(fileno=3)
listener.settimeout(0.5)
stopping = False
def on_term(*_):
    global stopping; stopping = True
signal.signal(signal.SIGTERM, on_term)
body = ("pid=%d\n" % os.getpid()).encode()
answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
notify("READY=1")
while not stopping:
    try: conn, _ = listener.accept()
    except (socket.timeout, InterruptedError): continue
    with conn:
        conn.recv(65536)
        conn.sendall(answer)
EOF
printf '[restart]\non_crash_loop = "exit"\n' >"$TMP/crash-exit.toml"

# start_server SERVER WORKERS PORT TAG: starts it in the background (log $TMP/TAG.log), waits
# until it answers and has WORKERS live workers; sets MASTER, CONTROL (drover's control
# socket, else empty) and EXCLUDE (children that are no workers: drover's group guard).
start_server() {
  local server=$1 n=$2 port=$3 tag=$4 i kids wpids
  port_free "$port" || die "port $port is in use (set PORT_BASE)"
  CONTROL="" EXCLUDE=""
  case $server in
    embedded)
      CONTROL=$TMP/$tag.sock
      "$HELLO" --listen "127.0.0.1:$port" --workers "$n" --control "$CONTROL" >"$TMP/$tag.log" 2>&1 &
      ;;
    command)
      CONTROL=$TMP/$tag.sock
      "$DROVER" run --listen "127.0.0.1:$port" --workers "$n" --control "$CONTROL" -- "$WORKER" \
        >"$TMP/$tag.log" 2>&1 &
      ;;
    python)
      CONTROL=$TMP/$tag.sock
      "$DROVER" run --listen "127.0.0.1:$port" --workers "$n" --control "$CONTROL" -- \
        $PY "$TMP/pid_worker.py" >"$TMP/$tag.log" 2>&1 &
      ;;
    unicorn)
      printf 'worker_processes %d\n' "$n" >"$TMP/unicorn-$n.rb"
      (cd "$TMP" && exec unicorn -l "127.0.0.1:$port" -c "$TMP/unicorn-$n.rb" "$TMP/app.ru") >"$TMP/$tag.log" 2>&1 &
      ;;
    puma)
      (cd "$TMP" && exec puma -w "$n" -b "tcp://127.0.0.1:$port" "$TMP/app.ru") >"$TMP/$tag.log" 2>&1 &
      ;;
    gunicorn)
      gunicorn -w "$n" -b "127.0.0.1:$port" --chdir "$TMP" app:app >"$TMP/$tag.log" 2>&1 &
      ;;
    *) die "unknown server $server" ;;
  esac
  MASTER=$!
  STARTED+=("$MASTER")
  for ((i = 0; i < 200; i++)); do # 20 s at most
    alive "$MASTER" || die "$server exited at start: $(tail -3 "$TMP/$tag.log")"
    if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$port/")" = 200 ]; then
      if [ -n "$CONTROL" ]; then
        s=$("$DROVER" status --json --control "$CONTROL" 2>/dev/null)
        if jq -e --argjson n "$n" '.ready == $n' <<<"$s" >/dev/null 2>&1; then
          wpids=$(jq -r '.workers[].pid // empty' <<<"$s")
          EXCLUDE=$(comm -23 <(kids_of "$MASTER" | sort) <(sort <<<"$wpids") | paste -sd,)
          return 0
        fi
      else
        kids=$(kids_of "$MASTER" | wc -l)
        ((kids == n)) && return 0
      fi
    fi
    sleep 0.1
  done
  die "$server did not come up with $n workers on port $port: $(tail -3 "$TMP/$tag.log")"
}

run_wrk() { # PORT SECONDS OUTFILE
  timeout $(($2 + 15)) wrk -t"$WRK_THREADS" -c"$CONNS" -d"$2s" --timeout 2s -H 'Connection: close' \
    "http://127.0.0.1:$1/" >"$3" 2>&1
}
kv() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" "$2" | tail -1; } # KEY FILE: the last KEY=VALUE
ms_of_us() { awk -v u="$1" 'BEGIN {if (u == "") print "—"; else printf "%.2f", u / 1000}'; }

busy_pct() { # "BUSY TOTAL" from machine_ticks, then now
  local b0 t0 b1 t1
  read -r b0 t0 <<<"$1"
  read -r b1 t1 <<<"$(machine_ticks)"
  awk -v b=$((b1 - b0)) -v t=$((t1 - t0)) 'BEGIN {printf "%.0f", (t > 0 ? 100 * b / t : 0)}'
}

NPROC=$(nproc)
KERNEL="Linux $(uname -r)"
CPU=$(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1)
DATE=$(date -u +%Y-%m-%d)
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD -- os machine 2>/dev/null || COMMIT="$COMMIT+changes"
V_UNICORN=$(unicorn -v 2>&1 | awk '{print $2}')
V_PUMA=$(puma --version 2>&1 | awk '{print $3}')
V_GUNICORN=$(gunicorn --version 2>&1 | sed -n 's/.*version \([0-9.]*\).*/\1/p')
V_RUBY=$(ruby -e 'print RUBY_VERSION')
V_PYTHON=$($PY -c 'import platform; print(platform.python_version())')
V_WRK=$(wrk -v 2>&1 | awk 'NR == 1 {print $2}')
# This script's CPU with its waited-for children's (wrk, the probe, every server once
# stopped, and through them their reaped workers), in clock ticks.
own_ticks() { awk '{print $14 + $15 + $16 + $17}' /proc/$$/stat; }
T0=$(machine_ticks)
sleep 2
IDLE_BUSY=$(busy_pct "$T0")
say "machine busy before the run: ${IDLE_BUSY}% of $NPROC cores (other work; anything above a few % skews the figures)"

declare -A F_MED F_MAX A_MED A_MAX X_MED F_WRK F_REQ F_ALL
declare -A S_ALIVE S_SERV S_MIN S_TOALIVE S_TOREADY S_TOWHOLE S_KILLS S_FAIL S_REQ S_BUSY S_HIST
declare -A B_STARTS B_END
i_srv=0
T_RUN=$(machine_ticks)
OWN_RUN=$(own_ticks)

for server in $SERVERS; do
  i_srv=$((i_srv + 1))
  port=$((PORT_BASE + 10 * i_srv))

  # ---------------------------------------------------------------- 1. five kills
  if has_part five; then
    say "$server: five-kill test, $WORKERS_FIVE workers, $KILLS kills ${KILL_INTERVAL_MS} ms apart, wrk -c$CONNS"
    start_server "$server" "$WORKERS_FIVE" "$port" "$server-five"
    wrk_secs=$(((KILLS * KILL_INTERVAL_MS) / 1000 + 3))
    run_wrk "$port" "$wrk_secs" "$TMP/wrk-five-$server.txt" &
    WRK_PID=$!
    sleep 1
    "$PROBE" five --master "$MASTER" --addr "127.0.0.1:$port" --kills "$KILLS" \
      --interval-ms "$KILL_INTERVAL_MS" --workers "$WORKERS_FIVE" --exclude "$EXCLUDE" \
      >"$TMP/five-$server.txt" 2>&1 || echo "   probe failed: $(tail -2 "$TMP/five-$server.txt")"
    wait "$WRK_PID"
    WRK_PID=""
    sed 's/^/   /' "$TMP/five-$server.txt"
    F_MED[$server]=$(ms_of_us "$(kv fork_median_us "$TMP/five-$server.txt")")
    F_MAX[$server]=$(ms_of_us "$(kv fork_max_us "$TMP/five-$server.txt")")
    A_MED[$server]=$(ms_of_us "$(kv answer_median_us "$TMP/five-$server.txt")")
    A_MAX[$server]=$(ms_of_us "$(kv answer_max_us "$TMP/five-$server.txt")")
    X_MED[$server]=$(ms_of_us "$(kv exit_median_us "$TMP/five-$server.txt")")
    # per kill: exit/fork[/exec]/answer (ms after the kill)
    F_ALL[$server]=$(grep '^kill ' "$TMP/five-$server.txt" | while read -r l; do
      x=$(sed -n 's/.* exit_ms=\([^ ]*\).*/\1/p' <<<"$l")
      f=$(sed -n 's/.* fork_ms=\([^ ]*\).*/\1/p' <<<"$l")
      e=$(sed -n 's/.* exec_ms=\([^ ]*\).*/\1/p' <<<"$l")
      a=$(sed -n 's/.* answer_ms=\([^ ]*\).*/\1/p' <<<"$l")
      printf '%s/%s%s/%s ' "${x:-?}" "$f" "${e:+/$e}" "$a"
    done)
    F_WRK[$server]=$(failed_of "$TMP/wrk-five-$server.txt")
    F_REQ[$server]=$(reqs_of "$TMP/wrk-five-$server.txt")
    printf '   wrk: %s failed of %s requests\n' "${F_WRK[$server]}" "${F_REQ[$server]:-?}"
    stop_server "$MASTER"
  fi

  # ---------------------------------------------------------------- 2. storm
  if has_part storm; then
    say "$server: storm, $WORKERS_STORM workers, a SIGKILL every ${STORM_PERIOD_MS} ms for ${STORM_SECS} s, wrk -c$CONNS"
    start_server "$server" "$WORKERS_STORM" "$((port + 1))" "$server-storm"
    ctl=()
    [ -n "$CONTROL" ] && ctl=(--control "$CONTROL")
    run_wrk "$((port + 1))" $((STORM_SECS + 4)) "$TMP/wrk-storm-$server.txt" &
    WRK_PID=$!
    sleep 1
    T1=$(machine_ticks)
    "$PROBE" storm --master "$MASTER" --addr "127.0.0.1:$((port + 1))" --workers "$WORKERS_STORM" \
      --period-ms "$STORM_PERIOD_MS" --duration-ms $((STORM_SECS * 1000)) --sample-ms "$SAMPLE_MS" \
      --settle-ms $((SETTLE_SECS * 1000)) --exclude "$EXCLUDE" ${ctl[@]+"${ctl[@]}"} \
      >"$TMP/storm-$server.txt" 2>&1 || echo "   probe failed: $(tail -2 "$TMP/storm-$server.txt")"
    S_BUSY[$server]=$(busy_pct "$T1")
    wait "$WRK_PID"
    WRK_PID=""
    sed 's/^/   /' "$TMP/storm-$server.txt"
    f=$TMP/storm-$server.txt
    S_ALIVE[$server]=$(kv avg_alive "$f")
    S_SERV[$server]=$(kv avg_serving "$f")
    S_MIN[$server]=$(kv min_alive "$f")
    S_HIST[$server]=$(kv alive_histogram "$f")
    S_KILLS[$server]=$(kv kills "$f")
    S_TOALIVE[$server]=$(kv to_alive_ms "$f")
    S_TOREADY[$server]=$(kv to_ready_ms "$f")
    S_TOWHOLE[$server]=$(kv to_whole_ms "$f")
    S_FAIL[$server]=$(failed_of "$TMP/wrk-storm-$server.txt")
    S_REQ[$server]=$(reqs_of "$TMP/wrk-storm-$server.txt")
    printf '   wrk: %s failed of %s requests; machine %s%% busy during the storm\n' \
      "${S_FAIL[$server]}" "${S_REQ[$server]:-?}" "${S_BUSY[$server]}"
    alive "$MASTER" || echo "   the master exited during the storm: $(tail -2 "$TMP/$server-storm.log")"
    stop_server "$MASTER"
  fi
done

# ------------------------------------------------------------------ 3. bad release

# bad_release TAG PORT COMMAND...: runs it BAD_SECS, counts the starts in $TMP/starts-TAG.
bad_release() {
  local tag=$1 port=$2 pid code
  shift 2
  port_free "$port" || die "port $port is in use (set PORT_BASE)"
  : >"$TMP/starts-$tag"
  (cd "$TMP" && STARTS_FILE=$TMP/starts-$tag exec "$@") >"$TMP/bad-$tag.log" 2>&1 &
  pid=$!
  STARTED+=("$pid")
  sleep "$BAD_SECS"
  B_STARTS[$tag]=$(wc -l <"$TMP/starts-$tag")
  if alive "$pid"; then
    B_END[$tag]="still up, restarting"
    stop_server "$pid"
  else
    wait "$pid"
    code=$?
    B_END[$tag]="master exited (code $code)"
  fi
  printf '   %-16s %s starts in %s s; %s\n' "$tag" "${B_STARTS[$tag]}" "$BAD_SECS" "${B_END[$tag]}"
}
BAD_TAGS=()
if has_part bad; then
  say "bad release: a worker that exits 1 as it starts, 2 workers, ${BAD_SECS} s each"
  p=$((PORT_BASE + 90))
  BAD_SH='echo $$ >> "$STARTS_FILE"; exit 1'
  for server in $SERVERS; do
    case $server in
      command)
        bad_release drover "$p" "$DROVER" run --listen "127.0.0.1:$p" --workers 2 -- sh -c "$BAD_SH"
        bad_release drover-notify $((p + 1)) "$DROVER" run --listen "127.0.0.1:$((p + 1))" --workers 2 \
          --readiness notify -- sh -c "$BAD_SH"
        BAD_TAGS+=(drover drover-notify)
        ;;
      unicorn)
        printf 'worker_processes 2\n' >"$TMP/unicorn-2.rb"
        bad_release unicorn $((p + 2)) unicorn -l "127.0.0.1:$((p + 2))" -c "$TMP/unicorn-2.rb" "$TMP/bad.ru"
        BAD_TAGS+=(unicorn)
        ;;
      puma)
        bad_release puma $((p + 3)) puma -w 2 -b "tcp://127.0.0.1:$((p + 3))" "$TMP/bad.ru"
        BAD_TAGS+=(puma)
        ;;
      gunicorn)
        bad_release gunicorn $((p + 4)) gunicorn -w 2 -b "127.0.0.1:$((p + 4))" --chdir "$TMP" bad:app
        BAD_TAGS+=(gunicorn)
        ;;
    esac
  done
  # on_crash_loop = "exit": drover must give up and exit with crash_loop_exit_code (1).
  if [[ " $SERVERS " == *" command "* ]]; then
    say "drover with on_crash_loop = \"exit\" and the same bad worker (${CRASHLOOP_WAIT} s at most)"
    : >"$TMP/starts-crash-exit"
    t0=$(date +%s%N)
    (cd "$TMP" && STARTS_FILE=$TMP/starts-crash-exit exec "$DROVER" run --config "$TMP/crash-exit.toml" \
      --listen "127.0.0.1:$((p + 5))" --workers 2 -- sh -c "$BAD_SH") >"$TMP/bad-crash-exit.log" 2>&1 &
    pid=$!
    STARTED+=("$pid")
    for ((k = 0; k < CRASHLOOP_WAIT * 10; k++)); do
      alive "$pid" || break
      sleep 0.1
    done
    if alive "$pid"; then
      CRASH_EXIT="**still running after ${CRASHLOOP_WAIT} s**"
      stop_server "$pid"
    else
      wait "$pid"
      code=$?
      CRASH_EXIT="exited with code $code after $(awk -v n=$(($(date +%s%N) - t0)) 'BEGIN {printf "%.1f", n / 1e9}') s and $(wc -l <"$TMP/starts-crash-exit") starts"
    fi
    printf '   %s\n' "$CRASH_EXIT"
    grep -iE 'crash' "$TMP/bad-crash-exit.log" | tail -2 | sed 's/^/   log: /'
  fi
fi
RUN_BUSY=$(busy_pct "$T_RUN")
# Other processes' share of the machine during the run: busy ticks that were not ours.
OTHERS=$(read -r b0 t0 <<<"$T_RUN"; read -r b1 t1 <<<"$(machine_ticks)"
  awk -v b=$((b1 - b0)) -v t=$((t1 - t0)) -v o=$(($(own_ticks) - OWN_RUN)) \
    'BEGIN {x = (t > 0 ? 100 * (b - o) / t : 0); if (x < 0) x = 0; printf "%.0f", x}')

# ------------------------------------------------------------------ tables

declare -A NAME=(
  [embedded]="drover, embedded \`hello\`"
  [command]="\`drover run\` + Rust worker"
  [python]="\`drover run\` + Python worker"
  [unicorn]="unicorn $V_UNICORN"
  [puma]="puma $V_PUMA (cluster)"
  [gunicorn]="gunicorn $V_GUNICORN (sync)"
)
echo
echo "Restart benchmark, $DATE: $NPROC cores (${CPU:-unknown CPU}), $KERNEL, drover $COMMIT; ruby $V_RUBY,"
echo "python $V_PYTHON, wrk $V_WRK (-t$WRK_THREADS -c$CONNS, Connection: close) on the same cores. Default settings but"
echo "the worker count. The machine was ${IDLE_BUSY}% busy before the run, ${RUN_BUSY}% during it, of which other"
echo "processes (not this benchmark's) took ${OTHERS}% of the machine: above a few %, the figures are skewed."
if has_part five || has_part storm; then
  echo
  echo "| server | kill → new worker exists, median / max (ms) | kill → new worker answers, median / max (ms) | storm: avg alive / serving of $WORKERS_STORM | storm: last kill → whole (ms) | storm: failed requests / kills |"
  echo "|---|---|---|---|---|---|"
  for s in $SERVERS; do
    whole=${S_TOWHOLE[$s]:-—}
    [ "$whole" = none ] && whole="> $((SETTLE_SECS * 1000))"
    echo "| ${NAME[$s]} | ${F_MED[$s]:-—} / ${F_MAX[$s]:-—} | ${A_MED[$s]:-—} / ${A_MAX[$s]:-—} | ${S_ALIVE[$s]:-—} / ${S_SERV[$s]:-—} | $whole | ${S_FAIL[$s]:-—} / ${S_KILLS[$s]:-—} |"
  done
  echo
  echo "Per kill, ms after the kill: the victim's last thread exited / the master forked [/ the new process exec'd] / it answered"
  echo "(median kill → victim exited; wrk failures in the five-kill run):"
  for s in $SERVERS; do echo "- ${NAME[$s]}: ${F_ALL[$s]:-—}(${X_MED[$s]:-—}; wrk ${F_WRK[$s]:-—} failed of ${F_REQ[$s]:-—})"; done
  echo "Storm detail: fewest alive; samples with 0,1,…,$WORKERS_STORM alive; last kill → $WORKERS_STORM alive (ms); → $WORKERS_STORM Ready (drover); requests; machine busy:"
  for s in $SERVERS; do
    echo "- ${NAME[$s]}: ${S_MIN[$s]:-—}; ${S_HIST[$s]:-—}; ${S_TOALIVE[$s]:-—}; ${S_TOREADY[$s]:-—}; ${S_REQ[$s]:-—}; ${S_BUSY[$s]:-—}%"
  done
fi
# The targets of issue 13 part 1, for drover's servers.
le() { awk -v a="$1" -v b="$2" 'BEGIN {print (a != "" && a != "—" && a != "none" && a + 0 <= b + 0) ? "met" : "**missed**"}'; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN {print (a != "" && a != "—" && a + 0 >= b + 0) ? "met" : "**missed**"}'; }
echo
echo "Targets (issue 13 part 1), drover's servers:"
for s in embedded command python; do
  [[ " $SERVERS " == *" $s "* ]] || continue
  line="- ${NAME[$s]}:"
  if has_part five; then
    line="$line kill → answers median ${A_MED[$s]} ms ≤ 2: $(le "${A_MED[$s]}" 2), max ${A_MAX[$s]} ms ≤ 5: $(le "${A_MAX[$s]}" 5);"
    line="$line kill → exists median ${F_MED[$s]} ≤ 2: $(le "${F_MED[$s]}" 2), max ${F_MAX[$s]} ≤ 5: $(le "${F_MAX[$s]}" 5);"
  fi
  if has_part storm; then
    line="$line storm avg alive ${S_ALIVE[$s]} ≥ 3: $(ge "${S_ALIVE[$s]}" 3), whole ${S_TOWHOLE[$s]} ms ≤ 1000: $(le "${S_TOWHOLE[$s]}" 1000),"
    line="$line failed ${S_FAIL[$s]} ≤ kills ${S_KILLS[$s]}: $(le "${S_FAIL[$s]}" "${S_KILLS[$s]}");"
  fi
  echo "$line"
done
if has_part bad && [ -n "${B_STARTS[drover]:-}" ]; then
  echo "- bad release: ${B_STARTS[drover]} and ${B_STARTS[drover-notify]} starts in $BAD_SECS s (≤ 30 in 10 s: $(le $((B_STARTS[drover] * 10 / BAD_SECS)) 30), $(le $((B_STARTS[drover-notify] * 10 / BAD_SECS)) 30)); on_crash_loop = \"exit\": ${CRASH_EXIT:-—}"
fi

if has_part bad && ((${#BAD_TAGS[@]})); then
  declare -A BNAME=(
    [drover]="\`drover run\`, \`sh -c 'exit 1'\`"
    [drover-notify]="\`drover run --readiness notify\`, \`sh -c 'exit 1'\`"
    [unicorn]="unicorn $V_UNICORN, config.ru raises"
    [puma]="puma $V_PUMA, config.ru raises"
    [gunicorn]="gunicorn $V_GUNICORN, module raises"
  )
  echo
  echo "| bad release (2 workers) | starts in $BAD_SECS s | then |"
  echo "|---|---|---|"
  for t in "${BAD_TAGS[@]}"; do echo "| ${BNAME[$t]} | ${B_STARTS[$t]} | ${B_END[$t]} |"; done
  [ -n "${CRASH_EXIT:-}" ] && echo "| \`drover run\` with \`on_crash_loop = \"exit\"\` | — | $CRASH_EXIT |"
fi
