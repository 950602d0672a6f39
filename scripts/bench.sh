#!/usr/bin/env bash
# Benchmark multimesh against the bare reference plugins, in one run:
#   - whole-process ADD+DEL cycles (fresh pod netns each) of: bare bridge,
#     multimesh+bridge without capture, with iptables (legacy, nft) and
#     nftables capture, and an "init-container style" bridge + one
#     iptables-legacy process per rule;
#   - Kubernetes mode: a meshed pod asking for two NADs, multimesh reading
#     it from the test API server (tests/apiserver/fake_apiserver.py, HTTPS,
#     started in the node netns), vs the same three attachments by the bare
#     delegates (and bare + the same rules); API requests per ADD and DEL;
#   - 32 and 64 pods ADDed at once, then DELed at once;
#   - kubelet's path: RunPodSandbox + StopPodSandbox through containerd 1.6's
#     CRI (a CRI client, examples/cri.rs, built with the dev-dependencies)
#     with the bare bridge vs multimesh + capture as the conflist, two
#     private containerds in the node netns (scripts/cri_containerd.sh);
#   - rule programming alone (one restore / nft -f vs the per-rule loop);
#   - peak RSS; binary size and linkage.
# Prints a markdown report whose first table has every scenario, and writes
# docs/bench.md, docs/bench.svg (chart of the same numbers) and
# docs/bench.json (raw samples; `python3 scripts/bench_chart.py
# docs/bench.json docs/bench.svg` redraws the chart without measuring).
#
#   scripts/bench.sh                  # N=100, 5 concurrency rounds (a few minutes)
#   BENCH_QUICK=1 scripts/bench.sh    # N=10, 2 rounds: a smoke run (~1 minute)
#   BENCH_N=40 BENCH_CONC=32,64 BENCH_CONC_ROUNDS=3 scripts/bench.sh
#
# BENCH_BASELINE=/path/to/an/older/multimesh adds that binary, with the same
# configs, to the single-pod phase (rows "baseline build ...", and paired
# differences "this build - baseline build"): before/after in one run.
#
# Other knobs: BENCH_K8S_N (default BENCH_N), BENCH_CRI_N (default BENCH_N), BENCH_TIMEOUT (seconds for the
# measuring part, default 900), BENCH_APISERVER (another copy of
# fake_apiserver.py; default the one in tests/apiserver/).
#
# Everything runs in namespaces this script creates (node netns
# mmbench-node-$$, pod netns mmbench-pod-$$-*); addresses are from
# 198.51.100.0/24 and 203.0.113.0/24 only, inside the node netns, and the
# API server listens on the node netns's 127.0.0.1. All of it is removed on
# exit.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

if [ -n "${BENCH_QUICK:-}" ] && [ "${BENCH_QUICK}" != 0 ]; then
  N=${BENCH_N:-10}; ROUNDS=${BENCH_CONC_ROUNDS:-2}
else
  N=${BENCH_N:-100}; ROUNDS=${BENCH_CONC_ROUNDS:-5}
fi
K8S_N=${BENCH_K8S_N:-$N}
CRI_N=${BENCH_CRI_N:-$N}
CONC=${BENCH_CONC:-32,64}
DEADLINE=${BENCH_TIMEOUT:-900}   # seconds for the measuring part
APISERVER=${BENCH_APISERVER:-$REPO/tests/apiserver/fake_apiserver.py}

[ "$(id -u)" = 0 ] || { echo "scripts/bench.sh must run as root (network namespaces, iptables)" >&2; exit 1; }
for v in N K8S_N CRI_N ROUNDS; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "BENCH_$v must be a positive integer" >&2; exit 1; }
done
[[ $CONC =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || { echo "BENCH_CONC must be pod counts like 32,64" >&2; exit 1; }

NODE="mmbench-node-$$"
TAG="$$"
TMP=""
CRI_CLIENT=$REPO/target/x86_64-unknown-linux-gnu/debug/examples/cri
DRIVER_PID=""

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$DRIVER_PID" ] && kill -0 "$DRIVER_PID" 2>/dev/null; then
    kill -TERM "$DRIVER_PID" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$DRIVER_PID" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$DRIVER_PID" 2>/dev/null || true
  fi
  # The CRI rows' containerds (if the driver could not stop them): their
  # sandboxes stopped through CRI (DEL), then containerd and its shims.
  if [ -n "$TMP" ]; then
    for d in "$TMP"/cri-*/; do
      [ -d "$d" ] && scripts/cri_containerd.sh down "$d" "$CRI_CLIENT" || true
    done
  fi
  # Anything still running in the node netns is ours (the test API server
  # if the driver was killed).
  if ip netns pids "$NODE" >/dev/null 2>&1; then
    for p in $(ip netns pids "$NODE"); do kill -TERM "$p" 2>/dev/null || true; done
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
# GNU time (peak RSS), openssl (the Kubernetes-mode scenario's certificates).
need=()
[ -x /usr/bin/time ] || need+=(time)
command -v openssl >/dev/null || need+=(openssl)
if ((${#need[@]})); then
  echo "installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  timeout 180 apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null ||
    { timeout 180 apt-get update -qq && timeout 180 apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }
fi
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3)

echo "== cargo build --release" >&2
cargo build --release
REL=target/x86_64-unknown-linux-gnu/release
BIN=$REL/multimesh
for b in "$BIN" $REL/mm-recorder $REL/mm-probe $REL/mm-passthrough; do
  [ -x "$b" ] || { echo "missing $b after build" >&2; exit 1; }
done
# The CRI client (a dev build: its speed is one gRPC call per step, the same
# for both variants; the plugins measured are the release builds).
echo "== cargo build --example cri" >&2
cargo build --example cri
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

echo "== measuring (N=$N, Kubernetes mode N=$K8S_N, CRI N=$CRI_N, concurrency $CONC x $ROUNDS rounds, timeout ${DEADLINE}s)" >&2
[ -f "$APISERVER" ] || echo "NOTE: $APISERVER not found: the Kubernetes-mode scenario is skipped" >&2
CMDLINE=""
[ -n "${BENCH_QUICK:-}" ] && [ "${BENCH_QUICK}" != 0 ] && CMDLINE+=" BENCH_QUICK=1"
for v in BENCH_N BENCH_K8S_N BENCH_CRI_N BENCH_CONC BENCH_CONC_ROUNDS BENCH_BASELINE; do
  [ -n "${!v:-}" ] && CMDLINE+=" $v=${!v}"
done
CMDLINE+=" scripts/bench.sh"
# The driver runs inside the node netns and spawns the plugins (and the test
# API server) itself.
timeout -k 10 "$DEADLINE" ip netns exec "$NODE" "$PY" "$REPO/scripts/bench_lib.py" \
  --repo "$REPO" --tmp "$TMP" --tag "$TAG" --n "$N" --k8s-n "$K8S_N" --conc "$CONC" \
  --conc-rounds "$ROUNDS" --apiserver "$APISERVER" \
  --out "$TMP/bench.md" --json "$TMP/bench.json" --svg "$TMP/bench.svg" \
  --command "${CMDLINE# }" --binsize "$BINSIZE" --linkage "$LINKAGE" \
  --baseline "${BENCH_BASELINE:-}" \
  --cri-client "$CRI_CLIENT" --cri-n "$CRI_N" --host-mnt "/proc/$$/ns/mnt" --node-netns "/run/netns/$NODE" &
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
  "$PY" -c 'import sys, xml.etree.ElementTree as E; E.parse(sys.argv[1])' "$TMP/bench.svg" ||
    { echo "docs/bench.svg: the chart is not well-formed XML" >&2; rc=1; }
  for f in bench.md bench.svg bench.json; do cp "$TMP/$f" "docs/$f"; done
  echo "== written to docs/bench.md, docs/bench.svg, docs/bench.json" >&2
fi
exit "$rc"
