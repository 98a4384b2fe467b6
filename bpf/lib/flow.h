/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * flow.h: a flow's state and userspace's verdict on it, for flow.bpf.c (its
 * only includer). The state lives in socket-local storage, so it dies with
 * the socket; the verdict is keyed by socket cookie because userspace has no
 * socket to name, only the cookie the sample carried.
 */
#ifndef GUARD_LIB_FLOW_H
#define GUARD_LIB_FLOW_H

#include "common.h"
#include "config.h"
#include "events.h"

enum flow_phase {
	FLOW_NEW = 0,
	FLOW_SOCKS5 = 1,      /* SOCKS5 greeting seen, the request comes next */
	FLOW_AFTER_PROXY = 2, /* proxy handshake done: the next payload is the first */
	FLOW_WATCH = 3,
	FLOW_HELD = 4,
	FLOW_DONE = 5,
	FLOW_BLOCKED = 6,
};

/* What wraps the first message: frames.h finds it inside. */
enum flow_framing {
	FRAMING_NONE = 0,
	FRAMING_WS_UPGRADE = 1, /* a WebSocket upgrade was sent: its verdict, then its frames */
	FRAMING_WS = 2,         /* upgraded: the next payload is judged inside its frames */
	FRAMING_WS_SEND = 3,    /* a held upgrade was allowed: its next payload is the upgrade
				 * itself, sent again; the one after it is judged in frames */
};

struct flow_state {
	__u64 since_ns;     /* when the flow was sampled (WATCH, HELD) */
	__u64 cgroup_id;
	__u32 policy_id;
	__u32 detect_flags; /* of the policy when the flow began */
	__u8 phase;         /* enum flow_phase */
	__u8 flags;         /* enum guard_payload_flags carried into samples */
	__u8 sampled;       /* the held sample reached the ring buffer */
	__u8 inbound_done;  /* the server's first reply was sampled (or never will be) */
	__u8 names;         /* the policy's guard_policy_config.names when the flow began */
	__u8 framing;       /* enum flow_framing: how the first message is wrapped */
	__u8 gathering;     /* a first payload too short to judge is being gathered (since_ns) */
	__u8 audit;         /* the policy's guard_policy_config.audit when the flow began */
	/*
	 * Who opened the flow, taken at its SYN (sent from connect(), in the
	 * process's context): a later segment may leave from softirq context,
	 * where the current task is whoever happened to run.
	 */
	__u64 start_ns;
	__u32 tgid;
	__u32 ppid;
	__u32 uid;
	__u8 server_first;  /* the server sent bytes before the sandbox did (server_first) */
	__u8 _pad1[3];
	char comm[GUARD_COMM_LEN];
	__u64 guarded_id;   /* the guarded cgroup (itself or an ancestor of cgroup_id) */
};

/* socket -> struct flow_state */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct flow_state);
} eg_flow_state SEC(".maps");

/* socket cookie -> struct guard_flow_verdict: userspace's answer to a sample */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct guard_flow_verdict);
} eg_flow_verdicts SEC(".maps");

/* Whether a held or watched flow has waited longer than the hold timeout. */
static __always_inline int timed_out(const struct flow_state *state)
{
	struct guard_config *config;
	__u32 zero = 0;

	config = bpf_map_lookup_elem(&eg_config, &zero);
	if (!config || !config->hold_timeout_ms)
		return 1;
	return bpf_ktime_get_boot_ns() - state->since_ns > (__u64)config->hold_timeout_ms * 1000000;
}

static __always_inline int drop(void)
{
	count(GUARD_CTR_FLOW_DROPS);
	return 0;
}

/* Apply userspace's verdict, if it came; returns -1 when there is none yet. */
static __always_inline int apply_verdict(struct __sk_buff *skb, struct flow_state *state,
					 int block_only)
{
	struct guard_flow_verdict *verdict;
	__u64 cookie = bpf_get_socket_cookie(skb);

	verdict = bpf_map_lookup_elem(&eg_flow_verdicts, &cookie);
	if (!verdict)
		return -1;
	if (verdict->action == GUARD_ACTION_BLOCK) {
		state->phase = FLOW_BLOCKED;
		return drop();
	}
	if (block_only)
		return -1;
	state->phase = FLOW_DONE;
	bpf_map_delete_elem(&eg_flow_verdicts, &cookie);
	return 1;
}

#endif /* GUARD_LIB_FLOW_H */
