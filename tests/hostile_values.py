"""The table of hostile values the escaping tests (unit and on real processes) share."""

LONG = ('100% a ;b #c $HOME \\ q"uote %(x)s ✓ ' * 400)[:9999] + "z"  # 10 000 characters

HOSTILE = {
    "dquote": 'q"uote',
    "backslash": "back\\slash",
    "assignment": 'x="y"',
    "squote": "'single'",
    "percent": "100%",
    "expansion": "%(x)s",
    "env_expansion": "%(ENV_HOME)s",
    "here": "%(here)s",  # supervisor replaces this text in every value before expanding
    "semicolon": "a ;b",
    "hash": "a #b",
    "tab_semicolon": "a\t;b",
    "nbsp_hash": "a\u00a0#b",  # configparser's whitespace is str.isspace(), not only ASCII
    "separators": "a\u2028b\x85c\x1e;d\x0c#e",  # isspace(), yet no line break for configparser's file reading
    "dollar": "$HOME",
    "braces": "${HOME}",
    "backtick": "`id`",
    "comma": ",comma=eq",
    "unicode": "Grüße ✓",
    "long": LONG,
    "edges": "  lead and trail  ",
    "space": " ",
    "empty": "",
    "both_quotes_bare": "it's\"x",  # both quote characters, only word characters: a bare token
}

ENV_REFUSED = {"assignment": 'x="y"', "squote": "'single'", "both_quotes_spaced": "a'b \"c"}

ENV_CARRIED = {k: v for k, v in HOSTILE.items() if k not in ENV_REFUSED}


def xml_safe(value):
    """``value`` without the characters XML-RPC cannot carry (so a log dir may not have them): control
    characters and the noncharacters U+FFFE/U+FFFF, as the supervisor renderer refuses them."""
    return "".join(char for char in value if (char >= " " or char == "\t") and char not in "\ufffe\uffff")
