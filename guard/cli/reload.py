# SPDX-License-Identifier: Apache-2.0
"""`egress-guard policy reload` without click.

Switching policies is what deployment scripts and operators run against a
live agent, and in a fresh interpreter the imports are most of the wait:
this module needs only os and _socket (client.py), so
`egress-guard policy reload FILE [--socket PATH]` skips loading click and
the rest of the CLI. cli.py's click command calls the same reload();
anything else on the command line (--help, an unknown option, a directory
for FILE) is parsed by click as before, with click's messages.
"""
from __future__ import annotations

import os
import sys

from guard.control.client import DEFAULT_SOCKET, ControlError, is_regular_file, read_file, request


class ExitCode:
    """guard.exitcodes.ExitCode's numbers (a unit test keeps them equal), as
    plain ints: that IntEnum brings the enum module and its imports, about
    6 ms of this command's start-up on the reference VM."""
    OK = 0
    FAILURE = 1
    RUNTIME = 3
    PERMISSION = 4


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


def reload(file: str | None, socket_path: str) -> int:
    """Ask the agent to switch to file (None: re-read its own policy file);
    print the outcome the way the CLI does and return the exit code.

    A regular file is passed to the agent open (SCM_RIGHTS), not read here:
    the agent reads it straight from the descriptor, in whatever mount
    namespace it runs. The text itself is sent instead for anything else
    (a pipe, say) and when the agent did not read the file it was given
    (an agent from before this protocol, which answers without "read_fd").
    """
    if not file:
        return _outcome(socket_path, {"op": "reload"})
    try:
        fd = os.open(file, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        return _fail(f"{file}: cannot read the policy file: {exc}", ExitCode.FAILURE)
    try:
        # the agent names the file as given, so problems point where the user looks
        if is_regular_file(fd):
            passed = _ask(socket_path, {"op": "reload", "policy": {"fd": 0, "source": file}},
                          (fd,))
            if not isinstance(passed, dict):
                return passed  # no agent to ask: its exit code
            if passed.get("read_fd") is True or "permission denied" in passed.get("error", ""):
                return _report(passed)
            # read_fd false (the agent could not read the file) or absent (an
            # older agent, which read no file): the text, as before
        try:
            text = read_file(fd).decode("utf-8")
        except (OSError, ValueError) as exc:  # UnicodeDecodeError included
            return _fail(f"{file}: cannot read the policy file: {exc}", ExitCode.FAILURE)
    finally:
        os.close(fd)
    return _outcome(socket_path, {"op": "reload", "policy": {"text": text, "source": file}})


def _ask(socket_path: str, message: dict, fds: tuple[int, ...] = ()) -> dict | int:
    """The agent's response, or the exit code after saying why there is none."""
    try:
        return request(socket_path, message, fds=fds)
    except ControlError as exc:
        code = ExitCode.PERMISSION if "permission denied" in str(exc) else ExitCode.RUNTIME
        return _fail(str(exc), code)


def _outcome(socket_path: str, message: dict) -> int:
    response = _ask(socket_path, message)
    return _report(response) if isinstance(response, dict) else response


def _report(response: dict) -> int:
    """Print the agent's answer to a reload the way the CLI does."""
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


def _fail(message: str, code: int) -> int:
    """One clear line on stderr (as cli.fail) and the exit code."""
    print(f"egress-guard: error: {message}", file=sys.stderr)
    return code
