# SPDX-License-Identifier: Apache-2.0
"""Exit codes of the egress-guard CLI: a contract for operators' scripts (README)."""
import enum


class ExitCode(enum.IntEnum):
    OK = 0
    FAILURE = 1        # doctor: a required mechanism is missing; policy check: invalid policy
    USAGE = 2          # bad command line (click's own code for usage errors)
    RUNTIME = 3        # the agent could not load, attach or run
    PERMISSION = 4     # needs root
    CRASHED = 5        # run: the agent stopped on an unexpected error (its "crashed" event says why)
    REFUSED = 6        # policy test: the policy would refuse what was recorded as allowed
