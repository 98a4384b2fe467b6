# SPDX-License-Identifier: Apache-2.0
"""Policies: the model, the readers (careful and fast), CIDRs, and the
compiler from a policy to kernel tables. Pure: nothing here touches the kernel."""
