#!/usr/bin/env bash
# Benchmark multimesh against the bare reference bridge plugin, in one run:
#   - whole-process ADD+DEL cycles (fresh pod netns each) of: bare bridge,
#     multimesh+bridge without capture, with iptables (legacy, nft) and
#     nftables capture, and an "init-container style" bridge + one
#     iptables-legacy process per rule;
#   - rule programming alone (one restore / nft -f vs the per-rule loop);
#   - peak RSS; binary size and linkage;
#   - 32 pods ADD/DEL concurrently.
# Prints a markdown report and writes it to docs/bench.md.
#
#   sudo scripts/bench.sh              # N=40 iterations
#   sudo BENCH_N=100 scripts/bench.sh
#
# Everything runs in namespaces this script creates (node netns
# mmbench-node-$$, pod netns mmbench-pod-$$-*); addresses are from
# 198.51.100.0/24 only, inside the node netns. All of it is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

N=${BENCH_N:-40}
CONC=${BENCH_CONC:-32}
ROUNDS=${BENCH_CONC_ROUNDS:-3}
DEADLINE=${BENCH_TIMEOUT:-280}   # seconds for the measuring part

[ "$(id -u)" = 0 ] || { echo "scripts/bench.sh must run as root (network namespaces, iptables)" >&2; exit 1; }
[[ $N =~ ^[1-9][0-9]*$ ]] || { echo "BENCH_N must be a positive integer" >&2; exit 1; }

NODE="mmbench-node-$$"
TAG="$$"
TMP=""
DRIVER_PID=""

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$DRIVER_PID" ] && kill -0 "$DRIVER_PID" 2>/dev/null; then
    kill -TERM "$DRIVER_PID" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$DRIVER_PID" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$DRIVER_PID" 2>/dev/null || true
  fi
  # Pod namespaces live in the driver's mount namespace and vanish with it;
  # an interrupted run can leave their (unmounted) files behind.
  for f in /run/netns/mmbench-pod-"$TAG"-*; do
    [ -e "$f" ] || continue
    ip netns del "$(basename "$f")" 2>/dev/null || rm -f "$f"
  done
  ip netns del "$NODE" 2>/dev/null || true
  [ -n "$TMP" ] && rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "== dependencies" >&2
scripts/deps.sh
if [ ! -x /usr/bin/time ]; then
  echo "installing GNU time" >&2
  DEBIAN_FRONTEND=noninteractive timeout 180 apt-get install -y -qq time >/dev/null
fi
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3)

echo "== cargo build --release" >&2
cargo build --release
BIN=target/release/multimesh
for b in "$BIN" target/release/mm-recorder target/release/mm-probe; do
  [ -x "$b" ] || { echo "missing $b after build" >&2; exit 1; }
done
BINSIZE=$(stat -c %s "$BIN")
if file -b "$BIN" | grep -q 'static'; then
  LINKAGE="statically linked ($(file -b "$BIN" | grep -o 'static-pie linked\|statically linked' | head -1))"
elif ldd "$BIN" 2>&1 | grep -q 'not a dynamic executable\|statically linked'; then
  LINKAGE="statically linked"
else
  LINKAGE="dynamically linked"
fi

TMP=$(mktemp -d /tmp/mmbench.XXXXXX)
ip netns add "$NODE"
ip netns exec "$NODE" ip link set lo up

echo "== measuring (N=$N, timeout ${DEADLINE}s)" >&2
CMDLINE="sudo BENCH_N=$N scripts/bench.sh"
[ -z "${BENCH_N:-}" ] && CMDLINE="sudo scripts/bench.sh"
# The driver runs inside the node netns and spawns the plugins itself.
timeout -k 10 "$DEADLINE" ip netns exec "$NODE" "$PY" "$REPO/scripts/bench_lib.py" \
  --repo "$REPO" --tmp "$TMP" --tag "$TAG" --n "$N" --conc "$CONC" --conc-rounds "$ROUNDS" \
  --out "$TMP/bench.md" --command "$CMDLINE" --binsize "$BINSIZE" --linkage "$LINKAGE" &
DRIVER_PID=$!
set +e
wait "$DRIVER_PID"
rc=$?
set -e
DRIVER_PID=""
if [ "$rc" = 124 ]; then echo "benchmark timed out after ${DEADLINE}s" >&2; fi

# Veths and bridges live in the node netns; check before it goes.
left=$(ip netns exec "$NODE" ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -v '^lo$' | grep -v '^mmb0$' || true)
if [ -n "$left" ]; then echo "LEAK: interfaces left in node netns: $left" >&2; rc=1; fi

if [ -s "$TMP/bench.md" ]; then
  mkdir -p docs
  cp "$TMP/bench.md" docs/bench.md
  echo "== written to docs/bench.md" >&2
fi
exit "$rc"
