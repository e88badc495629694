"""Options as data: argparse is given them (``add``), and ``read`` parses the plain command lines
of the command cron runs most (``status``) without argparse.

argparse, with the gettext and locale it pulls in and the parser it builds, is about 7 ms of a
``status`` that otherwise takes ~35 ms above the interpreter's start.  ``read`` knows exactly the
options declared here, written out in full: anything else (``--help``, ``--version``, an
abbreviation, a cluster such as ``-dc``, ``--``, a value that looks like an option or does not
convert) makes it answer None, and argparse then parses the same command line and gives its usual
help or error.  tests/unit/test_cli_options.py checks that whatever ``read`` accepts, argparse
reads the same way.
"""

_UNSET = object()
_IMPLIED_DEFAULTS = {"store_true": False, "store_false": True}  # argparse's


class Option:
    """One ``add_argument``: ``flags`` and the keyword arguments argparse takes (``dest``,
    ``action`` store/store_true/store_false/append, ``type``, ``default``, ``metavar``, ``help``)."""

    __slots__ = ("flags", "dest", "action", "type", "default", "explicit_default", "metavar", "help")

    def __init__(self, *flags, dest, action="store", type=None, default=_UNSET, metavar=None, help=None):
        self.flags, self.dest, self.action, self.type = flags, dest, action, type
        self.explicit_default = default is not _UNSET
        self.default = default if self.explicit_default else _IMPLIED_DEFAULTS.get(action)
        self.metavar, self.help = metavar, help

    @property
    def takes_value(self):
        return self.action in ("store", "append")

    def argparse_kwargs(self):
        kwargs = {"dest": self.dest, "action": self.action, "help": self.help}
        if self.explicit_default:
            kwargs["default"] = self.default
        if self.type is not None:
            kwargs["type"] = self.type
        if self.metavar is not None:
            kwargs["metavar"] = self.metavar
        return kwargs


def consumes_next(word, options):
    """Does ``word``, one of ``options`` as argparse reads it, take the next word as its value?  A
    long option may be abbreviated; short ones may be clustered (``-dc FILE``: the last one counts)."""
    if "=" in word:
        return False
    valued = [flag for option in options if option.takes_value for flag in option.flags]
    if word.startswith("--"):
        return len(word) > 2 and any(flag.startswith(word) for flag in valued if flag.startswith("--"))
    return f"-{word[-1]}" in valued


def add(parser, options):
    for option in options:
        parser.add_argument(*option.flags, **option.argparse_kwargs())


def read(argv, global_options, command, command_options, positional):
    """{dest: value} for ``[GLOBAL OPTIONS] command [OPTIONS] [NAMES]`` (names in one run, as
    argparse wants them), or None when argv holds anything else (then argparse decides)."""
    values = {}
    for option in global_options + command_options:
        values.setdefault(option.dest, option.default)  # the first option of a dest gives its default
    values[positional] = []
    words = iter(argv)
    if not _read_options(words, _by_flag(global_options), values, stop_at=command):
        return None
    by_flag, names_done = _by_flag(command_options), False
    for word in words:
        if word.startswith("-"):
            names_done = bool(values[positional])
            if not _read_option(word, words, by_flag, values):
                return None
        elif names_done:
            return None  # argparse takes NAMES in one run only
        else:
            values[positional].append(word)
    return values


def _by_flag(options):
    return {flag: option for option in options for flag in option.flags}


def _read_options(words, by_flag, values, stop_at):
    """The options before the command word; False unless it is reached through known options."""
    for word in words:
        if word == stop_at:
            return True
        if not word.startswith("-") or not _read_option(word, words, by_flag, values):
            return False
    return False


def _read_option(word, words, by_flag, values):
    flag, has_equals, attached = word.partition("=")
    option = by_flag.get(flag)
    if option is None or (has_equals and not option.takes_value):
        return False
    if not option.takes_value:
        values[option.dest] = option.action == "store_true"
        return True
    value = attached if has_equals else next(words, None)
    if value is None or (not has_equals and value.startswith("-")):
        return False
    if option.type is not None:
        try:
            value = option.type(value)
        except ValueError:
            return False
    if option.action == "append":
        values[option.dest] = (values[option.dest] or []) + [value]
    else:
        values[option.dest] = value
    return True
