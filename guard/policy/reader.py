# SPDX-License-Identifier: Apache-2.0
"""The careful reader: YAML text -> validated, immutable `Policy` objects
(model.py), every problem worded.

The model is built from PyYAML's composed nodes rather than from `safe_load`
output, because nodes keep their marks: every problem names the file, the
1-based line of the offending node and the field path
(`spec.egress[0].to[1].cidr`). A file is read to the end and every problem is
collected before `PolicyError` is raised, so one `policy check` shows them all.
Large policies in the block layout programs write are read by fast.py first,
which either gives the same policies or steps aside for this reader
(load.py, the front door, decides).

Public API: parse_policy, parse_policies (text -> policies or PolicyError),
read_policy_file and policy_text (a file's bytes -> text or PolicyError),
and for the fast reader, which reads everything but its egress lists with
this reader, `Reader` (documents(), policy_set(), problems) and the YAML
tags it compares nodes with (NULL, ...).
"""
from __future__ import annotations

import os
import posixpath
import re
import types
from pathlib import Path
from typing import Callable, Mapping, TypeVar

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from guard.kernel.abi import Action, Proto
from guard.policy.cidr import parse_cidr
from guard.policy.model import (ALL_PORTS, ANY_ADDRESS, API_VERSION, DETECTIONS,
                                DNS_RESOLVER_PORTS, DNS_TTL_LIMIT, DNS_TTL_MAX_DEFAULT,
                                DNS_TTL_MIN_DEFAULT, EGRESS_ACTIONS, EXEC_ACTIONS, EXEC_STRING_MAX,
                                FAIL_CLOSED_AFTER_S, FAIL_CLOSED_DEFAULT_S, KIND, LABEL_OPERATORS,
                                MODES, POLICY_NAME, POLICY_NAME_MAX, PORT_MAX, PORT_MIN, PROTOCOLS,
                                RAW_SOCKET_MODES, RULE_NAME, SSH_FORWARDS, UNNAMED_MODES, DnsSettings,
                                EgressRule, ExecRule, FailClosed, LabelRequirement, Network,
                                Policy, PolicyError, Problem, Selector, Target, normalise_host)

__all__ = ["BOOL", "INT", "NULL", "STR", "TAG", "Reader", "parse_policies", "parse_policy",
           "policy_text", "read_policy_file"]

# Five digits at most: longer cannot be a port, and int() of a huge string fails.
PORT_NUMBER = re.compile(r"[0-9]{1,5}")
PORT_TEXT = re.compile(r"([0-9]{1,5})(?:-([0-9]{1,5}))?")
PORT_HINT = '(expected 1-65535 or "LO-HI")'

TAG = "tag:yaml.org,2002:"
STR, INT, NULL, BOOL = TAG + "str", TAG + "int", TAG + "null", TAG + "bool"
TAG_KINDS = {STR: "a string", INT: "an integer", NULL: "null", TAG + "bool": "a boolean",
             TAG + "float": "a number", TAG + "timestamp": "a timestamp"}


def read_policy_file(path: str | os.PathLike[str]) -> str:
    source = os.fspath(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise PolicyError([Problem(source, 0, "<file>",
                                   f"cannot read the policy file: {reason}")]) from None
    return policy_text(data, source)


def policy_text(data: bytes, source: str) -> str:
    """A policy file's bytes as text; PolicyError naming the line of a byte
    that is not UTF-8."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise PolicyError([Problem(source, line, "<file>",
                                   f"not valid UTF-8 (byte 0x{data[exc.start]:02x} "
                                   f"at offset {exc.start})")]) from None
    return text


def parse_policy(text: str, source_name: str = "<string>") -> Policy:
    """Validate policy text with the careful reader; `source_name` is what
    problems call the file. guard/policy/load.py is the front door that
    tries the fast reader first."""
    reader = Reader(source_name)
    document = reader.document(text)
    policy = reader.policy(document) if document is not None else None
    if reader.problems or policy is None:
        raise PolicyError(sorted(reader.problems, key=lambda problem: problem.line))
    return policy


def parse_policies(text: str, source_name: str = "<string>") -> tuple[Policy, ...]:
    """Every policy of a file of one or more YAML documents (---), each
    validated by the careful reader; policy names are unique within the file."""
    reader = Reader(source_name)
    policies = reader.policy_set(reader.documents(text))
    if reader.problems or not policies:
        raise PolicyError(sorted(reader.problems, key=lambda problem: problem.line))
    return tuple(policies)


class _Invalid(Exception):
    """A value failed validation; the message is the problem's message."""


T = TypeVar("T")


def _line(node: Node) -> int:
    return node.start_mark.line + 1


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _shown_field(path: str) -> str:
    return path or "<document>"


def _kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return TAG_KINDS.get(node.tag, f"a value tagged {node.tag}")


def _show(node: Node) -> str:
    """A value as the user wrote it: strings quoted, other scalars verbatim."""
    if isinstance(node, ScalarNode):
        if node.tag == STR:
            return repr(node.value)
        return node.value or "null"
    return "[...]" if isinstance(node, SequenceNode) else "{...}"


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == NULL


def _is_string(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == STR


def _one_of(choices) -> str:
    return ", ".join(choices)


def _utf8_size(text: str) -> int:
    """Bytes of text in UTF-8; YAML escapes can produce lone surrogates, which have none."""
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise _Invalid(f"{text!r} is not valid Unicode (lone surrogate)") from None


def _parse_cidr(text: str) -> Network:
    """A network from "addr/len" or a bare address, refusing host bits."""
    try:
        return parse_cidr(text)
    except ValueError as exc:
        raise _Invalid(str(exc)) from None


def _check_host(text: str) -> str:
    try:
        return normalise_host(text)
    except ValueError as exc:
        raise _Invalid(str(exc)) from None


def _parse_port(node: Node) -> tuple[int, int]:
    """One `ports` item: an int, "N" or "LO-HI" -> an inclusive range."""
    if not isinstance(node, ScalarNode):
        raise _Invalid(f"expected a port (1-65535) or \"LO-HI\", got {_kind(node)}")
    # YAML booleans, floats and hex are not ports, whatever Python thinks of them.
    if node.tag == INT and PORT_NUMBER.fullmatch(node.value):
        low = high = int(node.value)
    elif node.tag == STR and (match := PORT_TEXT.fullmatch(node.value)):
        low = int(match[1])
        high = int(match[2] or match[1])
    else:
        raise _Invalid(f"invalid port {_show(node)} {PORT_HINT}")
    if not (PORT_MIN <= low <= PORT_MAX and PORT_MIN <= high <= PORT_MAX):
        raise _Invalid(f"invalid port {_show(node)} {PORT_HINT}")
    if low > high:
        raise _Invalid(f"invalid port range {_show(node)} (LO must not be greater than HI)")
    return low, high


def _check_exec_name(text: str) -> str:
    if not text:
        raise _Invalid("executable name must not be empty")
    if "/" in text:
        raise _Invalid(f"invalid executable name {text!r} "
                       "(a basename has no '/'; put paths under 'paths')")
    _check_kernel_string(text, "executable name")
    return text


def _check_exec_path(text: str) -> str:
    if not text.startswith("/"):
        raise _Invalid(f"relative path {text!r} (exec paths must be absolute)")
    _check_kernel_string(text, "path")
    # The kernel compares the exact string with the resolved path of the
    # executable, so a path like /usr//bin/nc or /usr/bin/../bin/nc never matches.
    normal = "/" + posixpath.normpath(text).lstrip("/")
    if normal != text:
        raise _Invalid(f"path {text!r} is not normalised (did you mean {normal!r}?)")
    return text


def _check_kernel_string(text: str, what: str) -> None:
    if "\0" in text:
        raise _Invalid(f"{what} {text!r} contains a NUL character")
    size = _utf8_size(text)
    if size > EXEC_STRING_MAX:
        raise _Invalid(f"{what} is {size} bytes long (at most {EXEC_STRING_MAX} bytes of UTF-8)")


_SCALAR_TAG = TAG + "str"
_COLLECTION_TAGS = {SequenceNode: TAG + "seq", MappingNode: TAG + "map"}


def _lean_resolve(self, kind, value, implicit):
    """PyYAML's tag resolution without its path-resolver bookkeeping, which
    costs more than parsing itself on large policies (10,000 rules: 2.6 s to
    1.3 s). Same answers: the implicit resolvers are PyYAML's own."""
    if kind is ScalarNode:
        if implicit[0]:
            for tag, regexp in self.yaml_implicit_resolvers.get(value[:1], ()):
                if regexp.match(value):
                    return tag
        return _SCALAR_TAG
    return _COLLECTION_TAGS[kind]


if hasattr(yaml, "CSafeLoader"):
    class _FastLoader(yaml.CSafeLoader):
        """libyaml's parser with the lean resolver: for files that parse."""
        resolve = _lean_resolve
else:  # PyYAML built without libyaml
    _FastLoader = None


def _compose_fast(text: str) -> list[Node] | None:
    """The documents of text through libyaml, or None where it is missing.
    Errors are worded by the pure-Python parser, which the tests pin down."""
    if _FastLoader is None:
        return None
    return list(yaml.compose_all(text, Loader=_FastLoader))


class Reader:
    """Walks composed YAML nodes, recording every problem on the way.

    Each method returns a best-effort value even after a problem (None or a
    default), so the walk goes on and finds the next problem; parse_policy
    raises if anything was recorded, so a partly-built model never escapes.

    The fast reader uses it too, for the rest of a file once its egress
    lists are blanked out: Reader(source), then documents(text) (the YAML
    documents, or None), policy_set(documents) (their policies), and
    `problems` (empty if the policies may be used). That much is its
    public API; the other methods are its own.
    """

    def __init__(self, source: str):
        self.source = source
        self.problems: list[Problem] = []
        self.rule_lines: dict[str, int] = {}    # rule name -> line, for uniqueness

    def problem(self, line: int, field: str, message: str) -> None:
        self.problems.append(Problem(self.source, line, _shown_field(field), message))

    def at(self, node: Node, field: str, message: str) -> None:
        self.problem(_line(node), field, message)

    # --- YAML --------------------------------------------------------------

    def document(self, text: str) -> Node | None:
        """The single YAML document of text, or None after recording why not."""
        documents = self.documents(text)
        if documents is None:
            return None
        if len(documents) > 1:
            self.at(documents[1], "<document>", "more than one YAML document "
                                                "(a policy file holds exactly one)")
            return None
        return documents[0]

    def documents(self, text: str) -> list[Node] | None:
        """The YAML documents of text (at least one), or None after recording why not."""
        try:
            documents = _compose_fast(text)
        except (yaml.YAMLError, RecursionError):
            documents = None  # the pure-Python parser below words the problem
        try:
            if documents is None:
                documents = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
        except yaml.MarkedYAMLError as exc:
            self.yaml_problem(text, exc)
            return None
        except yaml.reader.ReaderError as exc:
            line = text.count("\n", 0, exc.position) + 1
            self.problem(line, "<yaml>", f"invalid YAML: character {exc.character!r} "
                                         "is not allowed")
            return None
        except yaml.YAMLError as exc:
            self.problem(0, "<yaml>", f"invalid YAML: {exc}")
            return None
        except RecursionError:
            self.problem(0, "<yaml>", "invalid YAML: nested too deeply")
            return None
        if not documents:
            self.problem(1, "<document>", "the policy is empty (expected a mapping with "
                                          "apiVersion, kind, metadata and spec)")
            return None
        return documents

    def yaml_problem(self, text: str, exc: yaml.MarkedYAMLError) -> None:
        # An error at the end of the stream is marked on the line after the
        # last newline; point at the last line the user can see instead.
        last_line = max(1, text.count("\n") + (not text.endswith("\n")))

        def line_of(mark) -> int:
            return min(mark.line + 1, last_line) if mark else 0

        line = line_of(exc.problem_mark or exc.context_mark)
        message = f"invalid YAML: {exc.problem or exc.context}"
        context_line = line_of(exc.context_mark)
        if exc.problem and exc.context and context_line not in (0, line):
            # e.g. where the unclosed bracket was opened
            message += f" ({exc.context} that starts at line {context_line})"
        self.problem(line, "<yaml>", message)

    # --- generic shapes ----------------------------------------------------

    def pairs(self, node: Node, field: str) -> list[tuple[str, Node, Node]]:
        """(key, key node, value node) of a mapping, without duplicate keys."""
        if not isinstance(node, MappingNode):
            self.at(node, field, f"expected a mapping, got {_kind(node)}")
            return []
        first_lines: dict[str, int] = {}
        result = []
        for key_node, value in node.value:
            key = key_node.value if isinstance(key_node, ScalarNode) else _show(key_node)
            if key in first_lines:
                self.at(key_node, _child(field, key),
                        f"duplicate key {key!r} (first at line {first_lines[key]})")
                continue
            first_lines[key] = _line(key_node)
            result.append((key, key_node, value))
        return result

    def mapping(self, node: Node | None, field: str, allowed: tuple[str, ...],
                required: tuple[str, ...] = (), nullable: bool = False) -> dict[str, Node]:
        """The known keys of a mapping -> their value nodes."""
        if node is None or (nullable and _is_null(node)):
            return {}
        if not isinstance(node, MappingNode):
            self.at(node, field, f"expected a mapping, got {_kind(node)}")
            return {}
        known = {}
        for key, key_node, value in self.pairs(node, field):
            if key in allowed:
                known[key] = value
            else:
                self.at(key_node, _child(field, key),
                        f"unknown key {key!r} (expected one of: {_one_of(sorted(allowed))})")
        for key in required:
            if key not in known:
                self.at(node, _child(field, key), f"missing required key {key!r}")
        return known

    def sequence(self, node: Node | None, field: str, nullable: bool = False,
                 if_empty: str | None = None) -> list[Node]:
        """The items of a list; if_empty is the problem an empty list is."""
        if node is None or (nullable and _is_null(node)):
            return []
        if not isinstance(node, SequenceNode):
            self.at(node, field, f"expected a list, got {_kind(node)}")
            return []
        if if_empty and not node.value:
            self.at(node, field, if_empty)
        return node.value

    def string(self, node: Node | None, field: str) -> str | None:
        if node is None:
            return None
        if not _is_string(node):
            self.at(node, field, f"expected a string, got {_kind(node)}")
            return None
        return node.value

    def choice(self, node: Node | None, field: str, what: str,
               choices: Mapping[str, T], default: T) -> T:
        """The meaning of one of a fixed set of words."""
        if node is None:
            return default
        if _is_string(node) and node.value in choices:
            return choices[node.value]
        if isinstance(node, ScalarNode):
            self.at(node, field, f"invalid {what} {_show(node)} "
                                 f"(expected one of: {_one_of(choices)})")
        else:
            self.at(node, field, f"expected a string, got {_kind(node)}")
        return default

    def boolean(self, node: Node | None, field: str, default: bool) -> bool:
        """true or false (YAML's booleans; a quoted "true" is a string)."""
        if node is None or _is_null(node):
            return default
        if isinstance(node, ScalarNode) and node.tag == BOOL:
            return node.value.lower() in ("true", "yes", "on", "y")
        self.at(node, field, f"expected true or false, got {_show(node)}")
        return default

    def checked(self, node: Node | None, field: str, check: Callable[[str], T]) -> T | None:
        """A string passed through check, which raises _Invalid to refuse it."""
        text = self.string(node, field)
        if text is None:
            return None
        try:
            return check(text)
        except _Invalid as exc:
            self.at(node, field, str(exc))
            return None

    # --- the policy --------------------------------------------------------

    def policy_set(self, documents: list[Node] | None) -> list[Policy]:
        """The policies of a file's documents; policy names are unique within it."""
        policies: list[Policy] = []
        first_line: dict[str, int] = {}
        for document in documents or ():
            self.rule_lines = {}  # rule names are unique within a policy
            policy = self.policy(document)
            if policy.name in first_line:
                self.at(document, "metadata.name", f"duplicate policy name {policy.name!r} "
                                                   f"(first at line {first_line[policy.name]})")
            elif policy.name is not None:
                first_line[policy.name] = _line(document)
            policies.append(policy)
        return policies

    def policy(self, document: Node) -> Policy:
        top = self.mapping(document, "", ("apiVersion", "kind", "metadata", "spec"),
                           required=("apiVersion", "kind", "metadata"))
        self.constant(top.get("apiVersion"), "apiVersion", API_VERSION)
        self.constant(top.get("kind"), "kind", KIND)
        metadata = self.mapping(top.get("metadata"), "metadata", ("name",), required=("name",))
        name = self.checked(metadata.get("name"), "metadata.name", _check_policy_name)
        spec = self.mapping(top.get("spec"), "spec",
                            ("defaultAction", "egress", "exec", "sockets", "detections",
                             "ssh", "failClosed", "selector", "identityLabels", "dns",
                             "mode", "feedback"),
                            nullable=True)
        default_action = self.choice(spec.get("defaultAction"), "spec.defaultAction",
                                     "action", EGRESS_ACTIONS, Action.LOG)
        egress = tuple(self.egress_rule(item, f"spec.egress[{index}]") for index, item in
                       enumerate(self.sequence(spec.get("egress"), "spec.egress", nullable=True)))
        exec_rules = tuple(self.exec_rule(item, f"spec.exec[{index}]") for index, item in
                           enumerate(self.sequence(spec.get("exec"), "spec.exec", nullable=True)))
        sockets = self.mapping(spec.get("sockets"), "spec.sockets", ("raw",), nullable=True)
        deny_raw = self.choice(sockets.get("raw"), "spec.sockets.raw", "value",
                               RAW_SOCKET_MODES, True)
        detections = self.detections(spec.get("detections"), "spec.detections")
        ssh_allow = self.ssh(spec.get("ssh"), "spec.ssh")
        fail_closed = self.fail_closed(spec.get("failClosed"), "spec.failClosed")
        selector = self.selector(spec.get("selector"), "spec.selector")
        identity = self.strings(spec.get("identityLabels"), "spec.identityLabels", _check_word)
        dns = self.dns(spec.get("dns"), "spec.dns")
        audit = self.choice(spec.get("mode"), "spec.mode", "mode", MODES, False)
        feedback = self.mapping(spec.get("feedback"), "spec.feedback", ("stderr", "file"),
                                nullable=True)
        stderr = self.boolean(feedback.get("stderr"), "spec.feedback.stderr", False)
        reasons_file = self.boolean(feedback.get("file"), "spec.feedback.file", False)
        return Policy(name=name, default_action=default_action, egress=egress,
                      exec_rules=exec_rules, deny_raw_sockets=deny_raw,
                      detections=detections, source=self.source, fail_closed=fail_closed,
                      selector=selector, identity_labels=identity, ssh_allow=ssh_allow,
                      dns=dns, audit=audit, feedback_stderr=stderr,
                      feedback_file=reasons_file)

    def dns(self, node: Node | None, field: str) -> DnsSettings:
        """spec.dns: {resolvers: [targets by cidr], ttl: {min, max}, unnamed}."""
        if node is None or _is_null(node):
            return DnsSettings()
        keys = self.mapping(node, field, ("resolvers", "ttl", "unnamed"))
        resolvers = None
        if "resolvers" in keys and not _is_null(keys["resolvers"]):
            # By address only, and a cidr required: a resolver's answers open
            # addresses, so "any address on port 53" must be written out.
            items = self.sequence(keys["resolvers"], f"{field}.resolvers",
                                  if_empty="expected at least one resolver (omit 'resolvers' "
                                           "for the nameservers of /etc/resolv.conf)")
            resolvers = tuple(self.target(item, f"{field}.resolvers[{index}]", names=False,
                                          required=("cidr",), ports=DNS_RESOLVER_PORTS)
                              for index, item in enumerate(items))
        ttl = self.mapping(keys.get("ttl"), f"{field}.ttl", ("min", "max"), nullable=True)
        bounds, known = (0, DNS_TTL_LIMIT), len(self.problems)
        low = self.integer(ttl.get("min"), f"{field}.ttl.min", bounds, DNS_TTL_MIN_DEFAULT)
        high = self.integer(ttl.get("max"), f"{field}.ttl.max", bounds, DNS_TTL_MAX_DEFAULT)
        if low > high and len(self.problems) == known:
            said = "min" if "min" in ttl else "max"
            defaulted = "" if {"min", "max"} <= ttl.keys() else \
                f" ({'max' if said == 'min' else 'min'} left at its default)"
            self.at(ttl[said], f"{field}.ttl.{said}",
                    f"ttl min {low} is greater than max {high}{defaulted}")
        unnamed = self.choice(keys.get("unnamed"), f"{field}.unnamed", "value", UNNAMED_MODES,
                              False)
        return DnsSettings(resolvers=resolvers, ttl_min=low, ttl_max=high, line=_line(node),
                           block_unnamed=unnamed)

    def ssh(self, node: Node | None, field: str) -> tuple[Mapping[str, object], ...]:
        """spec.ssh.allow: [{host | cidr, ports, forwards}]: SSH destinations
        that are reported as ssh_outbound at low confidence, and whose listed
        forward kinds are not findings."""
        keys = self.mapping(node, field, ("allow",), nullable=True)
        entries = []
        for index, item in enumerate(self.sequence(keys.get("allow"), f"{field}.allow",
                                                   nullable=True)):
            where = f"{field}.allow[{index}]"
            entry = self.mapping(item, where, ("host", "cidr", "ports", "forwards"))
            if ("host" in entry) == ("cidr" in entry):
                self.at(item, where, "an allow entry needs exactly one of 'host' or 'cidr'")
                continue
            allowed: dict[str, object] = {}
            if "host" in entry:
                allowed["host"] = self.checked(entry["host"], f"{where}.host", _check_word)
            else:
                network = self.checked(entry["cidr"], f"{where}.cidr", _parse_cidr)
                allowed["cidr"] = str(network) if network is not None else None
            if "ports" in entry:
                ports = []
                for port_index, port_node in enumerate(self.sequence(entry["ports"],
                                                                     f"{where}.ports")):
                    try:
                        low, high = _parse_port(port_node)
                    except _Invalid as exc:
                        self.at(port_node, f"{where}.ports[{port_index}]", str(exc))
                        continue
                    ports.extend(range(low, high + 1))
                allowed["ports"] = ports
            if "forwards" in entry:
                allowed["forwards"] = [
                    self.choice(kind, f"{where}.forwards[{kind_index}]", "forward",
                                {word: word for word in SSH_FORWARDS}, None)
                    for kind_index, kind in enumerate(self.sequence(entry["forwards"],
                                                                    f"{where}.forwards"))]
            entries.append(types.MappingProxyType(allowed))
        return tuple(entries)

    def selector(self, node: Node | None, field: str) -> Selector | None:
        if node is None or _is_null(node):
            return None
        keys = self.mapping(node, field, ("containerNames", "images", "labels", "namespaces",
                                          "podLabels", "cgroupPaths"))
        selector = Selector(
            container_names=self.strings(keys.get("containerNames"), f"{field}.containerNames",
                                         _check_word),
            images=self.strings(keys.get("images"), f"{field}.images", _check_word),
            labels=self.match_labels(keys.get("labels"), f"{field}.labels"),
            namespaces=self.strings(keys.get("namespaces"), f"{field}.namespaces", _check_word),
            pod_labels=self.label_selector(keys.get("podLabels"), f"{field}.podLabels"),
            cgroup_paths=self.strings(keys.get("cgroupPaths"), f"{field}.cgroupPaths",
                                      _check_word))
        if isinstance(node, MappingNode) and selector.specificity == 0:
            self.at(node, field, "a selector needs at least one term "
                                 "(omit 'selector' for the policy of what nothing selects)")
        return selector

    def match_labels(self, node: Node | None, field: str) -> tuple[LabelRequirement, ...]:
        if node is None or _is_null(node):
            return ()
        terms = []
        for key, _key_node, value in self.pairs(node, field):
            text = self.string(value, _child(field, key))
            if text is not None:
                terms.append(LabelRequirement(key, "In", (text,)))
        return tuple(terms)

    def label_selector(self, node: Node | None, field: str) -> tuple[LabelRequirement, ...]:
        """A Kubernetes LabelSelector: matchLabels and matchExpressions."""
        if node is None or _is_null(node):
            return ()
        keys = self.mapping(node, field, ("matchLabels", "matchExpressions"))
        terms = list(self.match_labels(keys.get("matchLabels"), f"{field}.matchLabels"))
        items = self.sequence(keys.get("matchExpressions"), f"{field}.matchExpressions",
                              nullable=True)
        for index, item in enumerate(items):
            where = f"{field}.matchExpressions[{index}]"
            parts = self.mapping(item, where, ("key", "operator", "values"),
                                 required=("key", "operator"))
            key = self.string(parts.get("key"), f"{where}.key")
            operator = self.choice(parts.get("operator"), f"{where}.operator", "operator",
                                   {op: op for op in LABEL_OPERATORS}, None)
            values = self.strings(parts.get("values"), f"{where}.values", _check_word)
            if operator in ("In", "NotIn") and not values and isinstance(item, MappingNode):
                self.at(item, where, f"operator {operator} needs at least one value")
            if key is not None and operator is not None:
                terms.append(LabelRequirement(key, operator, tuple(values)))
        return tuple(terms)

    def fail_closed(self, node: Node | None, field: str) -> FailClosed | None:
        """spec.failClosed: {afterSeconds: N, allow: [targets]}; absent means off."""
        if node is None or _is_null(node):
            return None
        keys = self.mapping(node, field, ("afterSeconds", "allow"))
        after = self.integer(keys.get("afterSeconds"), f"{field}.afterSeconds",
                             FAIL_CLOSED_AFTER_S, FAIL_CLOSED_DEFAULT_S)
        items = self.sequence(keys.get("allow"), f"{field}.allow", nullable=True)
        allow = tuple(self.target(item, f"{field}.allow[{index}]", names=False)
                      for index, item in enumerate(items))
        return FailClosed(after_ms=after * 1000, allow=allow, line=_line(node))

    def integer(self, node: Node | None, field: str, bounds: tuple[int, int],
                default: int) -> int:
        if node is None:
            return default
        low, high = bounds
        if isinstance(node, ScalarNode) and node.tag == TAG + "int":
            try:
                value = int(node.value, 10)
            except ValueError:
                value = None
            if value is not None and low <= value <= high:
                return value
        self.at(node, field, f"invalid value {_show(node)} (expected a whole number "
                             f"from {low} to {high})")
        return default

    def constant(self, node: Node | None, field: str, expected: str) -> None:
        value = self.string(node, field)
        if value is not None and value != expected:
            self.at(node, field, f"unsupported {field} {value!r} (expected {expected!r})")

    def rule_name(self, node: Node | None, field: str) -> str | None:
        """A rule name, unique across egress and exec rules."""
        name = self.checked(node, field, _check_rule_name)
        if name is None:
            return None
        if name in self.rule_lines:
            self.at(node, field, f"duplicate rule name {name!r} "
                                 f"(first used at line {self.rule_lines[name]})")
        else:
            self.rule_lines[name] = _line(node)
        return name

    def egress_rule(self, node: Node, field: str) -> EgressRule:
        keys = self.mapping(node, field, ("name", "action", "to"),
                            required=("name", "action", "to"))
        name = self.rule_name(keys.get("name"), f"{field}.name")
        action = self.choice(keys.get("action"), f"{field}.action", "action",
                             EGRESS_ACTIONS, None)
        items = self.sequence(keys.get("to"), f"{field}.to",
                              if_empty="expected at least one target")
        targets = tuple(self.target(item, f"{field}.to[{index}]")
                        for index, item in enumerate(items))
        return EgressRule(name=name, action=action, targets=targets, line=_line(node))

    def target(self, node: Node, field: str, names: bool = True, required: tuple = (),
               ports: tuple[tuple[int, int], ...] = ALL_PORTS) -> Target:
        """One target: cidr or (where names may be given) host; ports: the
        ports of a target that lists none."""
        keys = self.mapping(node, field, ("cidr", "host", "ports", "protocol") if names
                            else ("cidr", "ports", "protocol"), required=required)
        host = None
        if "host" in keys:
            networks: tuple = ()
            if "cidr" in keys:
                self.at(keys["host"], f"{field}.host", "a target has 'host' or 'cidr', not "
                                                        "both (make them two targets)")
            else:
                host = self.checked(keys["host"], f"{field}.host", _check_host)
        elif "cidr" in keys:
            networks = (self.checked(keys["cidr"], f"{field}.cidr", _parse_cidr),)
        else:
            networks = ANY_ADDRESS
        if "ports" in keys:
            ports = self.ports(keys["ports"], f"{field}.ports")
        proto = self.choice(keys.get("protocol"), f"{field}.protocol", "protocol",
                            PROTOCOLS, Proto.ANY)
        return Target(networks=networks, ports=ports, proto=proto, host=host)

    def ports(self, node: Node, field: str) -> tuple[tuple[int, int], ...]:
        items = self.sequence(node, field,
                              if_empty="expected at least one port (omit 'ports' for every port)")
        ranges = []
        for index, item in enumerate(items):
            try:
                ranges.append(_parse_port(item))
            except _Invalid as exc:
                self.at(item, f"{field}[{index}]", str(exc))
        return tuple(ranges)

    def exec_rule(self, node: Node, field: str) -> ExecRule:
        keys = self.mapping(node, field, ("name", "action", "match"),
                            required=("name", "action", "match"))
        name = self.rule_name(keys.get("name"), f"{field}.name")
        action = self.choice(keys.get("action"), f"{field}.action", "action",
                             EXEC_ACTIONS, None)
        names, paths = self.exec_match(keys.get("match"), f"{field}.match")
        return ExecRule(name=name, action=action, names=names, paths=paths, line=_line(node))

    def exec_match(self, node: Node | None, field: str) -> tuple[tuple, tuple]:
        """(names, paths); a match must name at least one executable."""
        keys = self.mapping(node, field, ("names", "paths"))
        names = self.strings(keys.get("names"), f"{field}.names", _check_exec_name)
        paths = self.strings(keys.get("paths"), f"{field}.paths", _check_exec_path)
        if isinstance(node, MappingNode) and not names and not paths:
            self.at(node, field, "expected at least one entry in 'names' or 'paths'")
        return names, paths

    def strings(self, node: Node | None, field: str,
                check: Callable[[str], str]) -> tuple[str | None, ...]:
        items = self.sequence(node, field)
        return tuple(self.checked(item, f"{field}[{index}]", check)
                     for index, item in enumerate(items))

    def detections(self, node: Node | None, field: str) -> Mapping[str, str]:
        if node is None or _is_null(node):
            return types.MappingProxyType({})
        chosen = {}
        for key, key_node, value in self.pairs(node, field):
            allowed = DETECTIONS.get(key)
            if allowed is None:
                self.at(key_node, _child(field, key), _unknown_detection(key))
                continue
            if isinstance(value, ScalarNode) and value.tag == BOOL and \
                    value.value.lower() == "off" and "off" in allowed:
                # YAML 1.1 reads a bare `off` as false; here it means the word
                chosen[key] = "off"
                continue
            chosen[key] = self.choice(value, _child(field, key), "value",
                                      {word: word for word in allowed}, None)
        return types.MappingProxyType(chosen)


def _check_word(text: str) -> str:
    if not text:
        raise _Invalid("must not be empty")
    return text


def _check_policy_name(text: str) -> str:
    if not text:
        raise _Invalid("name must not be empty")
    if len(text) > POLICY_NAME_MAX or not POLICY_NAME.fullmatch(text):
        raise _Invalid(f"invalid name {text!r} (expected lowercase letters, digits, '-' "
                       f"and '.', starting and ending with a letter or digit, at most "
                       f"{POLICY_NAME_MAX} characters)")
    return text


def _check_rule_name(text: str) -> str:
    if not text:
        raise _Invalid("rule name must not be empty")
    if not RULE_NAME.fullmatch(text):
        raise _Invalid(f"invalid rule name {text!r} (expected lowercase letters, digits, "
                       "'-', '_' and '.', starting and ending with a letter or digit)")
    return text


def _unknown_detection(key: str) -> str:
    if not DETECTIONS:
        return f"unknown detection {key!r} (no detections are defined in this version)"
    return f"unknown detection {key!r} (expected one of: {_one_of(sorted(DETECTIONS))})"
