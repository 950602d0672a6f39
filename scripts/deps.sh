#!/usr/bin/env bash
# Install what multimesh's build, tests, demo and benchmarks need (Debian).
# Idempotent: skips apt when everything is already there.
set -euo pipefail
pkgs=(iptables nftables containernetworking-plugins iproute2 iputils-ping util-linux procps podman runc busybox-static)
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
for m in br_netfilter nf_nat xt_REDIRECT xt_owner nft_redir; do modprobe -q "$m" 2>/dev/null || true; done
command -v cargo >/dev/null || { echo "cargo not found: install a Rust toolchain" >&2; exit 1; }
