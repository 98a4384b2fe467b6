# SPDX-License-Identifier: Apache-2.0
r"""Shell words: a small shell lexer, just enough to see commands,
redirections and pipes in an `sh -c` string.

Quotes and backslashes are applied, operators split words, and a stage of
a pipeline keeps its redirections apart from its words. No expansion, no
here-document bodies: the recognisers (reverse shells, miners) look at the
commands a script names, not at what it would compute.

Shells quote differently, and a string read with the wrong rules can hide a
command (or show one that is not there). Each dialect follows one family,
as checked against the real shells (bash 5.2, dash 0.5, zsh 5.9, fish 3.6,
tcsh 6.24):

    posix  dash, ash, posh: '...' literal, "..." with \\ \" \$ \` escapes;
           `$'x'` is a `$` and a quoted x
    bash   bash, zsh, ksh, mksh: posix, plus ANSI-C `$'...'` (\xHH, \nnn,
           \uHHHH, \n, \', ...) and `$"..."`
    csh    csh, tcsh: '...' literal, a backslash inside "..." is literal
           (no \" at all), ANSI-C `$'...'` (tcsh); `>&`, `>>&`, `>!`, `|&`
    fish   '...' with \' and \\ only, "..." with \" \$ \\, unquoted
           escapes decoded (\x2f is /); no `$'...'`; `&|` pipes, `&>` redirects

A caller that does not know which shell runs a string (`sh` is bash on some
systems and dash on others) reads it with every dialect it may be
(dialects_of) and keeps what any reading finds.
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

DIALECTS = ("posix", "bash", "csh", "fish")
#: The dialects a shell's -c string may be read with: `sh` and busybox are
#: dash-like or bash-like depending on the system, yash and lksh quote
#: like dash in some builds and like ksh in others.
_SHELL_DIALECTS = {"bash": ("bash",), "rbash": ("bash",), "zsh": ("bash",), "ksh": ("bash",),
                   "ksh93": ("bash",), "mksh": ("bash",), "dash": ("posix",), "ash": ("posix",),
                   "posh": ("posix",), "csh": ("csh",), "tcsh": ("csh",), "fish": ("fish",)}
#: What a string is read with when the shell is not known (`su -c`, a
#: string passed to os.system, a script's nested string).
UNKNOWN_SHELL = ("posix", "bash")

_SEPARATORS = {";", ";;", "&", "&&", "||", "\n", "(", ")"}
_PIPES = {"|", "|&"}
_REDIRECTIONS = {">", ">>", "<", "<>", ">&", "<&", "&>", "&>>", ">|", "<<", "<<<", "<<-"}
#: Operators only some dialects have.
_DIALECT_PIPES = {"fish": {"&|"}}
_DIALECT_REDIRECTIONS = {"csh": {">>&", ">&!", ">>&!", ">!", ">>!"}, "fish": {">?", ">>?"}}
_OPERATORS = {dialect: sorted(_SEPARATORS | _PIPES | _DIALECT_PIPES.get(dialect, set())
                              | _REDIRECTIONS | _DIALECT_REDIRECTIONS.get(dialect, set()),
                              key=len, reverse=True)
              for dialect in DIALECTS}
_BLANKS = " \t\r\f\v"


def dialects_of(shell: str) -> tuple[str, ...]:
    """The dialects a shell (by program name) reads its -c string with."""
    return _SHELL_DIALECTS.get(basename(shell).lower(), UNKNOWN_SHELL)


@dataclass(frozen=True)
class _Token:
    text: str
    operator: bool = False
    fd: bool = False          # `2` in `2>&1`, `{fd}` in `exec {fd}<>...`


def _operator_at(text: str, pos: int, dialect: str = "posix") -> str | None:
    for op in _OPERATORS[dialect]:
        if text.startswith(op, pos):
            return op
    return None


_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "e": "\x1b", "E": "\x1b", "f": "\f", "n": "\n",
                   "r": "\r", "t": "\t", "v": "\v", "\\": "\\", "'": "'", '"': '"', "?": "?"}
_NUMERIC_ESCAPE = re.compile(r"[0-7]{1,3}|x[0-9A-Fa-f]{1,2}|X[0-9A-Fa-f]{1,2}|u[0-9A-Fa-f]{1,4}|"
                             r"U[0-9A-Fa-f]{1,8}|c.", re.S)


def _escape(text: str, pos: int) -> tuple[str | None, int]:
    """The character an ANSI-C escape at text[pos] (after the backslash)
    stands for, and where it ends; None for an escape it does not know."""
    char = text[pos] if pos < len(text) else ""
    if char in _SIMPLE_ESCAPES:
        return _SIMPLE_ESCAPES[char], pos + 1
    match = _NUMERIC_ESCAPE.match(text, pos)
    if match is None:
        return None, pos
    code = match.group(0)
    if code[0] == "c":
        return chr(ord(code[1]) & 0x1F), match.end()
    # an octal escape is a byte: bash and zsh keep its low 8 bits (\564 is t)
    value = int(code, 8) & 0xFF if code[0] in "01234567" else int(code[1:], 16)
    return (chr(value) if value <= 0x10FFFF else "\ufffd"), match.end()


def _ansi_c(text: str, pos: int) -> tuple[str, int, bool]:
    """`$'...'` from pos (after the `$'`): decoded, the end, and whether it
    ran to the end of the text unclosed."""
    out: list[str] = []
    n = len(text)
    while pos < n:
        char = text[pos]
        if char == "'":
            return "".join(out), pos + 1, False
        if char == "\\" and pos + 1 < n:
            decoded, end = _escape(text, pos + 1)
            if decoded is None:
                out.append(text[pos:pos + 2])
                pos += 2
            else:
                out.append(decoded)
                pos = end
            continue
        out.append(char)
        pos += 1
    return "".join(out), n, True


def _double_quoted(text: str, pos: int, escapes: str) -> tuple[str, int, bool]:
    """"..." from pos (after the quote), escapes: the characters a backslash escapes."""
    out: list[str] = []
    n = len(text)
    while pos < n and text[pos] != '"':
        if text[pos] == "\\" and pos + 1 < n and text[pos + 1] in escapes:
            pos += 1
        out.append(text[pos])
        pos += 1
    return "".join(out), pos + 1, pos >= n


def _single_quoted(text: str, pos: int, dialect: str) -> tuple[str, int, bool]:
    r"""'...' from pos (after the quote); fish alone knows \' and \\ in it."""
    if dialect != "fish":
        end = text.find("'", pos)
        if end < 0:
            return text[pos:], len(text), True
        return text[pos:end], end + 1, False
    out: list[str] = []
    n = len(text)
    while pos < n and text[pos] != "'":
        if text[pos] == "\\" and pos + 1 < n and text[pos + 1] in "'\\":
            pos += 1
        out.append(text[pos])
        pos += 1
    return "".join(out), pos + 1, pos >= n


_DOUBLE_QUOTE_ESCAPES = {"posix": '"\\$`\n', "bash": '"\\$`\n', "csh": "", "fish": '"\\$\n'}


def _read_word(text: str, pos: int, dialect: str = "posix") -> tuple[str, int, bool]:
    """One shell word from pos: quotes removed, backslashes applied; and
    whether a quote in it ran to the end of the text."""
    out: list[str] = []
    n = len(text)
    open_quote = False
    while pos < n:
        char = text[pos]
        if char in _BLANKS or _operator_at(text, pos, dialect):
            break
        if char == "\\":
            if pos + 1 < n and text[pos + 1] != "\n":
                if dialect == "fish":
                    decoded, end = _escape(text, pos + 1)
                    if decoded is not None:
                        out.append(decoded)
                        pos = end
                        continue
                out.append(text[pos + 1])
            pos += 2
        elif char == "$" and dialect in ("bash", "csh") and text.startswith("$'", pos):
            word, pos, unclosed = _ansi_c(text, pos + 2)
            out.append(word)
            open_quote = open_quote or unclosed
        elif char == "$" and dialect == "bash" and text.startswith('$"', pos):
            pos += 1                                  # $"..." is "..." (bash's gettext)
        elif char == "'":
            word, pos, unclosed = _single_quoted(text, pos + 1, dialect)
            out.append(word)
            open_quote = open_quote or unclosed
        elif char == '"':
            word, pos, unclosed = _double_quoted(text, pos + 1, _DOUBLE_QUOTE_ESCAPES[dialect])
            out.append(word)
            open_quote = open_quote or unclosed
        else:
            out.append(char)
            pos += 1
    return "".join(out), pos, open_quote


def _tokenize(text: str, comments: bool, dialect: str = "posix") -> tuple[list[_Token], bool]:
    """The tokens of text, and whether a quote ran to its end."""
    if dialect not in _OPERATORS:
        raise ValueError(f"unknown shell dialect {dialect!r}")
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
        op = _operator_at(text, pos, dialect)
        if op:
            tokens.append(_Token(op, operator=True))
            pos += len(op)
            continue
        word, pos, unclosed = _read_word(text, pos, dialect)
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


def pipelines(text: str, *, comments: bool = True, dialect: str = "posix") -> list[list[Stage]]:
    """The pipelines of a shell string, split at ; & && || ( ) and newlines,
    each a list of its stages, read with one dialect's rules. comments=False
    reads `#` as a plain character (for callers that look at everything a
    script mentions)."""
    found: list[list[Stage]] = []
    stages: list[Stage] = []
    stage = Stage()
    tokens, _ = _tokenize(text, comments, dialect)
    pipes = _PIPES | _DIALECT_PIPES.get(dialect, set())
    redirections = _REDIRECTIONS | _DIALECT_REDIRECTIONS.get(dialect, set())
    pending_fd: str | None = None
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.fd:
            pending_fd = token.text
        elif not token.operator:
            stage.words.append(token.text)
        elif token.text in redirections:
            target = ""
            if i + 1 < len(tokens) and not tokens[i + 1].operator:
                target = tokens[i + 1].text
                i += 1
            stage.redirections.append((pending_fd, token.text, target))
            pending_fd = None
        elif token.text in pipes:
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
             "time", "coproc",
             # fish: `and`/`or`/`not`/`begin` run the command that follows
             "and", "or", "not", "begin"}


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


def simple_commands(text: str, *, comments: bool = True, dialect: str = "posix"
                    ) -> list[list[str]]:
    """The words of every simple command of a shell string, in order."""
    return [stage.words for pipeline in pipelines(text, comments=comments, dialect=dialect)
            for stage in pipeline if stage.words]


def open_quote(text: str, *, comments: bool = True, dialect: str = "posix") -> bool:
    """Whether a quote in text runs to its end: a shell refuses such a
    script, so how its words split is a guess."""
    return _tokenize(text, comments, dialect)[1]


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

