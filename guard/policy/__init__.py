# SPDX-License-Identifier: Apache-2.0
"""Policies: the model, the readers (careful and fast), CIDRs, and the
compiler from a policy to kernel tables. Pure: nothing here touches the kernel.

    load.py      the front door: text or file -> Policy, whichever reader read
                 it; the fast reader first, then the careful one
    fast.py      the fast reader: a file's egress block lists from columns.py
                 (left as RuleColumns), the rest with reader.Reader
    columns.py   the fast reader's grammar: egress block lists -> checked columns
    reader.py    the careful reader: YAML nodes -> Policy, every problem worded
    suggest.py   recorded events -> the smallest policy that allows them (policy suggest)
    replay.py    recorded events judged by a policy as the kernel would (policy test)
    compile.py   a Policy -> kernel tables (from the columns if the fast
                 reader kept them); detections' share passed in by the caller
    names.py     host targets -> the kernel's name tables; NameTable.verdict
    model.py     Policy and its parts, the language's words and the ranking of
                 actions (ACTION_RANK), select_policy
    cidr.py      CIDR text -> networks

Each module imports only modules below it here, and only their public names.
"""
