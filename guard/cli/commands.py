# SPDX-License-Identifier: Apache-2.0
"""The egress-guard command line: parse, call, print. No logic lives here."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import click
import orjson

from guard import __version__
from guard.control.client import DEFAULT_SOCKET
from guard.workloads.runtime import DEFAULT_SOCKETS

DEFAULT_PIN_DIR = "/sys/fs/bpf/egress-guard"
DEFAULT_STATE_DIR = "/run/egress-guard"
from guard.cli.exitcodes import ExitCode
from guard.policy.model import PolicyError
from guard.policy.load import default_policy, load_policies


def fail(message: str, code: ExitCode) -> None:
    """One clear line on stderr and a documented exit code."""
    click.echo(f"egress-guard: error: {message}", err=True)
    sys.exit(int(code))


def _load_policy_or_fail(path: str | None):
    """The policies of a file (or the embedded default) and their compiled
    forms, or every problem of the file and exit 1."""
    from guard.policy.compile import compile_fail_closed, compile_policy
    from guard.policy.names import resolver_targets
    from guard.workloads.resolvconf import nameservers

    try:
        policies = load_policies(path) if path else (default_policy(),)
        default = resolver_targets(nameservers()) if any(p.uses_names for p in policies) else ()
        compiled = [compile_policy(p, default_resolvers=default) for p in policies]
        for p in policies:
            compile_fail_closed(p, default_resolvers=default)
        return policies, compiled
    except PolicyError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        fail(f"invalid policy ({len(exc.problems)} problem(s))", ExitCode.FAILURE)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="egress-guard")
def main() -> None:
    """egress-guard: a kernel-level egress guard for AI-agent sandboxes.

    It attaches eBPF programs to the cgroups of agent containers, enforces an
    egress policy in the kernel, and reports every exec and every outbound
    connection of those containers as JSON lines.
    """


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
def doctor(as_json: bool) -> None:
    """Check this host: kernel, BTF, cgroup2, and which BPF mechanisms load.

    Exit 0 when everything the agent needs is present, 1 otherwise.
    """
    from guard.cli import doctor as features

    report = features.probe()
    if as_json:
        click.echo(orjson.dumps(report.as_dict()).decode())
    else:
        click.echo(f"kernel         {report.kernel} ({report.arch})")
        click.echo(f"libbpf         {report.libbpf or 'not found'}")
        click.echo(f"BTF            {'yes' if report.btf else 'no'} ({features.BTF_PATH})")
        click.echo(f"cgroup2 mount  {report.cgroup2 or 'not found'}")
        click.echo(f"root           {'yes' if report.root else 'no'}")
        click.echo("mechanisms:")
        for name, mech in report.mechanisms.items():
            need = " (required)" if name in features.REQUIRED else ""
            mark = "ok  " if mech.available else "no  "
            click.echo(f"  {mark}{name:<20} {mech.detail}{need}")
        if report.enforcement:
            click.echo(f"enforcement    {report.enforcement['level']}")
            for key in ("egress", "raw_sockets", "packet_sockets", "exec_kill", "exec_hold",
                        "payloads", "socket_reset", "reverse_shell", "names", "note"):
                click.echo(f"  {key}: {report.enforcement[key]}")
        mode = "background" if report.scheduling["background"] else "normal"
        click.echo(f"scheduling     {mode}: {report.scheduling['detail']}")
        if report.resolvers:
            trusted = ", ".join(report.resolvers["trusted"]) or "none"
            click.echo(f"resolvers      {trusted} (port 53, from {report.resolvers['source']}):"
                       f" {report.resolvers['note']}")
        for reason in report.missing:
            click.echo(f"missing: {reason}", err=True)
        click.echo("ready: yes" if report.ok else "ready: no")
    sys.exit(int(ExitCode.OK if report.ok else ExitCode.FAILURE))


@main.command()
@click.option("--policy", "policy_path", type=click.Path(dir_okay=False),
              help="Policy file (YAML). Default: the embedded default policy.")
@click.option("--cgroup", "cgroups", multiple=True, metavar="PATH",
              help="cgroup v2 to guard: absolute, or relative to the cgroup2 mount. "
                   "Repeatable. Without it: every container on this host, from the moment "
                   "it starts (podman, Docker, containerd, CRI-O).")
@click.option("--events", "events_path", type=click.Path(dir_okay=False),
              help="Append events to FILE instead of stdout.")
@click.option("--ring-size", type=int, default=4 << 20, show_default=True,
              help="Ring buffer bytes (a power of two, at least 4096).")
@click.option("--control-socket", default=DEFAULT_SOCKET, show_default=True, metavar="PATH",
              help="Unix socket for `policy reload` and `status` (root only).")
@click.option("--pin", is_flag=True,
              help="Pin programs, links and maps so enforcement outlives the agent; "
                   "a later agent adopts them. Remove with `egress-guard uninstall`.")
@click.option("--pin-dir", default=DEFAULT_PIN_DIR, show_default=True, metavar="DIR",
              help="bpffs directory for --pin.")
@click.option("--state-dir", default=DEFAULT_STATE_DIR, show_default=True, metavar="DIR",
              help="Where --pin keeps the names of pinned policy generations.")
@click.option("--metrics", "metrics_address", metavar="HOST:PORT",
              help="Serve Prometheus /metrics, /healthz and /readyz on HOST:PORT.")
@click.option("--runtime-socket", "runtime_sockets", multiple=True, metavar="PATH",
              help="Docker-compatible API socket for container names and images "
                   "(podman system service, dockerd). Repeatable. Default: "
                   "/run/podman/podman.sock and /var/run/docker.sock where present.")
@click.option("--unselected", type=click.Choice(["default", "unguarded"]), default="default",
              show_default=True,
              help="Containers no policy selects: the embedded default policy, or unguarded. "
                   "A policy without a selector in the file takes them in any case.")
@click.option("--kube-api", metavar="URL",
              help="Kubernetes API for pod names, namespaces and labels of this node's pods. "
                   "Default inside a pod: the in-cluster API with the service account.")
@click.option("--node-name", envvar="NODE_NAME", metavar="NAME",
              help="This node's name for the pod watch (default: $NODE_NAME, else the hostname).")
@click.option("--hold-timeout-ms", type=click.IntRange(0, 60000), default=5000,
              show_default=True,
              help="How long the kernel holds a suspect first payload, or a program stopped "
                   "at exec, for the agent's verdict before letting it go. 0: hold nothing "
                   "(detections then only report and act after the fact).")
@click.option("--scheduling", type=click.Choice(["background", "normal"]), default="background",
              show_default=True,
              help="background: the agent handles events under SCHED_IDLE, so a workload that "
                   "wakes up gets the CPU at once (enforcement is in the kernel and does not "
                   "wait); it competes normally while it answers a reload or status and "
                   "whenever it falls behind. normal: SCHED_OTHER throughout.")
@click.option("--supervise", is_flag=True,
              help="Run the agent as a child process and start it again whenever it crashes "
                   "or is killed (with --pin, enforcement holds across the gap and the new "
                   "agent adopts it). Each restart is an event.")
@click.option("--syscall-hook", is_flag=True,
              help="Also attach the sys_enter raw tracepoint: socket(AF_PACKET) in a guarded "
                   "cgroup is killed at the call and dup2/dup3 of a connected socket onto fd "
                   "0-2 at the call. Every system call of every process on the host then pays "
                   "for it (about 80 ns here: docs/performance.md). Without it packet sockets "
                   "are found by a sweep (twice a second) and their owners killed, and a "
                   "socket on stdio is found when the process execs.")
@click.option("--compute-sample-s", type=click.FloatRange(0, 60), default=5.0, show_default=True,
              help="How often each guarded workload's CPU is sampled, and while it is busy "
                   "(half a core or more) its TCP flows' byte counters: a workload that keeps "
                   "its CPU busy while a long-lived flow carries small periodic uploads is "
                   "mining (a `stratum` finding, dialect compute-correlation). 0: off.")
@click.option("--container-parent", "container_parents", multiple=True, metavar="PATH",
              help="A cgroup where the container runtime makes its containers' cgroups "
                   "(/kubepods.slice, /libpod_parent, /machine.slice), or `auto`: those of "
                   "/kubepods.slice, /kubepods, /libpod_parent and /docker that exist. Repeatable. "
                   "Its socket hooks judge every container made below it by the policy that "
                   "selects PATH, from its first connect: before discovery takes the container "
                   "over, and (with --pin) while no agent runs. Not a cgroup that also holds "
                   "host services (/system.slice). docs/deployment.md.")
@click.option("--fold-window-ms", type=click.IntRange(0, 60000), default=1000, show_default=True,
              help="Logged connects (defaultAction: log, or a log rule) that one process "
                   "repeats to one destination within this window are counted in the kernel "
                   "and reported as one more connect event with \"repeats\" when the window "
                   "ends, not one event each. Refusals are always one event each. 0: every "
                   "connect is an event.")
@click.option("--format", "output_format", type=click.Choice(["json", "text"]), default="json",
              show_default=True,
              help="json: JSON lines, the contract (docs/events.md). text: one line per event "
                   "for people, as `egress-guard events` shows them (coloured on a terminal).")
@click.option("--reasons-dir", metavar="DIR",
              help="Where workloads whose policy sets spec.feedback.file get their reasons "
                   "file: DIR/WORKLOAD/reasons.jsonl, for a read-only bind mount into the "
                   "container (docs/deployment.md). Default: STATE_DIR/reasons.")
def run(policy_path: str | None, cgroups: tuple[str, ...], events_path: str | None,
        ring_size: int, control_socket: str, pin: bool, pin_dir: str, state_dir: str,
        metrics_address: str | None, runtime_sockets: tuple[str, ...], unselected: str,
        kube_api: str | None, node_name: str | None, hold_timeout_ms: int,
        scheduling: str, supervise: bool, syscall_hook: bool, compute_sample_s: float,
        container_parents: tuple[str, ...], fold_window_ms: int, output_format: str,
        reasons_dir: str | None) -> None:
    """Guard the given cgroups and write events as JSON lines.

    The first line, written once every hook is attached, is
    {"kind": "agent", "state": "ready", ...}. SIGINT or SIGTERM detaches
    everything and exits 0 (with --pin, enforcement stays for the next agent).
    SIGHUP, `egress-guard policy reload`, or a change of the policy file
    switch to the new policy without a gap.
    """
    from guard.agent.core import Agent, AgentCrashed, AgentError, start_and_run_until_signalled
    from guard.report.events import EventWriter

    if supervise:
        from guard.cli.supervise import Supervisor, supervise_agent
        args = [a for a in sys.argv[1:] if a != "--supervise"]
        if output_format == "text":    # the supervisor's own events as text too
            sys.exit(Supervisor([sys.executable, "-m", "guard", *args],
                                _event_stream(events_path, output_format)).run())
        sys.exit(supervise_agent(args, events_path))
    if ring_size < 4096 or ring_size & (ring_size - 1):
        fail(f"--ring-size {ring_size}: must be a power of two of at least 4096", ExitCode.USAGE)
    metrics = _host_port(metrics_address) if metrics_address else None
    policies, _compiled = _load_policy_or_fail(policy_path)
    stream = _event_stream(events_path, output_format)
    agent = Agent(policies, list(cgroups), EventWriter(stream), ring_size=ring_size,
                  policy_path=policy_path, control_socket=control_socket,
                  pin_dir=pin_dir if pin else None, state_dir=state_dir,
                  metrics_address=metrics,
                  runtime_sockets=runtime_sockets or DEFAULT_SOCKETS,
                  kube_api=_kube_api(kube_api, node_name), unselected=unselected,
                  hold_timeout_ms=hold_timeout_ms, scheduling=scheduling,
                  syscall_hook=syscall_hook, compute_sample_s=compute_sample_s,
                  container_parents=container_parents,
                  fold_window_ms=fold_window_ms,
                  reasons_dir=reasons_dir or os.path.join(state_dir, "reasons"))
    try:
        start_and_run_until_signalled(agent)
    except AgentError as exc:
        code = ExitCode.PERMISSION if "needs root" in str(exc) else ExitCode.RUNTIME
        fail(str(exc), code)
    except AgentCrashed as exc:
        fail(f"the agent crashed: {exc}", ExitCode.CRASHED)
    except Exception as exc:  # noqa: BLE001 - a bug outside the loop: say so, then exit
        fail(f"the agent crashed: {type(exc).__name__}: {exc}", ExitCode.CRASHED)
    sys.exit(int(ExitCode.OK))


def _event_stream(events_path: str | None, output_format: str):
    """Where run's EventWriter writes: stdout or FILE, through the text view
    for --format text."""
    try:
        stream = open(events_path, "ab") if events_path else sys.stdout.buffer
    except OSError as exc:
        fail(f"--events {events_path}: {exc.strerror}", ExitCode.USAGE)
    if output_format == "text":
        from guard.report.text import TextStream, use_colour

        stream = TextStream(stream, colour=not events_path and use_colour(sys.stdout))
    return stream


@main.group()
def policy() -> None:
    """Work with policy files."""


@policy.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
def policy_check(file: str) -> None:
    """Validate FILE. Every problem names file, line and field; exit 1 on any."""
    policies, compiled = _load_policy_or_fail(file)
    for parsed, tables in zip(policies, compiled):
        selects = f", selects {parsed.selector.specificity} term(s)" if parsed.selector else ""
        hosts = sum(target.host is not None for rule in parsed.egress
                    for target in rule.targets) if parsed.uses_names else 0
        names = f", {hosts} name target(s)" if hosts else ""
        audit = ", mode audit: refuses nothing" if parsed.audit else ""
        click.echo(f"{file}: ok (policy {parsed.name!r}: {len(parsed.egress)} egress rule(s), "
                   f"{len(parsed.exec_rules)} exec rule(s), "
                   f"{len(tables.ipv4) + len(tables.ipv6)} prefix(es){names}{selects}{audit})")


@policy.command("preset")
@click.argument("name", required=False)
def policy_preset(name: str | None) -> None:
    """List the shipped starting-point policies, or print preset NAME's YAML.

    \b
    egress-guard policy preset                        # each with its description
    egress-guard policy preset github > policy.yaml   # then edit and check it
    """
    presets = _presets()
    if name is None:
        width = max(map(len, presets), default=0)
        for preset, path in presets.items():
            click.echo(f"{preset:<{width}}  {_preset_summary(path.read_text(encoding='utf-8'))}")
        return
    if name not in presets:
        fail(f"unknown preset {name!r} (available: {', '.join(presets)})", ExitCode.USAGE)
    click.echo(presets[name].read_text(encoding="utf-8"), nl=False)


def _presets() -> dict:
    """Preset name -> its file (guard/data/presets/NAME.yaml), by name."""
    from importlib import resources

    folder = resources.files("guard") / "data" / "presets"
    return {entry.name[:-len(".yaml")]: entry
            for entry in sorted(folder.iterdir(), key=lambda entry: entry.name)
            if entry.name.endswith(".yaml")}


def _preset_summary(text: str) -> str:
    """A preset's one-line description: its leading comment's first line."""
    first = text.split("\n", 1)[0]
    return first[1:].strip() if first.startswith("#") else ""


@policy.command("suggest")
@click.argument("sources", nargs=-1, required=True, metavar="EVENTS...")
@click.option("--selector", "selectors", multiple=True, metavar="KEY=VALUE",
              help="Only the workloads this selects, and the policy selects them: "
                   "containerName, image, cgroupPath (globs), namespace, label.KEY, "
                   "podLabel.KEY. Repeatable; a key given again is one more value.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), metavar="FILE",
              help="Write the policy to FILE instead of stdout.")
@click.option("--name", default="suggested", show_default=True,
              help="metadata.name of the policy.")
def policy_suggest(sources: tuple[str, ...], selectors: tuple[str, ...], output: str | None,
                   name: str) -> None:
    """Write the smallest policy that allows what recorded events show.

    EVENTS are files of JSON lines from `run` (`-` for stdin). Connects let
    through become allow rules, by host name where the events name the
    destination, else by address; everything else is blocked. Every rule is
    commented with its events. Notes on what was left out go to stderr.
    """
    from guard.policy import suggest

    try:
        selector = suggest.selector_terms(selectors)
    except ValueError as exc:
        fail(f"--selector {exc}", ExitCode.USAGE)
    malformed: list = []
    try:
        made = suggest.suggest((event for _where, event in _events(sources, malformed)),
                               selector, name, sources)
    except ValueError as exc:
        fail(f"--name: {exc}", ExitCode.USAGE)
    except suggest.SuggestError as exc:
        fail(str(exc), ExitCode.FAILURE)
    _notes(made.notes, malformed)
    if output:
        try:
            Path(output).write_text(made.text, encoding="utf-8")
        except OSError as exc:
            fail(f"-o {output}: {exc.strerror}", ExitCode.USAGE)
        click.echo(f"{output}: {made.rules} rule(s)", err=True)
    else:
        click.echo(made.text, nl=False)


@policy.command("test")
@click.argument("policy_file", metavar="POLICY", type=click.Path(dir_okay=False))
@click.argument("sources", nargs=-1, required=True, metavar="EVENTS...")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per change, then a summary object.")
@click.option("--all", "show_all", is_flag=True,
              help="Also list changes between allow and log (reported or not).")
def policy_test(policy_file: str, sources: tuple[str, ...], as_json: bool,
                show_all: bool) -> None:
    """Replay recorded events against POLICY: what would it decide otherwise?

    Connect, sendmsg, DNS query, exec, socket and detection events are judged with the
    kernel's tables and precedence; each whose verdict changes is printed
    (old -> new, and what decided), then a summary. Exit 6 when something
    recorded as allowed would be refused, 0 otherwise.
    """
    from guard.policy.replay import Replay
    from guard.report import text

    policies, compiled = _load_policy_or_fail(policy_file)
    replay = Replay(policies, compiled)
    colour = not as_json and text.use_colour(sys.stdout)
    malformed: list = []
    for where, event in _events(sources, malformed):
        change = replay.feed(event, where)
        if change is None or not (show_all or change.outcome_changed):
            continue
        if as_json:
            click.echo(orjson.dumps(change.as_dict(), default=str).decode())
        else:
            click.echo(text.render_change(event, change.old, change.new,
                                          change.verdict.decided, change.verdict.policy, colour))
    summary = {**replay.summary(), "malformed": len(malformed)}
    refused = summary["refused"]
    summary["exit"] = int(ExitCode.REFUSED if refused else ExitCode.OK)
    if as_json:
        click.echo(orjson.dumps(summary).decode())
    else:
        _notes([], malformed)
        quiet = summary["changed"] - summary["outcome_changed"]
        click.echo(f"policy test: {summary['judged']} event(s) judged: "
                   f"{summary['outcome_changed']} let through or refused otherwise, {quiet} "
                   f"only between allow and log{'' if show_all else ' (--all lists them)'}; "
                   f"{refused} recorded as allowed would be refused"
                   + (f" ({summary['connections_refused']} connections with their repeats)"
                      if summary["connections_refused"] > refused else ""))
    sys.exit(summary["exit"])


def _events(sources: tuple[str, ...], malformed: list):
    """(where, event) of every line of the sources; malformed lines collected."""
    from guard.report import lines

    try:
        opened = lines.open_sources(sources)
    except lines.SourceError as exc:
        fail(str(exc), ExitCode.USAGE)
    return lines.events_of(lines.read_sources(opened), malformed)


def _notes(notes: list[str], malformed: list) -> None:
    for note in notes:
        click.echo(f"egress-guard: note: {note}", err=True)
    if malformed:
        first = malformed[0]
        click.echo(f"egress-guard: note: {len(malformed)} malformed line(s) skipped (first: "
                   f"{first.where}: {first.problem})", err=True)


@main.command("events")
@click.argument("files", nargs=-1, metavar="[FILE]...")
@click.option("-f", "--follow", is_flag=True,
              help="Keep reading FILEs as they grow (and after rotation), until SIGINT.")
@click.option("--kind", "kinds", multiple=True, metavar="KIND",
              help="Only events of this kind (connect, exec, dns, detection...). Repeatable.")
@click.option("--workload", "workloads", multiple=True, metavar="GLOB",
              help="Only events of workloads whose container name or id, pod or cgroup "
                   "path matches GLOB. Repeatable.")
def events(files: tuple[str, ...], follow: bool, kinds: tuple[str, ...],
           workloads: tuple[str, ...]) -> None:
    """Show JSON-lines events (FILEs, or stdin) one line each, for people.

    \b
    egress-guard events /var/log/egress-guard/events.jsonl --kind connect
    egress-guard run | egress-guard events
    """
    from guard.report import lines, text

    colour = text.use_colour(sys.stdout)
    paths = files or ("-",)
    try:
        if follow and "-" not in paths:
            source = lines.follow(paths)
        else:
            source = lines.read_sources(lines.open_sources(paths))
        for line in source:
            if line.event is None or text.selected(line.event, kinds, workloads):
                click.echo(text.render_line(line, colour))
    except lines.SourceError as exc:
        fail(str(exc), ExitCode.USAGE)
    except KeyboardInterrupt:
        sys.exit(int(ExitCode.OK))
    except BrokenPipeError:   # `| head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(int(ExitCode.OK))


def _kube_api(url: str | None, node: str | None):
    """(API URL, node, token, CA file) for the pod watch, or None outside a cluster."""
    import socket as socket_module

    from guard.workloads.kubernetes import in_cluster_api

    cluster_url, token, ca_file = in_cluster_api()
    url = url or cluster_url
    if not url:
        return None
    return url, node or socket_module.gethostname(), token, ca_file


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        fail(f"--metrics {text}: expected HOST:PORT, e.g. 127.0.0.1:9464", ExitCode.USAGE)
    return host.strip("[]"), int(port)


def _ask_agent(socket_path: str, message: dict) -> dict:
    from guard.control.client import ControlError, request

    try:
        return request(socket_path, message)
    except ControlError as exc:
        code = ExitCode.PERMISSION if "permission denied" in str(exc) else ExitCode.RUNTIME
        fail(str(exc), code)


@policy.command("reload")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.option("--socket", "socket_path", default=DEFAULT_SOCKET, show_default=True,
              metavar="PATH", help="The agent's control socket.")
def policy_reload(file: str | None, socket_path: str) -> None:
    """Switch the running agent to FILE (or re-read its own policy file).

    The agent validates FILE before anything changes; if it is invalid the
    policy in force stays, the problems (file, line, field) are printed and
    the exit code is 1.
    """
    from guard.cli.reload import reload  # also run without click, from __main__

    sys.exit(int(reload(file, socket_path)))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as one JSON object.")
@click.option("--socket", "socket_path", default=DEFAULT_SOCKET, show_default=True,
              metavar="PATH", help="The agent's control socket.")
def status(as_json: bool, socket_path: str) -> None:
    """Show the running agent: policy and generation, guarded cgroups,
    enforcement, counters, uptime. Exit 3 when no agent answers."""
    response = _ask_agent(socket_path, {"op": "status"})
    if not response.get("ok"):
        fail(response.get("error", "the agent refused"), ExitCode.PERMISSION)
    response.pop("ok")
    if as_json:
        click.echo(orjson.dumps(response).decode())
        return
    pol = response["policy"]
    click.echo(f"agent        pid {response['pid']}, version {response['version']}, "
               f"up {response['uptime_s']:.0f} s")
    click.echo(f"policy       {pol['name']} (generation {pol['generation']}, {pol['source']})")
    click.echo(f"enforcement  {response['enforcement']}")
    scheduling = response.get("scheduling")   # absent from an older agent's answer
    if scheduling:
        refused = f" ({scheduling['mode']} refused: {scheduling['refused']})" \
            if scheduling.get("refused") else ""
        click.echo(f"scheduling   {scheduling['in_force']}{refused}")
    click.echo(f"cgroups      {len(response['cgroups'])} guarded")
    for cg in response["cgroups"]:
        click.echo(f"  {cg['path']} (id {cg['id']})")
    own = response.get("self")   # absent from an older agent's answer
    if own:
        click.echo(f"self         {own['cgroup']['path']} " + (
            "(never guarded)" if own["excluded"] else f"(not found: {own.get('problem')})"))
    counters = response["counters"]
    click.echo("counters     " + ", ".join(f"{k}={v}" for k, v in counters.items()))
    click.echo(f"events       {response['events']} written, {response['reloads']} reload(s)")
    fold = response.get("fold")   # absent from an older agent's answer
    if fold:
        click.echo("fold         " + (f"{fold['window_ms']} ms windows, {fold['flushed']} "
                                       f"flushed ({fold['folded']} connects), "
                                       f"{fold['pending']} pending" if fold["window_ms"]
                                       else "off (every logged connect is an event)"))


@main.command()
@click.option("--pin-dir", default=DEFAULT_PIN_DIR, show_default=True, metavar="DIR",
              help="bpffs directory the agent pinned into.")
@click.option("--socket", "socket_path", default=DEFAULT_SOCKET, show_default=True,
              metavar="PATH", help="The agent's control socket.")
def uninstall(pin_dir: str, socket_path: str) -> None:
    """Remove everything a pinned agent (run --pin) left in the kernel.

    Refuses while an agent answers on the control socket: stop it first.
    """
    from guard.kernel.objects import remove_pins
    from guard.control.client import ControlError, request

    if os.geteuid() != 0:
        fail("uninstall needs root", ExitCode.PERMISSION)
    try:
        request(socket_path, {"op": "status"}, timeout=5)
    except ControlError:
        pass
    else:
        fail(f"an agent is running (it answers on {socket_path}); stop it first",
             ExitCode.RUNTIME)
    try:
        removed = remove_pins(Path(pin_dir))
    except OSError as exc:
        fail(f"{pin_dir}: {exc.strerror}", ExitCode.RUNTIME)
    click.echo(f"removed {len(removed)} pinned object(s) from {pin_dir}" if removed
               else f"nothing pinned under {pin_dir}")


@main.command()
@click.option("--miner", type=click.Path(exists=True, dir_okay=False),
              help="An XMRig binary for the miner step (default: xmrig on PATH, else a "
                   "stand-in sending XMRig's login line).")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object (ok, steps with their events) instead of the story.")
def demo(miner: str | None, as_json: bool) -> None:
    """Replay the incident in a throw-away sandbox, guarded, and explain each step.

    Makes a temporary cgroup and a network namespace with a test host
    (198.18.0.0/15, no route out), runs the agent on them with a demo policy,
    shows the policy's rules, then a miner's pool login, an ssh -R, a reverse
    shell and a tunnel, each with what happened and its event, then removes
    everything. Exit 0 only if every step was stopped as the policy says.
    """
    from guard.demo.run import run_demo

    if os.geteuid() != 0:
        fail("the demo needs root (it makes a cgroup and a network namespace)",
             ExitCode.PERMISSION)
    steps: list[dict] = []
    ok = run_demo((lambda _line: None) if as_json else click.echo, miner=miner, record=steps)
    if as_json:
        click.echo(orjson.dumps({"ok": bool(ok), "steps": steps}, default=str).decode())
    if not ok:
        sys.exit(int(ExitCode.FAILURE))


def entry() -> None:  # the former console_scripts entry point (now guard.__main__:entry)
    main(prog_name="egress-guard")


if __name__ == "__main__":  # pragma: no cover
    entry()
