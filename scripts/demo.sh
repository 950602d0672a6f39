#!/usr/bin/env bash
# multimesh demo: two pods, three networks each, service-mesh capture on all
# of them, then DEL with nothing left behind.
#
#   sudo scripts/demo.sh
#
# Everything happens in namespaces this script creates and removes again:
#   node netns  mmdemo-node-$$   (bridges mm0/mm1, veth mmv0 <-> mmv0p)
#   pod netns   mmdemo-a-$$, mmdemo-b-$$
# Addresses (documentation ranges only, never on the host netns):
#   eth0  bridge mm0            198.51.100.0/25    (gateway .1, default route)
#   net1  bridge mm1            198.51.100.128/25  (gateway .129)
#   net2  macvlan on mmv0       203.0.113.0/25     (node side mmv0p = .126)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
MM=$REPO/target/release/multimesh
PROBE=$REPO/target/release/mm-probe

[ "$(id -u)" = 0 ] || { echo "scripts/demo.sh must run as root (network namespaces, iptables)" >&2; exit 1; }

NODE="mmdemo-node-$$"
PODS=("mmdemo-a-$$" "mmdemo-b-$$")
TMP=""
BG_PIDS=()

if [ -t 1 ]; then BOLD=$'\e[1m'; GREEN=$'\e[32m'; RED=$'\e[31m'; OFF=$'\e[0m'; else BOLD=""; GREEN=""; RED=""; OFF=""; fi
STEP=0
section() { STEP=$((STEP + 1)); printf '\n%s==> %d. %s%s\n' "$BOLD" "$STEP" "$*" "$OFF"; }
info() { printf '    %s\n' "$*"; }
indent() { sed 's/^/    /'; }
ok() { printf '    %s✓ %s%s\n' "$GREEN" "$*" "$OFF"; }
die() { printf '    %s✗ %s%s\n' "$RED" "$*" "$OFF" >&2; exit 1; }

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${BG_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  for p in "${PODS[@]}"; do ip netns del "$p" 2>/dev/null || true; done
  ip netns del "$NODE" 2>/dev/null || true
  [ -n "$TMP" ] && rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'echo "demo.sh: failed at line $LINENO: $BASH_COMMAND" >&2' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

in_node() { timeout 20 ip netns exec "$NODE" "$@"; }
in_pod() { local p=$1; shift; timeout 20 ip netns exec "$p" "$@"; }

# Run multimesh in the node netns exactly as a runtime would.
cni() { # COMMAND POD
  local cmd=$1 pod=$2
  timeout 60 ip netns exec "$NODE" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    CNI_COMMAND="$cmd" CNI_CONTAINERID="demo-$pod" CNI_NETNS="/run/netns/$pod" \
    CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni \
    CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=$pod" \
    "$MM" <"$TMP/multimesh.conf"
}

# Start mm-probe listen in a pod in the background; waits for "ready".
listen() { # POD OUTFILE ARGS...
  local pod=$1 out=$2; shift 2
  ip netns exec "$pod" "$PROBE" listen --timeout 20 "$@" >"$out" 2>&1 &
  BG_PIDS+=($!)
  timeout 10 bash -c "until grep -q '^ready' '$out' 2>/dev/null; do sleep 0.05; done" ||
    die "listener in $pod did not start: $(cat "$out")"
}

section "Build and dependencies"
scripts/deps.sh
build_out=$(cargo build --release 2>&1) || { printf '%s\n' "$build_out" >&2; die "cargo build --release failed"; }
printf '%s\n' "$build_out" | tail -n 1 | indent
info "$("$MM" --version)  ($(stat -c %s "$MM") bytes, $(file -b "$MM" | grep -o 'static-pie linked\|statically linked\|dynamically linked' | head -1))"

section "Node and pod network namespaces"
TMP=$(mktemp -d /tmp/mmdemo.XXXXXX)
mkdir -p "$TMP/cni" "$TMP/ipam" "$TMP/conf"
ip netns add "$NODE"
in_node ip link set lo up
in_node ip link add mmv0 type veth peer name mmv0p
in_node ip link set mmv0 up
in_node ip link set mmv0p up
in_node ip addr add 203.0.113.126/25 dev mmv0p
for p in "${PODS[@]}"; do
  ip netns add "$p"
  in_pod "$p" ip link set lo up
done
info "node netns $NODE: veth mmv0 (macvlan master) <-> mmv0p 203.0.113.126/25"
info "pod netns ${PODS[*]}"

section "multimesh configuration (three networks, istio capture, iptables auto)"
cat >"$TMP/multimesh.conf" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "multimesh-demo",
  "type": "multimesh",
  "cniDir": "$TMP/cni",
  "binDir": "/usr/lib/cni",
  "confDir": "$TMP/conf",
  "delegates": [
    {"cniVersion": "1.0.0", "name": "cluster", "type": "bridge", "bridge": "mm0", "isGateway": true,
     "ipam": {"type": "host-local", "dataDir": "$TMP/ipam",
              "ranges": [[{"subnet": "198.51.100.0/25", "gateway": "198.51.100.1"}]],
              "routes": [{"dst": "0.0.0.0/0"}]}},
    {"cniVersion": "1.0.0", "name": "second", "type": "bridge", "bridge": "mm1", "isGateway": true,
     "ipam": {"type": "host-local", "dataDir": "$TMP/ipam",
              "ranges": [[{"subnet": "198.51.100.128/25", "gateway": "198.51.100.129"}]]}},
    {"cniVersion": "1.0.0", "name": "mvnet", "type": "macvlan", "master": "mmv0", "mode": "bridge",
     "ipam": {"type": "host-local", "dataDir": "$TMP/ipam",
              "ranges": [[{"subnet": "203.0.113.0/25"}]]}}
  ],
  "capture": {"profile": "istio", "backend": "iptables", "iptablesVariant": "auto"}
}
EOF
sed "s|$TMP|\$TMP|g" "$TMP/multimesh.conf" | indent

# One line from a CNI result: ifname=address for each IP.
SUMMARY_PY='
import json, sys
r = json.load(sys.stdin)
ifs = r.get("interfaces", [])
out = []
for ip in r.get("ips", []):
    i = ip.get("interface")
    name = ifs[i]["name"] if i is not None and i < len(ifs) else "?"
    out.append(name + "=" + ip["address"])
print(", ".join(out))
'

section "CNI ADD for both pods (multimesh runs bridge, bridge, macvlan, then programs capture)"
for p in "${PODS[@]}"; do
  t0=$(date +%s%N)
  out=$(cni ADD "$p") || die "ADD $p failed: $out"
  t1=$(date +%s%N)
  summary=$(printf '%s' "$out" | python3 -c "$SUMMARY_PY") || die "ADD $p: unexpected result: $out"
  ok "ADD $p in $(((t1 - t0) / 1000000)) ms; result (cluster network): $summary"
done

A=${PODS[0]}
B=${PODS[1]}
addr_of() { in_pod "$1" ip -o -4 addr show dev "$2" scope global | awk '{print $4}' | cut -d/ -f1 | head -1; }
A_ETH0=$(addr_of "$A" eth0); A_NET1=$(addr_of "$A" net1); A_NET2=$(addr_of "$A" net2)
[ -n "$A_ETH0" ] && [ -n "$A_NET1" ] && [ -n "$A_NET2" ] || die "pod $A is missing an address"

section "Pod $A: ip -brief addr"
in_pod "$A" ip -brief addr | indent
info ""
info "pod $B:"
in_pod "$B" ip -brief addr | indent

section "multimesh inspect --netns /run/netns/$A"
"$MM" inspect --netns "/run/netns/$A" | indent

section "Inbound capture: node -> pod $A port 8080 on all three networks lands on the sidecar's 15006"
listen "$A" "$TMP/l15006.out" --port 15006 --count 3
info "mm-probe listening on :15006 in $A (nothing listens on 8080)"
fails=0
for target in "eth0 $A_ETH0" "net1 $A_NET1" "net2 $A_NET2"; do
  set -- $target
  ans=$(in_node "$PROBE" connect --addr "$2" --port 8080 --timeout 5 2>&1) || { fails=$((fails + 1)); ans="FAILED: $ans"; }
  printf '    node -> %-4s %-15s:8080  =>  %s\n' "$1" "$2" "$ans"
  case $ans in *"served_by=15006 orig=$2:8080"*) ;; *) fails=$((fails + 1)) ;; esac
done
[ "$fails" = 0 ] && ok "all three connections redirected to 15006, original destination kept (SO_ORIGINAL_DST)" ||
  die "capture did not behave as expected"

section "UDP is never captured: node -> pod $A udp/8080 reaches the app directly"
listen "$A" "$TMP/udp8080.out" --port 8080 --udp --count 1
ans=$(in_node "$PROBE" connect --addr "$A_ETH0" --port 8080 --udp --timeout 5 2>&1) || die "UDP failed: $ans"
printf '    node -> eth0 %s udp/8080  =>  %s\n' "$A_ETH0" "$ans"
case $ans in *"served_by=8080"*) ok "answered by the app's UDP listener on 8080" ;; *) die "unexpected UDP answer" ;; esac

section "Outbound capture: pod $B -> pod $A goes through $B's sidecar (15001); the proxy's own uid 1337 is not captured"
listen "$B" "$TMP/l15001.out" --port 15001 --count 1
ans=$(in_pod "$B" "$PROBE" connect --addr "$A_ETH0" --port 8080 --timeout 5 2>&1) || die "outbound failed: $ans"
printf '    %s (app)        -> %s:8080  =>  %s\n' "$B" "$A_ETH0" "$ans"
case $ans in *"served_by=15001 orig=$A_ETH0:8080"*) ok "redirected to $B's outbound port 15001" ;; *) die "unexpected answer" ;; esac
listen "$A" "$TMP/l15006b.out" --port 15006 --count 1
ans=$(in_pod "$B" "$PROBE" connect --addr "$A_ETH0" --port 8080 --uid 1337 --gid 1337 --timeout 5 2>&1) || die "proxy traffic failed: $ans"
printf '    %s (uid 1337)   -> %s:8080  =>  %s\n' "$B" "$A_ETH0" "$ans"
case $ans in *"served_by=15006 orig=$A_ETH0:8080"*) ok "left $B untouched, captured inbound by $A's sidecar" ;; *) die "unexpected answer" ;; esac

section "CNI DEL for both pods"
for p in "${PODS[@]}"; do
  out=$(cni DEL "$p") || die "DEL $p failed: $out"
  ok "DEL $p"
done

section "Nothing left behind"
left=0
for p in "${PODS[@]}"; do
  links=$(in_pod "$p" ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -vx lo || true)
  rules=$(in_pod "$p" sh -c 'iptables-legacy-save -t nat 2>/dev/null; iptables-nft-save -t nat 2>/dev/null; nft list ruleset 2>/dev/null' | grep -ci multimesh || true)
  info "$p: interfaces: $(in_pod "$p" ip -o link show | awk -F': ' '{print $2}' | tr '\n' ' ')  capture rules: $rules"
  [ -z "$links" ] && [ "$rules" = 0 ] || left=1
done
state=$(cd "$TMP/cni" && find . -mindepth 1 ! -name iptables-variant | sed 's|^\./||')
info "state under cniDir: $( [ -z "$state" ] && echo none || echo "$state") (cache: iptables-variant=$(cat "$TMP/cni/iptables-variant" 2>/dev/null || echo -))"
[ -z "$state" ] || left=1
allocs=$(find "$TMP/ipam" -type f | while read -r f; do
  n=$(basename "$f")
  python3 -c 'import ipaddress,sys; ipaddress.ip_address(sys.argv[1])' "$n" 2>/dev/null && echo "${f#"$TMP"/}"
done || true)
info "IPAM allocations: $( [ -z "$allocs" ] && echo none || echo "$allocs")"
[ -z "$allocs" ] || left=1
veths=$(in_node ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | grep '^veth' || true)
info "node netns: $(in_node ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | tr '\n' ' ')(bridges are node-level; no pod veths)"
[ -z "$veths" ] || left=1
[ "$left" = 0 ] && ok "no interfaces, no rules, no state files, no IPAM allocations left" || die "something was left behind"

printf '\n%sDemo complete.%s Cleaning up namespaces.\n' "$BOLD" "$OFF"
