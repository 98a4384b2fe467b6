# SPDX-License-Identifier: Apache-2.0
"""Feature probes: which BPF mechanisms really load (and attach) on this host.

Each probe loads one program of bpf/probes.bpf.c on its own; mechanisms whose
failure only shows at attach time (kprobes on kernels built without them,
fentry without ftrace) are attached and detached at once. Nothing probed acts:
the programs return "allow"/no-op.
"""
from __future__ import annotations

import errno
import os
import platform
from dataclasses import asdict, dataclass, field

from guard.workloads.cgroups import CgroupError, cgroup2_mount
from guard.workloads.resolvconf import RESOLV_CONF, nameservers
from guard.agent.scheduling import can_leave_idle
from guard.kernel import libbpf
from guard.kernel.objects import ENFORCEMENT_LEVEL, BpfObject, LibbpfError, object_path

BTF_PATH = "/sys/kernel/btf/vmlinux"
#: The enforcement this version uses wherever the required mechanisms load.

# mechanism -> (program in probes.bpf.c, attach after load?)
PROBES = {
    "cgroup_sock_addr": ("probe_sock_addr", False),
    "cgroup_skb": ("probe_cgroup_skb", False),
    "cgroup_sock_create": ("probe_sock_create", False),
    "tracepoint": ("probe_tracepoint", True),
    "raw_tracepoint": ("probe_raw_tracepoint", True),
    "ring_buffer": ("probe_ringbuf", False),
    "bpf_send_signal": ("probe_send_signal", False),
    "sk_storage": ("probe_sk_storage_get", False),
    "sock_destroy": ("probe_sock_destroy", False),
    "bpf_lsm": ("probe_lsm", True),
    "fentry": ("probe_fentry", True),
    "kprobe": ("probe_kprobe", True),
}

#: What the agent cannot work without, and what each one is for.
REQUIRED = {
    "cgroup_sock_addr": "egress verdicts at connect/sendmsg",
    "cgroup_sock_create": "refusing raw and packet sockets",
    "raw_tracepoint": "exec events (sched_process_exec, attached without tracefs)",
    "ring_buffer": "events to userspace",
    "bpf_send_signal": "killing a program at exec",
    "cgroup_skb": "first-payload sampling and holding (detections)",
    "sk_storage": "per-flow state of the payload sampler",
}


@dataclass
class Mechanism:
    available: bool
    detail: str


@dataclass
class Report:
    kernel: str
    arch: str
    libbpf: str | None
    btf: bool
    cgroup2: str | None
    root: bool
    mechanisms: dict[str, Mechanism] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    enforcement: dict[str, object] = field(default_factory=dict)
    # what `run --scheduling background` gets here (guard/agent/scheduling.py)
    scheduling: dict[str, object] = field(default_factory=dict)
    # whom host targets trust when a policy lists no spec.dns.resolvers
    resolvers: dict[str, object] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.missing

    def as_dict(self) -> dict:
        data = asdict(self)
        data["ok"] = self.ok
        return data


# Why a probe usually fails, by mechanism and errno name, to make doctor's answer useful.
HINTS = {
    ("tracepoint", "ENOENT"): "tracefs is not mounted at /sys/kernel/tracing",
    ("kprobe", "ENOENT"): "this kernel has no kprobe support or cannot probe the function",
    ("bpf_lsm", "EPERM"): "BPF-LSM is not enabled ('bpf' missing from the lsm= boot list) "
                          "or the kernel refuses it",
    ("fentry", "EPERM"): "BPF trampolines are refused by this kernel",
}


def _probe(name: str, program: str, attach: bool) -> Mechanism:
    obj = None
    try:
        obj = BpfObject(object_path("probes"))
        for prog_name, prog in obj.programs.items():
            prog.set_autoload(prog_name == program)
        obj.load()
        if attach:
            obj.programs[program].attach().destroy()
        return Mechanism(True, "attaches" if attach else "loads")
    except LibbpfError as exc:
        detail = exc.strerror or str(exc)
        hint = HINTS.get((name, errno.errorcode.get(exc.errno, "")))
        return Mechanism(False, f"{detail} ({hint})" if hint else detail)
    finally:
        if obj is not None:
            obj.close()


#: What the sys_enter program adds to each system call of every task on the
#: host while attached, measured on the development VM (bench/run.py, the
#: syscall-tax row: a getppid() loop, 166 ns without it): the tracing slow
#: path plus the program.
SYSCALL_HOOK_COST_NS = 80


def _enforcement(mech: dict[str, Mechanism]) -> dict[str, object]:
    """Say which mechanism enforces what on this host, and what else exists."""
    stronger = [name for name in ("bpf_lsm", "fentry", "kprobe") if mech[name].available]
    return {
        "level": ENFORCEMENT_LEVEL,
        "egress": "cgroup sock_addr hooks (connect4/6, sendmsg4/6): the call fails with EPERM",
        "raw_sockets": "cgroup sock_create hook: socket(SOCK_RAW) fails with EPERM",
        "packet_sockets": "by default a sweep of guarded processes (twice a second: their "
                          "network namespace's /proc/net/packet, then their descriptors) "
                          "kills the owner of an AF_PACKET socket; frames it sent before "
                          "are not stopped (sock_create does not see packet sockets and "
                          "BPF-LSM is not used). `run --syscall-hook`: raw tracepoint "
                          "sys_enter + bpf_send_signal(SIGKILL), the caller dies before "
                          "socket() returns, at a price to every system call of every "
                          "process on the host (see syscall_hook_cost_ns)",
        "syscall_hook_cost_ns": SYSCALL_HOOK_COST_NS,
        "exec_kill": "raw tracepoint sched_process_exec + bpf_send_signal(SIGKILL), "
                     "before the new program runs",
        "exec_hold": "raw tracepoint sched_process_exec + bpf_send_signal(SIGSTOP): ssh, "
                     "tunnel tools, netcat and suspect interpreters wait for the agent's "
                     "verdict (SIGCONT, refused connects, or SIGKILL)",
        "payloads": "cgroup_skb egress: the first payload of every flow is sampled; a JSON "
                    "or POST payload with a mining anchor (or a Stratum V2 frame), a tunnel "
                    "service's open, and the first payload on a flow whose server spoke "
                    "first are dropped until the verdict and TCP retransmits them",
        "socket_reset": ("TCP iterator + bpf_sock_destroy: a blocked flow's socket is reset"
                         if mech["sock_destroy"].available else
                         "unavailable (bpf_sock_destroy needs Linux 6.5): a blocked flow's "
                         "packets are dropped but its socket is not reset"),
        "reverse_shell": "raw tracepoint sched_process_exec: a program that starts with an "
                         "inet socket on fd 0-2 (however it got there) is reported, or killed "
                         "before its first instruction when it is a shell or interpreter; "
                         "with `run --syscall-hook` also dup2/dup3 at the call",
        "names": "cgroup_skb ingress (dns.bpf.c): a trusted resolver's answer is read before "
                 "the socket gets it and the addresses of an allowed name are allowed for that "
                 "workload; cgroup_skb egress: a query for a name no rule allows is dropped at "
                 "the send; cgroup bind4/bind6: no guarded process binds a resolver port",
        "also_available": stronger,
        "note": ("BPF-LSM is present but this version does not use it yet"
                 if mech["bpf_lsm"].available else
                 "BPF-LSM is not loadable here; cgroup hooks and tracepoints are used"),
    }


def _scheduling() -> dict[str, object]:
    if can_leave_idle():
        return {"background": True, "detail": "the agent's loop runs under SCHED_IDLE while "
                                              "it has its cgroup to itself, SCHED_OTHER for "
                                              "answers and when behind"}
    return {"background": False, "detail": "no CAP_SYS_NICE: the agent's loop stays under "
                                           "SCHED_OTHER (it could not leave SCHED_IDLE again)"}


def probe() -> Report:
    report = Report(kernel=platform.release(), arch=platform.machine(), libbpf=None,
                    btf=os.path.exists(BTF_PATH), cgroup2=None, root=os.geteuid() == 0,
                    scheduling=_scheduling(),
                    resolvers={"source": RESOLV_CONF,
                               "trusted": [str(n) for n in nameservers()], "ports": [53],
                               "note": "trusted by policies with host targets that list no "
                                       "spec.dns.resolvers; none: no answer is believed"})
    try:
        report.cgroup2 = str(cgroup2_mount())
    except CgroupError as exc:
        report.missing.append(f"cgroup2: {exc}")
    if not report.btf:
        report.missing.append(f"btf: {BTF_PATH} is missing (kernel built without BTF)")
    try:
        report.libbpf = libbpf.version()
    except LibbpfError as exc:
        report.missing.append(f"libbpf: {exc.strerror}")
        return report
    if not report.root:
        report.missing.append("privileges: run as root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN)")
    for name, (program, attach) in PROBES.items():
        report.mechanisms[name] = _probe(name, program, attach)
    for name, purpose in REQUIRED.items():
        if not report.mechanisms[name].available:
            report.missing.append(f"{name} ({purpose}): {report.mechanisms[name].detail}")
    report.enforcement = _enforcement(report.mechanisms)
    return report
