/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * samples.h: a flow's bytes copied out for userspace (flow.bpf.c, its only
 * includer), and what the first bytes alone say: a SOCKS or HTTP CONNECT
 * handshake before the real first message, or whether the server's reply
 * can tell more. Owns the scratch event the sample is built in.
 */
#ifndef GUARD_LIB_SAMPLES_H
#define GUARD_LIB_SAMPLES_H

#include "common.h"
#include "events.h"
#include "flow.h"
#include "packet.h"

/* 0 -> per-CPU scratch: a sample event is too large for the BPF stack */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct guard_payload_event);
} eg_sample_scratch SEC(".maps");

/* Copy the first bytes of the payload into the scratch event; 0 if none. */
static __always_inline struct guard_payload_event *load_sample(struct __sk_buff *skb,
								const struct packet *pkt)
{
	struct guard_payload_event *ev;
	__u32 zero = 0, size = pkt->payload_size;

	ev = bpf_map_lookup_elem(&eg_sample_scratch, &zero);
	if (!ev || size == 0)
		return NULL;
	if (size > GUARD_SAMPLE_MAX)
		size = GUARD_SAMPLE_MAX;
	/* one register the verifier can bound to [1, GUARD_SAMPLE_MAX] */
	size -= 1;
	barrier_var(size);
	size &= GUARD_SAMPLE_MAX - 1;
	size += 1;
	if (bpf_skb_load_bytes(skb, pkt->payload_off, ev->sample, size))
		return NULL;
	ev->sample_size = size;
	return ev;
}

static __always_inline int emit_sample(struct guard_payload_event *ev, struct __sk_buff *skb,
				       const struct packet *pkt, const struct flow_state *state,
				       __u8 kind, __u8 flags)
{
	__u32 size = ev->sample_size;
	__u64 bytes;

	fill_header(&ev->hdr, GUARD_EVENT_PAYLOAD, 0, state->cgroup_id, state->policy_id,
		    GUARD_ACTION_LOG, GUARD_RULE_NONE);
	if (state->tgid) {
		ev->hdr.pid = state->tgid;
		ev->hdr.ppid = state->ppid;
		ev->hdr.uid = state->uid;
		ev->hdr.start_ns = state->start_ns;
		__builtin_memcpy(ev->hdr.comm, state->comm, sizeof(ev->hdr.comm));
	}
	ev->cookie = bpf_get_socket_cookie(skb);
	ev->family = pkt->family;
	ev->proto = pkt->proto;
	ev->sample_kind = kind;
	ev->flags = flags | state->flags |
		    (pkt->payload_size > GUARD_SAMPLE_MAX ? GUARD_PAYLOAD_TRUNCATED : 0);
	ev->port = pkt->remote_port;
	ev->payload_size = pkt->payload_size;
	/* why, set by the caller before, only with GUARD_PAYLOAD_UNJUDGED */
	if (!(flags & GUARD_PAYLOAD_UNJUDGED))
		ev->unjudged = 0;
	__builtin_memcpy(ev->addr, pkt->remote_addr, 16);
	if (size > GUARD_SAMPLE_MAX)
		size = GUARD_SAMPLE_MAX;
	bytes = offsetof(struct guard_payload_event, sample) + size;
	ev->hdr.size = bytes;
	count(GUARD_CTR_FLOWS_SAMPLED);
	return event_output(&ev->hdr, bytes);
}

/* SOCKS5 greeting (RFC 1928): version 5, n methods, then exactly n bytes. */
static __always_inline int socks5_greeting(const struct guard_payload_event *ev, __u32 size)
{
	return size >= 3 && size <= 257 && ev->sample[0] == 5 && ev->sample[1] >= 1 &&
	       size == 2 + (__u32)ev->sample[1];
}

/*
 * SOCKS4 CONNECT or BIND, whole in one segment: version 4, command 1 or 2,
 * port, IPv4 address, a NUL-terminated user id (SOCKS4a: then a
 * NUL-terminated host name), so the request ends with a NUL. The proxy's
 * 8-byte answer comes back, and the client's next payload is the first.
 */
static __always_inline int socks4_request(const struct guard_payload_event *ev, __u32 size)
{
	__u32 last = ev->sample_size - 1;

	barrier_var(last);
	last &= GUARD_SAMPLE_MAX - 1;
	return size >= 9 && size == ev->sample_size && ev->sample[0] == 4 &&
	       (ev->sample[1] == 1 || ev->sample[1] == 2) && ev->sample[last] == 0;
}

static __always_inline int http_connect(const struct guard_payload_event *ev)
{
	return ev->sample_size >= 8 && ev->sample[0] == 'C' && ev->sample[1] == 'O' &&
	       ev->sample[2] == 'N' && ev->sample[3] == 'N' && ev->sample[4] == 'E' &&
	       ev->sample[5] == 'C' && ev->sample[6] == 'T' && ev->sample[7] == ' ';
}

/* Whether the sample starts with bytes b (n of them, n < 32). */
static __always_inline int starts(const struct guard_payload_event *ev, const char *b, __u32 n)
{
	if (ev->sample_size < n)
		return 0;
	for (__u32 i = 0; i < n && i < 32; i++)
		if (ev->sample[i] != b[i])
			return 0;
	return 1;
}

/*
 * A tunnel service's open on a flow's first bytes: localtunnel's setup
 * request (`GET /?new`, lib/Tunnel.js) and httptunnel's requests
 * (`POST /index.html?crap=`, `GET /index.html?crap=`, http.c). Held under
 * an enforcing tunnelTool whatever the client is called: the next bytes on
 * such a flow are the tunnel's, and a verdict after them is too late.
 */
static __always_inline int tunnel_open(const struct guard_payload_event *ev)
{
	return starts(ev, "GET /?new", 9) || starts(ev, "POST /index.html?crap=", 22) ||
	       starts(ev, "GET /index.html?crap=", 21);
}

/*
 * Whether the server's first reply can tell userspace anything about this
 * first payload. Not after a TLS handshake record (the reply is a ServerHello),
 * an SSH banner or a GET/HEAD (the mining dialects' HTTP requests are POSTs):
 * those flows, most of an agent's traffic, cost one sample instead of two.
 */
static __always_inline int reply_may_confirm(const struct guard_payload_event *ev)
{
	const unsigned char *s = ev->sample;

	if (s[0] == 0x16)
		return 0;
	if (ev->sample_size < 4)
		return 1;
	return !((s[0] == 'S' && s[1] == 'S' && s[2] == 'H' && s[3] == '-') ||
		 (s[0] == 'G' && s[1] == 'E' && s[2] == 'T' && s[3] == ' ') ||
		 (s[0] == 'H' && s[1] == 'E' && s[2] == 'A' && s[3] == 'D'));
}

#endif /* GUARD_LIB_SAMPLES_H */
