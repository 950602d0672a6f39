#!/usr/bin/env bash
# Build the busybox-static image containerd runs as the pod sandbox ("pause")
# and as the app container, with no registry: buildah, FROM scratch, into a
# private vfs store, written as an oci-archive (`ctr -n k8s.io images import`
# reads it). Used by tests/common/containerd.rs, scripts/demo.sh and
# scripts/bench_lib.py.
#
#   scripts/cri_image.sh WORKDIR ARCHIVE [REF]    # REF: localhost/mm-pause:1
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 WORKDIR ARCHIVE [REF]" >&2; exit 2; }
work=$1 archive=$2 ref=${3:-localhost/mm-pause:1}
B=(buildah --root "$work/root" --runroot "$work/runroot" --storage-driver vfs)
export BUILDAH_ISOLATION=chroot
mkdir -p "$work"
cleanup() {
  [ -n "${c:-}" ] && { "${B[@]}" umount "$c" >/dev/null 2>&1 || true; "${B[@]}" rm "$c" >/dev/null 2>&1 || true; }
  "${B[@]}" rmi --all --force >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
c=$("${B[@]}" from scratch)
m=$("${B[@]}" mount "$c")
mkdir -p "$m"/{bin,etc,tmp,proc,sys,dev,run}
cp /bin/busybox "$m/bin/busybox"
for a in sh sleep nc httpd ip cat ls echo; do ln -s busybox "$m/bin/$a"; done
echo 'root:x:0:0:root:/:/bin/sh' >"$m/etc/passwd"
echo 'root:x:0:' >"$m/etc/group"
"${B[@]}" umount "$c" >/dev/null
# The pause process: sleep as PID 1 (CRI kills it with SIGKILL).
"${B[@]}" config --entrypoint '["/bin/busybox","sleep","2147483647"]' --cmd '' --env PATH=/bin "$c"
rm -f "$archive"
"${B[@]}" commit -q --format oci "$c" "oci-archive:$archive:$ref" >/dev/null
