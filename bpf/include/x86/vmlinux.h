/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The kernel types the x86 objects are compiled against: Linux 6.18
 * (x86_64), dumped from its BTF with
 *   bpftool btf dump file /sys/kernel/btf/vmlinux format c
 * The exact 6.18 build was not recorded (its config differs from the
 * project's 6.18.44 development VM). `make -C bpf vmlinux` on an x86 host
 * regenerates it as vmlinux_<major><minor>.h from the running kernel and
 * points this file at it. CO-RE relocates every field access at load time,
 * so the objects run on other kernels too; a newer header is only needed
 * for newer types.
 */
#include "vmlinux_618.h"
