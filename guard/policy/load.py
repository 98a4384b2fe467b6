# SPDX-License-Identifier: Apache-2.0
"""The front door for policy text and files: one result type (Policy)
whichever reader did the work. Large policies in the layout programs write
go through the fast reader (fast.py, a column at a time, the same results);
everything else, and everything the fast reader declines, through the
careful one (reader.py). Every failure is a PolicyError naming file, line
and field.

The agent's reloads take the policies as FastPolicy drafts
(read_policy_set, load_policy_set): compiled from the columns, the model
built after the kernel's switch."""
from __future__ import annotations

import os
from importlib import resources

from guard.policy import fast as fast_reader
from guard.policy import reader
from guard.policy.columns import Early
from guard.policy.fast import FastPolicy
from guard.policy.model import Policy
from guard.policy.reader import policy_text

__all__ = ["DEFAULT_POLICY_SOURCE", "default_policy", "load_policies", "load_policy",
           "load_policy_set", "parse_policies", "parse_policy", "policy_text",
           "read_policy_set"]

DEFAULT_POLICY_SOURCE = "guard/data/default-policy.yaml"


def parse_policy(text: str, source_name: str = "<string>", fast: bool = True) -> Policy:
    """Validate the text of one policy. fast=False: never the fast reader
    (for comparing the two)."""
    read = fast_reader.read_policies(text, source_name, True) if fast else None
    return read[0] if read is not None else reader.parse_policy(text, source_name)


def parse_policies(text: str, source_name: str = "<string>",
                   fast: bool = True) -> tuple[Policy, ...]:
    """Every policy of a file of one or more YAML documents (---), each
    validated; names are unique within the file."""
    read = fast_reader.read_policies(text, source_name) if fast else None
    return read if read is not None else reader.parse_policies(text, source_name)


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Read and validate a policy file."""
    return parse_policy(reader.read_policy_file(path), os.fspath(path))


def load_policies(path: str | os.PathLike[str]) -> tuple[Policy, ...]:
    """Read and validate a file of policies."""
    return parse_policies(reader.read_policy_file(path), os.fspath(path))


def read_policy_set(text: str, source: str, early: Early | None = None
                    ) -> tuple[FastPolicy, ...]:
    """parse_policies() for the agent's reloads: the policies of text, the
    rules of large lists still as columns; PolicyError as parse_policies().
    early: see columns.Early."""
    return fast_reader.read(text, source, early=early) or tuple(
        FastPolicy(policy, None) for policy in reader.parse_policies(text, source))


def load_policy_set(path: str | os.PathLike[str], early: Early | None = None
                    ) -> tuple[FastPolicy, ...]:
    """read_policy_set() of a file; every failure is a PolicyError."""
    return read_policy_set(reader.read_policy_file(path), os.fspath(path), early)


def default_policy() -> Policy:
    """The embedded policy used when the agent is given none."""
    resource = resources.files("guard") / "data" / "default-policy.yaml"
    return reader.parse_policy(resource.read_text(encoding="utf-8"), DEFAULT_POLICY_SOURCE)
