#!/usr/bin/env bash
# What TLS costs in drover's embedded runtime, run by hand (not in CI):
#   bash benches/system/tls_cost.sh
#
# Two servers doing the same TLS work on 127.0.0.1, WORKERS processes x THREADS threads:
#   baseline  benches/system/prefork_baseline.rs --tls-cert/--tls-key: forked workers
#             blocking in accept(), rustls configured as drover's (ring, TLS 1.3 and 1.2,
#             ALPN http/1.1, close_notify), the handshake on the accepting thread; no drover
#   embedded  os/examples/hello.rs under drover's embedded runtime with --tls-cert/--tls-key
# The certificate is a fresh self-signed ECDSA P-256 one (openssl). Two measures, each a
# wrk run of SECS s after 2 s of warm-up, CONNS connections:
#   close  a new TLS connection per request (`Connection: close`): TLS handshakes per second
#   keep   requests per second over TLS keep-alive connections
# ROUNDS rounds, the servers interleaved within each round (baseline, embedded); prints
# every run, then the medians and the ratio embedded / baseline per measure.
# Knobs (env): ROUNDS=5 SECS=8 WORKERS=2 THREADS=2 CONNS=WORKERS*THREADS PORT=18441
# CONNS must not exceed WORKERS*THREADS: the baseline gives a connection a thread of its own.
set -euo pipefail
ROUNDS=${ROUNDS:-5}
SECS=${SECS:-8}
WORKERS=${WORKERS:-2}
THREADS=${THREADS:-2}
CONNS=${CONNS:-$((WORKERS * THREADS))}
PORT=${PORT:-18441}
cd "$(dirname "$0")/../.."
# Both sides are built as a user's own program is: at opt-level 3, in a target directory of
# their own. The workspace's release profile builds drover-os for size ("s": the
# supervisor's resident memory is mostly its code) and the baselines in drover-benches at 3;
# with fat LTO each binary is optimized at its own crate's level, so the examples of
# drover-os would run tokio, hyper and rustls at "s" against a baseline at 3.
export CARGO_PROFILE_RELEASE_OPT_LEVEL=3
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}/o3
TARGET=$CARGO_TARGET_DIR
for tool in wrk openssl curl; do
  command -v "$tool" >/dev/null || { echo "tls_cost.sh needs $tool (apt-get install $tool)" >&2; exit 1; }
done
cargo build --release -q -p drover-os --example hello
cargo build --release -q -p drover-benches --example prefork_baseline
HELLO=$TARGET/release/examples/hello
BASELINE=$TARGET/release/examples/prefork_baseline

tmp=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null; wait; rm -rf "$tmp"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -keyout "$tmp/key.pem" -out "$tmp/cert.pem" -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null
TLS=(--tls-cert "$tmp/cert.pem" --tls-key "$tmp/key.pem")
URL="https://127.0.0.1:$PORT/"

declare -A RPS
run() { # SERVER
  local server=$1
  case $server in
    baseline) "$BASELINE" --listen "127.0.0.1:$PORT" --workers "$WORKERS" --threads "$THREADS" "${TLS[@]}" 2>/dev/null & ;;
    embedded) "$HELLO" --listen "127.0.0.1:$PORT" --workers "$WORKERS" --threads "$THREADS" "${TLS[@]}" 2>/dev/null & ;;
  esac
  pid=$!
  local up=
  for _ in $(seq 1 200); do
    if curl -s -o /dev/null --cacert "$tmp/cert.pem" "$URL"; then up=1; break; fi
    sleep 0.05
  done
  [ -n "$up" ] || { echo "$server did not answer on $URL" >&2; exit 1; }
  local mode out rps
  for mode in close keep; do
    local hdr=()
    [ "$mode" = close ] && hdr=(-H 'Connection: close')
    wrk -t1 -c"$CONNS" -d2s "${hdr[@]}" "$URL" >/dev/null
    out=$(wrk -t1 -c"$CONNS" -d"${SECS}s" "${hdr[@]}" "$URL")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    RPS[$server,$mode]+="$rps "
    echo "$server $mode $rps req/s $(grep -o 'Socket errors.*' <<<"$out" || echo 'no socket errors')"
  done
  kill -TERM "$pid"; wait "$pid" || true; pid=
}

median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round of $ROUNDS"
  run baseline
  run embedded
done

echo
echo "| TLS, $WORKERS workers x $THREADS threads, wrk -c$CONNS, median of $ROUNDS | baseline | embedded | ratio |"
echo "|---|---|---|---|"
for mode in close keep; do
  b=$(median <<<"${RPS[baseline,$mode]}")
  e=$(median <<<"${RPS[embedded,$mode]}")
  label=$([ "$mode" = close ] && echo "handshakes/s (new connection per request)" || echo "requests/s over keep-alive")
  printf '| %s | %.0f | %.0f | %.3f |\n' "$label" "$b" "$e" "$(awk -v e="$e" -v b="$b" 'BEGIN {print e / b}')"
done
echo "($(uname -srm), $(nproc) CPUs, $(date -u +%Y-%m-%d))"
