# SPDX-License-Identifier: Apache-2.0
"""The fast reader: the egress rules of large policies without a YAML node per value.

The careful reader (reader.py) builds a PyYAML node for every value so that
every problem can name its line; at 10,000 rules that alone takes over a
second. Large policies are written by programs: block style, one rule after
another, in one layout. columns.py recognises a `spec.egress` list in such a
layout, checks the values a column at a time and builds the same EgressRule
objects. The rest of the file (metadata, exec rules, selectors, failClosed,
...) still goes through the careful reader, with the list blanked out line
for line so every line number stays where it was.

The policies it returns are ordinary Policy objects whose `egress` is a
columns.RuleColumns: the compiler reads the columns, and the EgressRules are
built only when something looks at them (the agent: after its switch). It
never compiles and never touches the kernel; `early` only hears, while the
file is still being read, which networks a large list names (columns.Early).

It answers "here are the policies" or "not mine" (None), never a problem: a
layout outside its grammar (columns.py), a value it does not recognise,
anything the careful reader would object to, and the front door (load.py)
reads the whole file with the careful reader instead, which words the
problems. So problems are worded in one place, and what this reader accepts
means exactly what the careful reader says it means
(tests/unit/test_policy_fast.py compares the two on the fixtures, on
generated files and on mutations of them).
"""
from __future__ import annotations

import dataclasses
import gc
from contextlib import contextmanager
from typing import Iterator

from yaml.nodes import MappingNode, Node, ScalarNode

from guard.policy.columns import Early, NotMine, RuleColumns, blanked, block_lists
from guard.policy.model import Policy
from guard.policy.reader import NULL, Reader

__all__ = ["gc_paused", "read", "warm_up", "with_rules"]


def read(text: str, source: str, single: bool = False,
         early: Early | None = None) -> tuple[Policy, ...] | None:
    """The policies of text, large egress lists still as columns
    (RuleColumns), or None: read it carefully. single: exactly one
    document, as parse_policy() wants."""
    if "egress:" not in text:
        return None
    with gc_paused():
        try:
            return _read(text, source, single, early)
        except NotMine:
            return None


def with_rules(policies: tuple[Policy, ...]) -> tuple[Policy, ...]:
    """The same policies with their egress rules built (a tuple, as the
    careful reader makes), the collector paused while they are."""
    with gc_paused():
        return tuple(dataclasses.replace(policy, egress=policy.egress.build())
                     if isinstance(policy.egress, RuleColumns) else policy
                     for policy in policies)


def _read(text: str, source: str, single: bool, early: Early | None) -> tuple[Policy, ...]:
    lists = block_lists(text, early)
    reader = Reader(source)
    documents = reader.documents(blanked(text, lists))
    if documents is None or (single and len(documents) != 1):
        raise NotMine
    shells = reader.policy_set(documents)
    if reader.problems:
        raise NotMine
    by_line = {key_line: rules for key_line, _start, _end, rules in lists}
    result = []
    for document, shell in zip(documents, shells):
        key_line = _empty_egress_key_line(document)
        rules = by_line.pop(key_line, None) if key_line is not None else None
        if rules is not None and shell.exec_rules and not {
                rule.name for rule in shell.exec_rules}.isdisjoint(rules.names):
            raise NotMine  # a duplicate rule name: the careful reader says where
        result.append(shell if rules is None
                      else dataclasses.replace(shell, egress=RuleColumns(rules)))
    if by_line:
        # an `egress:` line that is not a policy's spec.egress, or a list
        # that goes on past where the grammar stopped
        raise NotMine
    return tuple(result)


def _empty_egress_key_line(document: Node) -> int | None:
    """The line of spec.egress when its value is empty (where a list was)."""
    if not isinstance(document, MappingNode):
        return None
    spec = next((value for key, value in document.value
                 if isinstance(key, ScalarNode) and key.value == "spec"), None)
    if not isinstance(spec, MappingNode):
        return None
    for key, value in spec.value:
        if isinstance(key, ScalarNode) and key.value == "egress":
            empty = isinstance(value, ScalarNode) and value.tag == NULL and value.value == ""
            return key.start_mark.line + 1 if empty else None
    return None


# --- warming up -----------------------------------------------------------------

# The layouts programs write large lists in: indented under `egress:` and
# `to:` (the hand-written style) and indentless (PyYAML's dump), each rule a
# name, an action and one target with a cidr and ports. Their regular
# expressions take about 10 ms to compile; warm_up() pays that at the agent's
# start rather than in the first reload that meets the layout.
_USUAL_LAYOUTS = ((4, 8), (2, 4))   # (items' indent, targets' indent) under `  egress:`


def warm_up() -> None:
    """Compile the patterns of the usual layouts (see _USUAL_LAYOUTS)."""
    for indent, target_indent in _USUAL_LAYOUTS:
        item, key, target = " " * indent, " " * (indent + 2), " " * target_indent
        rules = "".join(f"{item}- name: warm-up-{n}\n{key}action: block\n{key}to:\n"
                        f"{target}- cidr: 198.18.0.{n}/32\n{target}  ports: [443]\n"
                        for n in (1, 2))
        read("apiVersion: egress-guard/v1\nkind: EgressPolicy\nmetadata:\n  name: warm-up\n"
             f"spec:\n  egress:\n{rules}", "<warm-up>")


@contextmanager
def gc_paused() -> Iterator[None]:
    """Tens of thousands of new objects would start the cyclic collector
    dozens of times over an agent's whole heap; they hold no cycles. On the
    way out they are moved to the oldest generation (freeze, then unfreeze:
    two list splices), or the first allocation after would walk them all
    at once; a full collection still looks at them, as at any old object."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.freeze()
            gc.unfreeze()
            gc.enable()
