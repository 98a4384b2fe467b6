# SPDX-License-Identifier: Apache-2.0
"""The front door for policy text and files: one result type (Policy)
whichever reader did the work. Large policies in the layout programs write
go through the fast reader (fast.py, a column at a time, the same results);
everything else, and everything the fast reader declines, through the
careful one (reader.py). Every failure is a PolicyError naming file, line
and field.

A large list the fast reader read stays columns (RuleColumns) until its
rules are looked at: the compiler reads the columns, and the agent's reloads
build the rules after the kernel's switch (fast.build_rules)."""
from __future__ import annotations

import os
from importlib import resources

from guard.policy import fast as fast_reader
from guard.policy import reader
from guard.policy.columns import Early
from guard.policy.model import Policy
from guard.policy.reader import policy_text

__all__ = ["DEFAULT_POLICY_SOURCE", "default_policy", "load_policies", "load_policy",
           "parse_policies", "parse_policy", "policy_text"]

DEFAULT_POLICY_SOURCE = "guard/data/default-policy.yaml"


def parse_policy(text: str, source_name: str = "<string>", fast: bool = True) -> Policy:
    """Validate the text of one policy. fast=False: never the fast reader
    (for comparing the two)."""
    read = fast_reader.read(text, source_name, True) if fast else None
    if read is None:
        return reader.parse_policy(text, source_name)
    return fast_reader.with_rules(read)[0]


def parse_policies(text: str, source_name: str = "<string>", fast: bool = True,
                   early: Early | None = None, columns: bool = False) -> tuple[Policy, ...]:
    """Every policy of a file of one or more YAML documents (---), each
    validated; names are unique within the file. early: see columns.Early.
    columns: a large egress list may stay columns (RuleColumns) until
    looked at (the agent's reloads); else every rule is built."""
    read = fast_reader.read(text, source_name, early=early) if fast else None
    if read is None:
        return reader.parse_policies(text, source_name)
    return read if columns else fast_reader.with_rules(read)


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Read and validate a policy file."""
    return parse_policy(reader.read_policy_file(path), os.fspath(path))


def load_policies(path: str | os.PathLike[str], early: Early | None = None,
                  columns: bool = False) -> tuple[Policy, ...]:
    """Read and validate a file of policies (early, columns: parse_policies)."""
    return parse_policies(reader.read_policy_file(path), os.fspath(path), early=early,
                          columns=columns)


def default_policy() -> Policy:
    """The embedded policy used when the agent is given none."""
    resource = resources.files("guard") / "data" / "default-policy.yaml"
    return reader.parse_policy(resource.read_text(encoding="utf-8"), DEFAULT_POLICY_SOURCE)
