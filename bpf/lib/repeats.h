/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * repeats.h: the fold window (run --fold-window-ms) for records whose whole
 * content is their key: DNS datagrams sampled by flow.bpf.c and answers
 * reported by dns.bpf.c. No map of its own: each caller keeps its keys in
 * an LRU of its own (lib/fold.h folds connects, which carry a count).
 */
#ifndef GUARD_LIB_REPEATS_H
#define GUARD_LIB_REPEATS_H

#include "common.h"
#include "config.h"
#include "events.h"

/* The fold window in nanoseconds; 0: folding is off (run --fold-window-ms 0). */
static __always_inline __u64 fold_window_ns(void)
{
	struct guard_config *config;
	__u32 zero = 0;

	config = bpf_map_lookup_elem(&eg_config, &zero);
	return config ? (__u64)config->fold_window_ms * 1000000 : 0;
}

/*
 * Records whose whole content is their key (the same DNS question bytes
 * from the same workload, the same answer that taught the kernel nothing
 * new): true when may_fold and the same key was sent less than a window
 * ago; it is then counted in counter and not sent. Otherwise the key's
 * window starts now and the record is sent. The key holds the content
 * itself, not a hash of it: the map's own hash takes a secret seed and
 * compares whole keys, so no crafted record can pass for another.
 * map: an LRU hash of key -> window start (ns).
 */
static __always_inline int fold_repeat(void *map, const void *key, __u64 window, int may_fold,
				       __u32 counter)
{
	__u64 now = bpf_ktime_get_boot_ns(), *start;

	if (!window)
		return 0;
	start = bpf_map_lookup_elem(map, key);
	if (may_fold && start && now - *start < window) {
		count(counter);
		return 1;
	}
	bpf_map_update_elem(map, key, &now, BPF_ANY);
	return 0;
}

#endif /* GUARD_LIB_REPEATS_H */
