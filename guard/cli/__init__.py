# SPDX-License-Identifier: Apache-2.0
"""The egress-guard command line: parse, call, print; exit codes. Kept free of
imports here: `policy reload` starts without click (reload.py)."""
