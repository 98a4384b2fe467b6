/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * policy.h: the per-policy settings that are not rules (default action,
 * raw sockets, what to detect). Apart from guarded.h because exec.bpf.c
 * resolves a cgroup's policy id but judges by its exec rules alone.
 * A guarded cgroup whose policy id has no entry here fails closed where it
 * is judged (connects, raw sockets); the detections then simply do not run.
 */
#ifndef GUARD_LIB_POLICY_H
#define GUARD_LIB_POLICY_H

#include "common.h"

/* policy id -> struct guard_policy_config */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, struct guard_policy_config);
} eg_policies SEC(".maps");

#endif /* GUARD_LIB_POLICY_H */
