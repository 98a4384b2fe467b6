#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Regenerate bpf/include/arm64/vmlinux_<major><minor>.h (and point
# include/arm64/vmlinux.h at it) from the BTF of a Debian arm64 kernel
# package, on any Debian machine, x86 included: nothing arm64 is installed or
# run. Needs root (dpkg --add-architecture), apt, python3 and bpftool.
#
#   scripts/vmlinux-arm64.sh [PACKAGE]    default: linux-image-arm64, i.e.
#                                         the kernel of this Debian release
#
# An arm64 vmlinuz is not an ELF file with a .BTF section (that is how x86's
# /sys/kernel/btf/vmlinux is usually regenerated) but a flat Image, possibly
# compressed or wrapped in an EFI zboot stub, so the raw BTF blob is found by
# its header inside the decompressed Image. If this script adds the arm64
# architecture to dpkg it removes it again on exit, so the machine's package
# configuration is left as it was found.
set -euo pipefail

BPF_DIR=$(cd "$(dirname "$0")/.." && pwd)
OUT_DIR=$BPF_DIR/include/arm64
BPFTOOL=${BPFTOOL:-bpftool}
PACKAGE=${1:-linux-image-arm64}

log() { printf 'vmlinux-arm64: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (dpkg --add-architecture arm64)"
for tool in apt-get apt-cache dpkg dpkg-deb python3 "$BPFTOOL"; do
  command -v "$tool" >/dev/null || die "$tool not found"
done

WORK=$(mktemp -d)
ADDED_ARCH=0
cleanup() {
  rm -rf "$WORK"
  if [ "$ADDED_ARCH" = 1 ]; then
    log "removing the arm64 dpkg architecture again"
    dpkg --remove-architecture arm64
    apt-get update -qq || log "apt-get update failed: run it once more"
  fi
}
trap cleanup EXIT

if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  log "adding the arm64 dpkg architecture for the download"
  dpkg --add-architecture arm64
  ADDED_ARCH=1
fi
apt-get update -qq

# A metapackage (linux-image-arm64) names the versioned image it depends on;
# the -unsigned variant holds the same Image without the secure-boot wrapper.
image=$PACKAGE
if [[ $image != linux-image-[0-9]* ]]; then
  image=$(apt-cache depends "$PACKAGE:arm64" | sed -n 's/^ *Depends: \(linux-image-[0-9][^:]*\).*/\1/p' | head -n1)
  [ -n "$image" ] || die "$PACKAGE names no linux-image-<version>-arm64 package"
fi
image=${image%-unsigned}-unsigned
log "downloading $image:arm64"
(cd "$WORK" && apt-get download "$image:arm64" 2>&1 | grep -v '^W: Download is performed unsandboxed' >&2 || true)
deb=$(ls "$WORK"/*.deb 2>/dev/null | head -n1)
[ -n "$deb" ] || die "download of $image:arm64 failed"
pkg_version=$(dpkg-deb -f "$deb" Version)
dpkg-deb -x "$deb" "$WORK/root"
vmlinuz=$(ls "$WORK"/root/boot/vmlinuz-* | head -n1)

# linux-image-6.1.0-57-arm64 -> 6.1 -> 601 (libbpf-tools' naming)
abi=${image#linux-image-}
major=${abi%%.*}
minor=${abi#*.}
minor=${minor%%.*}
tag=$(printf '%d%02d' "$major" "$minor")

python3 - "$vmlinuz" "$WORK/raw.btf" <<'EOF'
"""Find the vmlinux BTF blob in an arm64 kernel image and write it out."""
import bz2, gzip, lzma, shutil, struct, subprocess, sys

src, dst = sys.argv[1], sys.argv[2]
data = open(src, "rb").read()


def decompress(blob: bytes) -> bytes | None:
    """The Image inside blob, or None if blob is not a format known here."""
    if blob[:2] == b"\x1f\x8b":
        return gzip.decompress(blob)
    if blob[:6] == b"\xfd7zXZ\x00":
        return lzma.decompress(blob)
    if blob[:3] == b"BZh":
        return bz2.decompress(blob)
    if blob[:4] == b"\x28\xb5\x2f\xfd":
        if not shutil.which("zstd"):
            sys.exit("vmlinux-arm64: a zstd-compressed Image needs the zstd tool")
        return subprocess.run(["zstd", "-dc"], input=blob, stdout=subprocess.PIPE,
                              check=True).stdout
    return None


# EFI zboot (CONFIG_EFI_ZBOOT): "MZ", "zimg" at 4, payload offset and size
# at 8 and 12, compression name at 24.
if data[:2] == b"MZ" and data[4:8] == b"zimg":
    offset, size = struct.unpack_from("<II", data, 8)
    data = data[offset:offset + size]
image = decompress(data) or data


def btf_blobs(image: bytes):
    """(offset, size) of every plausible BTF blob: magic 0xeB9F, version 1,
    a 24-byte header, and a string section that starts with the empty name."""
    at = image.find(b"\x9f\xeb\x01")
    while 0 <= at <= len(image) - 24:
        hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("<5I", image, at + 4)
        size = hdr_len + max(type_off + type_len, str_off + str_len)
        if hdr_len == 24 and type_len and str_len and at + size <= len(image) \
                and image[at + hdr_len + str_off] == 0:
            yield at, size
        at = image.find(b"\x9f\xeb\x01", at + 1)


blobs = sorted(btf_blobs(image), key=lambda blob: blob[1])
if not blobs:
    sys.exit("vmlinux-arm64: no BTF in the kernel image (CONFIG_DEBUG_INFO_BTF off?)")
at, size = blobs[-1]  # vmlinux BTF is the largest; there is normally one
with open(dst, "wb") as out:
    out.write(image[at:at + size])
print(f"vmlinux-arm64: BTF at {at:#x} in the Image, {size} bytes", file=sys.stderr)
EOF

mkdir -p "$OUT_DIR"
header=$OUT_DIR/vmlinux_$tag.h
{
  echo '/* SPDX-License-Identifier: GPL-2.0 */'
  echo "/* Generated: bpftool btf dump file <BTF of $image $pkg_version> format c (scripts/vmlinux-arm64.sh). Do not edit. */"
  "$BPFTOOL" btf dump file "$WORK/raw.btf" format c
} > "$header.tmp"
mv "$header.tmp" "$header"
cat > "$OUT_DIR/vmlinux.h" <<EOF
/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The kernel types the arm64 objects are compiled against: Linux $major.$minor,
 * from the BTF of Debian's $image $pkg_version
 * (arm64), made on any machine by bpf/scripts/vmlinux-arm64.sh
 * (make -C bpf vmlinux-arm64). CO-RE relocates every field access at load
 * time, so the objects run on other arm64 kernels too.
 */
#include "vmlinux_$tag.h"
EOF
log "wrote $header ($(wc -c < "$header") bytes) and $OUT_DIR/vmlinux.h"
