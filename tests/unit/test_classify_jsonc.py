# SPDX-License-Identifier: Apache-2.0
"""guard/detect/classify/jsonc.py: config-file JSON (comments, trailing commas)
read in linear time and never deeper than MAX_DEPTH."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings, strategies as st

from guard.detect.classify import jsonc
from tests.unit.classify_checks import timed


@pytest.mark.parametrize("text, document", [
    ('{"a": 1}', {"a": 1}),
    ('// lead\n{"a": [1, 2,], /* x */ "b": "c",}\n// tail', {"a": [1, 2], "b": "c"}),
    ('{"url": "stratum+tcp://h:1", "c": "/* not a comment */", "d": "// nor this"}',
     {"url": "stratum+tcp://h:1", "c": "/* not a comment */", "d": "// nor this"}),
    ('{"q": "a\\"b // c", "e": "x,]"}', {"q": 'a"b // c', "e": "x,]"}),
    ('{"a": 1, /* a comment, with a comma ], */ }', {"a": 1}),
    ('{"a": [1, 2 , \n ] , }', {"a": [1, 2]}),
    ("[1, 2,]", [1, 2]),
])
def test_comments_and_trailing_commas_as_xmrig_allows(text, document):
    assert jsonc.loads(text) == document


@pytest.mark.parametrize("text", ['{"a": 1', '{"a": /* open', '{"a": "open', "", "nope",
                                  '{"a": 1}}', '{"a": ' + "9" * 5000 + "}"])
def test_not_json_is_none(text):
    assert jsonc.loads(text) is None


def test_depth_is_counted_outside_strings_and_comments():
    text = '[[{"a": "[[[["}]]'
    assert jsonc.nesting_depth(text, limit=0) == 3           # exact past the limit
    assert jsonc.nesting_depth(text) == 7                    # below it, an upper bound will do
    assert jsonc.loads('{"a": "' + "[" * 1000 + '"}') == {"a": "[" * 1000}
    assert jsonc.loads("/* " + "[" * 1000 + " */ [1]") == [1]
    assert jsonc.loads("[" * 64 + "]" * 64) is not None
    with pytest.raises(jsonc.TooDeep) as deep:
        jsonc.loads("[" * 65 + "]" * 65)
    assert deep.value.depth == 65
    with pytest.raises(jsonc.TooDeep):
        jsonc.loads("// x\n" + "[" * 100_000)        # json would raise RecursionError
    assert jsonc.loads_plain(b"[" * 100_000 + b"]" * 100_000) is None
    assert jsonc.loads_plain(b'{"a": [1]}') == {"a": [1]}


def test_too_many_tokens_outside_plain_json_is_over_budget():
    plain = "[" + '"x",' * 200_000 + '"y"]'
    assert len(jsonc.loads(plain)) == 200_001              # plain JSON never counts tokens
    with pytest.raises(jsonc.TooManyTokens):
        jsonc.loads(plain[:-1] + ",]")


BOMBS = [b"{/* x", b"/**/", b"//\n", b'"\\"', b",", b'""', b",]", b"[", b"[]", b'/"', b"\\",
         b'"', b"*/", b"{", b'{"a":', b", \n", b'["[",', b"/*" + b" " * 8 + b"*/"]


@pytest.mark.parametrize("shape", BOMBS, ids=[b.decode() for b in BOMBS])
def test_every_shape_is_linear(shape):
    text = (shape * ((1 << 20) // len(shape) + 1))[:1 << 20].decode()

    def parse():
        try:
            return jsonc.loads(text)
        except jsonc.OverBudget:
            return None
    _, seconds = timed(parse)
    assert seconds < 0.5, f"{seconds:.2f} s for 1 MiB"


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=4),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(JSON, st.booleans())
def test_plain_json_reads_as_json_does(document, indent):
    text = json.dumps(document, indent=2 if indent else None)
    if jsonc.nesting_depth(text) <= jsonc.MAX_DEPTH:
        assert jsonc.loads(text) == json.loads(text)


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_comments_and_trailing_commas_change_nothing(document):
    text = json.dumps(document, indent=1)
    decorated = "/* head */\n" + text.replace(",\n", ", // note\n").replace("\n]", ",\n]") \
        .replace("\n}", ",/* c */\n}") + "\n// tail"
    if ",,\n" not in decorated and "[,\n" not in decorated and "{,/*" not in decorated:
        assert jsonc.loads(decorated) == document


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet='{}[]",/*\\ \nax:1', max_size=300))
def test_any_text_is_a_document_none_or_over_budget(text):
    try:
        jsonc.loads(text)
    except jsonc.OverBudget:
        pass
