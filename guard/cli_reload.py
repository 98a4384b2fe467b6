# SPDX-License-Identifier: Apache-2.0
"""`egress-guard policy reload` without click.

Switching policies is what deployment scripts and operators run against a
live agent, and in a fresh interpreter the imports are most of the wait:
this module needs only the socket and json modules (client.py), so
`egress-guard policy reload FILE [--socket PATH]` skips loading click and
the rest of the CLI. cli.py's click command calls the same reload();
anything else on the command line (--help, an unknown option, a directory
for FILE) is parsed by click as before, with click's messages.
"""
from __future__ import annotations

import os
import sys

from .client import DEFAULT_SOCKET, ControlError, request
from .exitcodes import ExitCode


def main(argv: list[str]) -> int | None:
    """The exit code of `policy reload` when argv is that command with at
    most a FILE and --socket; None: click parses argv."""
    if argv[:2] != ["policy", "reload"]:
        return None
    file, socket_path = None, DEFAULT_SOCKET
    args = argv[2:]
    while args:
        arg = args.pop(0)
        if arg == "--socket" and args:
            socket_path = args.pop(0)
        elif arg.startswith("--socket="):
            socket_path = arg.partition("=")[2]
        elif file is None and not arg.startswith("-"):
            file = arg
        else:
            return None
    if file is not None and os.path.isdir(file):
        return None
    return reload(file, socket_path)


def reload(file: str | None, socket_path: str) -> ExitCode:
    """Ask the agent to switch to file (None: re-read its own policy file);
    print the outcome the way the CLI does and return the exit code."""
    message: dict = {"op": "reload"}
    if file:
        try:
            with open(file, encoding="utf-8") as policy_file:
                text = policy_file.read()
        except (OSError, UnicodeDecodeError) as exc:
            return _fail(f"{file}: cannot read the policy file: {exc}", ExitCode.FAILURE)
        # the agent names the file as given, so problems point where the user looks
        message["policy"] = {"text": text, "source": file}
    try:
        response = request(socket_path, message)
    except ControlError as exc:
        code = ExitCode.PERMISSION if "permission denied" in str(exc) else ExitCode.RUNTIME
        return _fail(str(exc), code)
    if not response.get("ok"):
        for problem in response.get("problems", []):
            print(problem, file=sys.stderr)
        code = ExitCode.PERMISSION if "permission denied" in response.get("error", "") \
            else ExitCode.FAILURE
        return _fail(response.get("error", "the agent refused the reload"), code)
    policy = response["policy"]
    print(f"reloaded: policy {policy['name']!r} is generation {policy['generation']} "
          f"(was {response['previous_generation']}); switched in {response['switch_ms']} ms")
    return ExitCode.OK


def _fail(message: str, code: ExitCode) -> ExitCode:
    """One clear line on stderr (as cli.fail) and the exit code."""
    print(f"egress-guard: error: {message}", file=sys.stderr)
    return code
