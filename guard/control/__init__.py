# SPDX-License-Identifier: Apache-2.0
"""The control socket: the agent's server and the CLI's light client."""
