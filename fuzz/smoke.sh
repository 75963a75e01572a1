#!/usr/bin/env bash
# Runs every fuzz target for a short bounded time, starting from the seed corpus in
# fuzz/corpus/<target>/ (read only: new inputs go to a scratch directory). Exits non-zero
# on the first crash, printing the crash input (base64) and how to reproduce it.
#
#   fuzz/smoke.sh [SECONDS_PER_TARGET]     (default 20; needs cargo-fuzz)
#
# Stable toolchain: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its -Z flags. No sanitizer
# (`-s none`): every target is safe Rust, and the build takes half the time without ASan;
# debug assertions and overflow checks stay on.
set -euo pipefail
cd "$(dirname "$0")"

secs=${1:-20}
export RUSTC_BOOTSTRAP=1
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

start=$(date +%s)
cargo fuzz build -s none
echo "fuzz: built in $(($(date +%s) - start)) s"

for target in $(cargo fuzz list); do
  mkdir -p "$scratch/$target" "corpus/$target"
  log="$scratch/$target.log"
  dict=()
  if [ -f "$target.dict" ]; then dict=(-dict="$target.dict"); fi
  if cargo fuzz run -s none "$target" "$scratch/$target" "corpus/$target" -- \
      -max_total_time="$secs" -timeout=25 -rss_limit_mb=2048 "${dict[@]}" >"$log" 2>&1; then
    echo "fuzz: $target: $(grep -E '^Done [0-9]+ runs' "$log" || echo 'done')"
  else
    tail -n 80 "$log"
    for crash in $(find "artifacts/$target" -type f -newer "$scratch/$target" 2>/dev/null); do
      echo "fuzz: $target: crash input $crash (base64): $(base64 -w0 "$crash")"
      echo "fuzz: reproduce: cd fuzz && echo '$(base64 -w0 "$crash")' | base64 -d > /tmp/crash &&" \
        "DROVER_FUZZ_TRACE=1 RUSTC_BOOTSTRAP=1 cargo fuzz run -s none $target /tmp/crash"
    done
    echo "fuzz: $target FAILED" >&2
    exit 1
  fi
done
echo "fuzz: all targets passed in $(($(date +%s) - start)) s"
