/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * common.h: what every egress-guard program needs and no map: the kernel
 * types, the libbpf helper declarations, the kernel/user ABI and a few
 * constants. It declares no map on purpose: a map declared in a header lands
 * in every object that includes it, so each map lives in the one header of
 * its concern and an object carries only the maps its programs use.
 *
 * Who owns which map (key -> value comments beside each declaration), and
 * which objects include it:
 *
 *   events.h        eg_events, eg_counters,      all but destroy
 *                   eg_workload_loss
 *   config.h        eg_config                    all but destroy
 *   guarded.h       eg_guarded, eg_slots         dns, exec, flow, sock_addr,
 *                                                sock_create, socket_syscall
 *   policy.h        eg_policies                  dns, flow, sock_addr,
 *                                                sock_create, socket_syscall
 *   proc_verdict.h  eg_proc_verdicts             exec, sock_addr
 *   anchors.h       eg_anchors                   exec, flow
 *   egress.h        eg_cidr4, eg_host4,          sock_addr
 *                   eg_cidr6, eg_port_rules,
 *                   eg_dns_rules
 *   names.h         eg_dns_res4, eg_dns_res6     dns, sock_addr
 *   learned.h       eg_dns_learned               dns, flow, sock_addr
 *   exec.h          eg_exec_rules,               exec
 *                   eg_held_execs, eg_exec_scratch
 *   flow.h          eg_flow_state,               flow
 *                   eg_flow_verdicts
 *   samples.h       eg_sample_scratch            flow
 *   opening.h       eg_flow_opening              flow
 *   udp_fold.h      eg_udp_fold,                 flow
 *                   eg_udp_fold_scratch
 *   dns_wire.h      eg_dns_names, eg_dns_scratch dns
 *   raw_sockets.h   (no map: the raw-socket      sock_create,
 *                   verdict)                     socket_syscall
 *   packet.h        (no map: where a packet's    dns, flow
 *                   payload starts)
 *   stdio_socket.h  (no map: the stdio event)    exec, socket_syscall
 *   task_marks.h    eg_task_marks                exec, escape
 *
 * A few maps of one program's own mechanics stay in its .bpf.c beside their
 * only reader (eg_destroy, eg_sendmsg_seen, eg_udp_seen, eg_opening_scratch,
 * eg_frame_scratch, eg_dns_fold, eg_dns_allowed).
 * Userspace shares every eg_* map between the objects by name
 * (guard/kernel/objects.py: the first object that declares a map creates it,
 * later ones reuse its fd), so an object without a map simply takes no part
 * in sharing it.
 *
 * Each .bpf.c defines its own LICENSE, as libbpf's examples do.
 */
#ifndef GUARD_LIB_COMMON_H
#define GUARD_LIB_COMMON_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "guard_abi.h"

/* Socket constants that vmlinux.h cannot carry (they are macros, not types). */
#define AF_INET 2
#define AF_INET6 10
#define AF_PACKET 17
#define SIGKILL 9
#define SIGSTOP 19

#endif /* GUARD_LIB_COMMON_H */
