# SPDX-License-Identifier: Apache-2.0
"""Shell words: a small shell lexer, just enough to see commands,
redirections and pipes in an `sh -c` string.

Quotes and backslashes are applied, operators split words, and a stage of
a pipeline keeps its redirections apart from its words. No expansion, no
here-document bodies: the recognisers (reverse shells, miners) look at the
commands a script names, not at what it would compute.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from guard.detect.classify.launchers import basename, unwrap_launchers

#: Tokens read from one text: one per character of the 16 KiB the callers
#: read, so the text is the only bound.
MAX_TOKENS = 16 * 1024

#: Shells, by program name: what `-c STRING` and a shell on a socket mean.
SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "ksh93", "mksh", "lksh", "ash", "rbash",
                    "yash", "posh", "tcsh", "csh", "fish"})

_SEPARATORS = {";", ";;", "&", "&&", "||", "\n", "(", ")"}
_PIPES = {"|", "|&"}
_REDIRECTIONS = {">", ">>", "<", "<>", ">&", "<&", "&>", "&>>", ">|", "<<", "<<<", "<<-"}
_OPERATORS = sorted(_SEPARATORS | _PIPES | _REDIRECTIONS, key=len, reverse=True)
_BLANKS = " \t\r\f\v"


@dataclass(frozen=True)
class _Token:
    text: str
    operator: bool = False
    fd: bool = False          # `2` in `2>&1`, `{fd}` in `exec {fd}<>...`


def _operator_at(text: str, pos: int) -> str | None:
    for op in _OPERATORS:
        if text.startswith(op, pos):
            return op
    return None


def _read_word(text: str, pos: int) -> tuple[str, int, bool]:
    """One shell word from pos: quotes removed, backslashes applied; and
    whether a quote in it ran to the end of the text."""
    out: list[str] = []
    n = len(text)
    open_quote = False
    while pos < n:
        char = text[pos]
        if char in _BLANKS or _operator_at(text, pos):
            break
        if char == "\\":
            if pos + 1 < n and text[pos + 1] != "\n":
                out.append(text[pos + 1])
            pos += 2
        elif char == "'":
            end = text.find("'", pos + 1)
            if end < 0:
                end, open_quote = n, True
            out.append(text[pos + 1:end])
            pos = end + 1
        elif char == '"':
            pos += 1
            while pos < n and text[pos] != '"':
                if text[pos] == "\\" and pos + 1 < n and text[pos + 1] in '"\\$`\n':
                    pos += 1
                out.append(text[pos])
                pos += 1
            open_quote = open_quote or pos >= n
            pos += 1
        else:
            out.append(char)
            pos += 1
    return "".join(out), pos, open_quote


def _tokenize(text: str, comments: bool) -> tuple[list[_Token], bool]:
    """The tokens of text, and whether a quote ran to its end."""
    tokens: list[_Token] = []
    open_quote = False
    pos, n = 0, len(text)
    while pos < n and len(tokens) < MAX_TOKENS:
        char = text[pos]
        if char in _BLANKS:
            pos += 1
            continue
        if char == "#" and comments:            # a comment runs to the end of the line
            end = text.find("\n", pos)
            pos = n if end < 0 else end
            continue
        op = _operator_at(text, pos)
        if op:
            tokens.append(_Token(op, operator=True))
            pos += len(op)
            continue
        word, pos, unclosed = _read_word(text, pos)
        open_quote = open_quote or unclosed
        is_fd = (pos < n and text[pos] in "<>" and
                 (word.isdigit() or re.fullmatch(r"\{[A-Za-z_][A-Za-z0-9_]*\}", word) is not None))
        tokens.append(_Token(word, fd=is_fd))
    return tokens, open_quote


@dataclass
class Stage:
    """One simple command of a pipeline: its words and redirections (fd, op, target)."""
    words: list[str] = field(default_factory=list)
    redirections: list[tuple[str | None, str, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.words or self.redirections)


def pipelines(text: str, *, comments: bool = True) -> list[list[Stage]]:
    """The pipelines of a shell string, split at ; & && || ( ) and newlines,
    each a list of its stages. comments=False reads `#` as a plain character
    (for callers that look at everything a script mentions)."""
    found: list[list[Stage]] = []
    stages: list[Stage] = []
    stage = Stage()
    tokens, _ = _tokenize(text, comments)
    pending_fd: str | None = None
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.fd:
            pending_fd = token.text
        elif not token.operator:
            stage.words.append(token.text)
        elif token.text in _REDIRECTIONS:
            target = ""
            if i + 1 < len(tokens) and not tokens[i + 1].operator:
                target = tokens[i + 1].text
                i += 1
            stage.redirections.append((pending_fd, token.text, target))
            pending_fd = None
        elif token.text in _PIPES:
            stages.append(stage)
            stage = Stage()
        else:
            stages.append(stage)
            found.append([s for s in stages if s])
            stages, stage = [], Stage()
        i += 1
    stages.append(stage)
    found.append([s for s in stages if s])
    return [pipeline for pipeline in found if pipeline]


_RESERVED = {"!", "{", "}", "do", "done", "then", "else", "elif", "if", "fi", "while", "until",
             "time", "coproc"}


def command_words(words: list[str]) -> list[str]:
    """The command a stage runs: without reserved words, assignments and launchers."""
    i = 0
    while i < len(words) and (words[i] in _RESERVED or
                              re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[i], re.S)):
        i += 1
    rest = words[i:]
    if rest == ["exec"]:
        return rest     # `exec 5<>/dev/tcp/...` changes the shell's own descriptors
    return unwrap_launchers(rest)


def command_name(words: list[str]) -> str:
    """The lower-case program name of a command's words ("" for none)."""
    return basename(words[0]).lower() if words else ""


def simple_commands(text: str, *, comments: bool = True) -> list[list[str]]:
    """The words of every simple command of a shell string, in order."""
    return [stage.words for pipeline in pipelines(text, comments=comments)
            for stage in pipeline if stage.words]


def open_quote(text: str, *, comments: bool = True) -> bool:
    """Whether a quote in text runs to its end: a shell refuses such a
    script, so how its words split is a guess."""
    return _tokenize(text, comments)[1]


def shell_mode(words: list[str]) -> str | None:
    """"interactive" (`bash -i`), "stdin" (`sh`, `sh -s`: commands read from
    stdin) or None (not a shell, `sh -c ...`, `bash script.sh`)."""
    if command_name(words) not in SHELLS:
        return None
    interactive = False
    for arg in words[1:]:
        if arg in ("--", "-"):
            break
        if arg.startswith("--"):
            interactive = interactive or arg == "--interactive"
            continue
        if arg.startswith(("-", "+")):
            letters = arg[1:]
            if "c" in letters:
                return None
            interactive = interactive or "i" in letters
            if "s" in letters:
                break
            continue
        return "interactive" if interactive else None    # a script file, unless -i forces it
    return "interactive" if interactive else "stdin"


def shell_script_operand(words: list[str]) -> str | None:
    """The string a shell runs with -c (`bash -c STR`, `sh -ic STR`, `bash -lc STR`)."""
    command = False
    i = 1
    while i < len(words):
        arg = words[i]
        if arg in ("--", "-"):
            i += 1
            break
        if arg in ("--rcfile", "--init-file", "-o", "+o", "-O", "+O"):
            i += 2
            continue
        if arg.startswith("--"):
            i += 1
            continue
        if arg.startswith(("-", "+")):
            command = command or "c" in arg[1:]
            i += 1
            continue
        break
    return words[i] if command and i < len(words) else None

