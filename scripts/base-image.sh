#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# A Debian 12 base image made locally, for hosts that reach Debian's package
# archive but no container registry:  scripts/base-image.sh [NAME]
set -euo pipefail
name="${1:-localhost/debian-bookworm-base:latest}"
if podman image exists "$name"; then
  exit 0
fi
rootfs=$(mktemp -d /tmp/egress-guard-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
tar -C "$rootfs" -c . | podman import -q - "$name" >/dev/null
echo "$name"
