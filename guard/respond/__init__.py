# SPDX-License-Identifier: Apache-2.0
"""Verdicts -> effects: map updates, signals, socket resets."""
