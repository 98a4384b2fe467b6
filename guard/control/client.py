# SPDX-License-Identifier: Apache-2.0
"""The control socket's client side: one JSON request line out, one JSON
response line back (the agent's side is control.py).

Light on imports on purpose: `egress-guard policy reload` runs this in a
fresh interpreter, and every module it loads is start-up time the operator
waits for. The json module is not one of them: it brings the re module and
enum with it (about 14 ms on the reference VM, more than the rest of the
call before the agent starts working), so the few small objects that cross
this socket are written and read here (encode/decode, standard JSON,
compared with the json module by the unit tests). The socket is _socket's:
the socket module around it spends longer building its enums at import
(about 14 ms) than the whole request takes to send.

A request may carry open files (SCM_RIGHTS): `policy reload FILE` passes
the file itself, so the agent reads it without the text crossing the socket
and whatever mount namespace the agent runs in (control.py).
"""
from __future__ import annotations

import os
import sys
from _socket import AF_UNIX, SCM_RIGHTS, SOCK_STREAM, SOL_SOCKET, socket

DEFAULT_SOCKET = "/run/egress-guard/agent.sock"
REQUEST_LIMIT = 16 << 20      # a policy with 10,000 rules is well below 1 MiB


class ControlError(Exception):
    """The agent could not be reached or refused the request."""


def read_line(conn: socket, receive=None) -> bytes:
    """Bytes up to and including the first newline (or the peer's end).
    receive(conn) reads one chunk (default: conn.recv)."""
    chunks, size = [], 0
    while True:
        chunk = receive(conn) if receive is not None else conn.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if chunk.endswith(b"\n"):
            break
        if size > REQUEST_LIMIT:
            raise ValueError("request too large")
    return b"".join(chunks)


def read_file(fd: int, limit: int = REQUEST_LIMIT) -> bytes:
    """All of an open file, at most limit bytes (ValueError beyond). A
    regular file is read with pread from offset 0, so the file offset that a
    passed descriptor shares with its sender stays where it was."""
    chunks, size = [], 0
    positional = is_regular_file(fd)
    while True:
        want = max(os.fstat(fd).st_size - size, 0) + 65536 if positional else 65536
        chunk = os.pread(fd, want, size) if positional else os.read(fd, want)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise ValueError(f"larger than {limit >> 20} MiB")


def is_regular_file(fd: int) -> bool:
    return os.fstat(fd).st_mode & 0o170000 == 0o100000   # S_ISREG


def request(path: str | os.PathLike[str], message: dict[str, object],
            timeout: float = 60.0, fds: tuple[int, ...] = ()) -> dict:
    """Send one request to the agent (with open files fds, if any) and
    return its response."""
    sock = socket(AF_UNIX, SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(os.fspath(path))
        except FileNotFoundError:
            raise ControlError(f"no agent is listening on {path} (is egress-guard run active?)") from None
        except PermissionError:
            raise ControlError(f"permission denied on {path}: only root may control the agent") from None
        except OSError as exc:
            raise ControlError(f"cannot reach the agent on {path}: {exc.strerror}") from None
        data = encode(message).encode() + b"\n"
        try:
            if fds:
                rights = b"".join(fd.to_bytes(4, sys.byteorder, signed=True) for fd in fds)
                sent = sock.sendmsg([data], [(SOL_SOCKET, SCM_RIGHTS, rights)])
                data = data[sent:]
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the agent answered without reading it all (a refusal): read that
        reply = read_line(sock)
    except OSError as exc:  # timeouts included
        raise ControlError(f"the agent on {path} did not answer: {exc}") from None
    finally:
        sock.close()
    if not reply:
        raise ControlError(f"the agent on {path} did not answer")
    try:
        response = decode(reply.decode())
    except ValueError:  # UnicodeDecodeError included
        raise ControlError(f"the agent on {path} sent an unreadable answer") from None
    if not isinstance(response, dict):
        raise ControlError(f"the agent on {path} sent an unreadable answer")
    return response


# --- JSON, for the small objects of this socket -------------------------------------

# control characters other than \n, \r and \t (replaced first, as the usual ones)
_CONTROLS = str.maketrans({code: f"\\u{code:04x}" for code in range(0x20) if chr(code) not in "\n\r\t"})


def _quoted(text: str) -> str:
    """A JSON string: str.replace per usual character (a policy file's text
    is mostly line breaks to escape), a table for the rare others."""
    text = (text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
            .replace("\r", "\\r").replace("\t", "\\t"))
    if not text.isprintable():   # a control character, or something harmless
        text = text.translate(_CONTROLS)
    return f'"{text}"'


def encode(value: object) -> str:
    """value (dicts with string keys, lists, tuples, strings, numbers, bools,
    None) as JSON text, non-ASCII as it is (as json.dumps(ensure_ascii=False)
    does, without spaces)."""
    if isinstance(value, str):
        return _quoted(value)
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{value} is not JSON")
        return repr(value)
    if isinstance(value, dict):
        items = []
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"JSON keys are strings, not {type(key).__name__}")
            items.append(f"{encode(key)}:{encode(item)}")
        return "{" + ",".join(items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(map(encode, value)) + "]"
    raise TypeError(f"{type(value).__name__} is not JSON")


_WHITESPACE = " \t\n\r"
_UNESCAPE = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r",
             "t": "\t"}
_NUMBER = frozenset("-+0123456789.eE")
_HEX = frozenset("0123456789abcdefABCDEF")


def decode(text: str) -> object:
    """The value of one JSON text; ValueError if it is not JSON."""
    value, at = _value(text, _skip(text, 0))
    if _skip(text, at) != len(text):
        raise ValueError(f"extra data at {at}")
    return value


def _skip(text: str, at: int) -> int:
    while at < len(text) and text[at] in _WHITESPACE:
        at += 1
    return at


def _value(text: str, at: int) -> tuple[object, int]:
    first = text[at:at + 1]
    if first == '"':
        return _string(text, at + 1)
    if first == "{":
        result: dict = {}
        at = _skip(text, at + 1)
        if text.startswith("}", at):
            return result, at + 1
        while True:
            if not text.startswith('"', at):
                raise ValueError(f"expected a key at {at}")
            key, at = _string(text, at + 1)
            at = _skip(text, at)
            if not text.startswith(":", at):
                raise ValueError(f"expected ':' at {at}")
            result[key], at = _value(text, _skip(text, at + 1))
            at = _skip(text, at)
            if text.startswith(",", at):
                at = _skip(text, at + 1)
            elif text.startswith("}", at):
                return result, at + 1
            else:
                raise ValueError(f"expected ',' or '}}' at {at}")
    if first == "[":
        items: list = []
        at = _skip(text, at + 1)
        if text.startswith("]", at):
            return items, at + 1
        while True:
            item, at = _value(text, at)
            items.append(item)
            at = _skip(text, at)
            if text.startswith(",", at):
                at = _skip(text, at + 1)
            elif text.startswith("]", at):
                return items, at + 1
            else:
                raise ValueError(f"expected ',' or ']' at {at}")
    for word, constant in (("true", True), ("false", False), ("null", None)):
        if text.startswith(word, at):
            return constant, at + len(word)
    end = at
    while end < len(text) and text[end] in _NUMBER:
        end += 1
    number = text[at:end]
    if not number or number[0] not in "-0123456789" or number[-1] not in "0123456789":
        raise ValueError(f"expected a value at {at}")
    digits = number.lstrip("-")
    if len(digits) > 1 and digits[0] == "0" and digits[1] in "0123456789":
        raise ValueError(f"a number with a leading zero at {at}")
    if any(c in number for c in ".eE"):
        return float(number), end
    return int(number), end


def _string(text: str, at: int) -> tuple[str, int]:
    """The string whose opening quote is just before at, and the offset after it."""
    parts = []
    while True:
        quote = text.find('"', at)
        if quote < 0:
            raise ValueError("an unterminated string")
        backslash = text.find("\\", at, quote)
        if backslash < 0:
            parts.append(text[at:quote])
            return "".join(parts), quote + 1
        parts.append(text[at:backslash])
        kind = text[backslash + 1:backslash + 2]
        if kind == "u":
            code, at = _code_unit(text, backslash + 2)
            if 0xD800 <= code < 0xDC00 and text.startswith("\\u", at):
                low, after = _code_unit(text, at + 2)
                if 0xDC00 <= low < 0xE000:
                    code, at = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00), after
            parts.append(chr(code))
        elif kind in _UNESCAPE:
            parts.append(_UNESCAPE[kind])
            at = backslash + 2
        else:
            raise ValueError(f"an invalid escape at {backslash}")


def _code_unit(text: str, at: int) -> tuple[int, int]:
    digits = text[at:at + 4]
    if len(digits) != 4 or not _HEX.issuperset(digits):
        raise ValueError(f"an invalid \\u escape at {at - 2}")
    return int(digits, 16), at + 4
