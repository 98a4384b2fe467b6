# SPDX-License-Identifier: Apache-2.0
"""The fast reader's column reader: the `spec.egress` block lists of a file
-> their rules as checked columns (Rules), without a YAML node per value.

One regular expression per layout finds a list's rules (one pass in C over
the whole list); the values are checked a column at a time, as strictly as
the careful reader (reader.py) would take them. fast.py reads the rest of
the file and builds policies from what this module finds.

Anything this module cannot read with certainty raises NotMine: the careful
reader must read the file.

Recognised, for each rule of a list (anything else: not mine):

    - name: NAME              # or action first, then name: the same order
      action: ACTION          #   for every rule of the list
      to:
        - cidr: CIDR          # cidr, ports, protocol: each optional, in this
          ports: [P, "LO-HI"] #   order; ports also as a block list; or {}
          protocol: PROTO     #   (never `host`: a list naming hosts is not mine)
        - ...                 # further targets

with the rules' and the targets' lists indented or not (`to:` then `- ` in the
same column), values plain or quoted without escapes, comments and blank
lines anywhere, ASCII outside comments.
"""
from __future__ import annotations

import dataclasses
import re
import socket
import struct
from collections.abc import Sequence as SequenceABC
from functools import lru_cache
from itertools import accumulate, repeat
from operator import and_, itemgetter
from typing import Callable, Iterable, Iterator, Sequence

import yaml

from guard.kernel.abi import Action, Proto
from guard.policy.cidr import host_mask, network_v4, parse_cidr
from guard.policy.compile import EgressTable
from guard.policy.model import (ALL_PORTS, ANY_ADDRESS, EGRESS_ACTIONS, PORT_MAX, PORT_MIN,
                                PROTOCOLS, EgressRule, Target)

__all__ = ["BlockList", "Early", "NotMine", "RuleColumns", "Rules", "blanked", "block_lists"]


class NotMine(Exception):
    """The careful reader must read this file."""


# --- the grammar ------------------------------------------------------------------

# What YAML lets a comment hold: printable characters, but none of the line
# breaks YAML knows besides \n (\r, \x85, \u2028, \u2029), or the next
# "line" would not be a comment.
_COMMENT = "#[\t -~\xa0-\u2027\u202a-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]*"
_TRIVIA_LINE = rf"[ ]*(?:{_COMMENT})?\n"
# End of a content line, then any blank and comment lines after it.
_END_WITH_TRIVIA = rf"(?:[ ]+(?:{_COMMENT})?)?\n(?:{_TRIVIA_LINE})*"
_END_PLAIN = r"\n"             # lists without comments, blank lines or trailing spaces

_RULE_NAME = r"[a-z0-9](?:[-a-z0-9_.]*[a-z0-9])?"   # model.RULE_NAME
# No leading zeros: YAML reads 0443 as an octal int, 0999 as a string.
_PORT_WORD = r"[1-9][0-9]{0,4}(?:-[1-9][0-9]{0,4})?"


def _scalar(pattern: str) -> str:
    """A value plain or quoted (no escapes can occur in these patterns); the
    quotes stay in the captured text."""
    return rf"""(?:{pattern}|"(?:{pattern})"|'(?:{pattern})')"""


_PORT = _scalar(_PORT_WORD)
_BLOCK_PORT = re.compile(rf"^[ ]*- ({_PORT})", re.M)


def _target(end: str) -> str:
    """One target after its `- `: keys cidr, ports, protocol in this order,
    each optional, the first on the dash line; or {}. (?P=t) is the column of
    the dash. A key after the first is in the column after the dash: one at
    the start of a line (after a blank line, say) is not the target's, and
    the match must not reach it."""
    cidr = rf"""cidr:[ ]+(?P<cq>["']?)(?P<c>[0-9A-Fa-f:.]+)(?:/(?P<l>[0-9]{{1,3}}))?(?P=cq){end}"""
    flow = rf"[ ]+\[[ ]*(?P<p>{_PORT}(?:[ ]*,[ ]*{_PORT})*)[ ]*\]{end}"
    block = rf"{end}(?P<pb>(?:(?P=t)[ ]{{2}}- {_PORT}{end})+|(?:(?P=t)[ ]{{4}}- {_PORT}{end})+)"
    return (rf"(?:\{{\}}{end}|(?=cidr:|ports:|protocol:)"
            rf"(?:{cidr}(?:(?P=t)[ ][ ](?=ports:|protocol:)|(?!ports:|protocol:)))?"
            rf"(?:ports:(?:{flow}|{block})(?:(?P=t)[ ][ ](?=protocol:)|(?!protocol:)))?"
            rf"(?:protocol:[ ]+(?P<r>{_scalar('tcp|udp|any')}){end})?)")


@dataclasses.dataclass(frozen=True)
class _Grammar:
    items: re.Pattern        # one rule per match, the first target's values as groups
    targets: re.Pattern      # one further target per match (rules with several)
    trivia: bool             # comments and blank lines allowed (and a group w per rule)


@lru_cache(maxsize=16)
def _grammar(indent: int, action_first: bool, trivia: bool) -> _Grammar:
    end = _END_WITH_TRIVIA if trivia else _END_PLAIN
    key = f"[ ]{{{indent + 2}}}"
    name = rf"name:[ ]+(?P<n>{_scalar(_RULE_NAME)}){end}"
    action = rf"action:[ ]+(?P<a>{_scalar('allow|log|block')}){end}"
    head = f"{action}{key}{name}" if action_first else f"{name}{key}{action}"
    trivia_line = f"|{_TRIVIA_LINE}" if trivia else ""
    # further targets are only delimited here; _targets() reads them
    more = rf"(?P<more>(?:(?P=t)- [^\n]*\n(?:(?P=t)[ ][ ][^\n]*\n{trivia_line})*)*)"
    item = (rf"[ ]{{{indent}}}- {head}{key}to:{end}"
            rf"(?P<t>[ ]{{{indent + 2},}})- {_target(end)}{more}")
    # Without comments, a rule's lines follow from its keys; with them, the
    # whole rule is captured to count them (which costs a copy of the text).
    items = re.compile(f"(?P<w>{item})" if trivia else item)
    targets = re.compile(rf"(?P<t>[ ]*)- {_target(end)}")
    return _Grammar(items, targets, trivia)


# A line that is `egress:` with nothing after it: a block list may follow.
_EGRESS_KEY = re.compile(rf"([ ]*)egress:(?:[ ]+(?:{_COMMENT})?)?\n")
_TRIVIA = re.compile(rf"(?:{_TRIVIA_LINE})*")
_ITEM_START = re.compile(r"([ ]*)- ")


@lru_cache(maxsize=16)
def _list_end(key_indent: int, indentless: bool) -> re.Pattern:
    """The line break before the first line after the list: a line that is
    not blank, not a comment, and indented no deeper than the key (an
    indentless list goes on at `- ` in the key's column)."""
    if indentless:
        shallower = rf"[ ]{{0,{key_indent - 1}}}[^ \n#]|" if key_indent else ""
        return re.compile(rf"\n(?:{shallower}[ ]{{{key_indent}}}(?!- )[^ \n#])")
    return re.compile(rf"\n[ ]{{0,{key_indent}}}[^ \n#]")


# PyYAML's implicit resolvers, by the first character of a plain scalar:
# values that start with one of these may be read as null, a boolean, a
# number or a date instead of a string.
_RESOLVERS = yaml.SafeLoader.yaml_implicit_resolvers
_MAY_RESOLVE = re.compile("\n[" + re.escape("".join(sorted(k for k in _RESOLVERS if k))) + "]")


def _all_strings(values: Sequence[str]) -> str:
    """values joined by newlines, or NotMine if YAML reads one of them
    (plain) as something other than a string. Quoted values always pass."""
    joined = "\n".join(values)
    lines = "\n" + joined + "\n"
    for match in _MAY_RESOLVE.finditer(lines):
        value = lines[match.start() + 1:lines.index("\n", match.end())]
        if any(regexp.match(value) for _tag, regexp in _RESOLVERS[value[0]]):
            raise NotMine
    return joined


def _quoted_too(words: dict) -> dict:
    return {**words, **{f'"{w}"': v for w, v in words.items()},
            **{f"'{w}'": v for w, v in words.items()}}


_ACTIONS = _quoted_too(EGRESS_ACTIONS)
_PROTOCOLS = {None: Proto.ANY, **_quoted_too(PROTOCOLS)}
# prefix length text -> length, as ipaddress reads it (leading zeros allowed)
_PREFIX_V4 = {None: 32, **{f"{n}": n for n in range(33)}, **{f"{n:02}": n for n in range(10)},
              **{f"{n:03}": n for n in range(33)}}
_HOST_MASK_V4 = [host_mask(n, 32) for n in range(33)]
_inet_pton, _AF_INET = socket.inet_pton, socket.AF_INET

_TARGET_FIELDS = ("networks", "ports", "proto", "host")   # host: never read here
_RULE_FIELDS = ("name", "action", "targets", "line")
if (tuple(f.name for f in dataclasses.fields(Target)) != _TARGET_FIELDS
        or tuple(f.name for f in dataclasses.fields(EgressRule)) != _RULE_FIELDS):
    raise ImportError("the fast reader builds Target and EgressRule field by field: "
                      "teach it their new fields")


# early(values, prefix lengths): a hint, given while the file is still being
# read, of the first list's IPv4 networks (integers) when every rule of it
# names one, so the agent can start writing them to the kernel (Maps.prestage);
# it may come for a file that turns out invalid or not the fast reader's.
Early = Callable[[Sequence[int], Sequence[int]], None]


# --- the lists of a file ------------------------------------------------------------

#: One block list of a file: (line of its `egress:` key, start and end
#: offsets of the list, its rules).
BlockList = tuple[int, int, int, "Rules"]


def block_lists(text: str, early: Early | None = None) -> list[BlockList]:
    """Every `egress:` block list of text, read; NotMine where one is not
    this reader's, or where there is none. early() hears of the first."""
    lists: list[BlockList] = []
    line, counted, at = 1, 0, 0
    while (at := text.find("egress:", at) + 1) > 0:
        line_start = text.rfind("\n", 0, at) + 1
        key = _EGRESS_KEY.match(text, line_start)
        if key is None or key.end(1) != at - 1 or (lists and line_start < lists[-1][2]):
            continue  # not a key alone on its line, or inside the list before
        key_indent = len(key[1])
        start = _TRIVIA.match(text, key.end()).end()
        item = _ITEM_START.match(text, start)
        if item is None or len(item[1]) < key_indent:
            continue  # no list here (null, or a problem the careful reader reports)
        line += text.count("\n", counted, line_start)
        counted = line_start
        first_line = line + 1 + text.count("\n", key.end(), start)
        end, rules = _rules(text, start, key_indent, len(item[1]), first_line,
                            None if lists else early)
        lists.append((line, start, end, rules))
        at = end - 1  # on after the list
    if not lists:
        raise NotMine  # no block list to speed up
    return lists


def blanked(text: str, lists: Sequence[BlockList]) -> str:
    """text with each list's lines left empty: the same line numbers for
    the careful reader (the lines themselves are left out where nothing
    follows them)."""
    pieces, at = [], 0
    for _line, start, end, _rules_ in lists:
        pieces.append(text[at:start])
        if not _TRIVIA.fullmatch(text, end):
            pieces.append("\n" * text.count("\n", start, end))
        at = end
    pieces.append(text[at:])
    return "".join(pieces)


# --- one list -------------------------------------------------------------------------

class Rules:
    """A list's rules as checked columns, one entry per rule. The first
    target of each rule is in the columns; further targets (rare) are
    Targets already."""

    def __init__(self, names, actions, lines, protos, ports, first_networks, extra_targets):
        self.names: Sequence[str] = names
        self.actions: Sequence[Action] = actions
        self.lines: Sequence[int] = lines
        self.protos: Sequence[Proto] = protos
        self.ports: Sequence[tuple] = ports
        # ("v4", values, prefix lengths): every first target one IPv4 network;
        # else ("networks", per rule the first target's networks)
        self.first_networks = first_networks
        self.extra_targets: dict[int, tuple[Target, ...]] = extra_targets
        # What reading made and these rules no longer need (the lines the
        # columns were cut from: tens of thousands of strings), kept until
        # the model is built, after the switch: freeing them is a
        # millisecond of deallocations the switch need not wait for.
        self.scrap: tuple | None = None

    def table(self) -> EgressTable:
        """The compiler's columns: one row per network of a target."""
        count = len(self.names)
        if self.first_networks[0] == "v4" and not self.extra_targets:
            _kind, values, prefixes = self.first_networks
            return EgressTable(self.names, range(1, count + 1), self.actions, self.protos,
                               self.ports, (4,) * count, values, prefixes)
        rows: list[tuple] = []
        for index, (action, proto, ports, networks) in enumerate(zip(
                self.actions, self.protos, self.ports, self._networks())):
            targets = [(networks, ports, proto)]
            targets += [(t.networks, t.ports, t.proto) for t in self.extra_targets.get(index, ())]
            for nets, target_ports, target_proto in targets:
                rows += [(index + 1, action, target_proto, target_ports, network.version,
                          int(network.network_address), network.prefixlen) for network in nets]
        columns = tuple(zip(*rows)) if rows else ((),) * 7
        return EgressTable(self.names, *columns)

    def model(self) -> tuple[EgressRule, ...]:
        """The EgressRules, built field by field: these values are checked
        already, and __init__ would cost half as much again for 10,000 rules."""
        new = object.__new__
        rules = []
        append = rules.append
        extra = self.extra_targets
        for index, (name, action, line, proto, ports, networks) in enumerate(zip(
                self.names, self.actions, self.lines, self.protos, self.ports,
                self._networks())):
            target = new(Target)
            target.__dict__.update(networks=networks, ports=ports, proto=proto, host=None)
            rule = new(EgressRule)
            rule.__dict__.update(name=name, action=action,
                                 targets=(target,) + extra[index] if extra and index in extra
                                 else (target,), line=line)
            append(rule)
        return tuple(rules)

    def _networks(self) -> Iterable[tuple]:
        """Each rule's first target's networks."""
        if self.first_networks[0] == "v4":
            _kind, values, prefixes = self.first_networks
            return zip(map(network_v4, values, prefixes))  # one network each
        return self.first_networks[1]


class RuleColumns(SequenceABC):
    """A policy's `egress`, as the fast reader leaves it: a sequence of
    EgressRules that are built only when one is first looked at, while the
    compiler reads the columns (table()) without building any. Equal to the
    tuple of the same rules, so a Policy is the same whichever reader made it.
    `built` tells whether the rules exist yet (the agent builds them after a
    reload's switch, see build())."""

    __slots__ = ("_rules", "_model")
    uses_names = False      # the grammar has no `host` (model.Policy.uses_names)

    def __init__(self, rules: Rules):
        self._rules = rules
        self._model: tuple[EgressRule, ...] | None = None

    def table(self) -> EgressTable:
        return self._rules.table()

    @property
    def built(self) -> bool:
        return self._model is not None

    def build(self) -> tuple[EgressRule, ...]:
        if self._model is None:
            self._rules.scrap = None
            self._model = self._rules.model()
        return self._model

    def __len__(self) -> int:
        return len(self._rules.names)

    def __getitem__(self, index):
        return self.build()[index]

    def __iter__(self) -> Iterator[EgressRule]:
        return iter(self.build())

    def __add__(self, other):
        return self.build() + tuple(other)

    def __radd__(self, other):
        return tuple(other) + self.build()

    def __eq__(self, other) -> bool:
        if isinstance(other, RuleColumns):
            other = other.build()
        return isinstance(other, tuple) and self.build() == other

    def __hash__(self) -> int:
        return hash(self.build())

    def __repr__(self) -> str:
        return f"RuleColumns({len(self)} rules)"


def _rules(text: str, start: int, key_indent: int, indent: int,
           first_line: int, early: Early | None = None) -> tuple[int, Rules]:
    """(end offset, rules) of the list that starts at start, or NotMine."""
    tail = text[start:] if text.endswith("\n") else text[start:] + "\n"
    action_first = tail.startswith("- action:", indent)
    for trivia in (False, True):
        grammar = _grammar(indent, action_first, trivia)
        first = grammar.items.match(tail)
        if first is None:
            continue  # a comment or blank line in the first rule, or not a rule at all
        if not trivia and first["pb"] is None and not first["more"]:
            shape = (first["c"] is not None, first["p"] is not None, first["r"] is not None)
            template = _template(indent, action_first, len(first["t"]), *shape)
            run = _constant_run(template, tail, key_indent, indent, early)
            if run is None:
                loose = _run(template, tail, key_indent, indent)
                run = loose and (*loose, None, None)
            if run is not None:
                columns, size, networks, lines = run
                try:
                    rules = _uniform_rules(template, columns, first_line,
                                           3 + max(sum(shape), 1), early, networks)
                    rules.scrap = (lines, columns)
                    return min(start + size, len(text)), rules
                except NotMine:
                    pass  # a value the loose template let through: read it strictly
        run = _run(grammar.items, tail, key_indent, indent)
        if run is not None:
            return min(start + run[1], len(text)), _grammar_rules(grammar, run[0], first_line)
    raise NotMine


@lru_cache(maxsize=16)
def _template(indent: int, action_first: bool, target_indent: int, cidr: bool, ports: bool,
              protocol: bool) -> re.Pattern:
    """The lines of a rule shaped like the first rule of a list (no comments,
    one target, ports as a flow list), every value taken as it stands: a loose
    pattern, fast because it has no choices to make; _uniform_rules() then
    checks every value as strictly as the grammar would."""
    key = " " * (indent + 2)
    name, action = r"name: (?P<n>[^\n]*)\n", r"action: (?P<a>[^\n]*)\n"
    head = f"{action}{key}{name}" if action_first else f"{name}{key}{action}"
    keys = [r"cidr: (?P<c>[^\n/]*)(?:/(?P<l>[^\n]*))?\n"] if cidr else []
    keys += [r"ports: (?P<p>[^\n]*)\n"] if ports else []
    keys += [r"protocol: (?P<r>[^\n]*)\n"] if protocol else []
    target = " " * target_indent
    return re.compile(f"{' ' * indent}- {head}{key}to:\\n{target}- "
                      + (f"{target}  ".join(keys) if keys else r"\{\}\n"))


def _run(pattern: re.Pattern, tail: str, key_indent: int,
         indent: int) -> tuple[list, int] | None:
    """(group columns, length) of the run of rules at the start of tail, if
    that run is the whole list, else None. re.split keeps the text between
    matches, so the rules must follow one another without a gap, and the
    list must end where they end; the rest of the file confirms it later
    (read with the list blanked, spec.egress must come out empty)."""
    parts = pattern.split(tail)
    stride = pattern.groups + 1
    gaps = parts[0::stride]
    if len(gaps) < 2 or gaps[0]:
        return None
    if gaps.count("") + bool(gaps[-1]) == len(gaps):  # no gap but the rest of the file
        size = len(tail) - len(gaps[-1])
        if not _ends_list(key_indent, indent == key_indent).match(tail, size):
            return None  # a rule this pattern does not cover
    else:
        # matches after a gap: a later document's list, or a rule outside the
        # pattern. Bound the list by indentation and take it whole or not at all.
        end = _list_end(key_indent, indent == key_indent).search(tail)
        size = end.start() + 1 if end else len(tail)
        parts = pattern.split(tail[:size])
        gaps = parts[0::stride]
        if len(gaps) < 2 or gaps.count("") != len(gaps):
            return None
    return [parts[k::stride] for k in range(1, stride)], size


def _constant_run(template: re.Pattern, tail: str, key_indent: int, indent: int,
                  early: Early | None = None
                  ) -> tuple[list, int, tuple | None, list[str]] | None:
    """_run(template, ...) for the usual list of a program: every rule the
    first one's lines, but for its name and its cidr (the same action, ports
    and protocol). Then the list is read a line at a time, by columns: one
    str.split at the line breaks, each line checked against the first
    rule's (whole, or up to where its value starts), the values sliced off.
    The template's regular expression does the same a match per rule, at
    about twice the cost. Anything else: None (the template's run).

    The cidr line is read first, and its networks (the third value, or None)
    go to early() before the other lines are checked: the kernel's share of
    a large reload is writing these, and it can start that much sooner. The
    fourth value is the lines (see Rules.scrap)."""
    first = template.match(tail)
    if first is None:
        return None
    block = first[0]
    per_rule = block.count("\n")
    model = block.split("\n")[:per_rule]          # the first rule's lines
    group = template.groupindex
    cut = {}                                      # line of a value -> where it starts
    for name in ("n", "c"):
        if name in group:
            at = first.start(name)
            cut[block.count("\n", 0, at)] = at - block.rfind("\n", 0, at) - 1
    lines = tail.split("\n")
    head = model[0][:cut[0]] if 0 in cut else model[0]
    # the rules: as many as lines in the first rule's column begin like it
    # (lines hold no line break, so "\n" + head is found only where one
    # begins; any such line past the list fails the checks below)
    count = _lines_beginning(lines[0::per_rule], head)
    used = count * per_rule
    if not count or used >= len(lines):
        return None
    end = len(tail) - len("\n".join(lines[used:]))   # where the line after the list starts
    cidr_line = max(cut) if "c" in group else None   # the name's line comes before it
    names, cidrs, networks = None, None, None
    for line in sorted(range(per_rule), key=lambda line: line != cidr_line):
        expected = model[line]
        column = lines[line:used:per_rule]
        if line == cidr_line:
            cidrs = _cut_cidrs(column, expected[:cut[line]], first["l"])
            if cidrs is None:
                return None
            networks = _early_networks(cidrs, early)
        elif line in cut:
            names = _cut_heads(column, expected[:cut[line]])
            if names is None:
                return None
        elif column.count(expected) != count:
            return None
    if not _ends_list(key_indent, indent == key_indent).match(tail, end):
        return None  # a rule of another shape follows
    columns: list = []
    for name in sorted(group, key=group.__getitem__):
        if name == "n":
            columns.append(names)
        elif name == "c":
            columns += cidrs
        elif name != "l":
            columns.append([first[name]] * count)   # the same object: a fast count()
    return columns, end, networks, lines


def _early_networks(cidrs: list[list], early: Early | None) -> tuple | None:
    """The networks of a cidr column (_cidr_columns), passed on to early()
    if they are IPv4; None where _networks_column objects (_uniform_rules
    then finds the same objection in its place)."""
    try:
        networks = _networks_column(cidrs[0], cidrs[1], None)
    except NotMine:
        return None
    if early is not None and networks[0] == "v4":
        early(networks[1], networks[2])
    return networks


def _lines_beginning(lines: list[str], prefix: str) -> int:
    """How many of lines (none holding a line break) begin with prefix."""
    return ("\n" + "\n".join(lines)).count("\n" + prefix)


def _cut_heads(lines: list[str], head: str) -> list[str] | None:
    """What follows head in each line, or None unless every line begins
    with it. (A slice per line: one str.replace of the heads over the joined
    column costs three times as much.)"""
    if _lines_beginning(lines, head) != len(lines):
        return None
    return list(map(itemgetter(slice(len(head), None)), lines))


def _cut_cidrs(lines: list[str], head: str, first_length: str | None) -> list[list] | None:
    """The template's c and l columns from the cidr lines (_cut_heads, then
    _cidr_columns), or None unless every line begins with head. Where
    every value has the first rule's prefix length (hosts, say) and no other
    /, the addresses are sliced out of the lines directly."""
    count = len(lines)
    joined = "\n" + "\n".join(lines) + "\n"
    if joined.count("\n" + head) != count:
        return None
    if first_length is not None:
        suffix = f"/{first_length}\n"
        if (joined.count("/") == count * (1 + head.count("/"))
                and joined.count(suffix) == count):
            # each line ends in the suffix, and holds no other /
            address = slice(len(head), 1 - len(suffix))
            return [list(map(itemgetter(address), lines)), [first_length] * count]
    return _cidr_columns(_cut_heads(lines, head), first_length)


def _cidr_columns(cidrs: list[str], first_length: str | None) -> list[list]:
    """The template's c and l columns: each cidr value cut at its first /."""
    count = len(cidrs)
    joined = "\n".join(cidrs) + "\n"
    slashes = joined.count("/")
    if slashes == 0:
        return [cidrs, [None] * count]
    if first_length is not None and slashes == count:
        suffix = f"/{first_length}\n"
        if joined.count(suffix) == count:   # one length, the only / of every value
            return [joined.replace(suffix, "\n").split("\n")[:-1], [first_length] * count]
    addresses, lengths = [], []
    for value in cidrs:
        address, slash, length = value.partition("/")
        addresses.append(address)
        lengths.append(length if slash else None)
    return [addresses, lengths]


@lru_cache(maxsize=16)
def _ends_list(key_indent: int, indentless: bool) -> re.Pattern:
    """Matches where a list has ended: blank and comment lines, then the end
    of the file or a line indented no deeper than the key (for an indentless
    list, not another `- `)."""
    if indentless:
        shallower = rf"[ ]{{0,{key_indent - 1}}}[^ \n#]|" if key_indent else ""
        line = rf"{shallower}[ ]{{{key_indent}}}(?!- )[^ \n#]"
    else:
        line = rf"[ ]{{0,{key_indent}}}[^ \n#]"
    return re.compile(rf"(?:{_TRIVIA_LINE})*(?:\Z|{line})")


_NAME_COLUMN = re.compile(rf"(?:{_scalar(_RULE_NAME)}\n)*")
_CIDR_VALUE = re.compile(r"""(["']?)([0-9A-Fa-f:.]+)(?:/([0-9]{1,3}))?\1""")
_FLOW_PORTS = re.compile(rf"\[[ ]*({_PORT}(?:[ ]*,[ ]*{_PORT})*)[ ]*\]")


def _uniform_rules(template: re.Pattern, columns: list, first_line: int,
                   lines_per_rule: int, early: Early | None = None,
                   networks: tuple | None = None) -> Rules:
    """The rules from the template's loose columns, each value checked as
    the grammar checks it. The networks first, for early(), unless they
    are given (read from these columns and passed to early() already)."""
    group = template.groupindex

    def column(name: str) -> list | None:
        return columns[group[name] - 1] if name in group else None

    count = len(columns[0])
    if networks is None and "c" in group:
        networks = _early_networks([column("c"), column("l")], early)
        if networks is None:
            raise NotMine
    elif networks is None:
        networks = ("networks", [ANY_ADDRESS] * count)
    names = column("n")
    joined = _all_strings(names)
    if '"' in joined or "'" in joined:
        if not _NAME_COLUMN.fullmatch(joined + "\n"):
            raise NotMine
        names = [name[1:-1] if name[0] in "\"'" else name for name in names]
    elif not _plain_rule_names(joined):
        raise NotMine
    if len(set(names)) != count:
        raise NotMine  # duplicate rule names
    try:
        actions = _lookup(_ACTIONS, column("a"))
        protos = _lookup(_PROTOCOLS, column("r")) if "r" in group else [Proto.ANY] * count
    except KeyError:
        raise NotMine from None
    spellings = column("p")
    if spellings is None:
        ports = [ALL_PORTS] * count
    else:
        inner = {}
        for spelling in set(spellings) if spellings.count(spellings[0]) != count else spellings[:1]:
            match = _FLOW_PORTS.fullmatch(spelling)
            if match is None:
                raise NotMine
            inner[spelling] = _port_ranges(match[1])
        ports = _lookup(inner, spellings)
    return Rules(names=names, actions=actions, protos=protos, ports=ports,
                  lines=range(first_line, first_line + count * lines_per_rule, lines_per_rule),
                  first_networks=networks, extra_targets={})


# Characters of rule names (model.RULE_NAME), and how a name may not start or end
_NAME_CHARACTERS = re.compile(r"[-a-z0-9_.\n]*")
_NAME_EDGES = ("\n-", "\n_", "\n.", "-\n", "_\n", ".\n", "\n\n")


def _plain_rule_names(joined: str) -> bool:
    """Every line of joined matches model.RULE_NAME (without a regular
    expression per name)."""
    return bool(_NAME_CHARACTERS.fullmatch(joined)) and not any(
        edge in f"\n{joined}\n" for edge in _NAME_EDGES)


def _lookup(meanings: dict, words: Sequence) -> list:
    """The meaning of each word; KeyError for a word without one. A column
    of one word (the usual case) is one lookup."""
    if words.count(words[0]) == len(words):
        return [meanings[words[0]]] * len(words)
    return list(map(meanings.__getitem__, words))


def _grammar_rules(grammar: _Grammar, columns: list, first_line: int) -> Rules:
    """The rules from the grammar's columns."""
    group = grammar.items.groupindex
    count = len(columns[0])
    names = columns[group["n"] - 1]
    joined = _all_strings(names)
    if '"' in joined or "'" in joined:
        names = [name[1:-1] if name[0] in "\"'" else name for name in names]
    if len(set(names)) != count:
        raise NotMine  # duplicate rule names
    c, l, cq = (columns[group[g] - 1] for g in ("c", "l", "cq"))
    p, pb, r = (columns[group[g] - 1] for g in ("p", "pb", "r"))
    more, t = columns[group["more"] - 1], columns[group["t"] - 1]
    if grammar.trivia:
        counts = map(str.count, columns[group["w"] - 1], repeat("\n"))
    else:
        counts = _line_counts(c, p, pb, r, more)
    extra_targets = {}
    if more.count("") != count:
        for index, text in enumerate(more):
            if text:
                extra_targets[index] = _targets(grammar, text, len(t[index]))
    return Rules(
        names=names,
        actions=_lookup(_ACTIONS, columns[group["a"] - 1]),
        lines=list(accumulate(counts, initial=first_line))[:-1],
        protos=_lookup(_PROTOCOLS, r),
        ports=_ports_column(p, pb),
        first_networks=_networks_column(c, l, cq),
        extra_targets=extra_targets)


def _line_counts(c, p, pb, r, more) -> Iterable[int]:
    """Lines of each rule of a list without comments or blank lines: name,
    action, to, then one per key of the first target (one for {}), one per
    port of a block list, and the further targets' lines."""
    count = len(c)
    if (c.count(None) in (0, count) and p.count(None) in (0, count)
            and pb.count(None) == count and r.count(None) in (0, count)
            and more.count("") == count):
        # one shape for every rule
        keys = (c[0] is not None) + (p[0] is not None) + (r[0] is not None)
        return repeat(3 + max(keys, 1), count)
    return [3 + max((cidr is not None) + (flow is not None or block is not None)
                    + (proto is not None), 1)
            + (block.count("\n") if block else 0) + extra.count("\n")
            for cidr, flow, block, proto, extra in zip(c, p, pb, r, more)]


def _ports_column(flows: Sequence[str | None], blocks: Sequence[str | None]) -> list[tuple]:
    """Each rule's port ranges; every distinct spelling is read once."""
    spellings = flows if blocks.count(None) == len(blocks) else [
        flow if block is None else block for flow, block in zip(flows, blocks)]
    ranges = {spelling: _port_ranges(spelling) for spelling in set(spellings)}
    return list(map(ranges.__getitem__, spellings))


def _port_ranges(spelling: str | None) -> tuple[tuple[int, int], ...]:
    if spelling is None:
        return ALL_PORTS
    words = _BLOCK_PORT.findall(spelling) if "\n" in spelling else spelling.split(",")
    ranges = []
    for word in words:
        low, _, high = word.strip().strip("\"'").partition("-")
        low_port = int(low)
        high_port = int(high) if high else low_port
        if not (PORT_MIN <= low_port <= high_port <= PORT_MAX):
            raise NotMine
        ranges.append((low_port, high_port))
    return tuple(ranges)


def _networks_column(addresses: Sequence[str | None], lengths: Sequence[str | None],
                     quotes: Sequence[str | None]) -> tuple:
    """Each rule's first target's networks: IPv4 in bulk (as integers), the
    rest one by one (as networks)."""
    try:
        if None in addresses:
            raise ValueError  # some target names no cidr
        packed = b"".join(map(_inet_pton, repeat(_AF_INET), addresses))
        prefixes = _lookup(_PREFIX_V4, lengths)
    except (OSError, KeyError, ValueError):
        if quotes is None:  # loose columns from a template: check each value whole
            return ("networks", [_networks_loose(address, length)
                                 for address, length in zip(addresses, lengths)])
        return ("networks", [_networks(address, length, quote)
                             for address, length, quote in zip(addresses, lengths, quotes)])
    values = struct.unpack(f">{len(addresses)}I", packed)
    if (prefixes[0] != 32 or prefixes.count(32) != len(prefixes)) and any(
            map(and_, values, map(_HOST_MASK_V4.__getitem__, prefixes))):
        raise NotMine  # host bits set
    return ("v4", values, prefixes)


def _networks(address: str | None, length: str | None, quote: str | None) -> tuple:
    if address is None:
        return ANY_ADDRESS
    # A plain scalar must be a string to YAML: a prefix length, "::" or two
    # dots rule out numbers and dates (1.5, 12:30, 0b101).
    if not (quote or length or "::" in address or address.count(".") >= 2):
        raise NotMine
    try:
        return (parse_cidr(f"{address}/{length}" if length else address),)
    except ValueError:
        raise NotMine from None


def _networks_loose(address: str, length: str | None) -> tuple:
    match = _CIDR_VALUE.fullmatch(address if length is None else f"{address}/{length}")
    if match is None:
        raise NotMine
    return _networks(match[2], match[3], match[1] or None)


def _targets(grammar: _Grammar, text: str, indent: int) -> tuple[Target, ...]:
    """The second and later targets of one rule."""
    targets, at = [], 0
    while at < len(text):
        match = grammar.targets.match(text, at)
        if match is None or len(match["t"]) != indent:
            raise NotMine
        at = match.end()
        flow, block = match["p"], match["pb"]
        targets.append(Target(
            networks=_networks(match["c"], match["l"], match["cq"]),
            ports=_port_ranges(flow if block is None else block),
            proto=_PROTOCOLS[match["r"]]))
    return tuple(targets)
