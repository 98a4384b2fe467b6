// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * dns.bpf.c: allow by name, on the workload's own DNS packets. No proxy and
 * no resolving here: the packets go where the workload sends them.
 *
 * egress, a query to a resolver port: the question's name is looked up in
 * the policy's names (eg_dns_names: the name itself, then each parent for
 * "*." patterns). A name no rule allows gets the policy's default action:
 * under block the datagram is dropped (sendmsg fails with EPERM; a TCP
 * segment is never sent), so the resolver never sees it, and neither does
 * a tunnel that carries data in query names. Every message of a TCP
 * segment is judged, and a segment that does not end where a message ends
 * is refused (TCP_MESSAGES). A query allowed once is allowed again by its
 * bytes under the same generation (eg_dns_allowed).
 *
 * ingress, an answer: believed only from a resolver the policy trusts
 * (address and port), not over loopback unless the resolver is a loopback
 * address, and only under a policy that denies raw sockets; the workload
 * cannot bind a resolver port (sock_addr.bpf.c), so it cannot send from one.
 * For a question whose name a rule names, every A and AAAA record of the
 * answer section goes into the cgroup's learned table (names.h) with the
 * record's TTL clamped to the policy's bounds, before the socket is given
 * the packet: the process cannot connect before its address is allowed.
 * Records are keyed by the question's name, CNAME chains included: the
 * trusted resolver answered the question, and an authority that could point
 * an allowed name anywhere gains nothing from extra records.
 *
 * Every answer (and each refused or logged query) is an event carrying the
 * message, so userspace names addresses on its events; an answer that taught
 * nothing new and repeats one sent within the fold window is counted
 * instead (answer_fold_key).
 */
#include "lib/common.h"
#include "lib/config.h"
#include "lib/events.h"
#include "lib/guarded.h"
#include "lib/policy.h"
#include "lib/names.h"
#include "lib/packet.h"
#include "lib/repeats.h"
#include "lib/dns_wire.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* answer_fold_key -> answer_fold: an answer's fold window and its question's match (dns_wire.h) */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct answer_fold_key);
	__type(value, struct answer_fold);
} eg_dns_fold SEC(".maps");

/* query_key -> 1: a query a generation allowed, by its bytes (dns_wire.h) */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct query_key);
	__type(value, __u8);
} eg_dns_allowed SEC(".maps");

static __always_inline void emit(struct dns_scratch *s, struct __sk_buff *skb,
				 const struct dns_packet *pkt, __u64 cgroup_id, __u32 policy_id,
				 __u8 direction, __u8 action, __u32 size)
{
	struct guard_dns_event *ev = &s->ev;
	__u64 bytes;

	fill_header(&ev->hdr, GUARD_EVENT_DNS, 0, cgroup_id, policy_id, action, GUARD_RULE_NONE);
	if (direction == GUARD_DNS_ANSWER) {
		/* softirq: whoever was running is not the receiver */
		ev->hdr.pid = ev->hdr.ppid = ev->hdr.uid = 0;
		ev->hdr.start_ns = 0;
		__builtin_memset(ev->hdr.comm, 0, sizeof(ev->hdr.comm));
	}
	ev->cookie = bpf_get_socket_cookie(skb);
	ev->family = pkt->family;
	ev->proto = pkt->proto;
	ev->direction = direction;
	ev->port = pkt->remote_port;
	ev->_pad0 = 0;
	__builtin_memcpy(ev->addr, pkt->remote_addr, 16);
	if (pkt->msg_size > GUARD_DNS_MSG_MAX)
		ev->flags |= GUARD_DNS_CUT;
	if (size > GUARD_DNS_MSG_MAX)
		size = GUARD_DNS_MSG_MAX;
	/* the message's first bytes (size 0: none read, an empty message) */
	if (size) {
		size -= 1;
		barrier_var(size);
		size &= GUARD_DNS_MSG_MAX - 1;
		size += 1;
		if (bpf_skb_load_bytes(skb, pkt->msg_off, ev->message, size))
			size = 0;
	}
	ev->message_size = size;
	bytes = offsetof(struct guard_dns_event, message) + size;
	ev->hdr.size = bytes;
	event_output(&ev->hdr, bytes);
}

static __always_inline void reset_event(struct guard_dns_event *ev)
{
	ev->name_id = 0;
	ev->flags = 0;
	ev->ttl = 0;
	ev->learned = 0;
	ev->netns = 0;
}

struct guarded_packet {
	struct guard_policy_config *policy;
	__u64 cgroup_id;
	__u64 guarded_id;
	__u32 policy_id;
};

/* The guarded cgroup and its policy, if that policy allows by name. */
static __always_inline int names_policy(struct __sk_buff *skb, struct guarded_packet *g)
{
	struct guard_cgroup_info *guard;

	guard = guard_lookup_at(skb, 1, &g->cgroup_id, &g->guarded_id);
	if (!guard)
		return 0;
	g->policy_id = active_policy(guard);
	g->policy = bpf_map_lookup_elem(&eg_policies, &g->policy_id);
	return g->policy && (g->policy->names & GUARD_NAMES_ON);
}

/*
 * The query's key in eg_dns_allowed (in the scratch): its bytes past the
 * id under this generation. 0: too long to have one.
 */
static __always_inline int query_key(struct __sk_buff *skb, const struct dns_packet *pkt,
				     struct dns_scratch *s, __u32 policy_id)
{
	__u32 len = pkt->msg_size - 2;

	if (pkt->msg_size < DNS_HEADER || len > QUERY_BYTES)
		return 0;
	__builtin_memset(&s->query, 0, sizeof(s->query));
	s->query.policy_id = policy_id;
	s->query.len = len;
	/* 1 .. QUERY_BYTES already; the mask shows the verifier as much */
	len = ((len - 1) & (QUERY_BYTES - 1)) + 1;
	return bpf_skb_load_bytes(skb, pkt->msg_off + 2, s->query.bytes, len) == 0;
}

/*
 * One query message (pkt's msg_off and msg_size say which) judged: the
 * action it gets; a refused or logged one is an event. A global function,
 * verified once on its own: a TCP segment's messages are judged in a loop.
 */
__noinline int judge_query(struct __sk_buff *skb, struct dns_packet *pkt, __u64 cgroup_id,
			   __u32 policy_id, __u32 default_action)
{
	struct guard_name_value *value;
	struct dns_scratch *s;
	__u32 zero = 0, size, len = 0, end;
	__u8 action, one = 1;
	int keyed;

	s = bpf_map_lookup_elem(&eg_dns_scratch, &zero);
	if (!s || !skb || !pkt)
		return default_action == GUARD_ACTION_BLOCK ? GUARD_ACTION_BLOCK : GUARD_ACTION_LOG;
	keyed = query_key(skb, pkt, s, policy_id);
	if (keyed && bpf_map_lookup_elem(&eg_dns_allowed, &s->query))
		return GUARD_ACTION_ALLOW; /* these bytes, allowed under this generation before */
	reset_event(&s->ev);
	size = load_message(skb, pkt, s);
	end = size && !(msg_byte(s, 2) & 0x80) && msg_u16(s, 4) == 1 ? question_end(size) : 0;
	if (end)
		len = read_question(s, end);
	value = len ? match_name(s, policy_id, len) : NULL;
	if (value) {
		action = value->query_action;
		s->ev.name_id = value->name_id;
	} else {
		action = default_action;
		s->ev.flags |= len ? GUARD_DNS_NO_RULE : GUARD_DNS_UNPARSED;
	}
	if (action == GUARD_ACTION_BLOCK)
		count(GUARD_CTR_DNS_REFUSED);
	if (action != GUARD_ACTION_ALLOW)
		emit(s, skb, pkt, cgroup_id, policy_id, GUARD_DNS_QUERY, action, size);
	else if (keyed)
		bpf_map_update_elem(&eg_dns_allowed, &s->query, &one, BPF_ANY);
	return action;
}

/*
 * A TCP segment to a resolver holds whole messages, each after its 2-byte
 * length, TCP_MESSAGES at most (glibc sends its A and AAAA queries in one
 * write): each is judged. A segment that does not end where a message
 * ends (a message cut, a length split from its message, more messages)
 * is one message the kernel cannot read and gets the default action: the
 * resolver reads a byte stream, and only whole messages keep where the
 * kernel thinks a message begins where the resolver does, segment after
 * segment. Its messages are judged one by one otherwise: the resolver
 * would answer a second one that a look at the first let through. A
 * segment with urgent data (MSG_OOB) is refused too: its resolver does not
 * read the urgent byte as part of the stream, so the framing it sees is
 * not the one the segment shows.
 */
#define TCP_MESSAGES 8

SEC("cgroup_skb/egress")
int guard_dns_query(struct __sk_buff *skb)
{
	struct guard_config *config;
	struct guarded_packet g = {};
	struct dns_packet pkt = {};
	__u32 zero = 0, at, total = skb->len;
	int action, refused = 0, whole = 0;
	__be16 size;

	config = bpf_map_lookup_elem(&eg_config, &zero);
	if (!config || !config->dns_ports[0] || other_tcp(skb))
		return 1;
	if (!parse_dns_packet(skb, &pkt, 1, config) || !names_policy(skb, &g))
		return 1;
	if (!trusted_resolver(g.policy_id, g.policy, pkt.family, pkt.remote_addr, pkt.remote_port))
		return 1; /* any other destination is egress like any other (sock_addr.bpf.c) */
	if (pkt.proto != GUARD_PROTO_TCP) {
		/*
		 * A datagram the kernel will send as several (UDP_SEGMENT): the
		 * resolver reads each as a query, this would read the first.
		 * One message it cannot read; no DNS client sends one.
		 */
		if (skb->gso_segs > 1)
			pkt.msg_size = 0;
		return judge_query(skb, &pkt, g.cgroup_id, g.policy_id,
				   g.policy->default_action) == GUARD_ACTION_BLOCK ? 0 : 1;
	}
	at = pkt.urgent ? total : pkt.stream_off;
	for (int i = 0; i < TCP_MESSAGES; i++) {
		if (at + 2 > total || bpf_skb_load_bytes(skb, at, &size, sizeof(size)))
			break;
		if (at + 2 + bpf_ntohs(size) > total)
			break;
		pkt.msg_off = at + 2;
		pkt.msg_size = bpf_ntohs(size);
		action = judge_query(skb, &pkt, g.cgroup_id, g.policy_id, g.policy->default_action);
		refused |= action == GUARD_ACTION_BLOCK;
		at += 2 + bpf_ntohs(size);
		if (at == total) {
			whole = 1;
			break;
		}
	}
	if (!whole) {
		/* judged as a message of nothing the kernel could read */
		pkt.msg_off = pkt.stream_off;
		pkt.msg_size = 0;
		action = judge_query(skb, &pkt, g.cgroup_id, g.policy_id, g.policy->default_action);
		refused |= action == GUARD_ACTION_BLOCK;
	}
	return refused ? 0 : 1;
}

struct answers {
	__u64 guarded_id;
	__u64 netns;
	__u64 name_id;
	__u64 now;
	__u32 off;
	__u32 size;
	__u32 ttl_min;
	__u32 ttl_max;
	__u32 ttl;        /* the smallest clamped TTL learned */
	__u16 learned;
	__u8 flags;
	__u8 stop;
};

static __always_inline void learn(struct answers *a, struct dns_scratch *s, __u8 family,
				  __u32 rdata, __u32 ttl)
{
	struct guard_learned_key key = {};
	struct guard_learned entry = {}, *old;
	__u64 expires;
	void *table;
	int slot = 0;

	table = bpf_map_lookup_elem(&eg_dns_learned, &a->guarded_id);
	if (!table) {
		a->flags |= GUARD_DNS_NO_TABLE;
		return;
	}
	if (ttl < a->ttl_min)
		ttl = a->ttl_min;
	if (ttl > a->ttl_max)
		ttl = a->ttl_max;
	expires = a->now + (__u64)ttl * 1000000000ULL;
	key.netns = a->netns;
	key.family = family;
	for (int i = 0; i < 4; i++)
		key.addr[i] = msg_byte(s, rdata + i);
	if (family == 6)
		for (int i = 4; i < 16; i++)
			key.addr[i] = msg_byte(s, rdata + i);
	old = bpf_map_lookup_elem(table, &key);
	if (old) {
		/*
		 * The same name again and not expired (a lookup repeated, the
		 * common case): its expiry moves on in place, one aligned
		 * 8-byte store, instead of a new element and the old one's
		 * free. Nothing new to the agent.
		 */
		slot = a->name_id & (GUARD_DNS_NAMES_PER_ADDR - 1);
		for (int i = 0; i < GUARD_DNS_NAMES_PER_ADDR; i++)
			if (old->names[i].name_id == a->name_id)
				slot = i;
		slot &= GUARD_DNS_NAMES_PER_ADDR - 1;
		if (old->names[slot].name_id == a->name_id && old->names[slot].expires_ns > a->now) {
			if (old->names[slot].expires_ns < expires)
				old->names[slot].expires_ns = expires;
			goto learned;
		}
		__builtin_memcpy(&entry, old, sizeof(entry));
	}
	/*
	 * The slot of this name, else the first empty or expired one, else the
	 * one the name id picks (a workload that resolves many names sharing
	 * an address evicts only its own): one pass, no search for a minimum,
	 * so the verifier walks a handful of paths.
	 */
	slot = a->name_id & (GUARD_DNS_NAMES_PER_ADDR - 1);
	for (int i = 0; i < GUARD_DNS_NAMES_PER_ADDR; i++) {
		__u64 id = entry.names[i].name_id;

		if (id == a->name_id || id == 0 || entry.names[i].expires_ns <= a->now) {
			slot = i;
			break;
		}
	}
	slot &= GUARD_DNS_NAMES_PER_ADDR - 1;
	/*
	 * New to the agent: no entry (its slot's name_id is 0), another name in
	 * the slot, or this name expired there. Without branches, into the
	 * scratch: the verifier tracks neither, so this adds no states to the
	 * answer's walk (a flag on the stack doubled its verification memory).
	 */
	s->fresh |= (entry.names[slot].name_id ^ a->name_id) |
		    (((a->now - entry.names[slot].expires_ns) >> 63) ^ 1);
	if (entry.names[slot].name_id != a->name_id)
		entry.names[slot].expires_ns = 0;
	entry.names[slot].name_id = a->name_id;
	if (entry.names[slot].expires_ns < expires)
		entry.names[slot].expires_ns = expires;
	if (bpf_map_update_elem(table, &key, &entry, BPF_ANY)) {
		a->flags |= GUARD_DNS_FULL;
		return;
	}
learned:
	a->learned = (a->learned + 1) & 63;
	if (!a->ttl || ttl < a->ttl)
		a->ttl = ttl;
	count(GUARD_CTR_DNS_LEARNED);
}

struct skip_walk {
	__u32 off;
	__u32 size;
	__u32 done;
};

/* One label of a record's owner name (or its end, or a compression pointer). */
static long skip_step(__u64 i, void *data)
{
	struct skip_walk *w = data;
	struct dns_scratch *s;
	__u32 zero = 0;
	__u8 c;

	s = bpf_map_lookup_elem(&eg_dns_scratch, &zero);
	if (!s || w->off >= w->size)
		return 1;
	c = msg_byte(s, w->off);
	if ((c & 0xC0) == 0xC0) {
		w->off = (w->off + 2) & WALK_MASK;
		w->done = 1;
		return 1;
	}
	if (c == 0) {
		w->off = (w->off + 1) & WALK_MASK;
		w->done = 1;
		return 1;
	}
	if (c > 63)
		return 1;
	w->off = (w->off + c + 1) & WALK_MASK;
	return 0;
}

/* One record of the answer section: skip its owner name, learn an A or AAAA. */
static long one_answer(__u64 index, void *data)
{
	struct answers *a = data;
	struct skip_walk w = { .off = a->off, .size = a->size };
	struct dns_scratch *s;
	__u32 zero = 0, off, rdlen, ttl;
	__u16 type, class;

	s = bpf_map_lookup_elem(&eg_dns_scratch, &zero);
	if (!s)
		return 1;
	bpf_loop(NAME_LABELS_MAX, skip_step, &w, 0);
	if (!w.done)
		return 1;
	off = w.off;
	if (off + 10 > a->size)
		return 1;
	type = msg_u16(s, off);
	class = msg_u16(s, off + 2);
	ttl = (__u32)msg_u16(s, off + 4) << 16 | msg_u16(s, off + 6);
	rdlen = msg_u16(s, off + 8);
	off += 10;
	if (off + rdlen > a->size)
		return 1;
	if (class == DNS_CLASS_IN && ((type == DNS_TYPE_A && rdlen == 4) ||
				      (type == DNS_TYPE_AAAA && rdlen == 16)))
		learn(a, s, rdlen == 4 ? 4 : 6, off, ttl);
	a->off = (off + rdlen) & WALK_MASK;
	return 0;
}

/*
 * The fold entry of this answer's question (its key, built here, in the
 * scratch's fold; the entry copied to its folded, zeros if none), or 0 for
 * a question too long to have one. A global function, verified once on
 * its own, like answer_folded.
 */
__noinline int answer_fold_entry(struct __sk_buff *skb, __u32 msg_off, __u32 end,
				 __u64 cgroup_id)
{
	struct answer_fold *entry;
	struct dns_scratch *s;
	__u32 zero = 0, wire;

	s = bpf_map_lookup_elem(&eg_dns_scratch, &zero);
	if (!s || !skb)
		return 0;
	__builtin_memset(&s->folded, 0, sizeof(s->folded));
	if (end < DNS_HEADER + 3 || end > DNS_HEADER + FOLD_WIRE_MAX)
		return 0;
	barrier_var(end);
	end &= WALK_MASK;
	__builtin_memset(&s->fold, 0, sizeof(s->fold));
	s->fold.cgroup_id = cgroup_id;
	s->fold.netns = bpf_get_netns_cookie(skb);
	s->fold.qtype = msg_u16(s, end);
	wire = end - DNS_HEADER;
	/* 3 .. FOLD_WIRE_MAX already; the mask shows the verifier as much */
	wire = ((wire - 1) & 127) + 1;
	if (wire > FOLD_WIRE_MAX)
		return 0;
	if (bpf_skb_load_bytes(skb, msg_off + DNS_HEADER, s->fold.name, wire))
		return 0;
	entry = bpf_map_lookup_elem(&eg_dns_fold, &s->fold);
	if (entry)
		__builtin_memcpy(&s->folded, entry, sizeof(s->folded));
	return 1;
}

/*
 * Whether this answer (its key in the scratch's fold, its entry in folded)
 * is folded; if not, its window starts now, with what its question matched
 * (name_id) under policy_id. A global function, verified once on its own,
 * so the fold's branches do not multiply the states of the answer's walk
 * (they took its verification from 160 to 700 MiB of kernel memory,
 * charged to the agent's cgroup).
 */
__noinline int answer_folded(__u32 policy_id, __u64 name_id)
{
	struct answer_fold fresh = {};
	struct dns_scratch *s;
	__u64 window = fold_window_ns();
	__u32 zero = 0;

	s = bpf_map_lookup_elem(&eg_dns_scratch, &zero);
	if (!s)
		return 0;
	fresh.start_ns = bpf_ktime_get_boot_ns();
	if (window && !s->fresh && s->folded.policy_id == policy_id &&
	    s->folded.name_id == name_id && fresh.start_ns - s->folded.start_ns < window) {
		count(GUARD_CTR_DNS_FOLDED);
		return 1;
	}
	fresh.name_id = name_id;
	fresh.policy_id = policy_id;
	bpf_map_update_elem(&eg_dns_fold, &s->fold, &fresh, BPF_ANY);
	return 0;
}

/*
 * The name id of the answer's question under policy_id, into the scratch's
 * name_id: the one its fold entry kept for the same question under the same
 * generation, else the name read and matched. 0, or the flag that says why
 * there is none. A global function, verified once on its own: the choice
 * adds no states to the answer's walk.
 */
__noinline int answer_question(struct __sk_buff *skb, __u32 msg_off, __u32 end,
			       __u64 cgroup_id, __u32 policy_id)
{
	struct guard_name_value *value;
	struct dns_scratch *s;
	__u32 zero = 0, len;

	s = bpf_map_lookup_elem(&eg_dns_scratch, &zero);
	if (!s || !skb)
		return GUARD_DNS_UNPARSED;
	s->name_id = 0;
	s->keyed = answer_fold_entry(skb, msg_off, end, cgroup_id);
	if (s->keyed && s->folded.policy_id == policy_id && s->folded.name_id) {
		s->name_id = s->folded.name_id;
		return 0;
	}
	if (end < DNS_HEADER + 3 || end > DNS_HEADER + GUARD_DNS_NAME_MAX + 1)
		return GUARD_DNS_UNPARSED;
	len = read_question(s, end);
	if (!len)
		return GUARD_DNS_UNPARSED;
	value = match_name(s, policy_id, len);
	if (!value)
		return GUARD_DNS_NO_RULE;
	s->name_id = value->name_id;
	return 0;
}

/* What reading an answer needs of its workload and policy (read_answer). */
struct answer_from {
	__u64 cgroup_id;
	__u64 guarded_id;
	__u32 policy_id;
	__u32 ttl_min;
	__u32 ttl_max;
	__u32 flags;     /* why its sender is not believed (UNTRUSTED, LOOPED), or 0 */
};

/*
 * One answer message (pkt's msg_off and msg_size say which) read: its A
 * and AAAA records learned when its sender is believed and a rule names
 * its question's name, and an event unless folded. A global function,
 * verified once on its own: a TCP segment's answers are read in a loop.
 */
__noinline int read_answer(struct __sk_buff *skb, struct dns_packet *pkt,
			   struct answer_from *from)
{
	struct answers a = {};
	struct dns_scratch *s;
	__u32 zero = 0, size, end, count_an;
	__u8 flags, action = GUARD_ACTION_LOG;

	s = bpf_map_lookup_elem(&eg_dns_scratch, &zero);
	if (!s || !skb || !pkt || !from)
		return 0;
	reset_event(&s->ev);
	s->keyed = 0;
	flags = from->flags;
	size = load_message(skb, pkt, s);
	end = size && (msg_byte(s, 2) & 0x80) && msg_u16(s, 4) == 1 ? question_end(size) : 0;
	if (!end) {
		flags |= GUARD_DNS_UNPARSED;
	} else if (!flags) {
		flags |= answer_question(skb, pkt->msg_off, end, from->cgroup_id, from->policy_id);
		if (!flags) {
			s->fresh = 0;
			a.guarded_id = from->guarded_id;
			a.netns = bpf_get_netns_cookie(skb);
			a.name_id = s->name_id;
			a.now = bpf_ktime_get_boot_ns();
			a.off = end + 4; /* QTYPE, QCLASS */
			a.size = size;
			a.ttl_min = from->ttl_min;
			a.ttl_max = from->ttl_max;
			count_an = msg_u16(s, 6);
			if (count_an > GUARD_DNS_ANSWERS_MAX)
				count_an = GUARD_DNS_ANSWERS_MAX;
			bpf_loop(count_an, one_answer, &a, 0);
			flags |= a.flags;
			s->ev.name_id = a.name_id;
			s->ev.netns = a.netns;
			s->ev.ttl = a.ttl;
			s->ev.learned = a.learned;
			if (a.learned) {
				flags |= GUARD_DNS_LEARNED;
				action = GUARD_ACTION_ALLOW;
			}
		}
	}
	if (flags & (GUARD_DNS_UNTRUSTED | GUARD_DNS_LOOPED | GUARD_DNS_UNPARSED))
		count(GUARD_CTR_DNS_UNTRUSTED);
	/* only a clean answer for a name a rule names (what it learned, if
	 * anything, known already): anything odd is always sent */
	if (a.name_id && s->keyed && !(flags & ~GUARD_DNS_LEARNED) &&
	    pkt->msg_size <= GUARD_DNS_MSG_MAX && answer_folded(from->policy_id, a.name_id))
		return 0;
	s->ev.flags = flags;
	emit(s, skb, pkt, from->cgroup_id, from->policy_id, GUARD_DNS_ANSWER, action, size);
	return 0;
}

/*
 * Whether the packet is a DNS answer to a workload whose policy allows by
 * name: its packet (pkt) and what reading it needs (from). A global
 * function: its parse and lookups stay off the stack the answers' walk
 * adds to (512 bytes in all, for the program and every call it is in).
 */
__noinline int answer_source(struct __sk_buff *skb, struct dns_packet *pkt,
			     struct answer_from *from)
{
	struct guard_config *config;
	struct guarded_packet g = {};
	__u32 zero = 0;

	config = bpf_map_lookup_elem(&eg_config, &zero);
	if (!skb || !pkt || !from || !config || !config->dns_ports[0])
		return 0;
	if (!parse_dns_packet(skb, pkt, 0, config) || !names_policy(skb, &g))
		return 0;
	from->cgroup_id = g.cgroup_id;
	from->guarded_id = g.guarded_id;
	from->policy_id = g.policy_id;
	from->ttl_min = g.policy->dns_ttl_min;
	from->ttl_max = g.policy->dns_ttl_max;
	from->flags = 0;
	if (!trusted_resolver(g.policy_id, g.policy, pkt->family, pkt->remote_addr,
			      pkt->remote_port))
		from->flags = GUARD_DNS_UNTRUSTED;
	else if (skb->ingress_ifindex == LOOPBACK_IFINDEX &&
		 !is_loopback(pkt->family, pkt->remote_addr))
		from->flags = GUARD_DNS_LOOPED;
	else if (!g.policy->deny_raw_sockets)
		from->flags = GUARD_DNS_UNTRUSTED;
	return 1;
}

/*
 * An answer, before its socket gets it. Over TCP, every answer of the
 * segment (a resolver may write two in one, as glibc writes its A and AAAA
 * queries), TCP_MESSAGES at most, the last read as far as the segment goes
 * when it is cut: what is not read is not learned (a refused connect, never
 * a hole). The resolver is trusted, so its framing is not the workload's
 * to play with.
 */
SEC("cgroup_skb/ingress")
int guard_dns_answer(struct __sk_buff *skb)
{
	struct answer_from from = {};
	struct dns_packet pkt = {};
	__u32 at, total = skb->len, size;
	__be16 length;

	if (other_tcp(skb) || !answer_source(skb, &pkt, &from))
		return 1;
	if (pkt.proto != GUARD_PROTO_TCP) {
		read_answer(skb, &pkt, &from);
		return 1;
	}
	at = pkt.stream_off;
	for (int i = 0; i < TCP_MESSAGES; i++) {
		if (at + 2 > total || bpf_skb_load_bytes(skb, at, &length, sizeof(length)))
			break;
		size = bpf_ntohs(length);
		pkt.msg_off = at + 2;
		pkt.msg_size = at + 2 + size <= total ? size : total - at - 2;
		read_answer(skb, &pkt, &from);
		at += 2 + size;
		if (at >= total)
			break;
	}
	return 1;
}
