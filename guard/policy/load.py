# SPDX-License-Identifier: Apache-2.0
"""The front door for policy text and files: one result type (Policy)
whichever reader did the work. Large policies in the layout programs write
go through the fast reader (fast.py, a column at a time, the same results);
everything else, and everything the fast reader declines, through the
careful one (model.py). Every failure is a PolicyError naming file, line and
field."""
from __future__ import annotations

import os

from guard.policy import fast as fast_reader
from guard.policy import model
from guard.policy.model import Policy

__all__ = ["load_policies", "load_policy", "parse_policies", "parse_policy"]


def parse_policy(text: str, source_name: str = "<string>", fast: bool = True) -> Policy:
    """Validate the text of one policy. fast=False: never the fast reader
    (for comparing the two)."""
    read = fast_reader.read_policies(text, source_name, True) if fast else None
    return read[0] if read is not None else model.parse_policy(text, source_name)


def parse_policies(text: str, source_name: str = "<string>",
                   fast: bool = True) -> tuple[Policy, ...]:
    """Every policy of a file of one or more YAML documents (---), each
    validated; names are unique within the file."""
    read = fast_reader.read_policies(text, source_name) if fast else None
    return read if read is not None else model.parse_policies(text, source_name)


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Read and validate a policy file."""
    return parse_policy(model.read_policy_file(path), os.fspath(path))


def load_policies(path: str | os.PathLike[str]) -> tuple[Policy, ...]:
    """Read and validate a file of policies."""
    return parse_policies(model.read_policy_file(path), os.fspath(path))
