/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The kernel types the arm64 objects are compiled against: Linux 6.1,
 * from the BTF of Debian's linux-image-6.1.0-57-arm64-unsigned 6.1.192-3
 * (arm64), made on any machine by bpf/scripts/vmlinux-arm64.sh
 * (make -C bpf vmlinux-arm64). CO-RE relocates every field access at load
 * time, so the objects run on other arm64 kernels too.
 */
#include "vmlinux_601.h"
