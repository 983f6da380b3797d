#!/usr/bin/env bash
# The project's test command: installs missing system packages, then runs every test
# (unit tests, and integration tests against throwaway PostgreSQL clusters).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/deltamv/target}"
# shellcheck source=lib/tools.sh
. scripts/lib/tools.sh
announce_cold_build
# The benchmark entry points compile (the harness itself runs in tests/bench_smoke.rs).
cargo check --benches --quiet
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --no-fail-fast "$@"
else
  cargo test "$@"
fi
