# SPDX-License-Identifier: Apache-2.0
"""JSON that a workload's bytes cannot break.

Argv, paths and cgroup names are bytes the workload chose; the agent keeps
them as str decoded with surrogateescape, so every byte survives the trip
through the classifiers. orjson (rightly) refuses to write such a str: the
lone surrogates are not Unicode. The fast path dumps as usual; only an
object orjson refuses is walked, and each string it cannot write is
escaped the documented way (docs/events.md):

- every byte that is not part of valid UTF-8 becomes the four characters
  ``\\xNN`` (two lowercase hex digits), and
- every backslash already in that string is doubled,

so the original bytes come back exactly (undo ``\\\\`` and ``\\xNN``), and
the dotted path of every escaped string is listed in the top-level
``"escaped"`` field, e.g. ``["process.argv[1]", "cgroup.path"]``. Strings
that were valid UTF-8 are never changed. Anything else orjson cannot write
(an integer past 64 bits, an unknown type) becomes its decimal or repr()
text, also listed.
"""
from __future__ import annotations

from typing import Any

import orjson

__all__ = ["dumps", "escape_text", "unescape_text"]

_OPTIONS = orjson.OPT_APPEND_NEWLINE


def dumps(obj: Any, newline: bool = True) -> bytes:
    """obj as JSON bytes (a line, by default); never raises for its strings."""
    option = _OPTIONS if newline else 0
    try:
        return orjson.dumps(obj, option=option)
    except TypeError:
        pass
    escaped: list[str] = []
    clean = _clean(obj, "", escaped)
    if isinstance(clean, dict) and escaped:
        clean["escaped"] = escaped
    return orjson.dumps(clean, option=option, default=repr)


def escape_text(text: str) -> str:
    """A str that may hold surrogates (surrogateescape'd bytes, or lone
    ones from elsewhere) as valid text: see the module docstring."""
    try:
        raw = text.replace("\\", "\\\\").encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        # lone surrogates not made by surrogateescape: keep their code units
        raw = text.replace("\\", "\\\\").encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "backslashreplace")


def unescape_text(text: str) -> bytes:
    """The bytes escape_text() was given (for consumers and tests)."""
    out = bytearray()
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char == "\\" and text.startswith("\\\\", i):
            out += b"\\"
            i += 2
        elif char == "\\" and text.startswith("\\x", i) and i + 4 <= n:
            out.append(int(text[i + 2:i + 4], 16))
            i += 4
        else:
            out += char.encode("utf-8")
            i += 1
    return bytes(out)


def _needs_escape(text: str) -> bool:
    try:
        text.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def _clean(value: Any, where: str, escaped: list[str]) -> Any:
    if isinstance(value, str):
        if _needs_escape(value):
            escaped.append(where)
            return escape_text(value)
        return value
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            name = key if isinstance(key, str) else str(key)
            if _needs_escape(name):
                escaped.append(f"{where}.{{key}}" if where else "{key}")
                name = escape_text(name)
            out[name] = _clean(item, f"{where}.{name}" if where else name, escaped)
        return out
    if isinstance(value, (list, tuple)):
        return [_clean(item, f"{where}[{i}]", escaped) for i, item in enumerate(value)]
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        if -(1 << 63) <= value < (1 << 64):
            return value
        escaped.append(where)
        return str(value)
    try:
        orjson.dumps(value)
        return value
    except TypeError:
        escaped.append(where)
        return repr(value)
