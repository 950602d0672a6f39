#!/usr/bin/env bash
# A private containerd (Debian's 1.6, CRI plugin, runc) for the demo and the
# benchmark, the same setup as tests/common/containerd.rs: its own root,
# state, socket and CNI dirs under DIR, started inside the network namespace
# NETNS (nsenter --net, host mount namespace kept), the busybox image
# (scripts/cri_image.sh) imported as sandbox ("pause") and app image.
#
#   scripts/cri_containerd.sh up DIR NETNS CONFLIST PLUGIN...
#       CONFLIST is copied into DIR/cni-conf; each PLUGIN (a path) is linked
#       into DIR/cni-bin next to /usr/lib/cni's plugins. Prints the socket.
#   scripts/cri_containerd.sh down DIR [CRI_CLIENT]
#       removes every sandbox (StopPodSandbox + RemovePodSandbox through
#       CRI_CLIENT, examples/cri.rs, so their networks get DEL; then ctr
#       kills and deletes whatever is left), stops containerd (TERM, bounded,
#       KILL), kills whatever of its shims and sandboxes is left by PID,
#       unmounts and removes DIR's cgroups. Idempotent.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
PAUSE=localhost/mm-pause:1
APP=localhost/mm-app:1

cg_parent() { echo "mmcri-$(basename "$1")-$(echo "$1" | md5sum | cut -c1-8)"; }

up() {
  local dir=$1 netns=$2 conflist=$3
  shift 3
  dir=$(mkdir -p "$dir" && cd "$dir" && pwd)
  mkdir -p "$dir"/{root,state,cni-bin,cni-conf,opt}
  for p in /usr/lib/cni/*; do ln -sf "$p" "$dir/cni-bin/"; done
  for p in "$@"; do ln -sf "$(readlink -f "$p")" "$dir/cni-bin/$(basename "$p")"; done
  cp "$conflist" "$dir/cni-conf/10-net.conflist"
  cat >"$dir/config.toml" <<EOF
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$dir/containerd.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE"
  # CRI asks runc for oom_score_adj -998, which these machines refuse.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$dir/cni-bin"
    conf_dir = "$dir/cni-conf"
    max_conf_num = 1
EOF
  echo "/$(cg_parent "$dir")" >"$dir/cgroup-parent"
  nsenter --net="$netns" containerd --config "$dir/config.toml" </dev/null >>"$dir/containerd.log" 2>&1 &
  echo $! >"$dir/containerd.pid"
  local ctr=(timeout 60 ctr --address "$dir/containerd.sock" -n k8s.io)
  for _ in $(seq 1 300); do
    [ -S "$dir/containerd.sock" ] && "${ctr[@]}" version >/dev/null 2>&1 && break
    kill -0 "$(cat "$dir/containerd.pid")" 2>/dev/null || { tail -20 "$dir/containerd.log" >&2; exit 1; }
    sleep 0.1
  done
  "${ctr[@]}" version >/dev/null || { echo "containerd did not start" >&2; tail -20 "$dir/containerd.log" >&2; exit 1; }
  local archive
  archive=/tmp/mmtest/cri-image-$(sha256sum /bin/busybox | cut -c1-16)-v1.tar
  if [ ! -f "$archive" ]; then
    mkdir -p /tmp/mmtest
    bash "$here/cri_image.sh" "$dir/image-build" "$archive.$$" "$PAUSE"
    mv "$archive.$$" "$archive"
  fi
  "${ctr[@]}" images import --snapshotter native "$archive" >/dev/null
  "${ctr[@]}" images tag "$PAUSE" "$APP" >/dev/null
  echo "$dir/containerd.sock"
}

# PIDs of processes that belong to DIR's containerd: containerd itself and
# its shims (their command lines name DIR's config or socket) and the
# sandboxes in its cgroup parent.
procs() {
  local dir=$1 cg
  cg=$(cat "$dir/cgroup-parent" 2>/dev/null || true)
  {
    pgrep -f -- "--config $dir/config.toml" || true
    pgrep -f -- "-address $dir/containerd.sock" || true
    if [ -n "$cg" ]; then
      find /sys/fs/cgroup/*"$cg" -name cgroup.procs -exec cat {} + 2>/dev/null || true
    fi
  } | sort -un
}

down() {
  local dir=$1 client=${2:-} pid
  [ -d "$dir" ] || return 0
  dir=$(cd "$dir" && pwd)
  if [ -n "$client" ] && [ -S "$dir/containerd.sock" ]; then
    timeout 120 "$client" --socket "$dir/containerd.sock" remove-all || true
  fi
  if [ -S "$dir/containerd.sock" ] && [ -f "$dir/containerd.pid" ] && kill -0 "$(cat "$dir/containerd.pid")" 2>/dev/null; then
    local ctr=(timeout 30 ctr --address "$dir/containerd.sock" -n k8s.io)
    # Sandboxes left by an interrupted run: kill their tasks, delete them.
    for c in $("${ctr[@]}" containers ls -q 2>/dev/null); do
      "${ctr[@]}" tasks kill -s KILL "$c" >/dev/null 2>&1 || true
      "${ctr[@]}" tasks delete -f "$c" >/dev/null 2>&1 || true
      "${ctr[@]}" containers delete "$c" >/dev/null 2>&1 || true
    done
  fi
  if [ -f "$dir/containerd.pid" ]; then
    pid=$(cat "$dir/containerd.pid")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$dir/containerd.pid"
  fi
  for _ in $(seq 1 50); do [ -z "$(procs "$dir")" ] && break; sleep 0.1; done
  for p in $(procs "$dir"); do kill -KILL "$p" 2>/dev/null || true; done
  sleep 0.2
  local left
  left=$(procs "$dir")
  [ -z "$left" ] || { echo "processes of $dir still running: $left" >&2; return 1; }
  awk -v d="$dir/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null || true; done
  local cg
  cg=$(cat "$dir/cgroup-parent" 2>/dev/null || true)
  if [ -n "$cg" ]; then
    for ctl in /sys/fs/cgroup/*; do
      [ -d "$ctl$cg" ] && find "$ctl$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
  fi
}

case "${1:-}" in
  up) shift; [ $# -ge 3 ] || { echo "usage: $0 up DIR NETNS CONFLIST PLUGIN..." >&2; exit 2; }; up "$@" ;;
  down) shift; [ $# -ge 1 ] || { echo "usage: $0 down DIR [CRI_CLIENT]" >&2; exit 2; }; down "$@" ;;
  *) echo "usage: $0 up DIR NETNS CONFLIST PLUGIN... | down DIR [CRI_CLIENT]" >&2; exit 2 ;;
esac
