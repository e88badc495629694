"""leanjson.loads reads what json.loads reads, to the same values, and fails where it fails."""

import json

from conftest import run_listing_modules
from hypothesis import given, settings
from hypothesis import strategies as st

from galaxyctl_libs import leanjson

SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4), max_leaves=20
)
# Pieces of JSON, valid and not, so random concatenations hit every branch of the scanner and the edges
PIECES = st.sampled_from(
    ['{', '}', '[', ']', ',', ':', ' ', '\n', '\t', '\r', '\ufeff', '\x01', '"', '"a"', '"\\u00e9"', '"\\ud800"',
     '"\\x"', '1', '-0', '1.5e3', '01', '.5', 'true', 'false', 'null', 'NaN', 'Infinity', '-Infinity', 'nul', 'é']
)  # fmt: skip


def outcome(loads, text):
    """What ``loads`` makes of ``text``: its value as json would write it back (NaN included, int
    apart from float, keys in order), or the kind of failure."""
    try:
        value = loads(text)
    except ValueError:
        return "ValueError"
    except RecursionError:
        return "RecursionError"
    return json.dumps(value), repr(type(value))


@settings(max_examples=400, deadline=None)
@given(VALUES, st.sampled_from(["", " ", "\n", " \t\r\n "]), st.sampled_from(["", " ", "\n", "\r\n\t"]))
def test_documents_read_to_the_same_values(value, before, after):
    text = before + json.dumps(value) + after
    assert outcome(leanjson.loads, text) == outcome(json.loads, text)


@settings(max_examples=1500, deadline=None)
@given(st.lists(PIECES, max_size=12).map("".join))
def test_any_text_reads_or_fails_as_with_json(text):
    assert outcome(leanjson.loads, text) == outcome(json.loads, text)


def test_deep_nesting_fails_as_with_json():
    text = "[" * 100_000 + "]" * 100_000
    assert outcome(leanjson.loads, text) == outcome(json.loads, text) == "RecursionError"


def test_reading_imports_neither_json_nor_re():
    code = (
        "from galaxyctl_libs import leanjson\n"
        "assert leanjson.loads('{\"a\": [1, 2.5, null, \"\\\\u00e9\"]}') == {'a': [1, 2.5, None, 'é']}\n"
    )
    result, modules = run_listing_modules(code, site=False)  # no site: an editable install's finder loads re
    assert result.returncode == 0, result.stderr
    assert "galaxyctl_libs.leanjson" in modules
    assert sorted(m for m in ("json", "json.decoder", "re", "enum") if m in modules) == []
