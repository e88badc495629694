"""JSON for the small records a cron ``status`` reads, without importing ``json``.

``import json`` costs about 3 ms of a ``status`` that takes about 30: its decoder imports ``re``
(and ``enum``'s flags) and compiles several patterns.  The records ``status`` reads are small for
most sites (4 services: ~6 KB), and reading them with the string methods below takes a fraction of
that.  Texts over ``LIMIT`` go to ``json`` itself, whose C scanner wins once there is enough to
scan (2,000 handlers).

``loads`` gives what ``json.loads`` gives (tests/unit/test_smalljson.py compares them on generated
and damaged documents), and raises ``ValueError`` where it does; nesting some hundreds of levels
deep, which json still reads, raises ``RecursionError`` here, which the callers count as damage.
"""

LIMIT = 64 << 10  # characters: above this, json's own decoder (its import is then the smaller cost)

_WHITESPACE = " \t\n\r"
_CONSTANTS = {
    "true": True,
    "false": False,
    "null": None,
    "NaN": float("nan"),
    "Infinity": float("inf"),
    "-Infinity": float("-inf"),
}
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def loads(text):
    """The value of the JSON document ``text`` (a str), as ``json.loads`` reads it."""
    if len(text) > LIMIT:
        import json

        return json.loads(text)
    value, end = _value(text, _skip(text, 0))
    if _skip(text, end) != len(text):
        raise ValueError(f"extra data at character {end}")
    return value


def _skip(text, pos):
    while pos < len(text) and text[pos] in _WHITESPACE:
        pos += 1
    return pos


def _value(text, pos):
    """(value, end) of the value starting at ``pos`` (no leading whitespace)."""
    char = text[pos : pos + 1]
    if char == '"':
        return _string(text, pos + 1)
    if char == "{":
        return _object(text, pos + 1)
    if char == "[":
        return _array(text, pos + 1)
    if char and char in "-0123456789" and not text.startswith("-Infinity", pos):
        return _number(text, pos)
    for word, value in _CONSTANTS.items():
        if text.startswith(word, pos):
            return value, pos + len(word)
    raise ValueError(f"expecting a value at character {pos}")


def _number(text, pos):
    """(int or float, end): JSON's grammar, ``-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?``;
    what follows the longest such prefix is the caller's to refuse, as json's scanner does."""
    start = pos + 1 if text.startswith("-", pos) else pos
    end = start + 1 if text.startswith("0", start) else _digits(text, start)
    if end == start:
        raise ValueError(f"expecting a value at character {pos}")
    is_float = False
    if text.startswith(".", end) and _digits(text, end + 1) > end + 1:
        end, is_float = _digits(text, end + 1), True
    if text.startswith(("e", "E"), end):
        digits = end + 2 if text.startswith(("+", "-"), end + 1) else end + 1
        if _digits(text, digits) > digits:
            end, is_float = _digits(text, digits), True
    word = text[pos:end]
    return (float(word) if is_float else int(word)), end


def _digits(text, pos):
    """Where the run of ASCII digits starting at ``pos`` ends."""
    while pos < len(text) and "0" <= text[pos] <= "9":
        pos += 1
    return pos


def _string(text, pos):
    """(str, end) of a string whose opening quote is just before ``pos``."""
    parts = []
    while True:
        quote = text.find('"', pos)
        if quote < 0:
            raise ValueError(f"unterminated string at character {pos - 1}")
        slash = text.find("\\", pos, quote)
        if slash < 0:
            _check_control(text, pos, quote)
            parts.append(text[pos:quote])
            return "".join(parts), quote + 1
        _check_control(text, pos, slash)
        parts.append(text[pos:slash])
        char, pos = _escape(text, slash + 1)
        parts.append(char)


def _check_control(text, start, end):
    """json.loads (strict) refuses raw control characters inside a string."""
    part = text[start:end]
    if part.isprintable():  # the usual case, in C: no control character (nor other unprintables)
        return
    for offset, char in enumerate(part):
        if char < " ":
            raise ValueError(f"invalid control character at character {start + offset}")


def _escape(text, pos):
    """(characters, end) of the escape whose backslash is just before ``pos``."""
    char = text[pos : pos + 1]
    if char in _ESCAPES:
        return _ESCAPES[char], pos + 1
    if char != "u":
        raise ValueError(f"invalid escape at character {pos - 1}")
    code = _hex4(text, pos + 1)
    end = pos + 5
    if 0xD800 <= code <= 0xDBFF and text.startswith("\\u", end):  # a surrogate pair is one character
        low = _hex4(text, end + 2)
        if 0xDC00 <= low <= 0xDFFF:
            return chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)), end + 6
    return chr(code), end


def _hex4(text, pos):
    digits = text[pos : pos + 4]
    if len(digits) != 4 or not all(c in "0123456789abcdefABCDEF" for c in digits):
        raise ValueError(f"invalid \\uXXXX escape at character {pos - 2}")
    return int(digits, 16)


def _array(text, pos):
    items = []
    pos = _skip(text, pos)
    if text.startswith("]", pos):
        return items, pos + 1
    while True:
        value, pos = _value(text, pos)
        items.append(value)
        pos, done = _next_item(text, pos, "]")
        if done:
            return items, pos


def _object(text, pos):
    result = {}
    pos = _skip(text, pos)
    if text.startswith("}", pos):
        return result, pos + 1
    while True:
        if not text.startswith('"', pos):
            raise ValueError(f"expecting a property name at character {pos}")
        key, pos = _string(text, pos + 1)
        pos = _skip(text, pos)
        if not text.startswith(":", pos):
            raise ValueError(f"expecting ':' at character {pos}")
        result[key], pos = _value(text, _skip(text, pos + 1))
        pos, done = _next_item(text, pos, "}")
        if done:
            return result, pos


def _next_item(text, pos, closer):
    """After an item of an array or object: (end, True) past ``closer``, or (start of the next, False)."""
    pos = _skip(text, pos)
    char = text[pos : pos + 1]
    if char == closer:
        return pos + 1, True
    if char != ",":
        raise ValueError(f"expecting ',' or '{closer}' at character {pos}")
    return _skip(text, pos + 1), False
