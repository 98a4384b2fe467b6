/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * opening.h: the slots of TCP flows between their SYN and their first
 * payload (flow.bpf.c, its only includer: a compare-and-swap needs BPF
 * ISA v3, which flow.bpf.c alone is built for).
 */
#ifndef GUARD_LIB_OPENING_H
#define GUARD_LIB_OPENING_H

#include "common.h"
#include "flow.h"

/*
 * A TCP flow between its SYN and its first payload: who opened it, under
 * which policy (tcp_opening), in the slot its socket cookie names
 * (cookie % FLOW_OPENING_SLOTS). A socket claims its slot at its SYN with a
 * compare-and-swap of the cookie, and its first payload, its server's first
 * bytes or its release give it back the same way: no lock, no allocation,
 * and consecutive connections of one CPU (whose cookies the kernel hands
 * out in runs) take neighbouring slots instead of a random hash bucket
 * each. A taken slot (another socket that is opening, or one whose release
 * never ran because a reload took this cgroup's flow programs away first)
 * gives the flow its socket storage at the SYN instead: nothing goes
 * unwatched, a workload that takes many slots with silent connections only
 * brings back the allocation. A slot is never taken from its socket.
 */
#define FLOW_OPENING_SLOTS 16384

struct flow_opening {
	__u64 cookie; /* 0: free */
	struct flow_state state;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FLOW_OPENING_SLOTS);
	__type(key, __u32);
	__type(value, struct flow_opening);
} eg_flow_opening SEC(".maps");

static __always_inline struct flow_opening *opening_slot(__u64 cookie)
{
	__u32 index = cookie & (FLOW_OPENING_SLOTS - 1);

	return bpf_map_lookup_elem(&eg_flow_opening, &index);
}

/* The socket's opening state, or NULL. */
static __always_inline struct flow_state *opening_of(__u64 cookie)
{
	struct flow_opening *slot = opening_slot(cookie);

	return slot && slot->cookie == cookie ? &slot->state : NULL;
}

/* Give the socket's slot back (if it still holds it). */
static __always_inline void opening_end(__u64 cookie)
{
	struct flow_opening *slot = opening_slot(cookie);

	if (slot && slot->cookie == cookie)
		__sync_val_compare_and_swap(&slot->cookie, cookie, 0);
}

/* Take the socket's slot for state; 0 when another socket holds it. */
static __always_inline int opening_begin(__u64 cookie, const struct flow_state *state)
{
	struct flow_opening *slot = opening_slot(cookie);

	if (!slot || slot->cookie || __sync_val_compare_and_swap(&slot->cookie, 0, cookie))
		return 0;
	/* no reader before the SYN leaves, which is after this returns */
	__builtin_memcpy(&slot->state, state, sizeof(*state));
	return 1;
}

#endif /* GUARD_LIB_OPENING_H */
