#!/usr/bin/env bash
# Where the apply loop spends its time: runs the benchmark at a small size (release build), and
# while `deltamv run` drains the catch-up backlog, samples it with perf (call graphs via DWARF).
# Usage: scripts/profile-apply.sh [SECONDS to sample, default 10] [ROWS per table, default 200k]
# Writes the top of the inclusive profile to stdout; perf.data stays in $OUT (default /tmp/deltamv-profile).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v perf >/dev/null || { echo "perf is not installed (apt-get install linux-perf)"; exit 1; }
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/deltamv/target}"
SECONDS_TO_SAMPLE="${1:-10}"
ROWS="${2:-200k}"
OUT="${OUT:-/tmp/deltamv-profile}"
mkdir -p "$OUT"
cargo bench --bench ivm --no-run --quiet
cargo bench --bench ivm --quiet -- --rows "$ROWS" --backlog "$ROWS" --seconds 3 --out "$OUT" >"$OUT/bench.log" 2>&1 &
bench=$!
trap 'kill $bench 2>/dev/null || true' EXIT
until grep -aq "now deltamv run" "$OUT/bench.log"; do
  kill -0 $bench 2>/dev/null || { cat "$OUT/bench.log"; exit 1; }
  sleep 0.5
done
sleep 1
pid=$(pgrep -n -f "release/deltamv run")
perf record -q -F 999 -g --call-graph dwarf,8192 -p "$pid" -o "$OUT/perf.data" -- sleep "$SECONDS_TO_SAMPLE"
perf report -i "$OUT/perf.data" --children --sort symbol --stdio 2>/dev/null |
  grep -E '^ +[0-9]' | sed -E 's/ +- +- +$//; s/ {3,}/ /g' |
  grep -vE 'closure|call_once|catch_unwind|do_call|poll<|inlined\)|backtrace|thread_start|clone3|start_thread|0xffff' |
  head -40 | cut -c1-140
