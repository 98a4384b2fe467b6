# SPDX-License-Identifier: Apache-2.0
"""Records -> verdicts carried out -> events: one handler per record kind,
found through a table.

    exec      classify (the program may be held at exec), act, settle the hold
    connect   the kernel's verdict, explained (rule name, process, container)
    socket    likewise, for a refused raw or packet socket
    payload   a flow's first bytes: classify, then block, reset or allow the flow;
              the server's first reply (INBOUND) confirms what the client showed
    stdio     a socket on a process's stdin/stdout/stderr
    dns       a query refused or logged, an answer read (allow by name): what
              the kernel learned goes into the NameBook, so events name it
    cgroup    discovery: a container's cgroup appears or goes (the registry)
    escape    a guarded process moved out of its guarded cgroup: killed

The kernel has already enforced every verdict it reports (EPERM at connect or
socket, SIGKILL at exec); these handlers act on what only userspace can judge
(detections) and explain the rest. Kill always comes before a reset: a reset
wakes the sender, which must not get to run on.
"""
from __future__ import annotations

import dataclasses
import time
from collections import OrderedDict
from typing import Any, Callable

from guard.agent.feedback import Feedback
from guard.agent.generations import generation_of
from guard.detect.classify import RANK, Finding
from guard.detect.classify.dns import parse_message
from guard.detect.classify.payload_host import payload_host
from guard.detect.detector import Detection, audit, decide, strongest
from guard.kernel import abi
from guard.kernel.records import (CgroupRecord, ConnectRecord, DecodeError, DnsRecord,
                                  EscapeRecord, ExecRecord, PayloadRecord, SocketRecord,
                                  StdioSocketRecord, decode)
from guard.policy.compile import simulate
from guard.policy.model import Policy
from guard.report.events import describe, describe_detection, describe_escape
from guard.workloads.process import ProcessInfo

NO_PROCESS = ProcessInfo(exe=None, argv=[], argv_truncated=False)
FIRST_SAMPLES_KEPT = 4096   # first payloads waiting for the server's reply
SWEEP_S = 30.0              # how often expired learned addresses are deleted
NAMES_LISTED = 64           # names of a policy listed in the status
SSH_TYPES = frozenset({"ssh_reverse_tunnel", "ssh_outbound"})
#: why the kernel refused a first payload unjudged: (dialect, evidence.why)
UNJUDGED_WHY = {
    abi.Unjudged.WS_FILLER: ("websocket-filler",
                             "more WebSocket frames of filler (empty, blank or control "
                             "frames) than the kernel reads came before any message"),
    abi.Unjudged.URGENT: ("urgent-data",
                          "urgent data (MSG_OOB) in the first payload: the server does not "
                          "read the urgent byte as part of the stream, so the bytes the "
                          "kernel would judge are not the message the server reads"),
}


class RecordHandlers:
    """The agent's record path. `agent` gives the stages a handler needs:
    processes, detector, files_of, cgroup_names, the responder and the maps,
    the compiled generations, and emit/error/report_action_errors for events."""

    def __init__(self, agent, on_cgroup: Callable[[CgroupRecord], None],
                 reasons_dir: str | None = None):
        self._agent = agent
        # spec.feedback: reasons told to the sandbox after each refusal the agent reports
        self.feedback = Feedback(agent, reasons_dir)
        self._table: dict[type, Callable[[Any], None]] = {
            ExecRecord: self.on_exec,
            ConnectRecord: self.on_verdict,
            SocketRecord: self.on_verdict,
            PayloadRecord: self.on_payload,
            StdioSocketRecord: self.on_stdio_socket,
            DnsRecord: self.on_dns,
            EscapeRecord: self.on_escape,
            CgroupRecord: on_cgroup,
        }
        self._swept = time.monotonic()
        self.learned: dict[int, int] = {}   # guarded cgroup id -> addresses learned (last sweep)
        # cookie -> (first payload, port, reported (type, dialect) -> confidence rank)
        self.first_samples: OrderedDict[int, tuple[bytes, int, dict]] = OrderedDict()
        # cookie -> the host a flow's first payload named (TLS SNI, HTTP Host), or None:
        # the compute-abuse correlation weighs a flow that says where it goes lower
        self.first_hosts: OrderedDict[int, str | None] = OrderedDict()

    def handle(self, raw: bytes) -> None:
        agent = self._agent
        try:
            record = decode(raw)
        except DecodeError as exc:
            agent.stats.decode_errors += 1
            agent.error(f"undecodable event: {exc}")
            return
        self._table[type(record)](record)

    # -- the kernel's verdicts, explained ------------------------------------
    def on_exec(self, record: ExecRecord) -> None:
        process = self._agent.processes.record_exec(record)
        # a kill, and resuming or killing a held program, wait until the
        # events are out: the program is told why (spec.feedback) while it
        # still has its stderr, before it runs on
        after: list[Callable[[], None]] = []
        try:
            detections = self.judge_exec(record, process, after)
            self.on_verdict(record, process)
            for detection in detections:
                self.emit_detection(record.header, detection, process)
        finally:
            for act in after:
                act()

    def on_verdict(self, record, process=None, found_by: str | None = None) -> None:
        agent = self._agent
        header = record.header
        if process is None:
            process = agent.processes.lookup(header.pid)
        compiled = agent.compiled_policy(header.policy_id)
        rule_id = header.rule_id
        # RULE_NONE names no rule in any generation: the common case asks nothing
        rule = compiled.rule_name(rule_id) if compiled and rule_id != abi.RULE_NONE else None
        if rule_id == abi.RULE_DETECTION:
            rule = "detection"  # refused because a detection judged the process
        # an empty NameBook (no policy allows by name) names nothing
        name = (self.name_of(header.cgroup_id, record.ip)
                if isinstance(record, ConnectRecord) and agent.names else None)
        # positional: rule, cgroup_path, policy_name, process, generation
        event = describe(record, agent.clock, rule, agent.cgroup_names.name(header.cgroup_id),
                         compiled.name if compiled else None, process,
                         generation_of(header.policy_id), name=name)
        if found_by is not None:
            event["found"] = found_by   # not a hook's verdict: the agent found it (sweeps.py)
        agent.emit(event, header.policy_id)
        if type(record) is ConnectRecord and record.fold_ns:
            agent.folds.opened(record, event, header.policy_id)   # flushed when it ends

    # -- allow by name ---------------------------------------------------------
    def on_dns(self, record: DnsRecord) -> None:
        """A DNS query the policy refused or logged, or an answer the kernel
        read. The addresses of an answer it learned are named from now on
        (the question's name: the kernel learns them under it)."""
        agent = self._agent
        header = record.header
        parsed = parse_message(record.message)
        if (parsed is not None and record.direction == abi.DnsDirection.ANSWER
                and record.flags & abi.DnsFlags.LEARNED and parsed.name):
            agent.names.learn(header.cgroup_id, parsed.name, parsed.addresses,
                              record.ttl, time.monotonic())
        if (record.direction == abi.DnsDirection.QUERY and header.action == abi.Action.BLOCK
                and record.proto == abi.Proto.TCP):
            # the kernel dropped the query segment: reset the connection, or
            # the resolver would wait on it (a resolver reading TCP queries
            # one at a time would stall for everyone)
            agent.responder.reset_socket(record.cookie, header.pid, record.proto)
            agent.report_action_errors()
        compiled = agent.compiled_policy(header.policy_id)
        # an answer arrives in softirq: the header names no process
        process = agent.processes.lookup(header.pid) if header.pid else NO_PROCESS
        event = describe(
            record, agent.clock, rule=None,
            cgroup_path=agent.cgroup_names.name(header.cgroup_id),
            policy_name=compiled.name if compiled else None,
            generation=generation_of(header.policy_id),
            process=process, parsed=parsed)
        agent.emit(event, header.policy_id)

    def sweep(self) -> None:
        """Every SWEEP_S: the kernel forgets learned addresses whose names
        all expired (it stops believing them at once; this frees the room)."""
        now = time.monotonic()
        if now - self._swept < SWEEP_S:
            return
        self._swept = now
        self.learned = self._agent.maps.sweep_learned(time.clock_gettime_ns(time.CLOCK_BOOTTIME))

    def status(self, policy_ids) -> dict[str, Any]:
        """The record path's part of the agent's status."""
        return {"names": self.names_status(policy_ids), "feedback": self.feedback.status()}

    def names_status(self, policy_ids) -> list[dict[str, Any]]:
        """Per policy in force that allows by name: whom it trusts, how many
        names; and the addresses each guarded cgroup has learned."""
        out = []
        for policy_id in policy_ids:
            compiled = self._agent.compiled_policy(policy_id)
            names = getattr(compiled, "names", None)
            if names is None:
                continue
            slot = policy_id & 0xFF
            slots = self._agent.registry.slot_of
            out.append({"policy": compiled.name,
                        "resolvers": [str(network) for network in names.resolvers],
                        "resolver_ports": list(names.resolver_ports),
                        "names": [entry.pattern for entry in names.entries][:NAMES_LISTED],
                        "ttl": {"min": names.ttl_min, "max": names.ttl_max},
                        "learned": {str(cg): n for cg, n in sorted(self.learned.items())
                                    if slots.get(cg) == slot}})
        return out

    def judge_name(self, record: PayloadRecord) -> list[Detection]:
        """A held first payload to an address learned from a name: the host it
        names (TLS SNI, HTTP Host) must be one the policy allows on this port,
        else the destination gets what it would without the name (a CIDR
        rule, or defaultAction); a payload naming no host is refused only
        under spec.dns.unnamed: block."""
        header = record.header
        compiled = self._agent.compiled_policy(header.policy_id)
        names = getattr(compiled, "names", None)
        if names is None:
            return []   # an adopted generation: its tables are the kernel's alone
        found = payload_host(record.sample)
        source, host = found if found is not None else ("unnamed", None)
        if host is None:
            if not names.block_unnamed:
                return []
            action = "block"
        else:
            # judged as enforce mode would (an audit policy's tables say WOULD_)
            verdict = names.verdict(host, record.port, int(record.proto))
            if verdict is not None and verdict[0].enforced != abi.Action.BLOCK:
                return []
            fallback, _rule = simulate(compiled, record.ip, record.port, record.proto)
            fallback = fallback.enforced
            if verdict is None and fallback == abi.Action.ALLOW and _rule:
                return []   # a CIDR rule allows the address whatever it is called
            action = "block" if verdict is not None or fallback == abi.Action.BLOCK else "log"
        learned = self.name_of(header.cgroup_id, record.ip)
        return [audit(Detection(Finding(type="name_mismatch", confidence="high", dialect=source,
                                        evidence={"host": host, "learned": learned}), action),
                      compiled.policy)]

    def name_of(self, cgroup_id: int, ip: str) -> str | None:
        return self._agent.names.name_of(cgroup_id, ip, time.monotonic())

    def named(self, header, dst: dict[str, Any]) -> dict[str, Any]:
        """dst with the name its address was learned from, when there is one."""
        name = self.name_of(header.cgroup_id, dst["ip"])
        return dst if name is None else {**dst, "name": name}

    # -- detections ------------------------------------------------------------
    def policy_of(self, policy_id: int) -> Policy | None:
        # generations adopted from a previous agent are known by name only
        return getattr(self._agent.compiled_policy(policy_id), "policy", None)

    def emit_detection(self, header, detection: Detection, process,
                       dst: dict[str, Any] | None = None) -> None:
        agent = self._agent
        compiled = agent.compiled_policy(header.policy_id)
        if dst is not None and "ip" in dst:
            dst = self.named(header, dst)
        event = describe_detection(
            header, agent.clock, detection.as_dict(), detection.action,
            cgroup_path=agent.cgroup_names.name(header.cgroup_id),
            policy_name=compiled.name if compiled else None,
            generation=generation_of(header.policy_id), process=process, dst=dst,
            would=detection.would)
        agent.count_detection(detection.finding.type, detection.action)
        agent.emit(event, header.policy_id)

    def judge_exec(self, record: ExecRecord, process,
                   after: list[Callable[[], None]]) -> list[Detection]:
        """Classify an exec; act before a held program runs its first instruction.
        Whatever happens on the way, a held program is settled: resumed, or
        killed when the agent could not judge it (the kernel held it because
        an enforcing detection wanted a verdict: no verdict fails closed).
        The kill and the settling go to `after`, which the caller runs
        whatever happens."""
        agent = self._agent
        header = record.header
        detections: list[Detection] = []
        action: str | None = "kill"     # until judged
        cgroup_path = None
        try:
            policy = self.policy_of(header.policy_id)
            cgroup_path = agent.cgroup_names.name(header.cgroup_id)
            if policy is not None and header.action != abi.Action.KILL:
                # the classifiers are isolated from each other (Detector)
                detections = decide(agent.detector.exec_findings(
                    policy, record.argv, record.exe or record.filename,
                    agent.files_of(header.pid)), policy)
            process.detections = {d.finding.type for d in detections}
            action = strongest(detections)
            if action == "block":
                agent.responder.block_process(header.pid, header.start_ns)
            elif action == "kill" and not record.held:
                after.append(lambda: agent.responder.kill(header.pid, cgroup_path))
        finally:
            if record.held:
                after.append(lambda: self.settle_held(header.pid, action, cgroup_path))
        return detections

    def settle_held(self, pid: int, action: str | None, cgroup_path: str | None) -> None:
        """Kill or resume a program the kernel stopped at exec. Deleting its
        hold is the claim: when the hold watchdog got there first (the loop
        was late), only a kill is still worth carrying out."""
        agent = self._agent
        claimed = agent.maps.release_held(pid)
        if action == "kill":
            agent.responder.kill(pid, cgroup_path)
        elif claimed:
            agent.responder.resume(pid, cgroup_path)

    # -- flows -------------------------------------------------------------------
    def on_payload(self, record: PayloadRecord) -> None:
        if record.sample_kind in (abi.SampleKind.INBOUND, abi.SampleKind.SERVER_FIRST):
            self.on_inbound(record)
            return
        if record.flags & abi.PayloadFlags.UNJUDGED:
            self.on_unjudged(record)
            return
        agent = self._agent
        header = record.header
        agent.stats.samples += 1
        policy = self.policy_of(header.policy_id)
        process = agent.processes.lookup(header.pid)
        detections: list[Detection] = []
        if policy is not None:
            detections = decide(agent.detector.payload_findings(
                policy, record, miner_traits="miner_exec" in process.detections,
                ssh_judged=bool(process.detections & SSH_TYPES), argv=process.argv,
                files_of=agent.files_of), policy)
        if record.flags & abi.PayloadFlags.NAMED:
            detections += self.judge_name(record)
        action = strongest(detections)
        cgroup_path = agent.cgroup_names.name(header.cgroup_id)
        # kill first: a reset wakes the sender, which must not get to run on
        if action == "kill":
            agent.responder.kill(header.pid, cgroup_path)
        if record.sample_kind in (abi.SampleKind.FIRST, abi.SampleKind.PROXY):
            if action in ("block", "kill"):
                agent.responder.block_flow(record.cookie, header.pid, record.proto)
            elif record.sample_kind == abi.SampleKind.FIRST:
                agent.responder.allow_flow(record.cookie)
                self.remember_first(record, detections)
                named = payload_host(record.sample)
                self.first_hosts[record.cookie] = named[1] if named else None
                while len(self.first_hosts) > FIRST_SAMPLES_KEPT:
                    self.first_hosts.popitem(last=False)
        dst = {"ip": record.ip, "port": record.port, "proto": record.proto.label}
        for detection in detections:
            self.emit_detection(header, detection, process, dst=dst)
        agent.report_action_errors()

    def on_unjudged(self, record: PayloadRecord) -> None:
        """A flow whose first payload the kernel refused unjudged
        (flow.bpf.c), because what it would judge is not what the server
        reads: more WebSocket frames of filler than it reads came before any
        message, or the payload carries urgent data. Its socket is reset
        (the sender must not wait on a flow that goes nowhere) and the
        refusal reported, with why, as a detection of type unjudged_flow."""
        agent = self._agent
        header = record.header
        agent.responder.block_flow(record.cookie, header.pid, record.proto)
        dialect, why = UNJUDGED_WHY.get(record.unjudged, UNJUDGED_WHY[abi.Unjudged.WS_FILLER])
        finding = Finding(type="unjudged_flow", confidence="medium", dialect=dialect,
                          evidence={"why": why, "payload_size": record.payload_size})
        dst = {"ip": record.ip, "port": record.port, "proto": record.proto.label}
        self.emit_detection(header, Detection(finding, "block"),
                            agent.processes.lookup(header.pid), dst=dst)
        agent.report_action_errors()

    def on_inbound(self, record: PayloadRecord) -> None:
        """The server's first reply on a flow that was let through: report
        what it confirms beyond what the client's bytes showed, and act. Or
        the server's first bytes before the sandbox sent any (SERVER_FIRST)."""
        agent = self._agent
        header = record.header
        policy = self.policy_of(header.policy_id)
        process = agent.processes.lookup(header.pid)
        if record.sample_kind == abi.SampleKind.SERVER_FIRST:
            # the far end spoke first, before the sandbox sent anything
            if policy is None:
                return
            findings, reported = agent.detector.server_first_findings(
                policy, record.sample, record.port), {}
        else:
            first = self.first_samples.pop(record.cookie, None)
            if first is None or policy is None:
                return
            sample, port, reported = first
            findings = agent.detector.inbound_findings(
                policy, sample, port, record.sample,
                miner_traits="miner_exec" in process.detections)
        news = [f for f in findings
                if RANK[f.confidence] > reported.get((f.type, f.dialect), -1)]
        detections = decide(news, policy)
        action = strongest(detections)
        cgroup_path = agent.cgroup_names.name(header.cgroup_id)
        if action == "kill":
            agent.responder.kill(header.pid, cgroup_path)
        if action in ("block", "kill"):
            agent.responder.reset_socket(record.cookie, header.pid, record.proto)
        dst = {"ip": record.ip, "port": record.port, "proto": record.proto.label}
        for detection in detections:
            self.emit_detection(header, detection, process, dst=dst)
        agent.report_action_errors()

    def remember_first(self, record: PayloadRecord, detections: list[Detection]) -> None:
        """A first payload let through, kept until the server's reply comes."""
        reported = {(d.finding.type, d.finding.dialect): RANK[d.finding.confidence]
                    for d in detections}
        self.first_samples[record.cookie] = (record.sample, record.port, reported)
        while len(self.first_samples) > FIRST_SAMPLES_KEPT:
            self.first_samples.popitem(last=False)

    # -- sockets on stdio -----------------------------------------------------------
    def on_stdio_socket(self, record: StdioSocketRecord) -> None:
        agent = self._agent
        header = record.header
        policy = self.policy_of(header.policy_id)
        process = agent.processes.lookup(header.pid)
        if policy is None:
            return
        findings = agent.detector.stdio_socket_findings(record, process.argv)
        if record.oldfd == record.newfd:
            # found at exec (exec.bpf.c): the program started with the socket on the fd
            findings = [dataclasses.replace(f, dialect="stdio-socket-at-exec") for f in findings]
        detections = decide(findings, policy)
        action = strongest(detections)
        # kill was done by the kernel at the dup, or at exec for a shell,
        # interpreter or relay; any other program found at exec is killed
        # here. Block ends the socket and refuses the process's further
        # connects. A UDP socket cannot be reset and sends without connect():
        # the process is killed instead.
        if action == "kill" and header.action != abi.Action.KILL:
            agent.responder.kill(header.pid, agent.cgroup_names.name(header.cgroup_id))
        if record.proto == abi.Proto.UDP:
            # a UDP socket cannot be reset: audit says what enforce would do
            detections = [Detection(d.finding, d.action, "kill") if d.would == "block" else d
                          for d in detections]
        if action == "block":
            if record.proto == abi.Proto.UDP:
                agent.responder.kill(header.pid, agent.cgroup_names.name(header.cgroup_id))
                detections = [Detection(d.finding, "kill") for d in detections]
            elif not agent.responder.reset_socket(record.cookie, header.pid):
                agent.responder.errors.append(
                    f"socket of pid {header.pid} on fd {record.newfd} could not be reset")
            agent.responder.block_process(header.pid, header.start_ns)
        dst = {"ip": record.ip, "port": record.port}
        for detection in detections:
            self.emit_detection(header, detection, process, dst=dst)
        agent.report_action_errors()

    # -- a guarded process that left its cgroup -------------------------------------
    def on_escape(self, record: EscapeRecord) -> None:
        """The kernel killed it at the move (escape.bpf.c), before it ran
        again; when the kernel could not signal it, it is killed here, in
        the cgroup it went to. Audit mode (WOULD_KILL) only reports."""
        agent = self._agent
        header = record.header
        dst_path = record.dst_path or agent.cgroup_names.name(record.dst_cgroup_id)
        killed_by = None
        if header.action == abi.Action.KILL:
            killed_by = "kernel"
            if record.flags & abi.EscapeFlags.UNSIGNALLED:
                killed_by = "agent" if agent.responder.kill(header.pid, dst_path) else None
        compiled = agent.compiled_policy(header.policy_id)
        event = describe_escape(
            record, agent.clock, cgroup_path=agent.cgroup_names.name(header.cgroup_id),
            dst_path=dst_path, policy_name=compiled.name if compiled else None,
            generation=generation_of(header.policy_id),
            process=agent.processes.lookup(header.pid), killed_by=killed_by)
        agent.emit(event, header.policy_id)
        agent.report_action_errors()
