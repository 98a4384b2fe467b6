/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * exec.h: judging an exec, for exec.bpf.c (its only includer): the exec
 * rules userspace compiled from the policy, the per-CPU scratch the event is
 * built in, and the execs stopped for the agent to look at.
 */
#ifndef GUARD_LIB_EXEC_H
#define GUARD_LIB_EXEC_H

#include "common.h"
#include "config.h"
#include "anchors.h"

#define PATH_MASK (GUARD_PATH_MAX - 1)

/* (policy id, name or path of an executable) -> struct guard_exec_verdict */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct guard_exec_key);
	__type(value, struct guard_exec_verdict);
} eg_exec_rules SEC(".maps");

/*
 * tgid -> CLOCK_BOOTTIME when the kernel stopped it at exec: the agent
 * deletes the entry when it has judged the program, and judges from /proc
 * (then resumes) whatever stays here longer than the hold timeout, e.g.
 * because its exec event was lost in a full ring.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u64);
} eg_held_execs SEC(".maps");

struct exec_scratch {
	struct guard_exec_event ev;
	/* exe path built backwards from the end of the first half; the second
	 * half only exists so the verifier can see every copy stays inside */
	char path[2 * GUARD_PATH_MAX];
	struct guard_exec_key key;
	/*
	 * Loop cursors kept in map memory on purpose: a value read back from a
	 * map is an unknown scalar to the verifier, so the states of different
	 * iterations can be pruned instead of multiplying (1M-insn limit).
	 */
	__u32 cursor;
	__u32 mark;
};

/* 0 -> per-CPU scratch space: an exec event is too large for the BPF stack */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct exec_scratch);
} eg_exec_scratch SEC(".maps");

/*
 * Look one name or path of the new program up in the policy's exec rules
 * and merge what it says into best. The key is built in the scratch: it is
 * a whole path long, too large for the BPF stack.
 */
static __always_inline void judge_exec(struct exec_scratch *s, __u32 policy_id,
				       __u32 match, const char *str, __u32 len,
				       struct guard_exec_verdict *best)
{
	struct guard_exec_verdict *verdict;

	__builtin_memset(&s->key, 0, sizeof(s->key));
	s->key.policy_id = policy_id;
	s->key.match = match;
	bpf_probe_read_kernel(s->key.str, len & PATH_MASK, str);
	verdict = bpf_map_lookup_elem(&eg_exec_rules, &s->key);
	if (!verdict)
		return;
	/* hold requests add up; entries without a rule only carry those */
	best->flags |= verdict->flags;
	if (verdict->rule_id == GUARD_RULE_NONE)
		return;
	/* kill beats log; at equal actions the first lookup wins */
	if (best->rule_id == GUARD_RULE_NONE || verdict->action > best->action) {
		best->action = verdict->action;
		best->rule_id = verdict->rule_id;
	}
}

/*
 * Whether to stop the new program for the agent: the rules asked for it
 * (always, or when the argv carries an anchor) and an agent is alive to
 * resume it.
 */
static __always_inline int must_hold(struct exec_scratch *s, __u8 flags, __u64 argv_size)
{
	struct guard_config *config;
	__u32 zero = 0;

	if (!(flags & (GUARD_HOLD_ALWAYS | GUARD_HOLD_IF_ANCHOR)))
		return 0;
	config = bpf_map_lookup_elem(&eg_config, &zero);
	if (!agent_alive(config))
		return 0;
	if (flags & GUARD_HOLD_ALWAYS)
		return 1;
	return has_argv_anchor((const __u8 *)s->ev.argv,
			       argv_size < GUARD_ARGV_SCAN ? argv_size : GUARD_ARGV_SCAN);
}

#endif /* GUARD_LIB_EXEC_H */
