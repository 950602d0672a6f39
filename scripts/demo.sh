#!/usr/bin/env bash
# multimesh demo: two pods, three networks each, service-mesh capture on all
# of them, then DEL with nothing left behind. Then Kubernetes mode: the
# in-repo fake API server (tests/apiserver/fake_apiserver.py, HTTPS with an
# openssl-made CA) serves two pods and two NetworkAttachmentDefinitions;
# multimesh reads them, attaches the networks the pods ask for, captures the
# meshed one only, writes network-status back, and DELs without the server.
# Then kubelet's path: containerd's CRI runs a pod's network through
# multimesh (RunPodSandbox / StopPodSandbox from a CRI client). Then the
# startup race: a meshed pod whose network was set up before multimesh was
# installed is repaired in place by `multimesh agent`.
#
#   scripts/demo.sh
#
# Everything happens in namespaces this script creates and removes again:
#   node netns  mmdemo-node-$$   (bridges mm0/mm1, veth mmv0 <-> mmv0p;
#                                 the fake API server on its 127.0.0.1)
#   pod netns   mmdemo-a-$$, mmdemo-b-$$, mmdemo-web-$$, mmdemo-plain-$$
# Addresses (documentation ranges only, never on the host netns):
#   eth0  bridge mm0            198.51.100.0/25    (gateway .1, default route)
#   net1  bridge mm1            198.51.100.128/25  (gateway .129)
#   net2  macvlan on mmv0       203.0.113.0/25     (node side mmv0p = .126)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
MM=$REPO/target/x86_64-unknown-linux-gnu/release/multimesh
PROBE=$REPO/target/x86_64-unknown-linux-gnu/release/mm-probe
CRI=$REPO/target/x86_64-unknown-linux-gnu/debug/examples/cri   # the CRI client (dev build)

[ "$(id -u)" = 0 ] || { echo "scripts/demo.sh must run as root (network namespaces, iptables)" >&2; exit 1; }

NODE="mmdemo-node-$$"
PODS=("mmdemo-a-$$" "mmdemo-b-$$")
K8S_PODS=("mmdemo-web-$$" "mmdemo-plain-$$")
TMP=""
BG_PIDS=()
API_PID=""   # the fake API server (Kubernetes part)
AGENT_PID="" # unshare running multimesh agent in its own PID namespace
API_FD=""    # write end of its stdin: it exits on EOF, i.e. when we die

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
  if [ -n "$TMP" ] && [ -d "$TMP/containerd" ]; then scripts/cri_containerd.sh down "$TMP/containerd" "$CRI" || true; fi
  stop_agent
  stop_api
  if [ -n "$TMP" ] && [ -d "$TMP/agent/netns" ]; then umount -R "$TMP/agent/netns" 2>/dev/null || true; fi
  for p in "${PODS[@]}" "${K8S_PODS[@]}"; do ip netns del "$p" 2>/dev/null || true; done
  ip netns del "$NODE" 2>/dev/null || true
  [ -n "$TMP" ] && rm -rf "$TMP"
  exit "$rc"
}
# SIGTERM, up to 3 s for a clean exit, then SIGKILL. Idempotent.
stop_api() {
  if [ -n "$API_PID" ]; then
    kill -TERM "$API_PID" 2>/dev/null || true
    local i
    for i in $(seq 60); do kill -0 "$API_PID" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$API_PID" 2>/dev/null || true
    wait "$API_PID" 2>/dev/null || true
    API_PID=""
  fi
  if [ -n "$API_FD" ]; then exec {API_FD}>&-; API_FD=""; fi
}
# SIGTERM to the agent (unshare, its parent, then exits too), up to 5 s,
# then SIGKILL to both. Idempotent.
stop_agent() {
  if [ -n "$AGENT_PID" ]; then
    local child i
    child=$(cat "/proc/$AGENT_PID/task/$AGENT_PID/children" 2>/dev/null || true)
    [ -z "$child" ] || kill -TERM $child 2>/dev/null || true
    for i in $(seq 100); do kill -0 "$AGENT_PID" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$AGENT_PID" 2>/dev/null || true
    wait "$AGENT_PID" 2>/dev/null || true
    AGENT_PID=""
  fi
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
build_out=$(cargo build --example cri 2>&1) || { printf '%s\n' "$build_out" >&2; die "cargo build --example cri failed"; }
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

# Every interface, capture rule, state file, IPAM allocation and pod veth
# gone? Prints what it finds; dies if anything is left.
nothing_left() { # POD...
  local left=0 p links rules state allocs veths
  for p in "$@"; do
    links=$(in_pod "$p" ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -vx lo || true)
    rules=$(in_pod "$p" sh -c 'iptables-legacy-save -t nat 2>/dev/null; iptables-nft-save -t nat 2>/dev/null; nft list ruleset 2>/dev/null' | grep -ci multimesh || true)
    info "$p: interfaces: $(in_pod "$p" ip -o link show | awk -F': ' '{print $2}' | tr '\n' ' ')  capture rules: $rules"
    [ -z "$links" ] && [ "$rules" = 0 ] || left=1
  done
  # The variant cache and the (empty) directory of netns capture owners
  # stay; anything else, an owner marker included, is a leak.
  state=$(cd "$TMP/cni" && find . -mindepth 1 ! -name iptables-variant ! -path ./netns | sed 's|^\./||')
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
}

section "Nothing left behind"
nothing_left "${PODS[@]}"

# --------------------------------------------------------------------------
# Kubernetes mode
# --------------------------------------------------------------------------
API=$TMP/api   # the fake API server's state dir (objects/, tokens, requests.log)
PKI=$TMP/pki
K8S_CONF=$TMP/multimesh-k8s.conf
PY=/usr/bin/python3; [ -x "$PY" ] || PY=python3
WEB=${K8S_PODS[0]}
PLAIN=${K8S_PODS[1]}
UID_WEB=$(cat /proc/sys/kernel/random/uuid)
UID_PLAIN=$(cat /proc/sys/kernel/random/uuid)

# Run multimesh for a Kubernetes pod: CNI_ARGS name it (namespace demo).
cni_k8s() { # COMMAND NETNS PODNAME PODUID
  local cmd=$1 netns=$2 name=$3 uid=$4
  timeout 60 ip netns exec "$NODE" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    CNI_COMMAND="$cmd" CNI_CONTAINERID="demo-k8s-$name-$$" CNI_NETNS="/run/netns/$netns" \
    CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni \
    CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=$name;K8S_POD_UID=$uid" \
    "$MM" <"$K8S_CONF"
}

# The MULTIMESH rules in a pod's nat table (whichever iptables variant).
capture_rules() { # POD
  in_pod "$1" sh -c 'iptables-legacy-save -t nat 2>/dev/null; iptables-nft-save -t nat 2>/dev/null' | grep '^-A' | grep MULTIMESH || true
}

section "Kubernetes mode: a CA and a server certificate for the fake API server (openssl, EC P-256)"
mkdir -p "$PKI" "$API/objects/pods/demo" "$API/objects/nads/demo"
"$REPO/tests/apiserver/gen_certs.sh" "$PKI" || die "certificate generation failed"
for c in ca server; do
  info "$c.pem: $(openssl x509 -in "$PKI/$c.pem" -noout -subject -ext basicConstraints,keyUsage,extendedKeyUsage,subjectAltName 2>/dev/null |
    awk '{ sub(/^ +/, ""); sub(/ +$/, ""); sub(/^X509v3 /, "| ") } { printf "%s%s", (NR > 1 ? " " : ""), $0 }')"
done
info "validity: $(openssl x509 -in "$PKI/server.pem" -noout -startdate | cut -d= -f2) (an hour ago) .. $(openssl x509 -in "$PKI/server.pem" -noout -enddate | cut -d= -f2)"
v=$(openssl verify -CAfile "$PKI/ca.pem" -purpose sslserver "$PKI/server.pem" 2>&1) || die "verify: $v"
ok "openssl verify -purpose sslserver: ${v##*: }"

section "Kubernetes mode: fake API server inside the node netns (127.0.0.1 there), kubeconfig"
TOKEN="demo-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
echo "$TOKEN" >"$API/tokens"
mkfifo "$API/stdin"
exec {API_FD}<>"$API/stdin"   # read-write: does not block; we are its only writer
ip netns exec "$NODE" "$PY" "$REPO/tests/apiserver/fake_apiserver.py" --dir "$API" \
  --cert "$PKI/server.pem" --key "$PKI/server.key" --port-file "$API/port" --exit-on-stdin-eof \
  <"$API/stdin" >/dev/null 2>"$API/server.stderr" {API_FD}>&- &
API_PID=$!
for _ in $(seq 200); do # up to ~10 s
  [ -s "$API/port" ] && break
  kill -0 "$API_PID" 2>/dev/null || { cat "$API/server.stderr" >&2; die "fake API server exited"; }
  sleep 0.05
done
[ -s "$API/port" ] || { cat "$API/server.stderr" >&2; die "fake API server wrote no port file within 10 s"; }
PORT=$(cat "$API/port")
SERVER="https://127.0.0.1:$PORT"
info "fake_apiserver.py pid $API_PID in $NODE, listening on $SERVER (port file $(basename "$API")/port)"
ver=$(in_node curl -sS --max-time 5 --cacert "$PKI/ca.pem" "$SERVER/version" | tr -d ' \n') || die "GET /version failed"
case $ver in *'"major":"1"'*) ok "curl --cacert ca.pem $SERVER/version (TLS verified, SAN IP:127.0.0.1): ${ver:0:40}..." ;; *) die "unexpected /version: $ver" ;; esac
umask_old=$(umask); umask 077
cat >"$API/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority-data: $(base64 -w0 "$PKI/ca.pem")
    server: $SERVER
  name: demo
contexts:
- context:
    cluster: demo
    user: multimesh
  name: multimesh@demo
current-context: multimesh@demo
users:
- name: multimesh
  user:
    token: $TOKEN
KC
umask "$umask_old"
info "kubeconfig (\$TMP/api/kubeconfig):"
sed -e 's/\(certificate-authority-data:\).*/\1 <base64 of ca.pem>/' -e 's/\(token:\).*/\1 <the token in $TMP\/api\/tokens>/' "$API/kubeconfig" | indent | indent

section "Kubernetes mode: objects in the API server: NADs demo/storage, demo/fast; pods demo/web (istio), demo/plain"
# The NADs carry the demo's second bridge (mm1) and macvlan configs; without
# "name", a NAD's config gets the NAD's name.
"$PY" - "$TMP/multimesh.conf" "$API/objects/nads/demo" <<'PY' || die "writing NADs failed"
import json, sys
conf = json.load(open(sys.argv[1]))
def nad(name, delegate, annotations):
    cfg = {k: v for k, v in delegate.items() if k != "name"}
    obj = {"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
           "metadata": {"name": name, "namespace": "demo", "uid": "nad-demo-" + name,
                        "resourceVersion": "1", "annotations": annotations},
           "spec": {"config": json.dumps(cfg)}}
    json.dump(obj, open(f"{sys.argv[2]}/{name}.json", "w"), indent=2)
nad("storage", conf["delegates"][1], {})
nad("fast", conf["delegates"][2], {"multimesh.io/capture": "false"})
PY
for n in storage fast; do
  "$PY" -c '
import json, sys
o = json.load(open(sys.argv[1]))
a = o["metadata"]["annotations"]
c = json.loads(o["spec"]["config"])
print("nad demo/%s: %s on %s%s" % (o["metadata"]["name"], c["type"], c.get("bridge") or c.get("master"),
      "".join("  [%s: %s]" % kv for kv in a.items())))' "$API/objects/nads/demo/$n.json" | indent
done
pod_json() { # NAME UID MESHED
  local ann containers
  if [ "$3" = yes ]; then
    ann='"sidecar.istio.io/status": "{}",
      "traffic.sidecar.istio.io/excludeInboundPorts": "9090",
      '
    containers='{"name": "app", "image": "registry.example/app:1.0"},
      {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.22.0"}'
  else
    ann=""
    containers='{"name": "app", "image": "registry.example/app:1.0"}'
  fi
  cat <<POD
{
  "apiVersion": "v1",
  "kind": "Pod",
  "metadata": {
    "name": "$1", "namespace": "demo", "uid": "$2", "resourceVersion": "1",
    "labels": {"app": "$1"},
    "annotations": {
      ${ann}"k8s.v1.cni.cncf.io/networks": "storage,fast@data0"
    }
  },
  "spec": {
    "containers": [
      $containers
    ],
    "nodeName": "node-1"
  },
  "status": {"phase": "Pending"}
}
POD
}
pod_json web "$UID_WEB" yes >"$API/objects/pods/demo/web.json"
pod_json plain "$UID_PLAIN" no >"$API/objects/pods/demo/plain.json"
for n in web plain; do
  "$PY" -c '
import json, sys
o = json.load(open(sys.argv[1]))
print("pod demo/%s: containers %s" % (o["metadata"]["name"], ",".join(c["name"] for c in o["spec"]["containers"])))
for k, v in o["metadata"]["annotations"].items():
    print("    %s: %s" % (k, json.dumps(v)))' "$API/objects/pods/demo/$n.json" | indent
done

section "Kubernetes mode: multimesh config = the demo's cluster network + kubeconfig"
"$PY" - "$TMP/multimesh.conf" "$API/kubeconfig" >"$K8S_CONF" <<'PY' || die "writing the Kubernetes-mode config failed"
import json, sys
conf = json.load(open(sys.argv[1]))
conf["name"] = "multimesh-demo-k8s"
conf["delegates"] = conf["delegates"][:1]   # the cluster network (mm0)
conf["kubeconfig"] = sys.argv[2]
# One line per key, one per delegate (still JSON).
lines = []
for k, v in conf.items():
    if k == "delegates":
        lines.append('  "delegates": [\n' + ",\n".join("    " + json.dumps(d) for d in v) + "\n  ]")
    else:
        lines.append("  %s: %s" % (json.dumps(k), json.dumps(v)))
print("{\n" + ",\n".join(lines) + "\n}")
PY
"$PY" -m json.tool "$K8S_CONF" >/dev/null || die "the Kubernetes-mode config is not JSON"
sed "s|$TMP|\$TMP|g" "$K8S_CONF" | indent
for p in "${K8S_PODS[@]}"; do
  ip netns add "$p"
  in_pod "$p" ip link set lo up
done
info "pod netns: demo/web -> $WEB, demo/plain -> $PLAIN"

section "Kubernetes mode: CNI ADD demo/web and demo/plain, and the API round trips of each"
for spec in "web $WEB $UID_WEB" "plain $PLAIN $UID_PLAIN"; do
  set -- $spec
  : >"$API/requests.log"
  t0=$(date +%s%N)
  out=$(cni_k8s ADD "$2" "$1" "$3") || die "ADD demo/$1 failed: $out"
  t1=$(date +%s%N)
  summary=$(printf '%s' "$out" | python3 -c "$SUMMARY_PY") || die "ADD demo/$1: unexpected result: $out"
  ok "ADD demo/$1 in $(((t1 - t0) / 1000000)) ms; result (cluster network): $summary"
  reqs=$("$PY" -c '
import json, sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    print("%-5s %s  -> %d (auth %s)" % (r["method"], r["path"], r["status"], r["auth"]))' "$API/requests.log")
  printf '%s\n' "$reqs" | indent | indent
  want=$(printf '%s\n' \
    "GET   /api/v1/namespaces/demo/pods/$1  -> 200 (auth token)" \
    "GET   /apis/k8s.cni.cncf.io/v1/namespaces/demo/network-attachment-definitions/fast  -> 200 (auth token)" \
    "GET   /apis/k8s.cni.cncf.io/v1/namespaces/demo/network-attachment-definitions/storage  -> 200 (auth token)" \
    "PATCH /api/v1/namespaces/demo/pods/$1/status  -> 200 (auth token)")
  [ "$(printf '%s\n' "$reqs" | sort)" = "$want" ] || die "demo/$1: expected 1 pod GET, 1 GET per NAD, 1 status PATCH"
  ok "$(printf '%s\n' "$reqs" | wc -l) requests: 1 pod GET, 1 GET per NAD, 1 PATCH pods/status"
done

section "Kubernetes mode: the pods' interfaces (eth0 cluster network, net1 = demo/storage, data0 = demo/fast)"
for spec in "web $WEB" "plain $PLAIN"; do
  set -- $spec
  info "demo/$1 ($2):"
  in_pod "$2" ip -brief addr | indent
  links=$(in_pod "$2" ls /sys/class/net | sort | paste -sd' ' -)
  [ "$links" = "data0 eth0 lo net1" ] || die "demo/$1: interfaces $links, expected data0 eth0 lo net1"
done
ok "both pods: eth0, net1, data0"
WEB_ETH0=$(addr_of "$WEB" eth0); WEB_NET1=$(addr_of "$WEB" net1); WEB_DATA0=$(addr_of "$WEB" data0)
PLAIN_ETH0=$(addr_of "$PLAIN" eth0); PLAIN_NET1=$(addr_of "$PLAIN" net1); PLAIN_DATA0=$(addr_of "$PLAIN" data0)

section "Kubernetes mode: k8s.v1.cni.cncf.io/network-status written back on the pod objects"
# Prints the annotation of pod file $1; checks it against "name iface ip" triples.
STATUS_PY='
import json, sys
pod = json.load(open(sys.argv[1]))
pretty = sys.argv[2] == "pretty"
ann = pod["metadata"]["annotations"].get("k8s.v1.cni.cncf.io/network-status")
if ann is None:
    sys.exit("no network-status annotation")
st = json.loads(ann)
if pretty:
    print(json.dumps(st, indent=2))
else:
    for e in st:
        print("%-13s %-6s %-16s %s%s" % (e["name"], e["interface"], ",".join(e.get("ips", [])),
              e.get("mac", ""), "  default" if e.get("default") else ""))
want = [a.split() for a in sys.argv[3:]]
got = [[e.get("name"), e.get("interface"), ",".join(e.get("ips", []))] for e in st]
if got != want:
    sys.exit("network-status %s, expected %s" % (got, want))
if [e.get("default", False) for e in st] != [True, False, False]:
    sys.exit("only the cluster network should be default")
'
info "demo/web (\$TMP/api/objects/pods/demo/web.json, metadata.annotations):"
"$PY" -c "$STATUS_PY" "$API/objects/pods/demo/web.json" pretty \
  "cluster eth0 $WEB_ETH0" "demo/storage net1 $WEB_NET1" "demo/fast data0 $WEB_DATA0" | indent | indent ||
  die "demo/web: network-status does not match the pod's interfaces"
info "demo/plain:"
"$PY" -c "$STATUS_PY" "$API/objects/pods/demo/plain.json" short \
  "cluster eth0 $PLAIN_ETH0" "demo/storage net1 $PLAIN_NET1" "demo/fast data0 $PLAIN_DATA0" | indent | indent ||
  die "demo/plain: network-status does not match the pod's interfaces"
ok "network-status matches the interfaces and addresses in both pods (Multus's format)"

# Connect from the node; check the answer contains EXPECT.
probe() { # LABEL ADDR PORT EXPECT
  local ans
  ans=$(in_node "$PROBE" connect --addr "$2" --port "$3" --timeout 5 2>&1) || ans="FAILED: $ans"
  printf '    node -> %-18s %-15s:%-4s =>  %s\n' "$1" "$2" "$3" "$ans"
  case $ans in *"$4"*) return 0 ;; *) return 1 ;; esac
}

section "Kubernetes mode: capture on demo/web (meshed): 9090 excluded by its annotation, data0 by NAD demo/fast"
WEB_RULES=$(capture_rules "$WEB")
info "$(printf '%s\n' "$WEB_RULES" | grep -c .) MULTIMESH rules in $WEB; those for port 9090 and data0:"
grep -e '--dport 9090 ' -e ' data0 ' <<<"$WEB_RULES" | indent | indent
for want in "-A MULTIMESH_INBOUND -p tcp -m tcp --dport 9090 -j RETURN" \
  "-A MULTIMESH_INBOUND -i data0 -j RETURN" "-A MULTIMESH_OUTPUT -o data0 -j RETURN" \
  "-A MULTIMESH_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006"; do
  grep -qxF -- "$want" <<<"$WEB_RULES" || die "not programmed in $WEB: $want"
done
ok "rules from traffic.sidecar.istio.io/excludeInboundPorts and multimesh.io/capture=false are programmed"
listen "$WEB" "$TMP/k15006.out" --port 15006 --count 2
listen "$WEB" "$TMP/k9090.out" --port 9090 --count 1
listen "$WEB" "$TMP/k8080.out" --port 8080 --count 1
info "mm-probe in $WEB listening on 15006 (sidecar), 9090 and 8080 (app)"
fails=0
probe "web eth0" "$WEB_ETH0" 8080 "served_by=15006 orig=$WEB_ETH0:8080" || fails=$((fails + 1))
probe "web net1" "$WEB_NET1" 8080 "served_by=15006 orig=$WEB_NET1:8080" || fails=$((fails + 1))
probe "web eth0 (excl.)" "$WEB_ETH0" 9090 "served_by=9090" || fails=$((fails + 1))
probe "web data0 (excl.)" "$WEB_DATA0" 8080 "served_by=8080" || fails=$((fails + 1))
[ "$fails" = 0 ] || die "capture on demo/web did not behave as expected"
ok "app port 8080 lands on the sidecar's 15006 (eth0, net1); 9090 and everything on data0 reach the app directly"

section "Kubernetes mode: demo/plain is not meshed: no capture"
PLAIN_RULES=$(capture_rules "$PLAIN")
info "MULTIMESH rules in $PLAIN: $(printf '%s' "$PLAIN_RULES" | grep -c . || true)"
[ -z "$PLAIN_RULES" ] || die "demo/plain has capture rules: $PLAIN_RULES"
listen "$PLAIN" "$TMP/p8080.out" --port 8080 --count 1
probe "plain eth0" "$PLAIN_ETH0" 8080 "served_by=8080" || die "demo/plain: connection did not reach the app"
ok "no rules; 8080 reaches the app"

section "Kubernetes mode: dry run: multimesh rules --config \$TMP/multimesh-k8s.conf --pod <the pod object>"
dry=$("$MM" rules --config "$K8S_CONF" --pod "$API/objects/pods/demo/web.json" 2>&1) || die "rules --pod web failed: $dry"
info "--pod \$TMP/api/objects/pods/demo/web.json:"
printf '%s\n' "$dry" | indent | indent
dry_rules=$(grep '^-A' <<<"$dry" || true)
[ -n "$dry_rules" ] || die "the dry run shows no rules for demo/web"
[ "$(grep -v ' data0 ' <<<"$WEB_RULES")" = "$dry_rules" ] ||
  die "dry run and programmed rules differ: $(diff <(printf '%s\n' "$dry_rules") <(printf '%s\n' "$WEB_RULES"))"
ok "the $(grep -c . <<<"$dry_rules") rules are exactly what $WEB has, in order; $WEB also has the 2 data0 RETURNs"
info "  (those come from NAD demo/fast's multimesh.io/capture=false: the dry run reads the pod, not its NADs)"
dry=$("$MM" rules --config "$K8S_CONF" --pod "$API/objects/pods/demo/plain.json" 2>&1) || die "rules --pod plain failed: $dry"
info "--pod \$TMP/api/objects/pods/demo/plain.json:"
printf '%s\n' "$dry" | indent | indent
case $dry in "# pod not captured"*) ok "demo/plain: no rules, as programmed" ;; *) die "dry run for demo/plain: $dry" ;; esac

section "Kubernetes mode: the trust boundary (docs/security.md): what a tenant writes cannot reach the node"
# A NAD a tenant could create: a nested multimesh told to run /bin/sh as
# root (binDir /bin, a delegate of type "sh"), and a pod asking for it.
"$PY" - "$API/objects" "$TMP/pwned" <<'PY' || die "writing the tenant's objects failed"
import json, sys
objs, pwned = sys.argv[1], sys.argv[2]
evil = {"cniVersion": "1.0.0", "type": "multimesh", "binDir": "/bin",
        "delegates": [{"name": "x", "type": "sh", "x": f"$(id > {pwned})"}]}
json.dump({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
           "metadata": {"name": "evil", "namespace": "demo", "uid": "nad-demo-evil", "resourceVersion": "1"},
           "spec": {"config": json.dumps(evil)}}, open(f"{objs}/nads/demo/evil.json", "w"))
for name, ann in (("tenant", {"k8s.v1.cni.cncf.io/networks": "evil"}), ("squatter", {})):
    json.dump({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": "demo", "uid": "uid-" + name, "resourceVersion": "1",
                            "annotations": ann},
               "spec": {"containers": [{"name": "app", "image": "registry.example/app:1.0"}], "nodeName": "node-1"},
               "status": {"phase": "Pending"}}, open(f"{objs}/pods/demo/{name}.json", "w"))
PY
info "nad demo/evil: {\"type\":\"multimesh\",\"binDir\":\"/bin\",\"delegates\":[{\"type\":\"sh\",\"x\":\"\$(id > …/pwned)\"}]}"
if out=$(cni_k8s ADD "$PLAIN" tenant uid-tenant 2>/dev/null); then die "the tenant's NAD was run: $out"; fi
info "ADD demo/tenant (networks: evil) => $out"
[ ! -e "$TMP/pwned" ] || die "a shell ran as root: $(cat "$TMP/pwned")"
case $out in *'"code":7'*evil*) ok "refused with code 7 naming the NAD, before anything ran; no shell, no file" ;; *) die "unexpected answer: $out" ;; esac
before=$(capture_rules "$WEB" | wc -l)
if out=$(cni_k8s ADD "$WEB" squatter uid-squatter 2>/dev/null); then die "a second eth0 was attached in $WEB: $out"; fi
info "ADD demo/squatter into $WEB's netns (eth0 is taken) => $out"
case $out in *'"code":106'*) ;; *) die "unexpected answer: $out" ;; esac
[ "$(capture_rules "$WEB" | wc -l)" = "$before" ] && in_pod "$WEB" ip link show eth0 >/dev/null ||
  die "demo/web's eth0 or capture changed"
cni_k8s DEL "$WEB" squatter uid-squatter >/dev/null 2>&1 || die "DEL demo/squatter failed"
[ "$(capture_rules "$WEB" | wc -l)" = "$before" ] && in_pod "$WEB" ip link show eth0 >/dev/null ||
  die "DEL of the refused container touched demo/web"
ok "refused with 106 before any delegate ran; its DEL leaves demo/web's eth0 and its $before capture rules alone"

section "Kubelet's path: containerd 1.6 (CRI plugin, runc) runs pod demo/cri's network through multimesh"
# What kubelet does for a pod: RunPodSandbox over CRI. containerd creates the
# sandbox (the busybox "pause" image, built with buildah, no registry) and
# runs its CNI conflist through libcni with Kubernetes' CNI_ARGS; the
# conflist's plugin is the Kubernetes-mode config above. A private
# containerd (own root, state, socket, CNI dirs under $TMP) runs in the node
# netns; examples/cri.rs is the CRI client (crictl is not packaged offline).
UID_CRI=$(cat /proc/sys/kernel/random/uuid)
pod_json cri "$UID_CRI" yes >"$API/objects/pods/demo/cri.json"
"$PY" - "$K8S_CONF" >"$TMP/cri.conflist" <<'PY' || die "writing the conflist failed"
import json, sys
plugin = json.load(open(sys.argv[1]))
for k in ("name", "cniVersion"):
    plugin.pop(k, None)
print(json.dumps({"cniVersion": "1.0.0", "name": "k8s-pod-network", "plugins": [plugin]}))
PY
CD_DIR=$TMP/containerd
sock=$(scripts/cri_containerd.sh up "$CD_DIR" "/run/netns/$NODE" "$TMP/cri.conflist" "$MM" 2>&1 | tail -1) ||
  die "containerd did not start: $sock"
info "containerd $("$CRI" --socket "$sock" version) on \$TMP/containerd/containerd.sock"
cri_pod=$("$CRI" --socket "$sock" run-pod --namespace demo --name cri --uid "$UID_CRI" \
  --cgroup-parent "$(cat "$CD_DIR/cgroup-parent")" \
  --annotation "sidecar.istio.io/status={}" --annotation "k8s.v1.cni.cncf.io/networks=storage,fast@data0" 2>&1) ||
  die "RunPodSandbox failed: $cri_pod"
read -r CRI_ID CRI_IP CRI_NETNS < <("$PY" -c 'import json,sys; s=json.load(sys.stdin); print(s["id"], s["ip"], s["netns"])' <<<"$cri_pod")
CRI_NS=$(basename "$CRI_NETNS")
ok "RunPodSandbox: sandbox ${CRI_ID:0:12}, CRI reports IP $CRI_IP, netns $CRI_NETNS"
in_pod "$CRI_NS" ip -brief addr | indent
[ "$(addr_of "$CRI_NS" eth0)" = "$CRI_IP" ] || die "CRI's sandbox IP is not eth0's"
links=$(in_pod "$CRI_NS" ls /sys/class/net | sort | paste -sd' ' -)
[ "$links" = "data0 eth0 lo net1" ] || die "demo/cri: interfaces $links, expected data0 eth0 lo net1"
"$PY" -c "$STATUS_PY" "$API/objects/pods/demo/cri.json" short \
  "cluster eth0 $CRI_IP" "demo/storage net1 $(addr_of "$CRI_NS" net1)" "demo/fast data0 $(addr_of "$CRI_NS" data0)" | indent | indent ||
  die "demo/cri: network-status does not match"
ok "CRI's IP = multimesh's eth0 = network-status on the pod; net1 and data0 attached from the NADs"
listen "$CRI_NS" "$TMP/lcri.out" --port 15006 --count 1
probe "demo/cri eth0" "$CRI_IP" 8080 "served_by=15006 orig=$CRI_IP:8080" ||
  die "capture in the containerd sandbox did not redirect to 15006"
ok "TCP from the node to the sandbox's 8080 landed on the sidecar port 15006"
"$CRI" --socket "$sock" stop-pod "$CRI_ID" || die "StopPodSandbox failed"
"$CRI" --socket "$sock" remove-pod "$CRI_ID" || die "RemovePodSandbox failed"
[ ! -e "$CRI_NETNS" ] || die "containerd left $CRI_NETNS"
[ -z "$(find "$TMP/cni" -mindepth 1 -maxdepth 1 -name "$CRI_ID*")" ] || die "multimesh state left for the sandbox"
ok "StopPodSandbox (CNI DEL) + RemovePodSandbox: netns, interfaces and multimesh state gone"
scripts/cri_containerd.sh down "$CD_DIR" "$CRI" || die "containerd or its shims did not stop"
ok "containerd stopped, no shim or sandbox process left"

section "The startup race: pod demo/late got its network before multimesh was installed"
LATE="mmdemo-late-$$"
K8S_PODS+=("$LATE")
AG=$TMP/agent
mkdir -p "$AG/net.d" "$AG/sa" "$AG/netns" "$AG/cni"
ip netns add "$LATE"
in_pod "$LATE" ip link set lo up
BRIDGE_CONF='{"cniVersion": "1.0.0", "name": "cluster", "type": "bridge", "bridge": "mm0", "isGateway": true,
  "ipam": {"type": "host-local", "dataDir": "'"$TMP/ipam"'",
           "ranges": [[{"subnet": "198.51.100.0/25", "gateway": "198.51.100.1"}]], "routes": [{"dst": "0.0.0.0/0"}]}}'
printf '{"cniVersion": "1.0.0", "name": "cluster", "plugins": [%s]}\n' "$BRIDGE_CONF" >"$AG/net.d/10-cluster.conflist"
out=$(timeout 60 ip netns exec "$NODE" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
  CNI_COMMAND=ADD CNI_CONTAINERID="demo-late-$$" CNI_NETNS="/run/netns/$LATE" CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni \
  /usr/lib/cni/bridge <<<"$BRIDGE_CONF") || die "bridge ADD failed: $out"
LATE_IP=$(addr_of "$LATE" eth0)
info "the bridge plugin alone (the node's primary network) gave $LATE eth0 $LATE_IP: no capture"
[ "$(capture_rules "$LATE" | wc -l)" = 0 ] || die "capture rules in $LATE already"
"$PY" - "$API/objects" "$LATE_IP" <<'PY' || die "writing pod demo/late and node node-1 failed"
import json, os, sys
objs, ip = sys.argv[1], sys.argv[2]
json.dump({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "late", "namespace": "demo", "uid": "uid-late", "resourceVersion": "1",
                        "annotations": {"sidecar.istio.io/status": '{"containers":["istio-proxy"]}'}},
           "spec": {"nodeName": "node-1", "containers": [{"name": "app"}, {"name": "istio-proxy"}],
                    "initContainers": [{"name": "multimesh-validation"}]},
           "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}},
          open(f"{objs}/pods/demo/late.json", "w"))
os.makedirs(f"{objs}/nodes", exist_ok=True)
json.dump({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1", "resourceVersion": "1"},
           "spec": {"taints": [{"key": "multimesh.io/not-ready", "effect": "NoSchedule"}]}},
          open(f"{objs}/nodes/node-1.json", "w"))
PY
ok "pod demo/late (istio-meshed, Running, $LATE_IP) on the API server; node node-1 tainted multimesh.io/not-ready:NoSchedule"

section "The startup race: multimesh agent installs, becomes ready, removes the taint and repairs demo/late in place"
echo "$TOKEN" >"$AG/sa/token"
cp "$PKI/ca.pem" "$AG/sa/ca.crt"
# A netns directory of bind mounts, shared as /run/netns is; the agent gets
# a PID namespace (and /proc) of its own, so the namespaces it searches are
# this demo's.
mount --bind "$AG/netns" "$AG/netns" && mount --make-shared "$AG/netns"
touch "$AG/netns/$LATE" && mount --bind "/run/netns/$LATE" "$AG/netns/$LATE"
t0=$(date +%s%N)
ip netns exec "$NODE" unshare --pid --fork --mount-proc --propagation=slave --kill-child=SIGTERM \
  "$MM" agent --listen=127.0.0.1:9190 --node-name=node-1 --kubeconfig="$API/kubeconfig" \
  --netns-dir="$AG/netns" --api-server="$SERVER" --bin-src="$MM" --bin-dir="$AG/bin" \
  --cni-conf-dir="$AG/net.d" --multimesh-conf-dir="$AG/mm" --service-account-dir="$AG/sa" \
  --state-dir="$AG/cni" --watch=10 >"$AG/agent.log" 2>&1 &
AGENT_PID=$!
ready=""
for _ in $(seq 200); do # up to ~10 s
  ready=$(in_node curl -s --max-time 2 http://127.0.0.1:9190/readyz 2>/dev/null || true)
  [ "$ready" = ok ] && break
  sleep 0.05
done
[ "$ready" = ok ] || { cat "$AG/agent.log" >&2; die "the agent did not become ready"; }
ok "/readyz: ok (installed $(basename "$AG")/net.d/00-multimesh.conflist, watching the pods of node-1)"
ev=""
for _ in $(seq 200); do
  ev=$(cat "$API"/objects/events/demo/late.*.json 2>/dev/null || true)
  [ -n "$ev" ] && break
  sleep 0.05
done
t1=$(date +%s%N)
[ -n "$ev" ] || { cat "$AG/agent.log" >&2; die "no event for demo/late"; }
"$PY" -c 'import json,sys; e=json.load(sys.stdin); print("Event", e["type"], e["reason"] + ":", e["message"])' <<<"$ev" | indent
taints=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["spec"].get("taints"))' "$API/objects/nodes/node-1.json")
[ "$taints" = "[]" ] || die "taint still on node-1: $taints"
ok "taint removed from node-1; demo/late repaired $(((t1 - t0) / 1000000)) ms after the agent started"
capture_rules "$LATE" | head -4 | indent
info "... $(capture_rules "$LATE" | wc -l) MULTIMESH rules in $LATE, as ADD programs them"
listen "$LATE" "$TMP/llate.out" --port 15001 --count 1
ans=$(in_pod "$LATE" "$PROBE" connect --addr 203.0.113.200 --port 443 --timeout 5 2>&1) || ans="FAILED: $ans"
info "$LATE -> 203.0.113.200:443  =>  $ans"
case $ans in *"served_by=15001 orig=203.0.113.200:443"*) ;; *) die "the app's TCP was not redirected" ;; esac
ok "the app's outbound TCP lands on the sidecar port 15001, no restart"
in_node curl -s http://127.0.0.1:9190/metrics | grep -e '^multimesh_repairs_total' -e '^multimesh_pods_watched' | indent
stop_agent

section "The startup race: demo/late's DEL (the runtime's, through the installed multimesh) removes the repair"
"$PY" -c 'import json,sys; l=json.load(open(sys.argv[1])); p=l["plugins"][0]; p["name"]=l["name"]; p["cniVersion"]=l["cniVersion"]; print(json.dumps(p))' \
  "$AG/net.d/00-multimesh.conflist" >"$AG/installed.conf"
out=$(timeout 60 ip netns exec "$NODE" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
  CNI_COMMAND=DEL CNI_CONTAINERID="demo-late-$$" CNI_NETNS="/run/netns/$LATE" CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni \
  "$MM" <"$AG/installed.conf" 2>&1) || die "DEL demo/late failed: $out"
[ "$(capture_rules "$LATE" | wc -l)" = 0 ] || die "capture rules left in $LATE"
left=$(find "$AG/cni" -mindepth 1 -maxdepth 1 -name 'repair-*')
[ -z "$left" ] || die "repair record left: $left"
ok "no capture rules, no repair record; the IP went back to host-local"
umount "$AG/netns/$LATE" && umount "$AG/netns"
ip netns del "$LATE"

section "Kubernetes mode: stop the API server, then CNI DEL both pods (DEL needs no API server)"
pid=$API_PID
stop_api
! kill -0 "$pid" 2>/dev/null || die "fake API server (pid $pid) still running"
if ans=$(in_node curl -sS --max-time 3 --cacert "$PKI/ca.pem" "$SERVER/version" 2>&1); then die "API server still answers: $ans"; fi
info "fake API server stopped (pid $pid gone): $ans"
for spec in "web $WEB $UID_WEB" "plain $PLAIN $UID_PLAIN"; do
  set -- $spec
  t0=$(date +%s%N)
  out=$(cni_k8s DEL "$2" "$1" "$3" 2>&1) || die "DEL demo/$1 failed: $out"
  t1=$(date +%s%N)
  ok "DEL demo/$1 in $(((t1 - t0) / 1000000)) ms, from multimesh's state record alone"
done

section "Kubernetes mode: nothing left behind"
nothing_left "$WEB" "$PLAIN"

printf '\n%sDemo complete.%s Cleaning up namespaces.\n' "$BOLD" "$OFF"
