# SPDX-License-Identifier: Apache-2.0
"""Launchers: which program an argv finally runs.

`env A=1 nohup sudo -u x timeout 60 ngrok http 80` runs ngrok, and
`npx localtunnel --port 1` runs localtunnel's script: the classifiers judge
the program at the end of such a chain, read the way each launcher reads
its own options. Pure, like the rest of classify.
"""
from __future__ import annotations

import posixpath
import re
from typing import Any, Callable, Sequence


def as_argv(argv: Any) -> list[str]:
    """The string items of an argv; anything else yields an empty argv."""
    if isinstance(argv, (str, bytes)) or not isinstance(argv, Sequence):
        return []
    return [item for item in argv if isinstance(item, str)]


def basename(path: str) -> str:
    """The last component of a path, trailing slashes ignored ("" for "")."""
    return posixpath.basename(path.rstrip("/")) if path else ""


def _skip_options(args: list[str], with_value: frozenset[str]) -> int:
    """Index of the first operand after short/long options (GNU style)."""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return i + 1
        if not arg.startswith("-") or arg == "-":
            return i
        if arg.startswith("--"):
            if "=" not in arg and arg in with_value:
                i += 1
        elif arg[:2] in with_value and len(arg) == 2:
            i += 1
        i += 1
    return i


def _after_env(argv: list[str]) -> list[str] | None:
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg in ("-u", "--unset", "-C", "--chdir"):
            i += 2
            continue
        if arg in ("-S", "--split-string") and i + 1 < len(argv):
            # env -S splits one string into words; the command is in there
            return argv[i + 1].split() + argv[i + 2:]
        if arg.startswith("-S") and len(arg) > 2:
            return arg[2:].split() + argv[i + 1:]
        if arg == "--":
            i += 1
            break
        if arg.startswith("-") and arg != "-":
            i += 1
            continue
        if "=" in arg and not arg.startswith("="):
            i += 1
            continue
        break
    return argv[i:]


def _after_simple_options(with_value: frozenset[str]) -> Callable[[list[str]], list[str]]:
    def unwrap(argv: list[str]) -> list[str]:
        return argv[1 + _skip_options(argv[1:], with_value):]
    return unwrap


def _after_timeout(argv: list[str]) -> list[str]:
    start = 1 + _skip_options(argv[1:], frozenset({"-s", "-k", "--signal", "--kill-after"}))
    return argv[start + 1:]        # the duration comes before the command


def _after_chroot(argv: list[str]) -> list[str]:
    start = 1 + _skip_options(argv[1:], frozenset({"--userspec", "--groups"}))
    return argv[start + 1:]        # the new root comes before the command


def _after_exec_builtin(argv: list[str]) -> list[str]:
    return argv[1 + _skip_options(argv[1:], frozenset({"-a"})):]


_LAUNCHERS: dict[str, Callable[[list[str]], list[str] | None]] = {
    "env": _after_env,
    "nohup": lambda argv: argv[1:],
    "setsid": _after_simple_options(frozenset()),
    "timeout": _after_timeout,
    "nice": _after_simple_options(frozenset({"-n", "--adjustment"})),
    "stdbuf": _after_simple_options(frozenset({"-i", "-o", "-e", "--input", "--output", "--error"})),
    "sudo": _after_simple_options(frozenset({"-u", "-g", "-C", "-D", "-h", "-p", "-r", "-t", "-U",
                                             "-T", "--user", "--group", "--chdir", "--host",
                                             "--prompt", "--role", "--type", "--other-user",
                                             "--command-timeout", "--close-from"})),
    "doas": _after_simple_options(frozenset({"-u", "-C"})),
    "exec": _after_exec_builtin,
    "command": _after_exec_builtin,
    "builtin": _after_exec_builtin,
    "time": _after_simple_options(frozenset({"-f", "-o", "--format", "--output"})),
    "busybox": lambda argv: argv[1:],
    "toybox": lambda argv: argv[1:],
    "chroot": _after_chroot,
}

_NODE_SCRIPT_SUFFIXES = (".js", ".mjs", ".cjs")
_PACKAGE_RUNNERS = {"npx", "bunx"}
_PACKAGE_MANAGERS_WITH_DLX = {"pnpm": "dlx", "yarn": "dlx", "npm": "exec"}


def _package_name(spec: str) -> str:
    """`localtunnel@2.0.2` -> `localtunnel`; `@scope/pkg@1` -> `pkg`."""
    name = spec[1:] if spec.startswith("@") else spec
    name = name.split("@", 1)[0]
    return name.rsplit("/", 1)[-1]


def _after_script_runner(argv: list[str]) -> list[str] | None:
    """`npx localtunnel --port 1`, `node .../bin/lt.js --port 1`, `python pagekite.py`.

    Node and Python tools run as scripts, so the exec shows the interpreter
    and the tool only appears as an argument."""
    name = basename(argv[0])
    args = argv[1:]
    if name in _PACKAGE_MANAGERS_WITH_DLX and args[:1] == [_PACKAGE_MANAGERS_WITH_DLX[name]]:
        name, args = "npx", args[1:]
    if name in _PACKAGE_RUNNERS:
        start = _skip_options(args, frozenset({"-p", "--package", "-c", "--call"}))
        if start < len(args):
            return [_package_name(args[start])] + args[start + 1:]
        return None
    if name in ("node", "nodejs", "bun", "deno") or re.fullmatch(r"python[0-9.]*|pypy[0-9.]*", name):
        start = _skip_options(args, frozenset({"-r", "--require", "-X", "-W", "--import"}))
        if start < len(args) and not args[start - 1:start] == ["-m"]:
            script = args[start]
            base = basename(script)
            for suffix in _NODE_SCRIPT_SUFFIXES:
                if base.endswith(suffix):
                    base = base[: -len(suffix)]
            return [base] + args[start + 1:]
    return None


def unwrap_launchers(argv: Sequence[str], *, scripts: bool = False) -> list[str]:
    """The argv of the program a chain of launchers (env, nohup, sudo, timeout,
    busybox, ...) finally runs. With scripts=True, also look through package
    runners and interpreters running a tool's script (npx, node, python)."""
    current = as_argv(argv)
    for _ in range(8):
        if not current:
            break
        step = _LAUNCHERS.get(basename(current[0]))
        following = step(current) if step else None
        if following is None and scripts:
            following = _after_script_runner(current)
        if following is None or following == current:
            break
        current = following
    return current
