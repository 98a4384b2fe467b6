# SPDX-License-Identifier: Apache-2.0
"""The self-contained demo and the throw-away sandboxes it (and the tests) use."""
