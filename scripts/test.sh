#!/usr/bin/env bash
# The whole test suite: installs dependencies, builds, runs unit, golden
# and end-to-end tests (root: they create network namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "scripts/test.sh must run as root (network namespaces, iptables)" >&2; exit 1; }
scripts/deps.sh
# Gates: formatting and lints are part of the suite.
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo build --locked --all-targets
# The binary's budget (plugin, agent and validator in one file): 4 MB.
cargo build --locked --release --bin multimesh
size=$(stat -c %s target/x86_64-unknown-linux-gnu/release/multimesh)
echo "multimesh release binary: $size bytes (budget 4000000)"
[ "$size" -le 4000000 ] || { echo "the release binary is over its 4 MB budget" >&2; exit 1; }
# Leftovers from an interrupted earlier run would only confuse the leak checks.
ip netns list 2>/dev/null | awk '/^mmn-/{print $1}' | xargs -r -n1 ip netns del 2>/dev/null || true
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --locked --no-fail-fast -- --test-threads="${TEST_THREADS:-4}" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
passed=$(awk '/^test result:/{s+=$4} END{print s+0}' "$log")
failed=$(awk '/^test result:/{s+=$6} END{print s+0}' "$log")
echo
echo "multimesh: $passed passed, $failed failed"
[ "$passed" -gt 0 ] || { echo "no test ran" >&2; exit 1; }
exit "$rc"
