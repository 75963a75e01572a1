#!/usr/bin/env bash
# drover's embedded hot-path benchmark (issue 14), run by hand (not in CI):
#   bash benches/system/hotpath.sh
#
# On loopback (127.0.0.1 only), three servers with the same HTTP code (os/examples/http):
#   baseline  benches/system/prefork_baseline.rs: 2 forked processes x T threads blocking in
#             accept(2) on one shared socket, no supervisor
#   embedded  os/examples/hello.rs (drover's embedded runtime), default settings
#   command   `drover run --readiness notify -- command_worker` (benches/system/command_worker.rs)
# at 2 workers x 1 thread, and baseline and embedded also at 2 workers x 2 threads. Parts
# (PARTS, in this order):
#   syscalls  server syscalls per request (supervisor, its guard and the workers, every
#             thread): N sequential requests from one python3 client, each on a new
#             connection with `Connection: close`, then N on one keep-alive connection; and
#             under wrk load as in the cpu part (LOAD_SECS, one run each, perf only).
#             Counted exactly by perf's syscall tracepoints (perf stat --per-thread, enabled
#             only while the client runs; not slowing the server), median of SYSC_RUNS
#             interleaved runs; then once under `strace -c -f` attached to every thread (the
#             first method: it slows each syscall ~100x, which changes which worker wins a
#             connection). Skipped methods: perf when `perf stat` cannot count tracepoints,
#             strace with STRACE=0.
#   cpu       requests per server-CPU-second: `wrk -tWRK_THREADS -cC -dDURATION s`, the
#             servers' on-CPU time (first field of /proc/PID/task/*/schedstat, supervisor and
#             every descendant) before and after, requests from wrk; RUNS interleaved rounds
#             (each round starting with the next server), medians, ratio to the baseline of
#             the same shape. New-connection workload: `-H 'Connection: close'`, C=CONNS_CLOSE.
#             Keep-alive workload: C = workers x threads (the baseline and the command worker
#             give each connection a thread, a connection beyond them would wait in the
#             accept queue), plus the embedded 2x1 server with CONNS_PARK keep-alive
#             connections (all but 2 of them parked between requests; no baseline can do it).
#             Also per run: the server's wake-ups (times scheduled in) per request and the
#             supervisor's share of the server's CPU.
#   idle      wake-ups (times scheduled in: third field of schedstat) per worker and of the
#             supervisor (or master) over IDLE s, scaled to 10 s, all servers idle together:
#             embedded 2x2 with default settings (no watchdog) and with --heartbeat-timeout
#             HEARTBEAT, command 2x1 likewise (a longer window than 10 s: a heartbeat every
#             2.5 s gives 4 or 5 in a window of 10 s), the baseline 2x2, and 2-worker unicorn and
#             gunicorn (sync) servers when installed (apt-get install unicorn gunicorn).
#   parked    embedded 2 workers x 2 threads: PARKED keep-alive connections that all send one
#             request at once and read the answer, then stay idle (how long until all are
#             answered: a thread lingers 10 ms on a connection after its answer); FRESH fresh
#             requests timed before and with them parked; threads and sockets per worker; a
#             second request on every parked connection, all at once; the idle timeout
#             (hello: 5 s) closing them all, and the workers' wake-ups meanwhile.
# Prints markdown tables with the machine, the date and the commit, and the share of the
# machine other processes used meanwhile (another benchmark on this 2-core machine skews
# every figure).
#
# Installs wrk (and strace when STRACE=1) with apt-get if missing; builds the release
# binaries (honours CARGO_TARGET_DIR). Every process it starts is stopped on exit. About 10
# minutes after the build with the defaults. Knobs (env):
#   HELLO=path   another build of the embedded `hello` to measure (say, an older commit's)
#   N=3000 SYSC_RUNS=3 LOAD_SECS=3 STRACE=1 DURATION=5 RUNS=5 CONNS_CLOSE=32 CONNS_PARK=32 WRK_THREADS=2
#   IDLE=30 HEARTBEAT=10 PARKED=1000 FRESH=100 PORT_BASE=18600 PARTS="syscalls cpu idle parked"
set -uo pipefail
. "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/../.."

N=${N:-3000}
SYSC_RUNS=${SYSC_RUNS:-3}
STRACE=${STRACE:-1}
DURATION=${DURATION:-5}
RUNS=${RUNS:-5}
CONNS_CLOSE=${CONNS_CLOSE:-32}
CONNS_PARK=${CONNS_PARK:-32}
WRK_THREADS=${WRK_THREADS:-2}
IDLE=${IDLE:-30}
HEARTBEAT=${HEARTBEAT:-10}
LOAD_SECS=${LOAD_SECS:-3}
PARKED=${PARKED:-1000}
FRESH=${FRESH:-100}
PORT_BASE=${PORT_BASE:-18600}
PARTS=${PARTS:-syscalls cpu idle parked}
TARGET=${CARGO_TARGET_DIR:-target}/release
KEEP_ALIVE_IDLE=5 # os/examples/http/mod.rs: hello's idle timeout for a parked connection

say() { printf '== %s\n' "$*"; }
part() { [[ " $PARTS " == *" $1 "* ]]; }

# ------------------------------------------------------------------ tools and binaries

apt_install wrk wrk
apt_install curl curl
apt_install jq jq
((STRACE)) && apt_install strace strace
command -v python3 >/dev/null 2>&1 || die "python3 is needed (the clients)"
PERF=0
if command -v perf >/dev/null 2>&1 &&
  perf stat -x, -o /dev/null -e raw_syscalls:sys_enter -e syscalls:sys_enter_close -- true >/dev/null 2>&1; then
  PERF=1
fi
if part syscalls && ((!PERF && !STRACE)); then die "no syscall counter: perf cannot count tracepoints and STRACE=0"; fi

say "building release binaries"
cargo build --release -q -p drover-os --bin drover --example hello || die "build failed"
cargo build --release -q -p drover-benches --example prefork_baseline --example command_worker || die "build failed"
DROVER=$TARGET/drover
HELLO_NOTE=""
[ -n "${HELLO:-}" ] && HELLO_NOTE=" (embedded: $HELLO)"
HELLO=${HELLO:-$TARGET/examples/hello}
BASELINE=$TARGET/examples/prefork_baseline
WORKER=$TARGET/examples/command_worker

# 1,000 parked connections need as many descriptors in the client (workers raise their own).
if part parked; then
  ulimit -n "$(ulimit -Hn)" 2>/dev/null
  (($(ulimit -n) >= PARKED + 100)) || die "open-file limit $(ulimit -n) is below PARKED=$PARKED + 100"
fi

# ------------------------------------------------------------------ processes

TMP=$(mktemp -d /tmp/drover-hotpath.XXXXXX)
STARTED=() # servers this script started (supervisors, masters)
TRACERS=() # perf / strace processes running now

children_of() { cat /proc/"$1"/task/*/children 2>/dev/null | tr ' ' '\n' | grep -E '^[0-9]+$'; }
# descendants PID: every process below PID (a server's tree is 2-3 levels deep).
descendants() {
  local p
  for p in $(children_of "$1"); do
    echo "$p"
    descendants "$p"
  done
}

# stop_pid PID [SIG [SECS]]: SIG (default TERM), KILL after SECS (10) s, then its former children.
stop_pid() {
  local pid=$1 sig=${2:-TERM} secs=${3:-10} kids i
  alive "$pid" || { wait "$pid" 2>/dev/null; return 0; }
  kids=$(descendants "$pid")
  kill -"$sig" "$pid" 2>/dev/null
  for ((i = 0; i < secs * 10; i++)); do
    alive "$pid" || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  for kid in $kids; do alive "$kid" && kill -KILL "$kid" 2>/dev/null; done
  return 0
}

cleanup() {
  local pid
  for pid in ${TRACERS[@]+"${TRACERS[@]}"}; do stop_pid "$pid" INT 60; done
  [ -n "${CLIENT_PID:-}" ] && stop_pid "$CLIENT_PID"
  for pid in ${STARTED[@]+"${STARTED[@]}"}; do stop_pid "$pid"; done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# Server registry: KIND (baseline embedded command unicorn gunicorn), ROOT pid, PORT, SHAPE.
declare -A KIND ROOT PORT SHAPE NW NT
NEXT_PORT=$PORT_BASE

# serve NAME KIND WORKERS THREADS [FLAGS...]: starts a server on the next free port.
serve() {
  local name=$1 kind=$2 w=$3 t=$4 p
  shift 4
  p=$NEXT_PORT
  NEXT_PORT=$((NEXT_PORT + 1))
  port_free "$p" || die "port $p is in use (set PORT_BASE)"
  case $kind in
    baseline) set -- "$BASELINE" --listen "127.0.0.1:$p" --workers "$w" --threads "$t" "$@" ;;
    embedded) set -- "$HELLO" --listen "127.0.0.1:$p" --workers "$w" --threads "$t" --control "$TMP/$name.sock" "$@" ;;
    command)
      set -- "$DROVER" run --listen "127.0.0.1:$p" --workers "$w" --threads "$t" --readiness notify \
        --control "$TMP/$name.sock" "$@" -- "$WORKER" --threads "$t"
      ;;
    unicorn)
      printf 'worker_processes %d\n' "$w" >"$TMP/unicorn-$name.rb"
      set -- unicorn -l "127.0.0.1:$p" -c "$TMP/unicorn-$name.rb" "$TMP/app.ru"
      ;;
    gunicorn) set -- gunicorn -w "$w" -b "127.0.0.1:$p" --chdir "$TMP" app:app ;;
  esac
  "$@" >"$TMP/$name.log" 2>&1 &
  STARTED+=($!)
  KIND[$name]=$kind ROOT[$name]=$! PORT[$name]=$p SHAPE[$name]="${w}x$t" NW[$name]=$w NT[$name]=$t
}

# ready NAME: answers 200 and (drover) reports its workers Ready, 20 s at most.
ready() {
  local name=$1 i
  for ((i = 0; i < 200; i++)); do
    alive "${ROOT[$name]}" || die "$name exited: $(tail -3 "$TMP/$name.log")"
    if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:${PORT[$name]}/")" = 200 ]; then
      case ${KIND[$name]} in
        embedded | command)
          "$DROVER" status --json --control "$TMP/$name.sock" 2>/dev/null |
            jq -e --argjson n "${NW[$name]}" '.ready == $n and ([.workers[] | select(.pid != null)] | length == $n)' \
              >/dev/null 2>&1 && return 0
          ;;
        *) [ "$(children_of "${ROOT[$name]}" | wc -l)" -ge "${NW[$name]}" ] && return 0 ;;
      esac
    fi
    sleep 0.1
  done
  die "$name (port ${PORT[$name]}) is not ready after 20 s: $(tail -3 "$TMP/$name.log")"
}

# workers NAME: the worker processes (drover: as `status` names them; others: the master's
# children).
workers() {
  case ${KIND[$1]} in
    embedded | command) "$DROVER" status --json --control "$TMP/$1.sock" | jq -r '.workers[].pid // empty' ;;
    *) children_of "${ROOT[$1]}" ;;
  esac
}
# tree NAME: the server's every process; worker_tree NAME: the workers and theirs.
tree() { echo "${ROOT[$1]}"; descendants "${ROOT[$1]}"; }
worker_tree() {
  local w
  for w in $(workers "$1"); do
    echo "$w"
    descendants "$w"
  done
}
# sup_tree NAME: the server's processes that are no worker's (supervisor, drover's guard).
sup_tree() { grep -vxF -f <(worker_tree "$1"; echo none) <(tree "$1"); }
tids() {
  local p
  for p in "$@"; do ls "/proc/$p/task" 2>/dev/null; done
}
# schedstat_sum FIELD PIDS...: sum of a schedstat field over every thread of PIDS (1: ns on
# CPU, 3: times scheduled in).
schedstat_sum() {
  local f=$1
  shift
  local p
  for p in "$@"; do cat /proc/"$p"/task/*/schedstat 2>/dev/null; done | awk -v f="$f" '{s += $f} END {printf "%.0f\n", s}'
}

minmax() { sort -g | awk 'NR == 1 {lo = $1} {hi = $1} END {print lo "-" hi}'; }
fmt0() { awk -v r="$1" 'BEGIN {printf "%.0f", r}' | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta'; }

our_ticks() {
  local pids pid t=0 s
  pids="$$"
  for s in "${!ROOT[@]}"; do alive "${ROOT[$s]}" && pids="$pids $(tree "$s" | tr '\n' ' ')"; done
  for pid in $pids; do
    t=$((t + $(awk '{print $14 + $15 + $16 + $17}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
  done
  echo "$t"
}
# Other benchmarks and cargo runs that may share the machine (a read-only look): "PID NAME ...".
neighbours() {
  local p
  for p in $(pgrep -f 'benches/system/[a-z_]+\.sh|cargo (test|build|bench|run)'); do
    grep -q hotpath.sh "/proc/$p/cmdline" 2>/dev/null && continue # this script, its subshells
    printf '%s %s; ' "$p" "$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | sed 's|^[^ ]*/||' | cut -c1-60)"
  done
}

# ------------------------------------------------------------------ clients

# hotpath.py: the python3 clients (127.0.0.1 only; every socket has a timeout).
#   seq PORT N close|keep     N sequential requests, a new connection each or one keep-alive
#   parked PORT PARKED FRESH PIDS THREADS IDLE_S   the parked-connections check (one JSON line)
cat >"$TMP/hotpath.py" <<'PY'
import json
import os
import selectors
import socket
import statistics
import sys
import time

HOST = "127.0.0.1"
REQ_CLOSE = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
REQ_KEEP = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
TIMEOUT = 5.0

def read_response(s):
    """One HTTP/1.1 response with a Content-Length; returns its status line."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(4096)
        if not d:
            raise OSError("end of file before the response head")
        buf += d
        if len(buf) > 65536:
            raise OSError("response head too long")
    head, rest = buf.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    while len(rest) < length:
        d = s.recv(4096)
        if not d:
            raise OSError("end of file in the body")
        rest += d
    status = head.split(b"\r\n", 1)[0]
    if not status.startswith(b"HTTP/1.1 200"):
        raise OSError("answer: %r" % status)
    return status

def fresh_request(port):
    """A new connection, one `Connection: close` request read to end-of-file; seconds."""
    t0 = time.perf_counter()
    s = socket.create_connection((HOST, port), timeout=TIMEOUT)
    try:
        s.sendall(REQ_CLOSE)
        read_response(s)
        while s.recv(4096):
            pass
    finally:
        s.close()
    return time.perf_counter() - t0

def seq(port, n, mode):
    if mode == "close":
        for _ in range(n):
            fresh_request(port)
    else:
        s = socket.create_connection((HOST, port), timeout=TIMEOUT)
        for _ in range(n):
            s.sendall(REQ_KEEP)
            read_response(s)
        s.close()

def threads_of(pid):
    return len(os.listdir("/proc/%d/task" % pid))

def sockets_of(pid):
    n = 0
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            if os.readlink("/proc/%d/fd/%s" % (pid, fd)).startswith("socket:"):
                n += 1
        except OSError:
            pass
    return n

def wakeups_of(pid):
    n = 0
    for t in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, t)) as f:
                n += int(f.read().split()[2])
        except OSError:
            pass
    return n

def still_open(conns):
    """How many connections the server has not closed (nothing to read, no end-of-file)."""
    n = 0
    for s in conns:
        s.settimeout(0)  # non-blocking: with a timeout, Python would poll before the recv
        try:
            if s.recv(1, socket.MSG_PEEK):
                n += 1  # unexpected data, but open
        except BlockingIOError:
            n += 1
        except OSError:
            pass
        finally:
            s.settimeout(TIMEOUT)
    return n

def ms_stats(xs):
    xs = [x * 1000 for x in xs]
    return {"median_ms": round(statistics.median(xs), 3), "max_ms": round(max(xs), 3), "n": len(xs)}

def burst(conns, req):
    """Sends req on every connection at once, then reads every answer; returns each answer's
    time (seconds from the start) and the number answered (30 s at most)."""
    t0 = time.perf_counter()
    sel = selectors.DefaultSelector()
    for s in conns:
        s.sendall(req)
    for i, s in enumerate(conns):
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, [i, b""])
    times = []
    while len(times) < len(conns) and time.perf_counter() - t0 < 30:
        for key, _ in sel.select(1):
            try:
                d = key.fileobj.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                d = b""
            key.data[1] += d
            # hello's answer ends with its body
            if not d or key.data[1].endswith(b"Hello, world!\n"):
                if d:
                    times.append(time.perf_counter() - t0)
                sel.unregister(key.fileobj)
                if not d:
                    times.append(None)
    for s in conns:
        s.settimeout(TIMEOUT)
    ok = [t for t in times if t is not None]
    ok.sort()
    return {
        "answered": len(ok),
        "all_s": round(ok[-1], 3) if ok else None,
        "median_ms": round(ok[len(ok) // 2] * 1000, 1) if ok else None,
        "p90_ms": round(ok[int(len(ok) * 0.9)] * 1000, 1) if ok else None,
    }

def parked(port, count, fresh, pids, threads, idle_s):
    out = {"parked": count, "threads_expected": threads + 1}
    out["threads_before"] = [threads_of(p) for p in pids]
    sockets_before = [sockets_of(p) for p in pids]
    out["fresh_before"] = ms_stats([fresh_request(port) for _ in range(fresh)])
    # For contrast: COUNT new connections sending `Connection: close` requests at once.
    conns = [socket.create_connection((HOST, port), timeout=TIMEOUT) for _ in range(count)]
    out["burst_close"] = burst(conns, REQ_CLOSE)
    for s in conns:
        s.close()
    time.sleep(0.2)

    # COUNT clients connect, then all send a request at once and read the answer. Each
    # connection's idle timeout runs from its answer: everything up to the still-open check
    # must take less than IDLE_S after the first answer.
    conns = [socket.create_connection((HOST, port), timeout=TIMEOUT) for _ in range(count)]
    out["first"] = burst(conns, REQ_KEEP)
    time.sleep(0.05)  # the last thread's 10 ms linger is over: every connection is parked
    out["threads_parked"] = [threads_of(p) for p in pids]
    out["conns_per_worker"] = [sockets_of(p) - b for p, b in zip(pids, sockets_before)]
    out["fresh_parked"] = ms_stats([fresh_request(port) for _ in range(fresh)])
    out["threads_after_fresh"] = [threads_of(p) for p in pids]
    out["open_after_fresh"] = still_open(conns)

    # A second request on every parked connection, all at once: a thread takes each back.
    out["second"] = burst(conns, REQ_KEEP)
    time.sleep(0.05)
    out["threads_end"] = [threads_of(p) for p in pids]
    w0 = [wakeups_of(p) for p in pids]
    t0 = time.monotonic()

    # The idle timeout closes them all, IDLE_S after each one's last answer.
    deadline = t0 + idle_s + 5.0
    left = still_open(conns)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = still_open(conns)
    out["all_closed_after_s"] = round(time.monotonic() - t0, 2) if not left else None
    out["open_after_idle_timeout"] = left
    out["wakeups_until_closed"] = [wakeups_of(p) - a for p, a in zip(pids, w0)]
    out["conns_per_worker_after_idle_timeout"] = [sockets_of(p) - b for p, b in zip(pids, sockets_before)]
    for s in conns:
        s.close()
    print(json.dumps(out))

def main():
    a = sys.argv[1:]
    if len(a) == 4 and a[0] == "seq" and a[3] in ("close", "keep"):
        seq(int(a[1]), int(a[2]), a[3])
    elif len(a) == 7 and a[0] == "parked":
        pids = [int(p) for p in a[4].split(",") if p]
        parked(int(a[1]), int(a[2]), int(a[3]), pids, int(a[5]), float(a[6]))
    else:
        sys.exit("usage: hotpath.py seq PORT N close|keep | parked PORT PARKED FRESH PIDS THREADS IDLE_S")

if __name__ == "__main__":
    main()
PY
# The peers' apps for the idle comparison: one line answering 200.
printf '%s\n' 'run lambda { |env| [200, {"content-type" => "text/plain"}, ["Hello, world!\n"]] }' >"$TMP/app.ru"
printf '%s\n' 'def app(environ, start_response):' \
  '    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "14")])' \
  '    return [b"Hello, world!\n"]' >"$TMP/app.py"

# client ARGS...: runs hotpath.py (10 minutes at most).
client() {
  local rc
  timeout 600 python3 "$TMP/hotpath.py" "$@" &
  CLIENT_PID=$!
  wait "$CLIENT_PID"
  rc=$?
  CLIENT_PID=""
  return $rc
}

# ------------------------------------------------------------------ machine

NPROC=$(nproc)
CPU=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
KERNEL=$(uname -sr)
DATE=$(date -u +%Y-%m-%d)
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -n "$(git status --porcelain -- os machine Cargo.lock 2>/dev/null)" ] && COMMIT="$COMMIT (+ uncommitted changes in os/ or machine/)"
say "machine: $NPROC cores, ${CPU:-unknown CPU}, $KERNEL; drover $COMMIT; $DATE"
A=$(acct_now)
sleep 2
OTHER_BEFORE=$(others_since "$A")
NEIGH_BEFORE=$(neighbours)
say "other processes used ${OTHER_BEFORE}% of the machine in the last 2 s${NEIGH_BEFORE:+; running now: $NEIGH_BEFORE}"

declare -A LABEL=([base21]="baseline 2x1" [emb21]="embedded 2x1" [cmd21]="command 2x1"
  [base22]="baseline 2x2" [emb22]="embedded 2x2" [emb21p]="embedded 2x1, $CONNS_PARK conns")
declare -A BASE_OF=([base21]=base21 [emb21]=base21 [cmd21]=base21 [emb21p]=base21 [base22]=base22 [emb22]=base22)
SERIES=(base21 emb21 cmd21 base22 emb22)
declare -A MODE_DESC=([close]="new connection, sequential" [keep]="keep-alive, sequential"
  [wrk-close]="new connection, under wrk" [wrk-keep]="keep-alive, under wrk")
OTHER_SYS="—" OTHER_CPU="—" OTHER_IDLE="—" OTHER_PARK="—"

if part syscalls || part cpu; then
  serve base21 baseline 2 1
  serve emb21 embedded 2 1
  serve cmd21 command 2 1
  serve base22 baseline 2 2
  serve emb22 embedded 2 2
  for s in "${SERIES[@]}"; do ready "$s"; done
  sleep 1
fi

# ------------------------------------------------------------------ wrk

# conns_for NAME WORKLOAD: wrk's connections. New connections (close): CONNS_CLOSE.
# Keep-alive: workers x threads (a thread per connection in the baseline and the command
# worker: one more would wait in the accept queue, never served while the others go on).
conns_for() {
  local c
  if [ "$2" = close ]; then c=$CONNS_CLOSE; else c=$((NW[$1] * NT[$1])); fi
  ((c < WRK_THREADS)) && c=$WRK_THREADS
  echo "$c"
}
# wrk_run NAME WORKLOAD CONNS SECS OUT
wrk_run() {
  local -a hdr=()
  [ "$2" = close ] && hdr=(-H 'Connection: close')
  timeout $(($4 + 20)) wrk -t"$WRK_THREADS" -c"$3" -d"$4s" --timeout 2s ${hdr[@]+"${hdr[@]}"} \
    "http://127.0.0.1:${PORT[$1]}/" >"$5" 2>&1 && [ -n "$(reqs_of "$5")" ]
}

# ------------------------------------------------------------------ 1. syscalls per request

# The syscalls counted one by one (a tracepoint each; perf takes seconds to set up and tear
# down hundreds of them): every call the servers make per request or while idle, and more.
# The rest is counted too, as "other" (raw_syscalls:sys_enter less these).
PERF_SYSCALLS="accept accept4 epoll_wait epoll_pwait epoll_pwait2 epoll_ctl poll ppoll select pselect6
  read readv recvfrom recvmsg recvmmsg write writev sendto sendmsg sendmmsg close shutdown
  setsockopt getsockopt fcntl ioctl futex clock_nanosleep nanosleep rt_sigtimedwait
  rt_sigprocmask wait4 waitid getsockname getpeername madvise mmap munmap brk sched_yield
  clock_gettime gettid getpid kill tgkill"
PERF_EVENTS=()
for c in $PERF_SYSCALLS; do PERF_EVENTS+=(-e "syscalls:sys_enter_$c"); done

# load NAME MODE OUT: the load of one count, requests written to OUT.reqs. MODE close or
# keep: N sequential requests (hotpath.py seq); wrk-close or wrk-keep: LOAD_SECS of wrk as in
# the CPU runs (-cCONNS_CLOSE with Connection: close; -c workers x threads).
load() {
  local name=$1 mode=$2 out=$3 rc
  case $mode in
    close | keep)
      client seq "${PORT[$name]}" "$N" "$mode"
      rc=$?
      echo "$N" >"$out.reqs"
      ;;
    wrk-*)
      wrk_run "$name" "${mode#wrk-}" "$(conns_for "$name" "${mode#wrk-}")" "$LOAD_SECS" "$out.wrk"
      rc=$?
      reqs_of "$out.wrk" >"$out.reqs"
      ;;
  esac
  return $rc
}

# perf_count NAME MODE OUT: the load under perf's syscall tracepoints on every thread of the
# server, counting only while the load runs. OUT gets "ROLE SYSCALL COUNT" lines: ROLE sup
# (supervisor, guard) or workers; SYSCALL ALL for every syscall (raw), other for those not
# in PERF_SYSCALLS, accept4_failed for accept4 returning an error (EAGAIN: nothing waiting);
# and "all REQUESTS n".
perf_count() {
  local name=$1 mode=$2 out=$3 pids pid cfd afd a rc
  local ctl=$TMP/perf.ctl ack=$TMP/perf.ack
  : >"$TMP/roles"
  for pid in $(sup_tree "$name"); do tids "$pid" | sed 's/$/ sup/' >>"$TMP/roles"; done
  for pid in $(worker_tree "$name"); do tids "$pid" | sed 's/$/ workers/' >>"$TMP/roles"; done
  pids=$(tree "$name" | paste -sd,)
  rm -f "$ctl" "$ack"
  mkfifo "$ctl" "$ack" || die "mkfifo"
  exec {cfd}<>"$ctl" {afd}<>"$ack"
  perf stat -x, --per-thread --delay=-1 --control "fifo:$ctl,$ack" -o "$TMP/perf.csv" \
    "${PERF_EVENTS[@]}" -e raw_syscalls:sys_enter -e syscalls:sys_exit_accept4 --filter 'ret < 0' \
    -p "$pids" >/dev/null 2>"$TMP/perf.err" &
  pid=$!
  TRACERS=("$pid")
  echo enable >&"$cfd"
  read -r -t 30 -u "$afd" a || die "perf did not start: $(tail -3 "$TMP/perf.err")"
  load "$name" "$mode" "$out"
  rc=$?
  echo disable >&"$cfd"
  read -r -t 10 -u "$afd" a
  stop_pid "$pid" INT 60 # perf writes its counts as it exits
  TRACERS=()
  exec {cfd}>&- {afd}>&-
  ((rc == 0)) || die "the load failed on $name ($mode)"
  awk -F, 'NR == FNR {split($0, x, " "); role[x[1]] = x[2]; next}
    /^#/ || NF < 4 {next}
    {k = split($1, a, "-"); r = role[a[k]]; if (r == "") r = "sup"
     c = ($2 ~ /^[0-9]+$/) ? $2 : 0; ev = $4
     if (ev == "raw_syscalls:sys_enter") ev = "ALL"
     else if (ev == "syscalls:sys_exit_accept4") ev = "accept4_failed"
     else sub(/^syscalls:sys_enter_/, "", ev)
     n[r " " ev] += c}
    END {
      for (k in n) {
        if (n[k] > 0) print k, n[k]
        split(k, a, " "); if (a[2] != "ALL" && a[2] != "accept4_failed") named[a[1]] += n[k]
      }
      for (r in named) if (n[r " ALL"] > named[r]) print r, "other", n[r " ALL"] - named[r]
    }' "$TMP/roles" "$TMP/perf.csv" >"$out"
  echo "all REQUESTS $(cat "$out.reqs")" >>"$out"
}

# strace_count NAME MODE OUT: the same under `strace -c -f` attached to every thread (one
# strace for the supervisor's threads, one for the workers'); OUT as perf_count's.
strace_count() {
  local name=$1 mode=$2 out=$3 role t n i rc pid
  local -a args sts=()
  n=0
  for role in sup workers; do
    args=()
    if [ "$role" = sup ]; then
      for t in $(tids $(sup_tree "$name")); do args+=(-p "$t"); done
    else
      for t in $(tids $(worker_tree "$name")); do args+=(-p "$t"); done
    fi
    n=$((n + ${#args[@]} / 2))
    strace -c -f -o "$TMP/strace-$role.txt" "${args[@]}" 2>"$TMP/strace-$role.err" &
    sts+=($!)
    TRACERS+=($!)
  done
  for ((i = 0; i < 100; i++)); do # until every thread is attached, 10 s at most
    (($(cat "$TMP"/strace-*.err | grep -c attached) >= n)) && break
    sleep 0.1
  done
  sleep 0.2
  load "$name" "$mode" "$out"
  rc=$?
  sleep 0.3
  for pid in "${sts[@]}"; do stop_pid "$pid" INT 60; done
  TRACERS=()
  ((rc == 0)) || die "the client failed on $name ($mode) under strace"
  for role in sup workers; do
    awk -v r=$role '$1 ~ /^[0-9.]+$/ && $4 ~ /^[0-9]+$/ && $NF != "total" {
        print r, $NF, $4; all += $4; if ($NF == "accept4" && NF == 6) print r, "accept4_failed", $5 }
      END {print r, "ALL", all + 0}' "$TMP/strace-$role.txt"
  done >"$out"
  echo "all REQUESTS $(cat "$out.reqs")" >>"$out"
}

# per_req FILE [ROLE]: every syscall per request (ROLE: only sup's or workers').
per_req() {
  awk -v r="${2:-}" '$2 == "REQUESTS" {n = $3} $2 == "ALL" && (r == "" || $1 == r) {s += $3}
    END {printf "%.3f", (n > 0 ? s / n : 0)}' "$1"
}
# breakdown FILE: "accept4 1.00, close 1.00, ..." (syscalls at 0.01 per request or more).
breakdown() {
  awk '$2 == "REQUESTS" {n = $3} $2 != "ALL" && $2 != "REQUESTS" {c[$2] += $3} END {
      if (n == 0) exit
      for (k in c) if (c[k] / n >= 0.005 && k != "accept4_failed" && k != "other") printf "%s %.2f\n", k, c[k] / n
      if (c["other"] / n >= 0.005) printf "zy(other %.2f)\n", c["other"] / n
      if (c["accept4_failed"] / n >= 0.005) printf "zz(accept4 failing %.2f)\n", c["accept4_failed"] / n }' "$1" |
    sort | sed 's/^z[yz]//' | paste -sd, | sed 's/,/, /g'
}

declare -A SYS SYSF STR STRF
if part syscalls; then
  A=$(acct_now)
  if ((PERF)); then
    say "syscalls per request: $N sequential requests per run, perf tracepoints, $SYSC_RUNS interleaved runs"
    for ((r = 1; r <= SYSC_RUNS; r++)); do
      for mode in close keep; do
        for ((k = 0; k < ${#SERIES[@]}; k++)); do
          s=${SERIES[$(((r - 1 + k) % ${#SERIES[@]}))]}
          f=$TMP/sys-$s-$mode-$r.txt
          perf_count "$s" "$mode" "$f"
          SYS[$s,$mode]="${SYS[$s,$mode]:-} $(per_req "$f")"
          printf '   run %d %-5s %-13s %s per request (supervisor %s, workers %s): %s\n' "$r" "$mode" "${LABEL[$s]}" \
            "$(per_req "$f")" "$(per_req "$f" sup)" "$(per_req "$f" workers)" "$(breakdown "$f")"
        done
      done
    done
    # The breakdown shown is the median run's.
    for s in "${SERIES[@]}"; do
      for mode in close keep; do
        SYSF[$s,$mode]=$(for ((r = 1; r <= SYSC_RUNS; r++)); do echo "$(per_req "$TMP/sys-$s-$mode-$r.txt") $TMP/sys-$s-$mode-$r.txt"; done |
          sort -g | awk '{a[NR] = $2} END {print a[int((NR + 1) / 2)]}')
      done
    done
    say "syscalls per request under wrk load (${LOAD_SECS} s each, as in the CPU runs; perf slows each syscall a little)"
    for mode in wrk-close wrk-keep; do
      for s in "${SERIES[@]}"; do
        f=$TMP/sysload-$s-$mode.txt
        perf_count "$s" "$mode" "$f"
        SYS[$s,$mode]=$(per_req "$f")
        SYSF[$s,$mode]=$f
        printf '   %-9s %-13s %s per request (supervisor %s, workers %s): %s\n' "$mode" "${LABEL[$s]}" \
          "$(per_req "$f")" "$(per_req "$f" sup)" "$(per_req "$f" workers)" "$(breakdown "$f")"
      done
    done
  else
    say "perf cannot count syscall tracepoints here: strace only"
  fi
  if ((STRACE)); then
    say "syscalls per request under strace -c -f (one run each)"
    for mode in close keep; do
      for s in "${SERIES[@]}"; do
        f=$TMP/strace-$s-$mode.txt
        strace_count "$s" "$mode" "$f"
        STR[$s,$mode]=$(per_req "$f")
        STRF[$s,$mode]=$f
        printf '   strace %-5s %-13s %s per request (supervisor %s, workers %s): %s\n' "$mode" "${LABEL[$s]}" \
          "$(per_req "$f")" "$(per_req "$f" sup)" "$(per_req "$f" workers)" "$(breakdown "$f")"
      done
    done
  fi
  OTHER_SYS=$(others_since "$A")
  say "other processes used ${OTHER_SYS}% of the machine during the syscall counts"
fi

# ------------------------------------------------------------------ 2. requests per server-CPU-second

declare -A RPC RPS ERR SUPSH WPR
# cpu_run SERIES WORKLOAD ROUND: one wrk run; appends to RPC/RPS.
cpu_run() {
  local s=$1 wl=$2 r=$3 name conns sup wk c0 c1 s0 s1 w0 w1 f reqs rpc
  name=$s
  [ "$s" = emb21p ] && name=emb21
  conns=$(conns_for "$name" "$wl")
  [ "$s" = emb21p ] && conns=$CONNS_PARK
  f=$TMP/wrk-$s-$wl-$r.txt
  sup=$(sup_tree "$name")
  wk=$(worker_tree "$name")
  c0=$(schedstat_sum 1 $wk)
  s0=$(schedstat_sum 1 $sup)
  w0=$(schedstat_sum 3 $sup $wk)
  wrk_run "$name" "$wl" "$conns" "$DURATION" "$f" || die "wrk failed on ${LABEL[$s]}: $(cat "$f")"
  c1=$(schedstat_sum 1 $wk)
  s1=$(schedstat_sum 1 $sup)
  w1=$(schedstat_sum 3 $sup $wk)
  reqs=$(reqs_of "$f")
  rpc=$(awk -v q="$reqs" -v ns=$((c1 - c0 + s1 - s0)) 'BEGIN {printf "%.0f", (ns > 0 ? q / (ns / 1e9) : 0)}')
  RPC[$s,$wl]="${RPC[$s,$wl]:-} $rpc"
  RPS[$s,$wl]="${RPS[$s,$wl]:-} $(rps_of "$f")"
  ERR[$s,$wl]=$((${ERR[$s,$wl]:-0} + $(failed_of "$f")))
  # the supervisor's share of the server's CPU (%), and times scheduled in per request
  SUPSH[$s,$wl]="${SUPSH[$s,$wl]:-} $(awk -v a=$((s1 - s0)) -v b=$((c1 - c0)) 'BEGIN {printf "%.2f", (a + b > 0 ? 100 * a / (a + b) : 0)}')"
  WPR[$s,$wl]="${WPR[$s,$wl]:-} $(awk -v w=$((w1 - w0)) -v q="$reqs" 'BEGIN {printf "%.3f", (q > 0 ? w / q : 0)}')"
  printf '   run %d %-5s %-22s -c%-3s %9s req/s  %7s req per server-CPU-s  (server CPU %5.2f s, supervisor %s%%; %s wake-ups per request; errors %s)\n' \
    "$r" "$wl" "${LABEL[$s]}" "$conns" "$(rps_of "$f")" "$rpc" "$(awk -v ns=$((c1 - c0 + s1 - s0)) 'BEGIN {print ns / 1e9}')" \
    "${SUPSH[$s,$wl]##* }" "${WPR[$s,$wl]##* }" "$(failed_of "$f")"
}

declare -A MRPC MRPS RATIO SPAN MSUP MWPR
if part cpu; then
  say "requests per server-CPU-second: wrk -t$WRK_THREADS -d${DURATION}s, $RUNS interleaved rounds"
  say "warm-up: 1 s of wrk on each"
  for s in "${SERIES[@]}"; do
    timeout 30 wrk -t"$WRK_THREADS" -c"$CONNS_CLOSE" -d1s -H 'Connection: close' "http://127.0.0.1:${PORT[$s]}/" >/dev/null 2>&1
  done
  A=$(acct_now)
  CPU_KEEP=("${SERIES[@]}" emb21p)
  for ((r = 1; r <= RUNS; r++)); do
    for ((k = 0; k < ${#SERIES[@]}; k++)); do cpu_run "${SERIES[$(((r - 1 + k) % ${#SERIES[@]}))]}" close "$r"; done
    for ((k = 0; k < ${#CPU_KEEP[@]}; k++)); do cpu_run "${CPU_KEEP[$(((r - 1 + k) % ${#CPU_KEEP[@]}))]}" keep "$r"; done
  done
  OTHER_CPU=$(others_since "$A")
  say "other processes used ${OTHER_CPU}% of the machine during the wrk runs (wrk itself is this script's)"
  for wl in close keep; do
    for s in "${SERIES[@]}" emb21p; do
      [ -n "${RPC[$s,$wl]:-}" ] || continue
      MRPC[$s,$wl]=$(tr ' ' '\n' <<<"${RPC[$s,$wl]}" | grep . | median)
      SPAN[$s,$wl]=$(tr ' ' '\n' <<<"${RPC[$s,$wl]}" | grep . | minmax)
      MRPS[$s,$wl]=$(tr ' ' '\n' <<<"${RPS[$s,$wl]}" | grep . | median)
      MSUP[$s,$wl]=$(tr ' ' '\n' <<<"${SUPSH[$s,$wl]}" | grep . | median)
      MWPR[$s,$wl]=$(tr ' ' '\n' <<<"${WPR[$s,$wl]}" | grep . | median)
    done
    for s in "${SERIES[@]}" emb21p; do
      [ -n "${MRPC[$s,$wl]:-}" ] || continue
      RATIO[$s,$wl]=$(awk -v a="${MRPC[$s,$wl]}" -v b="${MRPC[${BASE_OF[$s]},$wl]}" 'BEGIN {printf "%.3f", a / b}')
      printf '   %-5s %-22s median %9s req per server-CPU-s (%s), %s x %s; median %s req/s\n' "$wl" "${LABEL[$s]}" \
        "${MRPC[$s,$wl]}" "${SPAN[$s,$wl]}" "${RATIO[$s,$wl]}" "${LABEL[${BASE_OF[$s]}]}" "${MRPS[$s,$wl]}"
    done
  done
fi

for s in "${SERIES[@]}"; do [ -n "${ROOT[$s]:-}" ] && stop_pid "${ROOT[$s]}"; done

# ------------------------------------------------------------------ 3. idle wake-ups

declare -A IW ISW ICPU ITHR INW IDESC
IDLE_SET=()
if part idle; then
  say "idle: ${IDLE}s with no load, every server at once"
  serve iemb embedded 2 2
  serve iembhb embedded 2 2 --heartbeat-timeout "$HEARTBEAT"
  serve icmd command 2 1
  serve icmdhb command 2 1 --heartbeat-timeout "$HEARTBEAT"
  serve ibase baseline 2 2
  IDLE_SET=(iemb iembhb icmd icmdhb ibase)
  IDESC=([iemb]="embedded 2x2, default (no watchdog)" [iembhb]="embedded 2x2, --heartbeat-timeout $HEARTBEAT"
    [icmd]="command 2x1, default (no watchdog)" [icmdhb]="command 2x1, --heartbeat-timeout $HEARTBEAT"
    [ibase]="baseline 2x2")
  if command -v unicorn >/dev/null 2>&1; then
    serve iuni unicorn 2 1
    IDLE_SET+=(iuni)
    IDESC[iuni]="unicorn $(unicorn -v 2>&1 | awk '{print $2}'), 2 workers"
  else
    say "unicorn is not installed (apt-get install unicorn): skipped"
  fi
  if command -v gunicorn >/dev/null 2>&1; then
    serve igun gunicorn 2 1
    IDLE_SET+=(igun)
    IDESC[igun]="gunicorn $(gunicorn --version 2>&1 | sed -n 's/.*version \([0-9.]*\).*/\1/p') (sync), 2 workers"
  else
    say "gunicorn is not installed (apt-get install gunicorn): skipped"
  fi
  for s in "${IDLE_SET[@]}"; do ready "$s"; done
  sleep 2 # the readiness requests' reports and closes pass
  declare -A IW0 ISW0 IC0 IWK ISUP
  for s in "${IDLE_SET[@]}"; do
    IWK[$s]=$(worker_tree "$s" | tr '\n' ' ')
    ISUP[$s]=$(sup_tree "$s" | tr '\n' ' ')
    INW[$s]=$(workers "$s" | wc -l)
    ITHR[$s]=$(for w in $(workers "$s"); do ls "/proc/$w/task" | wc -l; done | paste -sd/)
    IW0[$s]=$(schedstat_sum 3 ${IWK[$s]})
    IC0[$s]=$(schedstat_sum 1 ${IWK[$s]})
    ISW0[$s]=$(schedstat_sum 3 ${ISUP[$s]})
  done
  A=$(acct_now)
  sleep "$IDLE"
  OTHER_IDLE=$(others_since "$A")
  for s in "${IDLE_SET[@]}"; do
    IW[$s]=$(awk -v d=$(($(schedstat_sum 3 ${IWK[$s]}) - IW0[$s])) -v n="${INW[$s]}" -v t="$IDLE" 'BEGIN {printf "%.1f", d / n * 10 / t}')
    ICPU[$s]=$(awk -v d=$(($(schedstat_sum 1 ${IWK[$s]}) - IC0[$s])) -v n="${INW[$s]}" -v t="$IDLE" 'BEGIN {printf "%.3f", d / n * 10 / t / 1e6}')
    ISW[$s]=$(awk -v d=$(($(schedstat_sum 3 ${ISUP[$s]}) - ISW0[$s])) -v t="$IDLE" 'BEGIN {printf "%.1f", d * 10 / t}')
    printf '   %-45s %s workers (threads %s): %s wake-ups per worker per 10 s (%s ms CPU); supervisor/master %s\n' \
      "${IDESC[$s]}" "${INW[$s]}" "${ITHR[$s]}" "${IW[$s]}" "${ICPU[$s]}" "${ISW[$s]}"
  done
  say "other processes used ${OTHER_IDLE}% of the machine during the idle window"
  for s in "${IDLE_SET[@]}"; do stop_pid "${ROOT[$s]}"; done
fi

# ------------------------------------------------------------------ 4. parked connections

PJ=""
if part parked; then
  say "parked: $PARKED idle keep-alive connections on embedded 2 workers x 2 threads"
  serve pemb embedded 2 2
  ready pemb
  sleep 0.5
  A=$(acct_now)
  client parked "${PORT[pemb]}" "$PARKED" "$FRESH" "$(workers pemb | paste -sd,)" 2 "$KEEP_ALIVE_IDLE" >"$TMP/parked.json" ||
    die "the parked client failed: $(cat "$TMP/parked.json")"
  OTHER_PARK=$(others_since "$A")
  PJ=$(cat "$TMP/parked.json")
  printf '   %s\n' "$PJ"
  stop_pid "${ROOT[pemb]}"
fi

# ------------------------------------------------------------------ tables

verdict() { if [ "$1" = 1 ]; then echo "met"; else echo "**not met**"; fi; }
le() { awk -v a="$1" -v b="$2" 'BEGIN {print (a != "" && b != "" && a + 0 <= b + 0) ? 1 : 0}'; }
# span "LO-HI": "12,345–23,456"
span() { echo "$(fmt0 "${1%-*}")–$(fmt0 "${1#*-}")"; }

echo
echo "Embedded hot path (issue 14), $DATE: $NPROC cores (${CPU:-unknown CPU}), $KERNEL, drover $COMMIT$HELLO_NOTE, release build."
echo "Loopback. Other processes' share of the machine: ${OTHER_BEFORE}% before, ${OTHER_SYS}% during the syscall counts,"
echo "${OTHER_CPU}% during the wrk runs, ${OTHER_IDLE}% in the idle window, ${OTHER_PARK}% during the parked check."
[ -n "$NEIGH_BEFORE" ] && echo "Running at the start: $NEIGH_BEFORE"
[ -n "$(neighbours)" ] && echo "Running at the end: $(neighbours)"
echo

if part syscalls || part cpu; then
  echo "| measure | baseline 2×1 | embedded 2×1 | command 2×1 | baseline 2×2 | embedded 2×2 | goal | met? |"
  echo "|---|---|---|---|---|---|---|---|"
fi
if part syscalls; then
  # le2 A B: A <= B to 0.01 (the goal compares calls per request; a supervisor's few calls
  # per second spread over the requests are thousandths).
  le2() { awk -v a="$1" -v b="$2" 'BEGIN {print (a != "" && b != "" && sprintf("%.2f", a) + 0 <= sprintf("%.2f", b) + 0) ? 1 : 0}'; }
  vs() { # KEY: the goal's verdict for both shapes
    echo "2×1: $(verdict "$(le2 "${MS[emb21,$1]}" "${MS[base21,$1]}")"); 2×2: $(verdict "$(le2 "${MS[emb22,$1]}" "${MS[base22,$1]}")")"
  }
  declare -A MS
  if ((PERF)); then
    for s in "${SERIES[@]}"; do
      for mode in close keep; do MS[$s,$mode]=$(tr ' ' '\n' <<<"${SYS[$s,$mode]}" | grep . | median); done
    done
    row() { # MODE
      for s in "${SERIES[@]}"; do
        if ((SYSC_RUNS > 1)); then
          printf ' %s (%s) |' "${MS[$s,$1]}" "$(tr ' ' '\n' <<<"${SYS[$s,$1]}" | grep . | minmax | sed 's/-/–/')"
        else printf ' %s |' "${MS[$s,$1]}"; fi
      done
    }
    lrow() { for s in "${SERIES[@]}"; do printf ' %s / %s |' "${SYS[$s,wrk-close]}" "${SYS[$s,wrk-keep]}"; done; }
    sup_row() { for s in "${SERIES[@]}"; do printf ' %s / %s |' "$(per_req "${SYSF[$s,close]}" sup)" "$(per_req "${SYSF[$s,keep]}" sup)"; done; }
    echo "| syscalls per request, new connection, sequential (perf; median (min–max) of $SYSC_RUNS × $N) |$(row close) embedded ≤ baseline | $(vs close) |"
    echo "| syscalls per request, keep-alive, sequential (perf; median (min–max) of $SYSC_RUNS × $N) |$(row keep) | |"
    echo "| of which the supervisor's (and its guard's), new connection / keep-alive |$(sup_row) | |"
    echo "| syscalls per request under wrk (perf; 1 × ${LOAD_SECS} s), new connection / keep-alive |$(lrow) | |"
  fi
  if ((STRACE)); then
    for s in "${SERIES[@]}"; do
      for mode in close keep; do MS[$s,s$mode]=${STR[$s,$mode]}; done
    done
    srow() { for s in "${SERIES[@]}"; do printf ' %s / %s |' "${STR[$s,close]}" "${STR[$s,keep]}"; done; }
    echo "| syscalls per request under \`strace -c -f\`, new connection / keep-alive (1 × $N) |$(srow) embedded ≤ baseline | $(vs sclose)$( ((PERF)) && echo " (under strace)") |"
  fi
fi
if part cpu; then
  crow() { # WORKLOAD
    for s in "${SERIES[@]}"; do printf ' %s (%s) |' "$(fmt0 "${MRPC[$s,$1]}")" "$(span "${SPAN[$s,$1]}")"; done
  }
  rrow() { for s in "${SERIES[@]}"; do printf ' %s |' "${RATIO[$s,$1]}"; done; }
  prow() { for s in "${SERIES[@]}"; do printf ' %s |' "$(fmt0 "${MRPS[$s,$1]}")"; done; }
  vc() { echo "2×1: $(verdict "$(le 0.95 "${RATIO[emb21,$1]}")"); 2×2: $(verdict "$(le 0.95 "${RATIO[emb22,$1]}")")"; }
  echo "| requests per server-CPU-second, new connection (wrk -c$CONNS_CLOSE, Connection: close), median (min–max) of $RUNS |$(crow close) | |"
  echo "| ratio to the baseline of the same shape |$(rrow close) embedded ≥ 0.95 | $(vc close) |"
  echo "| requests per server-CPU-second, keep-alive (wrk -c = workers × threads), median (min–max) of $RUNS |$(crow keep) | |"
  echo "| ratio to the baseline of the same shape |$(rrow keep) embedded ≥ 0.95 | $(vc keep) |"
  echo "| requests/s (wrk), median: new connection / keep-alive |$(for s in "${SERIES[@]}"; do printf ' %s / %s |' "$(fmt0 "${MRPS[$s,close]}")" "$(fmt0 "${MRPS[$s,keep]}")"; done) | |"
  echo "| server wake-ups (times scheduled in) per request, median: new connection / keep-alive |$(for s in "${SERIES[@]}"; do printf ' %s / %s |' "${MWPR[$s,close]}" "${MWPR[$s,keep]}"; done) | |"
  echo "| the supervisor's share of the server's CPU, median: new connection / keep-alive |$(for s in "${SERIES[@]}"; do printf ' %s %% / %s %% |' "${MSUP[$s,close]}" "${MSUP[$s,keep]}"; done) | |"
  echo "| failed requests (non-2xx + socket errors), all runs: new connection / keep-alive |$(for s in "${SERIES[@]}"; do printf ' %s / %s |' "${ERR[$s,close]}" "${ERR[$s,keep]}"; done) | |"
fi
if part syscalls && ((PERF)); then
  echo
  echo "Syscalls per request by call (perf; sequential: the median run):"
  for mode in close keep wrk-close wrk-keep; do
    for s in "${SERIES[@]}"; do echo "- ${LABEL[$s]}, ${MODE_DESC[$mode]}: $(breakdown "${SYSF[$s,$mode]}")"; done
  done
fi
if part syscalls && ((STRACE)); then
  echo
  echo "Under strace -c -f:"
  for mode in close keep; do
    for s in "${SERIES[@]}"; do echo "- ${LABEL[$s]}, ${MODE_DESC[$mode]}: $(breakdown "${STRF[$s,$mode]}")"; done
  done
fi
if part cpu; then
  echo
  echo "Embedded 2×1 with $CONNS_PARK keep-alive connections (all but the 2 served parked between requests; the baseline"
  echo "cannot serve more connections than threads): median $(fmt0 "${MRPC[emb21p,keep]}") ($(span "${SPAN[emb21p,keep]}")) requests per"
  echo "server-CPU-second, ${RATIO[emb21p,keep]} × the baseline 2×1 at 2 connections; $(fmt0 "${MRPS[emb21p,keep]}") requests/s; ${ERR[emb21p,keep]} failed."
fi

# idle_verdict RATE GOAL: a periodic wake-up shows up once more or less in a window, as the
# window falls: up to one per worker per window over the goal is the goal's own rate.
idle_verdict() {
  if [ "$(le "$1" "$2")" = 1 ]; then
    echo met
  elif [ "$(le "$1" "$(awk -v g="$2" -v t="$IDLE" 'BEGIN {print g + 10 / t}')")" = 1 ]; then
    echo "met (within one wake-up per ${IDLE} s window)"
  else
    echo "**not met**"
  fi
}
if part idle; then
  echo
  echo "| idle ${IDLE} s, all at once (per 10 s) | threads per worker | wake-ups per worker | worker CPU | supervisor / master wake-ups | goal | met? |"
  echo "|---|---|---|---|---|---|---|"
  for s in "${IDLE_SET[@]}"; do
    goal="" met=""
    case $s in
      iemb) goal="≤ ~10 (once a second)" met=$(idle_verdict "${IW[$s]}" 10) ;;
      iembhb) goal="≤ 4" met=$(idle_verdict "${IW[$s]}" 4) ;;
    esac
    echo "| ${IDESC[$s]} | ${ITHR[$s]} | ${IW[$s]} | ${ICPU[$s]} ms | ${ISW[$s]} | $goal | $met |"
  done
fi

if part parked && [ -n "$PJ" ]; then
  j() { jq -r "$1" <<<"$PJ"; }
  T_OK=$(j '[.threads_before, .threads_parked, .threads_after_fresh, .threads_end] | flatten | all(. == 3) | if . then 1 else 0 end')
  C_OK=$(jq -r --argjson n "$PARKED" '[.first.answered == $n, .open_after_fresh == $n, .second.answered == $n, (.conns_per_worker | add) >= $n] | all | if . then 1 else 0 end' <<<"$PJ")
  burst_row() { j ".$1 | \"\\(.answered) of $PARKED answered, all within \\(.all_s) s; median \\(.median_ms) ms, p90 \\(.p90_ms) ms\""; }
  echo
  echo "| parked: embedded 2 workers × 2 threads, $PARKED keep-alive connections | figure |"
  echo "|---|---|"
  echo "| for contrast: $PARKED new connections send a \`Connection: close\` request at once | $(burst_row burst_close) |"
  echo "| $PARKED new keep-alive connections send a request at once | $(burst_row first) |"
  echo "| threads per worker: before / parked / after $FRESH fresh requests / at the end | $(j '.threads_before | join("+")') / $(j '.threads_parked | join("+")') / $(j '.threads_after_fresh | join("+")') / $(j '.threads_end | join("+")') (main + 2) |"
  echo "| connections held per worker (sockets beyond the idle worker's) | $(j '.conns_per_worker | join(" + ")') |"
  echo "| $FRESH fresh requests (new connection, Connection: close), nothing parked: median / max | $(j '.fresh_before.median_ms') / $(j '.fresh_before.max_ms') ms |"
  echo "| $FRESH fresh requests, $PARKED parked: median / max | $(j '.fresh_parked.median_ms') / $(j '.fresh_parked.max_ms') ms |"
  echo "| parked connections still open after the fresh requests | $(j '.open_after_fresh') of $PARKED |"
  echo "| a second request on every parked connection, all at once | $(burst_row second) |"
  echo "| closed by the ${KEEP_ALIVE_IDLE} s idle timeout: all closed after (from the last answer) | $(j '.all_closed_after_s // "not all"') s ($(j '.open_after_idle_timeout') left; sockets held then: $(j '.conns_per_worker_after_idle_timeout | join(" + ")')) |"
  echo "| worker wake-ups from the last answer until all closed | $(j '.wakeups_until_closed | join(" + ")') |"
  echo "| goal: $PARKED parked connections cost no thread (and are all served) | threads $(verdict "$T_OK"); connections $(verdict "$C_OK") |"
fi
