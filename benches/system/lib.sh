# Helpers shared by the benchmark scripts in this folder (sourced, never run):
#   . "$(dirname "$0")/lib.sh"     (before the script's `cd` to the workspace root)
# Each script keeps its own `say` (some print to stderr) and its own knobs; what is here
# means the same in every script, so a fix lands once.

die() {
  printf '%s: %s\n' "${0##*/}" "$*" >&2
  exit 1
}

# apt_install TOOL [PACKAGE]: installs PACKAGE (default TOOL) with apt-get unless TOOL is on
# PATH; retries once after `apt-get update` (a fresh machine's lists may be empty).
apt_install() {
  command -v "$1" >/dev/null 2>&1 && return 0
  local pkg=${2:-$1} sudo=""
  say "installing $pkg"
  [ "$(id -u)" = 0 ] || sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$pkg" >/dev/null ||
    { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$pkg" >/dev/null; } ||
    die "cannot install $pkg"
}

# alive PID: the process exists and is not a zombie.
alive() {
  local st
  st=$(sed -n 's/.*) \([A-Za-z]\) .*/\1/p' "/proc/$1/stat" 2>/dev/null)
  [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}
kids_of() { cat /proc/"$1"/task/*/children 2>/dev/null | tr ' ' '\n' | grep . || true; }

# stop_tree PID [SECS]: TERM (every master here stops its workers on TERM), KILL after SECS
# (default 10), then KILL to any child it had when asked.
stop_tree() {
  local pid=$1 secs=${2:-10} kids i
  [ -n "$pid" ] || return 0
  kids=$(kids_of "$pid")
  if alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < secs * 10; i++)); do
      alive "$pid" || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null
  fi
  wait "$pid" 2>/dev/null
  for kid in $kids; do kill -KILL "$kid" 2>/dev/null; done
  return 0
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

median() {
  sort -g | awk '{a[NR] = $1} END {
    if (NR == 0) print "nan"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

# wrk's output, by file.
rps_of() { awk '/^Requests\/sec:/ {print $2}' "$1"; }
reqs_of() { awk '/ requests in / {print $1}' "$1"; }
non2xx_of() { awk '/Non-2xx or 3xx responses:/ {n = $NF} END {print n + 0}' "$1"; }
# "CONNECT READ WRITE TIMEOUT" socket errors (zeros when wrk printed none).
sockerr_of() {
  local e
  e=$(sed -n 's/.*Socket errors: connect \([0-9]*\), read \([0-9]*\), write \([0-9]*\), timeout \([0-9]*\).*/\1 \2 \3 \4/p' "$1")
  echo "${e:-0 0 0 0}"
}
# Failed requests: non-2xx answers and socket errors of every kind.
failed_of() {
  local c r w t
  read -r c r w t <<<"$(sockerr_of "$1")"
  echo $(($(non2xx_of "$1") + c + r + w + t))
}

# CPU accounting in clock ticks, to tell how much of the machine other work took.
machine_ticks() { awk '/^cpu / {t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t}' /proc/stat; }
acct_now() { echo "$(machine_ticks) $(our_ticks)"; }
# others_since "BUSY TOTAL OURS": % of the machine that other processes used since then.
others_since() {
  local b0 t0 o0 b1 t1 o1
  read -r b0 t0 o0 <<<"$1"
  read -r b1 t1 o1 <<<"$(acct_now)"
  awk -v b=$((b1 - b0)) -v t=$((t1 - t0)) -v o=$((o1 - o0)) \
    'BEGIN {x = t > 0 ? 100 * (b - o) / t : 0; if (x < 0) x = 0; printf "%.0f", x}'
}
# This script's own CPU, its waited-for children's (wrk, clients, reaped servers) and every
# live process of the servers in STARTED with their children (supervisors and workers). A
# script whose servers are not in STARTED defines its own after sourcing this file.
our_ticks() {
  local pids pid t=0
  pids="$$ ${STARTED[*]}"
  for pid in ${STARTED[@]+"${STARTED[@]}"}; do pids="$pids $(pgrep -P "$pid" | tr '\n' ' ')"; done
  for pid in $pids; do
    t=$((t + $(awk '{print $14 + $15 + $16 + $17}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
  done
  echo "$t"
}

# The facts every published table starts with: NPROC CPU KERNEL DATE COMMIT.
machine_facts() {
  NPROC=$(nproc)
  CPU=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
  KERNEL=$(uname -sr)
  DATE=$(date -u +%Y-%m-%d)
  COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
  [ -n "$(git status --porcelain 2>/dev/null)" ] && COMMIT="$COMMIT (+ uncommitted changes)"
  return 0
}
