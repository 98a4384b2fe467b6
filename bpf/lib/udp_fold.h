/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * udp_fold.h: the UDP datagrams flow.bpf.c (its only includer) samples
 * once: a DNS query its workload repeats within the fold window, and the
 * key of a datagram's destination.
 */
#ifndef GUARD_LIB_UDP_FOLD_H
#define GUARD_LIB_UDP_FOLD_H

#include "common.h"
#include "packet.h"
#include "repeats.h"

/*
 * A DNS datagram that repeats one its workload sent within the fold window
 * (a getaddrinfo loop resolving one name) is not sampled again: the same
 * bytes cannot say anything new, and sampling each was most of a lookup's
 * cost here. The key is the datagram itself past its 2-byte id, up to
 * UDP_FOLD_BYTES (longer ones, where tunnels carry data, are always
 * sampled), with the workload and the destination.
 */
#define UDP_FOLD_BYTES 128

struct udp_fold_key {
	__u64 cgroup_id;
	__u32 addr[4];
	__u16 port;
	__u16 len;
	__u32 _pad;
	__u8 bytes[UDP_FOLD_BYTES];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct udp_fold_key);
	__type(value, __u64);
} eg_udp_fold SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct udp_fold_key);
} eg_udp_fold_scratch SEC(".maps");

static __always_inline int udp_repeat(struct __sk_buff *skb, const struct packet *pkt)
{
	__u64 window = fold_window_ns();
	struct udp_fold_key *key;
	__u32 zero = 0, len;

	if (!window)
		return 0;
	len = pkt->payload_size - 2;
	if (pkt->payload_size <= 2 || len > UDP_FOLD_BYTES)
		return 0;
	key = bpf_map_lookup_elem(&eg_udp_fold_scratch, &zero);
	if (!key)
		return 0;
	__builtin_memset(key, 0, sizeof(*key));
	key->cgroup_id = bpf_skb_cgroup_id(skb);
	__builtin_memcpy(key->addr, pkt->remote_addr, 16);
	key->port = pkt->remote_port;
	key->len = len;
	/* 1 .. UDP_FOLD_BYTES already; the mask shows the verifier as much */
	len = ((len - 1) & (UDP_FOLD_BYTES - 1)) + 1;
	if (bpf_skb_load_bytes(skb, pkt->payload_off + 2, key->bytes, len))
		return 0;
	return fold_repeat(&eg_udp_fold, key, window, 1, GUARD_CTR_UDP_FOLDED);
}

/* The destination key of a UDP datagram: the remote end, as parsed. */
static __always_inline void udp_key(struct __sk_buff *skb, const struct packet *pkt,
				    struct guard_sendmsg_key *key)
{
	key->cookie = bpf_get_socket_cookie(skb);
	__builtin_memcpy(key->addr, pkt->remote_addr, 16);
	key->port = pkt->remote_port;
}

#endif /* GUARD_LIB_UDP_FOLD_H */
