/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * anchors.h: the 4-byte words whose presence makes the kernel hold
 * something for the agent (a flow's first payload in flow.bpf.c, a
 * program's argv in exec.bpf.c). Userspace writes the vocabulary; the kernel
 * only asks "is one of them in these bytes", which keeps the hold decision
 * cheap and the classification itself in userspace.
 */
#ifndef GUARD_LIB_ANCHORS_H
#define GUARD_LIB_ANCHORS_H

#include "common.h"

/* 4 bytes (little-endian u32 of a window) -> enum guard_anchor_kind bits */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u8);
} eg_anchors SEC(".maps");

/*
 * Scan up to `size` bytes of buf (a map value of at least GUARD_SAMPLE_MAX
 * bytes) for a 4-byte anchor of the given kind. The window is the
 * little-endian u32 of bytes [i-3, i]. A bpf_loop callback, so the verifier
 * checks one iteration instead of GUARD_SAMPLE_MAX of them.
 */
struct anchor_scan {
	const __u8 *buf;
	__u32 size;
	__u32 window;
	__u8 kind;
	__u8 found;
};

static long anchor_step(__u32 i, struct anchor_scan *scan)
{
	__u32 at = i;
	__u8 *kind;

	if (i >= scan->size)
		return 1;
	/* the mask is what the verifier checks; keep clang from dropping it */
	barrier_var(at);
	at &= GUARD_SAMPLE_MAX - 1;
	scan->window = (scan->window >> 8) | ((__u32)scan->buf[at] << 24);
	if (i < 3)
		return 0;
	kind = bpf_map_lookup_elem(&eg_anchors, &scan->window);
	if (kind && (*kind & scan->kind)) {
		scan->found = 1;
		return 1;
	}
	return 0;
}

static __always_inline int has_anchor(const __u8 *buf, __u32 size, __u8 kind)
{
	struct anchor_scan scan = { .buf = buf, .size = size, .kind = kind };

	bpf_loop(GUARD_SAMPLE_MAX, anchor_step, &scan, 0);
	return scan.found;
}

/*
 * An argv also holds when the last two bytes of a window are a 2-byte
 * anchor (GUARD_ANCHOR_ARGV_PAIR, keyed as the window with its first two
 * bytes zero): a shell's quoting can cut every 4-byte word of a one-liner
 * apart (ANSI-C `$'\x2fdev\x2ftcp'`, locale `$"..."`), while the quote
 * itself is two bytes that are always there. Only argv scans do this second
 * lookup; a first payload's scan (flow.bpf.c) is has_anchor's alone.
 */
static long argv_anchor_step(__u32 i, struct anchor_scan *scan)
{
	__u32 pair;
	__u8 *kind;

	if (anchor_step(i, scan))
		return 1; /* the end, or a 4-byte anchor */
	if (i < 1)
		return 0;
	pair = scan->window & 0xffff0000;
	kind = bpf_map_lookup_elem(&eg_anchors, &pair);
	if (kind && (*kind & GUARD_ANCHOR_ARGV_PAIR)) {
		scan->found = 1;
		return 1;
	}
	return 0;
}

static __always_inline int has_argv_anchor(const __u8 *buf, __u32 size)
{
	struct anchor_scan scan = { .buf = buf, .size = size, .kind = GUARD_ANCHOR_ARGV };

	bpf_loop(GUARD_SAMPLE_MAX, argv_anchor_step, &scan, 0);
	return scan.found;
}

#endif /* GUARD_LIB_ANCHORS_H */
