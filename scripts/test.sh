#!/usr/bin/env bash
# The whole test suite: installs dependencies, builds, runs unit, golden
# and end-to-end tests (root: they create network namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "scripts/test.sh must run as root (network namespaces, iptables)" >&2; exit 1; }
scripts/deps.sh
cargo build --locked --all-targets
# Leftovers from an interrupted earlier run would only confuse the leak checks.
ip netns list 2>/dev/null | awk '/^mmn-/{print $1}' | xargs -r -n1 ip netns del 2>/dev/null || true
cargo test --locked --no-fail-fast -- --test-threads="${TEST_THREADS:-4}"
