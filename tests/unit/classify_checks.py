# SPDX-License-Identifier: Apache-2.0
"""Checks the classifier tests share."""
from __future__ import annotations

import orjson

from guard.classify import Finding


def assert_json(findings):
    """Every finding is a Finding and renders as JSON (events carry them)."""
    for finding in findings:
        assert isinstance(finding, Finding)
        orjson.dumps(finding.as_dict())
