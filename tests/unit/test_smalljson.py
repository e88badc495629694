"""smalljson.loads reads what json.loads reads, and refuses what it refuses (generated documents)."""

import json
import math
import random

import pytest

from galaxyctl_libs import smalljson

CHARS = 'aZ09 "\\/\b\f\n\r\t\x00\x1f\x7f\u00e9\u2713\u65e5\ud800\udfff\U0001f600<>&:,[]{}'


def _text(rng):
    return "".join(rng.choice(CHARS) for _ in range(rng.randrange(0, 12)))


def _number(rng):
    return rng.choice(
        [
            rng.randrange(-(10**30), 10**30),
            rng.randrange(-3, 3),
            rng.uniform(-1e6, 1e6),
            rng.choice([0.0, -0.0, 1e-300, 1.5e300, float("inf"), float("-inf"), float("nan")]),
        ]
    )


def _value(rng, depth=0):
    kind = rng.randrange(7 if depth < 4 else 5)
    if kind == 0:
        return _text(rng)
    if kind == 1:
        return _number(rng)
    if kind == 2:
        return rng.choice([True, False, None])
    if kind in (3, 4):
        return _text(rng) if kind == 3 else rng.randrange(100)
    if kind == 5:
        return [_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {_text(rng): _value(rng, depth + 1) for _ in range(rng.randrange(4))}


def _same(a, b):
    """Equal as JSON values, NaN included, ints and floats told apart (json.loads keeps them apart)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return a == b


def _outcome(loads, text):
    try:
        return ("value", loads(text))
    except ValueError:
        return ("refused", None)


DUMPS_STYLES = [
    {},
    {"ensure_ascii": False},
    {"indent": 2},
    {"separators": (",", ":")},
    {"sort_keys": True, "indent": "\t"},
]


@pytest.mark.parametrize("seed", range(40))
def test_generated_documents_read_as_json_reads_them(seed):
    rng = random.Random(seed)
    for _ in range(50):
        value = _value(rng)
        text = json.dumps(value, **rng.choice(DUMPS_STYLES))
        assert _same(smalljson.loads(text), json.loads(text)), text


@pytest.mark.parametrize("seed", range(40))
def test_damaged_documents_are_refused_or_read_as_json_does(seed):
    rng = random.Random(1000 + seed)
    for _ in range(100):
        text = list(json.dumps(_value(rng), **rng.choice(DUMPS_STYLES)))
        for _ in range(rng.randrange(1, 4)):
            at = rng.randrange(len(text) + 1)
            what = rng.randrange(3)
            if what == 0 and at < len(text):
                del text[at]
            elif what == 1:
                text.insert(at, rng.choice('{}[]",:.-+eE0123456789 \\u\x00tfnNI'))
            elif at < len(text):
                text[at] = rng.choice('{}[]",:.-+eE0 \\')
        text = "".join(text)
        ours, theirs = _outcome(smalljson.loads, text), _outcome(json.loads, text)
        assert ours[0] == theirs[0] and _same(ours[1], theirs[1]), repr(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "01",
        "1.",
        ".5",
        "1e",
        "1e+",
        "-",
        "+1",
        "[1,]",
        '{"a":1,}',
        '{"a" 1}',
        "{1: 2}",
        '"\\x41"',
        '"\\u12"',
        '"\\ud800\\u12G4"',
        '"a\nb"',
        '"open',
        "[1 2]",
        "nul",
        "\ufeff[]",
        "1 2",
        "infinity",
        "-NaN",
    ],
)
def test_what_json_refuses_is_refused(text):
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        smalljson.loads(text)


@pytest.mark.parametrize(
    "text",
    [" [ 1 , -0 , 0.5e-3 , 2E+2 , -1.25E2 ] ", '"\\ud83d\\ude00\\ud800x\\/\\b"', "NaN", "-Infinity", '{"a":1,"a":2}'],
)
def test_edges_read_as_json_reads_them(text):
    assert _same(smalljson.loads(text), json.loads(text))


def test_a_text_over_the_limit_goes_to_json_itself():
    value = {"targets": ["x" * 100] * (smalljson.LIMIT // 50)}
    text = json.dumps(value)
    assert len(text) > smalljson.LIMIT and smalljson.loads(text) == value
