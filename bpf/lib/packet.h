/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * packet.h: where a packet's transport payload starts, for the cgroup_skb
 * programs (flow.bpf.c, dns.bpf.c): IPv4, IPv6 through its extension
 * headers, TCP and UDP. One parser, so no program reads a packet another
 * cannot. No map of its own; parse_packet is a global function (the
 * verifier checks it once per object).
 */
#ifndef GUARD_LIB_PACKET_H
#define GUARD_LIB_PACKET_H

#include "common.h"

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define DNS_PORT 53
/* IPv6 extension headers followed to the transport header (RFC 8200 4) */
#define NEXTHDR_HOP 0
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_AUTH 51
#define NEXTHDR_DEST 60
#define IPV6_EXT_MAX 8

struct packet {
	__u32 payload_off;
	__u32 payload_size;
	__u16 remote_port; /* host byte order */
	__u8 family;
	__u8 proto;
	__u8 syn_only;     /* TCP SYN without ACK: this end opens the connection */
	__u8 hidden;       /* IPv6 extension headers past IPV6_EXT_MAX (or a fragment) */
	__u8 urgent;       /* TCP URG: a byte of it may be out of band, not in the stream */
	__u32 remote_addr[4];
};

/*
 * The transport header after an IPv6 header's extension headers: hop-by-hop,
 * routing, destination options and AH, IPV6_EXT_MAX of them at most. 0 when
 * there are more, a fragment header (a locally sent TCP segment is never
 * fragmented) or a header cut short.
 */
static __always_inline int ipv6_transport(struct __sk_buff *skb, __u8 *proto, __u32 *off)
{
	__u8 next = *proto, ext[2];
	__u32 at = *off;

	for (int i = 0; i < IPV6_EXT_MAX; i++) {
		if (next != NEXTHDR_HOP && next != NEXTHDR_ROUTING && next != NEXTHDR_DEST &&
		    next != NEXTHDR_AUTH)
			break;
		if (bpf_skb_load_bytes(skb, at, ext, sizeof(ext)))
			return 0;
		at += next == NEXTHDR_AUTH ? ((__u32)ext[1] + 2) * 4 : ((__u32)ext[1] + 1) * 8;
		next = ext[0];
	}
	if (next == NEXTHDR_HOP || next == NEXTHDR_ROUTING || next == NEXTHDR_DEST ||
	    next == NEXTHDR_AUTH || next == NEXTHDR_FRAGMENT)
		return 0;
	*proto = next;
	*off = at;
	return 1;
}

/*
 * Where the transport payload starts and how long it is. skb->data starts at
 * the network header here. egress: the remote end is the destination;
 * ingress: the source. 0: not TCP or UDP, or not readable (pkt->hidden: its
 * IPv6 extension headers go on past IPV6_EXT_MAX; flow_begin refuses such a
 * flow under a holding policy).
 */
__noinline int parse_packet(struct __sk_buff *skb, struct packet *pkt, int egress)
{
	__u32 l4_off;
	__u8 l4_proto;

	if (!pkt)
		return 0;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)))
			return 0;
		l4_proto = ip.protocol;
		l4_off = ip.ihl * 4;
		pkt->family = 4;
		pkt->remote_addr[0] = egress ? ip.daddr : ip.saddr;
		pkt->remote_addr[1] = pkt->remote_addr[2] = pkt->remote_addr[3] = 0;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)))
			return 0;
		l4_proto = ip6.nexthdr;
		l4_off = sizeof(ip6);
		pkt->family = 6;
		__builtin_memcpy(pkt->remote_addr, egress ? &ip6.daddr : &ip6.saddr, 16);
		if (!ipv6_transport(skb, &l4_proto, &l4_off)) {
			pkt->hidden = 1;
			return 0;
		}
	} else {
		return 0;
	}

	if (l4_proto == IPPROTO_TCP) {
		struct tcphdr tcp;

		if (bpf_skb_load_bytes(skb, l4_off, &tcp, sizeof(tcp)))
			return 0;
		pkt->proto = GUARD_PROTO_TCP;
		pkt->syn_only = tcp.syn && !tcp.ack;
		pkt->urgent = tcp.urg;
		pkt->remote_port = bpf_ntohs(egress ? tcp.dest : tcp.source);
		pkt->payload_off = l4_off + tcp.doff * 4;
	} else if (l4_proto == IPPROTO_UDP) {
		struct udphdr udp;

		if (bpf_skb_load_bytes(skb, l4_off, &udp, sizeof(udp)))
			return 0;
		pkt->proto = GUARD_PROTO_UDP;
		pkt->remote_port = bpf_ntohs(egress ? udp.dest : udp.source);
		pkt->payload_off = l4_off + sizeof(udp);
	} else {
		return 0;
	}
	pkt->payload_size = skb->len > pkt->payload_off ? skb->len - pkt->payload_off : 0;
	return 1;
}

#endif /* GUARD_LIB_PACKET_H */
