/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * fold.h: a connect storm reported as two events, not thousands. A logged
 * connect (GUARD_ACTION_LOG only: every refusal, kill and audit verdict is
 * its own event) opens a window keyed by process, destination and verdict
 * and is sent; the same connects after it within the window are counted in
 * the map and not sent. The agent takes the entry (lookup and delete) when
 * the window ends and reports the count as one event with "repeats". A
 * window no agent took (none running, or its queue of due flushes full) is
 * stale after 4 windows: the next such connect reopens it and carries the
 * stale count in its own event (guard_connect_event.repeats), so no connect
 * goes uncounted for long. Connects reported = events + their repeats.
 */
#ifndef GUARD_LIB_FOLD_H
#define GUARD_LIB_FOLD_H

#include "common.h"
#include "config.h"
#include "repeats.h"

/* (cgroup, process, destination, verdict) -> its open window (guard_fold) */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct guard_fold_key);
	__type(value, struct guard_fold);
} eg_connect_fold SEC(".maps");

/* A window unflushed this many windows long is the kernel's to report. */
#define GUARD_FOLD_STALE 4

enum fold_verdict {
	FOLD_OFF = 0,    /* send it as ever: folding is off, or not for this verdict */
	FOLD_OPEN = 1,   /* send it and open a window (fold_open once it is in the ring) */
	FOLD_COUNTED = 2, /* counted in an open window: send nothing */
};

/*
 * Whether a logged connect is counted in an open window. key is filled for
 * fold_open; *repeats gets the count of a stale window it replaces.
 */
static __always_inline int fold_connect(struct guard_fold_key *key, __u64 cgroup_id,
					__u32 policy_id, __u16 rule_id, __u8 hook,
					const void *addr, __u16 port, __u8 family, __u8 proto,
					__u32 *repeats)
{
	__u64 window = fold_window_ns();
	struct guard_fold *fold;

	if (!window)
		return FOLD_OFF;
	key->cgroup_id = cgroup_id;
	key->tgid = bpf_get_current_pid_tgid() >> 32;
	key->policy_id = policy_id;
	__builtin_memcpy(key->addr, addr, 16);
	key->port = port;
	key->family = family;
	key->proto = proto;
	key->hook = hook;
	key->action = GUARD_ACTION_LOG;
	key->rule_id = rule_id;
	fold = bpf_map_lookup_elem(&eg_connect_fold, key);
	if (!fold)
		return FOLD_OPEN;
	if (bpf_ktime_get_boot_ns() - fold->start_ns < GUARD_FOLD_STALE * window) {
		__sync_fetch_and_add(&fold->count, 1);
		return FOLD_COUNTED;
	}
	*repeats = fold->count;
	return FOLD_OPEN;
}

/*
 * Open (or reopen) key's window once its event has its place in the ring:
 * a connect whose event was lost opens none, so the next one is sent. The
 * window's start, for the event; 0 if no window could be opened.
 */
static __always_inline __u64 fold_open(const struct guard_fold_key *key)
{
	struct guard_fold fresh = {};

	fresh.start_ns = bpf_ktime_get_boot_ns();
	if (bpf_map_update_elem(&eg_connect_fold, key, &fresh, BPF_ANY))
		return 0;
	return fresh.start_ns;
}

#endif /* GUARD_LIB_FOLD_H */
