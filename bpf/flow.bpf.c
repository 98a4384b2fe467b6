// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * flow.bpf.c: the first bytes of every flow of a guarded cgroup, for the
 * classifiers in userspace, and the power to hold them back until userspace
 * has judged them.
 *
 * Per TCP socket the kernel keeps a small state in socket-local storage:
 *
 *   NEW --first payload--> WATCH (sent and sampled) or HELD (dropped, sampled)
 *   WATCH/HELD --userspace verdict in eg_flow_verdicts--> DONE or BLOCKED
 *
 * A first payload is held when it is a JSON line or an HTTP POST carrying one
 * of the payload anchors that userspace wrote into eg_anchors (4-byte windows
 * of the mining dialects' vocabulary), or starts like a Stratum V2
 * SetupConnection frame: dropping the segment costs the sender nothing but a
 * retransmission (TCP keeps it unsent and sends it, with whatever the sender
 * wrote since, once the verdict lets it through). Everything else passes at
 * once and is only watched. A SOCKS5 handshake, a SOCKS4(a) request or an
 * HTTP CONNECT at the start of a flow is reported as a proxy sample and the
 * payload after it is treated as the first one; so is the first message in
 * the frames after a WebSocket upgrade. DONE costs one socket-storage lookup
 * per packet; sockets of policies that sample nothing are DONE from their
 * first packet.
 *
 * Filler and framing do not hide the first message (frames.h): blank
 * segments pass and the next payload is the first, the sample starts after
 * leading blanks, and under a holding policy a message too short to judge (a
 * few bytes of JSON, an unfinished HTTP head) is gathered, dropped until the
 * sender has added enough to it or the hold timeout passed.
 *
 * UDP: the first datagram to each new destination of a socket is sampled
 * (DNS queries among them); datagrams from port 53 are sampled on ingress
 * (DNS answers). Nothing UDP is held.
 */
#include "lib/common.h"
#include "lib/config.h"
#include "lib/events.h"
#include "lib/guarded.h"
#include "lib/policy.h"
#include "lib/anchors.h"
#include "lib/flow.h"
#include "lib/frames.h"
#include "lib/learned.h"
#include "lib/packet.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Views of one segment's WebSocket frames when its first ones are filler. */
#define WS_FILLER_PASSES 4

#define DNS_PORT 53

/* (socket cookie, UDP destination) -> 1: destinations already sampled */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct guard_sendmsg_key);
	__type(value, __u8);
} eg_udp_seen SEC(".maps");

/* 0 -> per-CPU scratch: a sample event is too large for the BPF stack */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct guard_payload_event);
} eg_sample_scratch SEC(".maps");

/* 0 -> per-CPU scratch of frames.h: unmasked frames and what a sample says */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct frame_scratch);
} eg_frame_scratch SEC(".maps");


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
	ev->_pad0 = 0;
	__builtin_memcpy(ev->addr, pkt->remote_addr, 16);
	if (size > GUARD_SAMPLE_MAX)
		size = GUARD_SAMPLE_MAX;
	bytes = offsetof(struct guard_payload_event, sample) + size;
	ev->hdr.size = bytes;
	count(GUARD_CTR_FLOWS_SAMPLED);
	if (bpf_ringbuf_output(&eg_events, ev, bytes, 0)) {
		count(GUARD_CTR_EVENTS_LOST);
		return 0;
	}
	count(GUARD_CTR_EVENTS_SENT);
	return 1;
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

/*
 * The first message of the packet's bytes [off, end) into ev: after leading
 * blanks, or unmasked from its WebSocket frames (framing WS). v says what
 * was found; ev->sample_size is 0 when there is no message (yet). A global
 * function, like parse_packet and first_payload: the verifier checks it
 * once, not once per caller and path.
 */
__noinline int view_payload(struct __sk_buff *skb, struct frame_scratch *fs,
			    struct guard_payload_event *ev, struct view *v)
{
	__u32 size, off, end;

	if (!fs || !ev || !v)
		return 0;
	off = v->off;
	end = v->end;
	ev->sample_size = 0;
	v->status = VIEW_FILLER;
	v->skipped = 0;
	v->full = 0;
	if (v->framing == FRAMING_WS) {
		ws_message(skb, fs, off, end);
		v->status = fs->status;
		v->skipped = 1;
		v->start = off;
		v->full = fs->size >= GUARD_SAMPLE_MAX; /* blanks before it shorten the sample */
		if (fs->status == VIEW_FILLER || fs->lead >= fs->size)
			return 0;
		__builtin_memcpy(ev->sample, fs->buf + (fs->lead & (GUARD_SAMPLE_MAX - 1)),
				 GUARD_SAMPLE_MAX);
		size = fs->size - fs->lead;
		ev->sample_size = size > GUARD_SAMPLE_MAX ? GUARD_SAMPLE_MAX : size;
		return 0;
	}
	v->start = skip_blanks(skb, off, end);
	if (v->start >= end)
		return 0;
	v->skipped = v->start > off;
	size = end - v->start;
	v->full = size >= GUARD_SAMPLE_MAX;
	if (size > GUARD_SAMPLE_MAX)
		size = GUARD_SAMPLE_MAX;
	size -= 1;
	barrier_var(size);
	size &= GUARD_SAMPLE_MAX - 1;
	size += 1;
	if (bpf_skb_load_bytes(skb, v->start, ev->sample, size))
		return 0;
	ev->sample_size = size;
	v->status = VIEW_MESSAGE;
	return 0;
}

/* Start gathering, or go on; 0 once the bound passed and the message is judged as it is. */
static __always_inline int gathering(struct flow_state *state)
{
	if (!state->gathering) {
		state->gathering = 1;
		state->since_ns = bpf_ktime_get_boot_ns();
		return 1;
	}
	if (!timed_out(state))
		return 1;
	count(GUARD_CTR_HOLD_TIMEOUTS);
	return 0;
}

/*
 * The first payload of a flow (or the first after a proxy handshake or a
 * WebSocket upgrade): sampled, and held when it is mining-shaped.
 */
__noinline int first_payload(struct __sk_buff *skb, struct flow_state *state, struct packet *pkt)
{
	__u32 zero = 0, end, head_end = 0;
	struct guard_payload_event *ev;
	struct guard_config *config;
	struct frame_scratch *fs;
	struct view v = {};
	int hold, named, gather, shape, upgrade = 0;
	__u8 flags = 0;

	if (!state || !pkt)
		return 1;
	end = pkt->payload_off + pkt->payload_size;
	fs = bpf_map_lookup_elem(&eg_frame_scratch, &zero);
	ev = bpf_map_lookup_elem(&eg_sample_scratch, &zero);
	if (!fs || !ev)
		return 1;
	v.off = pkt->payload_off;
	v.end = end;
	v.framing = state->framing;
	view_payload(skb, fs, ev, &v);
	/*
	 * Blank or control frames, then more frames in the same segment (a
	 * retransmission merges what was written apart): read on from where the
	 * frames read so far ended, a bounded number of times.
	 */
	for (int pass = 0; pass < WS_FILLER_PASSES; pass++) {
		if (v.status != VIEW_FILLER || v.framing != FRAMING_WS || fs->off >= end)
			break;
		v.off = fs->off;
		view_payload(skb, fs, ev, &v);
	}
	config = bpf_map_lookup_elem(&eg_config, &zero);
	gather = agent_alive(config) && (state->detect_flags & GUARD_DETECT_HOLD);
	if (v.status == VIEW_FILLER && v.framing == FRAMING_WS && fs->off < end && gather) {
		/* still frames after more filler than is read: not let through unjudged */
		state->phase = FLOW_BLOCKED;
		return drop();
	}
	if (v.status == VIEW_FILLER)
		return 1; /* blanks, empty or control frames: the next payload is the first */
	if (!ev->sample_size)
		return gather && gathering(state) ? drop() : 1; /* a frame of blanks goes on */
	if (state->phase == FLOW_NEW && !v.skipped && socks5_greeting(ev, pkt->payload_size)) {
		state->flags |= GUARD_PAYLOAD_SOCKS5;
		state->phase = FLOW_SOCKS5;
		return 1;
	}
	if (state->phase == FLOW_NEW && !v.skipped && socks4_request(ev, pkt->payload_size)) {
		state->flags |= GUARD_PAYLOAD_SOCKS4;
		state->phase = FLOW_AFTER_PROXY;
		emit_sample(ev, skb, pkt, state, GUARD_SAMPLE_PROXY, 0);
		return 1;
	}
	if (state->phase == FLOW_NEW && http_connect(ev)) {
		state->flags |= GUARD_PAYLOAD_HTTP_CONNECT;
		state->phase = FLOW_AFTER_PROXY;
		emit_sample(ev, skb, pkt, state, GUARD_SAMPLE_PROXY, 0);
		return 1;
	}

	/*
	 * A flow to an address the workload learned from a name is held until
	 * userspace has read the host its payload names (TLS SNI, HTTP Host):
	 * one the policy does not allow on a shared address is never sent.
	 */
	named = (state->names & GUARD_NAMES_ON) && agent_alive(config) &&
		learned_address(state->guarded_id, bpf_get_netns_cookie(skb), pkt->family,
				pkt->remote_addr);
	if (!named && !(state->detect_flags & GUARD_DETECT_PAYLOAD)) {
		state->phase = FLOW_DONE; /* sampled only for the name check */
		return 1;
	}
	gather = gather || named;
	shape = sample_shape(ev, fs);
	if (gather && unfinished(ev, &v, shape, &fs->facts) && gathering(state))
		return drop();
	if (shape == SHAPE_GET && fs->facts.websocket && state->framing == FRAMING_NONE && gather) {
		upgrade = 1;
		head_end = v.start + fs->facts.head_end;
	}
	if (state->framing == FRAMING_WS) {
		state->flags |= GUARD_PAYLOAD_WEBSOCKET;
		state->framing = FRAMING_NONE;
	}
	hold = named || (gather && (sv2_setup_connection(ev) ||
				    (json_or_post(ev) &&
				     has_anchor(ev->sample, ev->sample_size, GUARD_ANCHOR_PAYLOAD))));
	if (upgrade && !named && head_end < end) {
		/*
		 * Frames sent with the upgrade, before its answer: their message is
		 * what this segment carries; judged instead of the head when it is
		 * held (the head's own sample would let it through).
		 */
		upgrade = 0;
		v.off = head_end;
		v.framing = FRAMING_WS;
		view_payload(skb, fs, ev, &v);
		if (v.status == VIEW_CUT && !v.full && gathering(state))
			return drop(); /* a frame goes on past the segment: gather it */
		if (ev->sample_size && json_or_post(ev) &&
		    has_anchor(ev->sample, ev->sample_size, GUARD_ANCHOR_PAYLOAD)) {
			flags = GUARD_PAYLOAD_WEBSOCKET;
			hold = 1;
		} else {
			v.off = pkt->payload_off;
			v.framing = FRAMING_NONE;
			view_payload(skb, fs, ev, &v);
		}
		if (!ev->sample_size)
			return 1;
	}
	state->gathering = 0;
	state->since_ns = bpf_ktime_get_boot_ns();
	state->inbound_done = !reply_may_confirm(ev);
	state->sampled = emit_sample(ev, skb, pkt, state, GUARD_SAMPLE_FIRST,
				     flags | (hold ? GUARD_PAYLOAD_HELD : 0) |
				     (named ? GUARD_PAYLOAD_NAMED : 0));
	if (upgrade && state->sampled)
		state->framing = FRAMING_WS_UPGRADE;
	if (!hold) {
		/* a lost sample gets no verdict: nothing to watch for */
		state->phase = state->sampled ? FLOW_WATCH : FLOW_DONE;
		return 1;
	}
	state->phase = FLOW_HELD;
	count(GUARD_CTR_FLOWS_HELD);
	return drop();
}

/* A held flow whose sample the ring had no room for: offer the retransmission's. */
static __always_inline void resample(struct __sk_buff *skb, struct flow_state *state,
				     const struct packet *pkt)
{
	struct guard_payload_event *ev;
	struct frame_scratch *fs;
	struct view v = {};
	__u32 zero = 0;

	fs = bpf_map_lookup_elem(&eg_frame_scratch, &zero);
	ev = bpf_map_lookup_elem(&eg_sample_scratch, &zero);
	if (!fs || !ev)
		return;
	v.off = pkt->payload_off;
	v.end = pkt->payload_off + pkt->payload_size;
	v.framing = state->framing;
	view_payload(skb, fs, ev, &v);
	if (ev->sample_size)
		state->sampled = emit_sample(ev, skb, pkt, state, GUARD_SAMPLE_FIRST,
					     GUARD_PAYLOAD_HELD);
}

/*
 * A WebSocket upgrade's verdict: its frames are judged next. They wait for it
 * (dropped; TCP keeps them), so a verdict on the upgrade never lets through
 * a frame it did not judge. -1: no verdict yet; 1 with phase AFTER_PROXY:
 * judge this packet as the first.
 */
static __always_inline int upgrade_verdict(struct __sk_buff *skb, struct flow_state *state)
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
	bpf_map_delete_elem(&eg_flow_verdicts, &cookie);
	/* a held upgrade was never sent: it goes first, its frames after it */
	state->framing = state->phase == FLOW_HELD ? FRAMING_WS_SEND : FRAMING_WS;
	state->phase = FLOW_AFTER_PROXY;
	return 1;
}

static __always_inline int upgrade_egress(struct __sk_buff *skb, struct flow_state *state)
{
	struct packet pkt = {};
	int verdict = upgrade_verdict(skb, state);

	if (verdict == 0)
		return 0;
	if (verdict > 0)
		return -1;
	if (timed_out(state)) {
		state->phase = FLOW_DONE;
		state->framing = FRAMING_NONE;
		return 1;
	}
	if (!parse_packet(skb, &pkt, 1) || pkt.payload_size == 0)
		return 1;
	if (state->phase == FLOW_HELD && !state->sampled)
		resample(skb, state, &pkt);
	return drop();
}

static __always_inline void owner(struct flow_state *state)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();

	state->tgid = bpf_get_current_pid_tgid() >> 32;
	state->ppid = BPF_CORE_READ(task, real_parent, tgid);
	state->uid = (__u32)bpf_get_current_uid_gid();
	state->start_ns = BPF_CORE_READ(task, group_leader, start_boottime);
	bpf_get_current_comm(state->comm, sizeof(state->comm));
}

/*
 * The first packet a socket sends decides whether it is watched: a TCP
 * socket is only if that packet is its SYN, i.e. the guarded process
 * connects out. Accepted connections (a server in the sandbox answering,
 * sshd sending its banner) and connections older than the guard are not.
 */
static __always_inline struct flow_state *flow_begin(struct __sk_buff *skb, struct bpf_sock *sk)
{
	struct guard_policy_config *policy;
	struct guard_cgroup_info *guard;
	struct flow_state *state;
	struct guard_config *config;
	struct packet pkt = {};
	__u64 cgroup_id, guarded_id = 0;
	__u32 policy_id, zero = 0;

	guard = guard_lookup_at(skb, 1, &cgroup_id, &guarded_id);
	state = bpf_sk_storage_get(&eg_flow_state, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!state)
		return NULL;
	state->phase = FLOW_DONE;
	if (!guard)
		return state;
	if (sk->protocol == IPPROTO_TCP) {
		if (!parse_packet(skb, &pkt, 1) && !pkt.hidden)
			return state; /* not TCP over IP as far as it can be read (ESP...) */
		if (!pkt.hidden && !pkt.syn_only)
			return state;
	}
	policy_id = active_policy(guard);
	policy = bpf_map_lookup_elem(&eg_policies, &policy_id);
	if (!policy || !((policy->detect_flags & GUARD_DETECT_PAYLOAD) ||
			 (policy->names & GUARD_NAMES_ON)))
		return state;
	if (pkt.hidden) {
		/* IPv6 extension headers past what is followed: what the kernel
		 * cannot read does not leave under a holding policy */
		config = bpf_map_lookup_elem(&eg_config, &zero);
		if ((policy->detect_flags & GUARD_DETECT_HOLD) && agent_alive(config))
			state->phase = FLOW_BLOCKED;
		return state;
	}
	state->cgroup_id = cgroup_id;
	state->guarded_id = guarded_id;
	state->policy_id = policy_id;
	state->detect_flags = policy->detect_flags;
	state->names = policy->names;
	state->phase = FLOW_NEW;
	owner(state);
	return state;
}

static __always_inline int tcp_egress(struct __sk_buff *skb, struct flow_state *state)
{
	struct guard_payload_event *ev;
	struct packet pkt = {};
	int verdict;

	switch (state->phase) {
	case FLOW_DONE:
		return 1;
	case FLOW_BLOCKED:
		return drop();
	case FLOW_WATCH:
		if (state->framing == FRAMING_WS_UPGRADE) {
			verdict = upgrade_egress(skb, state);
			if (verdict >= 0)
				return verdict;
			break; /* judge this packet's frames */
		}
		verdict = apply_verdict(skb, state, 0);
		if (verdict >= 0)
			return verdict;
		if (timed_out(state))
			state->phase = FLOW_DONE;
		return 1;
	case FLOW_HELD:
		if (state->framing == FRAMING_WS_UPGRADE) {
			verdict = upgrade_egress(skb, state);
			if (verdict >= 0)
				return verdict;
			break;
		}
		verdict = apply_verdict(skb, state, 0);
		if (verdict >= 0)
			return verdict;
		if (!parse_packet(skb, &pkt, 1) || pkt.payload_size == 0)
			return 1; /* acks and fins are never held */
		if (timed_out(state)) {
			count(GUARD_CTR_HOLD_TIMEOUTS);
			state->phase = FLOW_DONE;
			return 1;
		}
		if (!state->sampled)
			resample(skb, state, &pkt); /* the ring was full before */
		return drop();
	}

	/* NEW, SOCKS5, AFTER_PROXY: a proxy sample may already have a block */
	if (state->phase == FLOW_AFTER_PROXY) {
		verdict = apply_verdict(skb, state, 1);
		if (verdict >= 0)
			return verdict;
	}
	if (!parse_packet(skb, &pkt, 1) || pkt.payload_size == 0)
		return 1;
	if (state->framing == FRAMING_WS_SEND) {
		state->framing = FRAMING_WS; /* the allowed upgrade itself */
		return 1;
	}
	if (state->phase == FLOW_SOCKS5) {
		ev = load_sample(skb, &pkt);
		/* the request (version 5 again); anything else is sub-negotiation */
		if (ev && ev->sample[0] == 5) {
			state->phase = FLOW_AFTER_PROXY;
			emit_sample(ev, skb, &pkt, state, GUARD_SAMPLE_PROXY, 0);
		}
		return 1;
	}
	/* a global function's answer is any int to the verifier: 0 (drop) or 1 */
	return first_payload(skb, state, &pkt) ? 1 : 0;
}

static __always_inline int udp_egress(struct __sk_buff *skb, struct flow_state *state)
{
	struct guard_sendmsg_key key = {};
	struct guard_payload_event *ev;
	struct packet pkt = {};
	__u8 one = 1;

	if (state->phase == FLOW_DONE || !(state->detect_flags & GUARD_DETECT_PAYLOAD) ||
	    !parse_packet(skb, &pkt, 1))
		return 1;
	key.cookie = bpf_get_socket_cookie(skb);
	__builtin_memcpy(key.addr, pkt.remote_addr, 16);
	key.port = pkt.remote_port;
	if (bpf_map_update_elem(&eg_udp_seen, &key, &one, BPF_NOEXIST))
		return 1;
	ev = load_sample(skb, &pkt);
	if (ev)
		emit_sample(ev, skb, &pkt, state, GUARD_SAMPLE_UDP, 0);
	return 1;
}

/* The packet's full TCP or UDP socket; NULL for anything else. */
static __always_inline struct bpf_sock *flow_socket(struct __sk_buff *skb)
{
	struct bpf_sock *sk = skb->sk;

	if (!sk)
		return NULL;
	sk = bpf_sk_fullsock(sk);
	if (!sk || (sk->protocol != IPPROTO_TCP && sk->protocol != IPPROTO_UDP))
		return NULL;
	return sk;
}

SEC("cgroup_skb/egress")
int guard_egress(struct __sk_buff *skb)
{
	struct flow_state *state;
	struct bpf_sock *sk = flow_socket(skb);

	if (!sk)
		return 1;
	state = bpf_sk_storage_get(&eg_flow_state, sk, 0, 0);
	if (!state) {
		state = flow_begin(skb, sk);
		if (!state)
			return 1;
	}
	if (sk->protocol == IPPROTO_TCP)
		return tcp_egress(skb, state);
	return udp_egress(skb, state);
}

/*
 * The server's first reply on a flow whose first payload was sampled and let
 * through: a pool answering mining.notify or an XMRig job confirms what the
 * client's bytes only suggested (or reveals a dialect the client's bytes did
 * not). One sample per flow; nothing is held on ingress.
 */
static __always_inline int tcp_ingress(struct __sk_buff *skb, struct flow_state *state)
{
	struct guard_payload_event *ev;
	struct packet pkt = {};

	if (state->inbound_done || (state->phase != FLOW_WATCH && state->phase != FLOW_DONE) ||
	    !state->sampled)
		return 1;
	if (!parse_packet(skb, &pkt, 0) || pkt.payload_size == 0)
		return 1;
	state->inbound_done = 1;
	ev = load_sample(skb, &pkt);
	if (ev)
		emit_sample(ev, skb, &pkt, state, GUARD_SAMPLE_INBOUND, 0);
	return 1;
}

SEC("cgroup_skb/ingress")
int guard_ingress(struct __sk_buff *skb)
{
	struct guard_payload_event *ev;
	struct flow_state *state;
	struct packet pkt = {};
	struct bpf_sock *sk = flow_socket(skb);

	if (!sk)
		return 1;
	/* the flow sent first, so its state exists */
	state = bpf_sk_storage_get(&eg_flow_state, sk, 0, 0);
	if (!state)
		return 1;
	if (sk->protocol == IPPROTO_TCP)
		return tcp_ingress(skb, state);
	if (state->phase == FLOW_DONE || !(state->detect_flags & GUARD_DETECT_DNS))
		return 1;
	if (!parse_packet(skb, &pkt, 0) || pkt.remote_port != DNS_PORT)
		return 1;
	ev = load_sample(skb, &pkt);
	if (ev)
		emit_sample(ev, skb, &pkt, state, GUARD_SAMPLE_DNS_ANSWER, 0);
	return 1;
}
