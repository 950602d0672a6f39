#!/usr/bin/env bash
# Install what multimesh's build, tests, demo and benchmarks need (Debian).
# Idempotent: skips apt when everything is already there.
set -euo pipefail
pkgs=(iptables nftables containernetworking-plugins iproute2 iputils-ping util-linux procps python3 python3-venv buildah openssl curl podman runc busybox-static containerd protobuf-compiler)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# --- Kubernetes manifests (tests/manifests.rs) and the agent's metrics
# (tests/agent.rs): kubernetes-validate and prometheus-client from PyPI,
# pinned in scripts/requirements-k8s.txt, in a venv of Debian's python3
# (its system site is externally managed). Reinstalled when the pins change.
venv=${MULTIMESH_VENV:-/opt/multimesh-venv}
req="$(dirname "$0")/requirements-k8s.txt"
if ! cmp -s "$req" "$venv/.requirements" 2>/dev/null; then
  echo "installing the test Python packages into $venv" >&2
  if [ -f "$venv/pyvenv.cfg" ]; then rm -rf "$venv"; fi
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$req"
  cp "$req" "$venv/.requirements"
fi
for m in br_netfilter nf_nat xt_REDIRECT xt_owner nft_redir; do modprobe -q "$m" 2>/dev/null || true; done
command -v cargo >/dev/null || { echo "cargo not found: install a Rust toolchain" >&2; exit 1; }
