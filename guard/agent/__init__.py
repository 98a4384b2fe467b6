# SPDX-License-Identifier: Apache-2.0
"""The agent: the composition root over the stages, its loop, policy
generations and reloads, the hold watchdog and its share of the CPUs."""
