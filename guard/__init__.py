# SPDX-License-Identifier: Apache-2.0
"""egress-guard: an eBPF egress guard for AI-agent sandboxes."""
__version__ = "0.1.0"
