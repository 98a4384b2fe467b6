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
 * A TCP flow gets its socket storage with its first payload (from its SYN
 * until then it holds a slot of eg_flow_opening): a connection that sends
 * nothing allocates nothing. UDP sockets get none at all: the first datagram
 * to each new destination of a socket is recorded in eg_udp_seen and sampled
 * (DNS queries among them, but not one that repeats a query of its workload
 * within the fold window); a datagram from port 53 of a destination the
 * socket sent to is sampled on ingress (DNS answers). Nothing UDP is held.
 */
#include "lib/common.h"
#include "lib/config.h"
#include "lib/events.h"
#include "lib/guarded.h"
#include "lib/policy.h"
#include "lib/anchors.h"
#include "lib/flow.h"
#include "lib/repeats.h"
#include "lib/frames.h"
#include "lib/learned.h"
#include "lib/packet.h"
#include "lib/samples.h"
#include "lib/opening.h"
#include "lib/udp_fold.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Views of one segment's WebSocket frames when its first ones are filler. */
#define WS_FILLER_PASSES 4

#define DNS_PORT 53

/*
 * (socket cookie, UDP destination) -> who sent there first and under which
 * policy: the destinations a UDP socket has sent to (the first datagram to
 * each is sampled), and the only sources whose DNS answers are sampled for
 * it. UDP sockets get no socket storage: a DNS lookup's socket lives for
 * one or two datagrams, and an allocation per lookup was most of its cost.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct guard_sendmsg_key);
	__type(value, struct flow_state);
} eg_udp_seen SEC(".maps");

/* 0 -> per-CPU scratch for a flow state being made (too large for the stack beside a packet) */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct flow_state);
} eg_opening_scratch SEC(".maps");

/* 0 -> per-CPU scratch of frames.h: unmasked frames and what a sample says */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct frame_scratch);
} eg_frame_scratch SEC(".maps");


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
 * Urgent data (MSG_OOB) in a first payload: the server does not read the
 * urgent byte as part of the stream unless it asks to, so the bytes here
 * are not the message it reads. A byte sent out of band inside a mining
 * login or a ClientHello would hide what the server gets. Under a policy
 * that holds first payloads (a holding detection; names: a flow to a
 * learned address is held) it is refused unjudged, like filler: 1, and the
 * sample is sent for the agent to reset the socket and say why. A global
 * function called beside first_payload, not in it: under it, its frame
 * would take the call chain past the 512 bytes of stack the verifier allows.
 */
__noinline int refuse_urgent(struct __sk_buff *skb, struct flow_state *state, struct packet *pkt)
{
	struct guard_payload_event *ev;
	struct guard_config *config;
	__u32 zero = 0;

	config = bpf_map_lookup_elem(&eg_config, &zero);
	if (!skb || !state || !pkt || !pkt->urgent || !agent_alive(config) ||
	    !((state->detect_flags & GUARD_DETECT_HOLD) ||
	      ((state->names & GUARD_NAMES_ON) && !state->audit)))
		return 0;
	state->phase = FLOW_BLOCKED;
	ev = load_sample(skb, pkt);
	if (ev) {
		ev->unjudged = GUARD_UNJUDGED_URGENT;
		emit_sample(ev, skb, pkt, state, GUARD_SAMPLE_FIRST, GUARD_PAYLOAD_UNJUDGED);
	}
	return 1;
}

/*
 * The first payload of a flow (or the first after a proxy handshake or a
 * WebSocket upgrade): sampled, and held when it is mining-shaped. 1: let
 * it through; 0: drop it.
 */
__noinline int first_payload(struct __sk_buff *skb, struct flow_state *state, struct packet *pkt)
{
	__u32 zero = 0, end, head_end = 0;
	struct guard_payload_event *ev;
	struct guard_config *config;
	struct frame_scratch *fs;
	struct view v = {};
	int hold, named, hold_named, tunnel, gather, shape, upgrade = 0;
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
		ev->unjudged = GUARD_UNJUDGED_WS_FILLER;
		goto unjudged;
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
	/* audit: the name is judged and reported, the payload never waits */
	hold_named = named && !state->audit;
	if (!named && !(state->detect_flags & GUARD_DETECT_PAYLOAD)) {
		state->phase = FLOW_DONE; /* sampled only for the name check */
		return 1;
	}
	gather = gather || hold_named;
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
	/*
	 * Under an enforcing tunnelTool: a tunnel's open, and whatever the
	 * sandbox sends first on a flow whose server spoke first (it answers a
	 * request the far end sent: a reverse tunnel's data connection, or a
	 * greeting protocol such as SSH or SMTP) wait for the verdict.
	 */
	tunnel = (state->detect_flags & GUARD_DETECT_HOLD_TUNNEL) && agent_alive(config) &&
		 (state->server_first || tunnel_open(ev));
	hold = hold_named || tunnel || (gather && (sv2_setup_connection(ev) ||
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

unjudged:
	/* refused without a judgement, fail closed: the agent resets the
	 * socket and says why (guard_payload_event.unjudged) */
	state->phase = FLOW_BLOCKED;
	emit_sample(ev, skb, pkt, state, GUARD_SAMPLE_FIRST, GUARD_PAYLOAD_UNJUDGED);
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

/*
 * Who the current task is. Its BTF pointer reads the fields directly: a
 * bpf_probe_read_kernel() per field cost about 140 ns a flow here.
 */
static __always_inline void owner(struct flow_state *state)
{
	struct task_struct *task = bpf_get_current_task_btf();

	state->tgid = task->tgid;
	state->ppid = task->real_parent->tgid;
	state->start_ns = task->group_leader->start_boottime;
	state->uid = (__u32)bpf_get_current_uid_gid();
	bpf_get_current_comm(state->comm, sizeof(state->comm));
}

/*
 * The first packet a socket sends decides whether it is watched: a TCP
 * socket is only if that packet is its SYN, i.e. the guarded process
 * connects out (tcp_opening calls this for a socket in SYN_SENT, whose
 * packets are SYNs: only an IPv6 one is parsed, for extension headers that
 * hide what follows). Accepted connections (a server in the sandbox
 * answering, sshd sending its banner) and connections older than the guard
 * are not. Fills *state and returns 1 for a watched flow (NEW, or BLOCKED
 * when its headers cannot be read under a holding policy); 0 otherwise.
 */
static __always_inline int flow_begin(struct __sk_buff *skb, struct bpf_sock *sk,
				      struct flow_state *state)
{
	struct guard_policy_config *policy;
	struct guard_cgroup_info *guard;
	struct guard_config *config;
	struct packet pkt = {};
	__u64 cgroup_id, guarded_id = 0;
	__u32 policy_id, zero = 0;

	guard = guard_lookup_at(skb, 1, &cgroup_id, &guarded_id);
	if (!guard)
		return 0;
	if (sk->protocol == IPPROTO_TCP && skb->protocol != bpf_htons(ETH_P_IP)) {
		if (!parse_packet(skb, &pkt, 1) && !pkt.hidden)
			return 0; /* not TCP over IP as far as it can be read (ESP...) */
		if (!pkt.hidden && !pkt.syn_only)
			return 0;
	}
	policy_id = active_policy(guard);
	policy = bpf_map_lookup_elem(&eg_policies, &policy_id);
	if (!policy || !((policy->detect_flags & GUARD_DETECT_PAYLOAD) ||
			 (policy->names & GUARD_NAMES_ON)))
		return 0;
	if (pkt.hidden) {
		/* IPv6 extension headers past what is followed: what the kernel
		 * cannot read does not leave under a holding policy */
		config = bpf_map_lookup_elem(&eg_config, &zero);
		if (!((policy->detect_flags & GUARD_DETECT_HOLD) && agent_alive(config)) ||
		    policy->audit)
			return 0;
		state->phase = FLOW_BLOCKED;
		return 1;
	}
	state->cgroup_id = cgroup_id;
	state->guarded_id = guarded_id;
	state->policy_id = policy_id;
	state->detect_flags = policy->detect_flags;
	state->names = policy->names;
	state->audit = policy->audit;
	state->phase = FLOW_NEW;
	owner(state);
	return 1;
}

static __always_inline int tcp_egress(struct __sk_buff *skb, struct flow_state *state);

/*
 * A TCP socket without state: one that is opening (SYN sent, no payload
 * yet), or one that is not watched. Socket-local storage costs an
 * allocation per socket (about a microsecond, most of what the guard added
 * to a connect+close), so a watched flow gets it only with its first
 * payload; from its SYN until then it holds a slot of eg_flow_opening,
 * which its first payload or its release gives back (guard_sock_release).
 * When its slot is taken the socket gets its storage at the SYN, as a flow
 * always did: nothing goes unwatched. The handshake's ACK, and a FIN or a
 * RST of a flow that never sent a byte, cost a look at the socket.
 */
static __always_inline int tcp_opening(struct __sk_buff *skb, struct bpf_sock *sk)
{
	struct flow_state *opening, *state, *scratch;
	struct bpf_tcp_sock *tp;
	struct packet pkt = {};
	__u32 zero = 0;
	int sent_data;
	__u64 cookie;

	/*
	 * The kernel counts a data segment in data_segs_out before it reaches
	 * this hook, and never a bare SYN, ACK, FIN or RST: 0 means nothing of
	 * this flow, this packet included, carried data (no parse needed), and
	 * past its SYN such a packet needs nothing of its opening either.
	 */
	tp = bpf_tcp_sock(sk);
	sent_data = !tp || tp->data_segs_out;
	if (!sent_data && sk->state != BPF_TCP_SYN_SENT)
		return 1;
	cookie = bpf_get_socket_cookie(skb);
	opening = opening_of(cookie);
	if (!opening && sk->state != BPF_TCP_SYN_SENT)
		return 1; /* not watched: accepted, older than the guard, or policy */
	if (!opening) {
		scratch = bpf_map_lookup_elem(&eg_opening_scratch, &zero);
		if (!scratch)
			return 1;
		__builtin_memset(scratch, 0, sizeof(*scratch));
		if (!flow_begin(skb, sk, scratch))
			return 1;
		if (scratch->phase == FLOW_NEW && !sent_data && opening_begin(cookie, scratch))
			return 1; /* the SYN: opening until the first payload */
		/* a SYN with data (TCP Fast Open), unreadable headers, or a taken slot */
		state = bpf_sk_storage_get(&eg_flow_state, sk, scratch, BPF_SK_STORAGE_GET_F_CREATE);
		if (!state)
			return scratch->detect_flags & GUARD_DETECT_HOLD ? drop() : 1;
		return tcp_egress(skb, state);
	}
	if (!sent_data || !parse_packet(skb, &pkt, 1) || pkt.payload_size == 0)
		return 1; /* the SYN sent again, or a bare ACK, FIN or RST */
	state = bpf_sk_storage_get(&eg_flow_state, sk, opening, BPF_SK_STORAGE_GET_F_CREATE);
	if (!state)
		/* no memory for the state: a holding policy's flow waits (TCP retransmits) */
		return opening->detect_flags & GUARD_DETECT_HOLD ? drop() : 1;
	opening_end(cookie);
	return tcp_egress(skb, state);
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
		/*
		 * Not a byte of it passes; a segment without any (the reset the
		 * agent's bpf_sock_destroy sends, a FIN) does, so the peer
		 * learns the flow is gone instead of waiting on it (a resolver
		 * that serves TCP one connection at a time would stall).
		 */
		if (parse_packet(skb, &pkt, 1) && pkt.payload_size == 0)
			return 1;
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
	if (refuse_urgent(skb, state, &pkt))
		return drop();
	/* a global function's answer is any int to the verifier: 0 (drop) or 1 */
	return first_payload(skb, state, &pkt) ? 1 : 0;
}

/*
 * A datagram: the first to each destination of a watched socket is recorded
 * (eg_udp_seen, with its sender) and, when the policy samples payloads,
 * sampled. Later ones cost a lookup.
 */
static __always_inline int udp_egress(struct __sk_buff *skb, struct bpf_sock *sk)
{
	struct guard_sendmsg_key key = {};
	struct guard_payload_event *ev;
	struct flow_state *scratch;
	struct packet pkt = {};
	__u32 zero = 0;

	if (!parse_packet(skb, &pkt, 1))
		return 1;
	/*
	 * A repeated query first: a lookup's socket is new, so the lookup of
	 * its destination below would only miss, and the repeat ends a
	 * getaddrinfo loop's datagram either way. (A datagram this socket
	 * already sent is not sampled again, whichever test stops it.)
	 */
	if (pkt.remote_port == DNS_PORT && udp_repeat(skb, &pkt))
		return 1; /* not recorded either: its answer is not sampled */
	udp_key(skb, &pkt, &key);
	if (bpf_map_lookup_elem(&eg_udp_seen, &key))
		return 1;
	scratch = bpf_map_lookup_elem(&eg_opening_scratch, &zero);
	if (!scratch)
		return 1;
	__builtin_memset(scratch, 0, sizeof(*scratch));
	if (!flow_begin(skb, sk, scratch) || scratch->phase != FLOW_NEW)
		return 1;
	if (bpf_map_update_elem(&eg_udp_seen, &key, scratch, BPF_NOEXIST))
		return 1;
	if (!(scratch->detect_flags & GUARD_DETECT_PAYLOAD))
		return 1;
	ev = load_sample(skb, &pkt);
	if (ev)
		emit_sample(ev, skb, &pkt, scratch, GUARD_SAMPLE_UDP, 0);
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
	if (sk->protocol != IPPROTO_TCP)
		return udp_egress(skb, sk);
	state = bpf_sk_storage_get(&eg_flow_state, sk, 0, 0);
	return state ? tcp_egress(skb, state) : tcp_opening(skb, sk);
}

/* A socket that closes before its first payload leaves the opening table. */
SEC("cgroup/sock_release")
int guard_sock_release(struct bpf_sock *sk)
{
	if (sk->protocol == IPPROTO_TCP)
		opening_end(bpf_get_socket_cookie(sk));
	return 1;
}

/*
 * The server's first reply on a flow whose first payload was sampled and let
 * through: a pool answering mining.notify or an XMRig job confirms what the
 * client's bytes only suggested (or reveals a dialect the client's bytes did
 * not). One sample per flow; nothing is held on ingress.
 */
/*
 * The server's first bytes on a flow the sandbox opened and has sent nothing
 * on yet: a far end that speaks first with a request (an HTTP request line,
 * a tunnel's open) is the client of a reverse tunnel, whatever the sandbox's
 * program is called. Sampled once (inbound_done); the sandbox's own first
 * payload is judged as always afterwards. Nothing is held on ingress.
 */
static __always_inline int server_first(struct __sk_buff *skb, struct flow_state *state)
{
	struct guard_payload_event *ev;
	struct packet pkt = {};

	if (!parse_packet(skb, &pkt, 0) || pkt.payload_size == 0)
		return 1;
	state->inbound_done = 1;
	state->server_first = 1;
	ev = load_sample(skb, &pkt);
	if (ev)
		emit_sample(ev, skb, &pkt, state, GUARD_SAMPLE_SERVER_FIRST, 0);
	return 1;
}

static __always_inline int tcp_ingress(struct __sk_buff *skb, struct flow_state *state)
{
	struct guard_payload_event *ev;
	struct packet pkt = {};

	if (state->phase == FLOW_NEW && !state->inbound_done)
		return server_first(skb, state);
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

/*
 * A watched TCP flow that has sent nothing yet has no storage (tcp_opening):
 * the server's first bytes give it its storage, then server_first.
 */
static __always_inline int tcp_opening_ingress(struct __sk_buff *skb, struct bpf_sock *sk)
{
	struct flow_state *opening, *state;
	struct packet pkt = {};
	__u64 cookie;

	/*
	 * The SYN-ACK: bytes it carries never reach the socket (the kernel
	 * queues data only once established), so they are no server's first.
	 */
	if (sk->state == BPF_TCP_SYN_SENT)
		return 1;
	if (!parse_packet(skb, &pkt, 0) || pkt.payload_size == 0)
		return 1; /* acks, fins, resets */
	cookie = bpf_get_socket_cookie(skb);
	opening = opening_of(cookie);
	if (!opening)
		return 1; /* not watched */
	state = bpf_sk_storage_get(&eg_flow_state, sk, opening, BPF_SK_STORAGE_GET_F_CREATE);
	if (!state)
		return 1;
	opening_end(cookie);
	return server_first(skb, state);
}

SEC("cgroup_skb/ingress")
int guard_ingress(struct __sk_buff *skb)
{
	struct guard_sendmsg_key key = {};
	struct guard_payload_event *ev;
	struct flow_state *state;
	struct packet pkt = {};
	struct bpf_sock *sk = flow_socket(skb);

	if (!sk)
		return 1;
	if (sk->protocol == IPPROTO_TCP) {
		state = bpf_sk_storage_get(&eg_flow_state, sk, 0, 0);
		if (state)
			return tcp_ingress(skb, state);
		return tcp_opening_ingress(skb, sk);
	}
	/* a DNS answer from where this socket sent a query: its sender's record */
	if (!parse_packet(skb, &pkt, 0) || pkt.remote_port != DNS_PORT)
		return 1;
	udp_key(skb, &pkt, &key);
	state = bpf_map_lookup_elem(&eg_udp_seen, &key);
	if (!state || !(state->detect_flags & GUARD_DETECT_DNS))
		return 1;
	ev = load_sample(skb, &pkt);
	if (ev)
		emit_sample(ev, skb, &pkt, state, GUARD_SAMPLE_DNS_ANSWER, 0);
	return 1;
}
