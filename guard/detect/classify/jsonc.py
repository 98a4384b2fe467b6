# SPDX-License-Identifier: Apache-2.0
"""JSON as hand-written config files have it (XMRig's config.json: // and
/* */ comments, trailing commas), read in time linear in its size and never
deeper than MAX_DEPTH.

The text is the workload's. Two things make naive readers of it slow or
fragile, and both are closed here for every input, not for known bombs:

- a comment-stripping regular expression such as `/\\*.*?\\*/` retried at
  every `/*` of an unterminated comment is quadratic (128 KiB took 18 s).
  Every pattern below matches from where it starts to a definite end, or
  to the end of the text when the end is missing, so the scanner never
  comes back over bytes it has passed: a comment or string left open runs
  to the end of the text, as in any tokenizer.
- Python's json module recurses once per nesting level, so 100,000 `[`
  raise RecursionError. The nesting is measured first by a flat pass over
  the brackets outside strings, and deeper documents are refused unparsed.
"""
from __future__ import annotations

import itertools
import json
import operator
import re
from typing import Any

#: Nesting read at most. XMRig's config nests 3 deep; anything past 64 is
#: built to hurt.
MAX_DEPTH = 64
#: Quotes, slashes and commas a text that is not plain JSON may hold: each
#: costs the comment and comma passes up to 0.5 us, so this bounds them to
#: about 50 ms however the bytes are arranged. Plain JSON never counts them.
MAX_TOKENS = 100_000

#: A string to its closing quote, or to the end of the text if it has none
#: (a trailing lone backslash included): it always matches, so no retry.
_STRING = r'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)'


def _kept_run(plain: str, token: str) -> str:
    """A non-empty run of text up to the next token this pass removes:
    characters outside `plain`, strings, and `token` where it is not to be
    removed. Unrolled (plain* (special plain*)*): every character can be
    read one way only, and the run always ends in a match, so the engine
    never backtracks and each match costs one call however many strings
    it spans (a callback per string would cost 0.5 s per MiB)."""
    special = rf"(?:{_STRING}|{token})"
    return rf"(?:[^{plain}]|{special})[^{plain}]*(?:{special}[^{plain}]*)*"


#: Runs are kept (group 1), comments dropped; an open /* runs to the end.
_COMMENTS = re.compile("(" + _kept_run('"/', r"/(?![/*])") + r")|//[^\n]*|/\*.*?(?:\*/|\Z)", re.S)
#: Runs are kept (group 1), a comma before a closing bracket is dropped.
_TRAILING_COMMAS = re.compile("(" + _kept_run('",', r",(?!\s*[}\]])") + r")|,(\s*[}\]])", re.S)
_STRINGS = re.compile(_STRING, re.S)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
#: Openers step +1 and closers -1, written as 2 and 0 so bytes can carry them.
_STEPS = str.maketrans({"[": "\x02", "{": "\x02", "]": "\x00", "}": "\x00"})


class OverBudget(ValueError):
    """The text was not parsed: reading it would cost more than allowed."""


class TooDeep(OverBudget):
    """The document nests deeper than allowed."""

    def __init__(self, depth: int, limit: int):
        super().__init__(f"nested {depth} deep, more than {limit}")
        self.depth = depth


class TooManyTokens(OverBudget):
    """Not plain JSON, and too many strings, comments and commas to strip."""

    def __init__(self, tokens: int, limit: int):
        super().__init__(f"{tokens} quotes, slashes and commas outside plain JSON,"
                         f" more than {limit}")


def strip(text: str) -> str:
    """text without comments and trailing commas; strings are untouched."""
    # Templates, not callbacks: both passes run in C.
    return _TRAILING_COMMAS.sub(r"\1\2", _COMMENTS.sub(r"\1", text))


def _bracket_depth(text: str) -> int:
    steps = _NOT_BRACKETS.sub("", text).translate(_STEPS).encode("latin-1")
    if not steps:
        return 0
    # depth after the i-th bracket = (sum of steps so far) - i, all in C
    return max(0, max(map(operator.sub, itertools.accumulate(steps), itertools.count(1))))


def nesting_depth(text: str, limit: int = MAX_DEPTH) -> int:
    """The deepest nesting of [ and { outside strings, counted without
    recursion (exact once above limit). A parser that stops at the first
    error nests no deeper than this: up to an error, its depth is this
    running count."""
    rough = _bracket_depth(text)        # brackets in strings too: never less
    if rough <= limit:
        return rough
    return _bracket_depth(_STRINGS.sub("", text))


def loads(text: str, max_depth: int = MAX_DEPTH, max_tokens: int = MAX_TOKENS) -> Any:
    """The document, comments and trailing commas allowed; None when it is
    not JSON. OverBudget (TooDeep, TooManyTokens) when it was not read."""
    if _bracket_depth(text) <= max_depth:
        try:
            return json.loads(text)     # plain JSON, the usual case: a few ms per MiB
        except ValueError:              # JSONDecodeError, and numbers past int's digit limit
            pass
    tokens = text.count('"') + text.count("/") + text.count(",")
    if tokens > max_tokens:
        raise TooManyTokens(tokens, max_tokens)
    cleaned = strip(text)
    depth = nesting_depth(cleaned, max_depth)
    if depth > max_depth:
        raise TooDeep(depth, max_depth)
    try:
        return json.loads(cleaned)
    except ValueError:
        return None


def loads_plain(text: str | bytes, max_depth: int = MAX_DEPTH) -> Any:
    """Strict JSON (a protocol message, not a config file): the document, or
    None when it is not JSON or nests deeper than max_depth."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", "replace")
    if nesting_depth(text, max_depth) > max_depth:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None
