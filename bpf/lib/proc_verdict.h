/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * proc_verdict.h: processes a detection has refused their connects (an
 * `ssh -R`, a reverse shell judged at exec). Userspace writes the verdict;
 * sock_addr.bpf.c enforces it at connect() and exec.bpf.c passes it on to
 * the children a refused process forks.
 */
#ifndef GUARD_LIB_PROC_VERDICT_H
#define GUARD_LIB_PROC_VERDICT_H

#include "common.h"
#include "config.h"

/* tgid -> struct guard_proc_verdict: processes whose connects a detection refuses */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct guard_proc_verdict);
} eg_proc_verdicts SEC(".maps");

/* Whether any process has had a verdict: until then nobody looks one up. */
static __always_inline int proc_verdicts_exist(void)
{
	struct guard_config *config;
	__u32 zero = 0;

	config = bpf_map_lookup_elem(&eg_config, &zero);
	return !config || (config->flags & GUARD_CONFIG_PROC_VERDICTS);
}

/*
 * Whether a detection has refused the current process its connects. The
 * start time guards against a recycled tgid inheriting a dead process's
 * verdict.
 */
static __always_inline int process_blocked(void)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct guard_proc_verdict *verdict;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;

	if (!proc_verdicts_exist())
		return 0;
	verdict = bpf_map_lookup_elem(&eg_proc_verdicts, &tgid);
	return verdict && verdict->action == GUARD_ACTION_BLOCK &&
	       verdict->start_ns == BPF_CORE_READ(task, group_leader, start_boottime);
}

#endif /* GUARD_LIB_PROC_VERDICT_H */
