/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * config.h: the agent's global settings, one array entry userspace rewrites
 * whenever they change (its heartbeat too). Apart from the other policy maps
 * because cgroup_watch.bpf.c reads it without judging anything.
 */
#ifndef GUARD_LIB_CONFIG_H
#define GUARD_LIB_CONFIG_H

#include "common.h"

/* 0 -> struct guard_config */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct guard_config);
} eg_config SEC(".maps");

/*
 * Holding (a flow's first payload, a program at exec) waits for the agent, so
 * it is only done while one is alive: its heartbeat is younger than the hold
 * timeout. Without an agent nothing is held and nothing hangs.
 */
static __always_inline int agent_alive(const struct guard_config *config)
{
	return config && config->hold_timeout_ms &&
	       bpf_ktime_get_boot_ns() - config->heartbeat_ns <
		       (__u64)config->hold_timeout_ms * 1000000;
}

#endif /* GUARD_LIB_CONFIG_H */
