# SPDX-License-Identifier: Apache-2.0
"""Every JSON event is built here (the event contract), written by one writer,
and counted for the metrics endpoint."""
