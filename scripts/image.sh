#!/usr/bin/env bash
# Build the multimesh container image (Containerfile: FROM scratch + the
# static release binary) with buildah, podman or docker, whichever is found.
#
#   scripts/image.sh [TAG]          default TAG: localhost/multimesh:<version>
#
# Then push it where the nodes pull from and set the DaemonSet's image, e.g.
#   buildah push localhost/multimesh:0.1.0 docker://registry.example.com/multimesh:0.1.0
# or export it: buildah push localhost/multimesh:0.1.0 oci-archive:multimesh.tar
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
tag=${1:-localhost/multimesh:$version}
cargo build --release --locked --bin multimesh
if command -v file >/dev/null && ! file -L target/x86_64-unknown-linux-gnu/release/multimesh | grep -q 'static'; then
  echo "target/x86_64-unknown-linux-gnu/release/multimesh is not statically linked (.cargo/config.toml)" >&2
  exit 1
fi
if command -v buildah >/dev/null; then
  buildah bud --isolation "${BUILDAH_ISOLATION:-chroot}" -f Containerfile -t "$tag" .
elif command -v podman >/dev/null; then
  podman build -f Containerfile -t "$tag" .
elif command -v docker >/dev/null; then
  docker build -f Containerfile -t "$tag" .
else
  echo "no buildah, podman or docker: apt-get install buildah" >&2
  exit 1
fi
echo "built $tag"
