"""``loads`` for galaxyctl's own records, without importing ``re``.

Importing ``json`` compiles its regular expressions, and so imports ``re`` and ``enum``: about 7 ms
on every ``status``, a third of what the cron path adds to the interpreter.  Those expressions only
skip whitespace around the document; the parser itself is the C scanner in ``_json``, which this
module drives directly, skipping the whitespace itself.  A document reads to the same objects as
with ``json.loads``; text that is not one JSON document is handed to ``json.loads``, whose error (a
``ValueError``) it raises.  Without ``_json`` this is ``json.loads``.  Writing stays with ``json``,
off the cron path.
"""

WHITESPACE = " \t\n\r"  # JSON's whitespace (RFC 8259), as json.decoder skips it


class _Context:
    """What the C scanner reads off a ``JSONDecoder``, with ``json.loads``'s defaults."""

    strict = True  # control characters in strings are errors
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = float  # NaN, Infinity, -Infinity: float() reads each of the three as json does
    memo = None  # the pure-Python scanner's; the C one keeps its own


def loads(text):
    """The value of the JSON document ``text`` (a str), as ``json.loads(text)`` gives it."""
    try:
        from _json import make_scanner
    except ImportError:
        make_scanner = None
    end = None
    if make_scanner is not None:
        start = len(text) - len(text.lstrip(WHITESPACE))
        try:
            value, end = make_scanner(_Context())(text, start)
        except (StopIteration, ValueError, SystemError):
            # StopIteration: no value where one must start.  SystemError: on Python 3.10 and 3.11
            # the scanner raises its JSONDecodeError only when json.decoder is already imported.
            end = None
    if end is None or text[end:].strip(WHITESPACE):
        import json

        return json.loads(text)  # not one JSON document: json's own error, with its position
    return value
