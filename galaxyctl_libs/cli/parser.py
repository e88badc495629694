"""argparse's side of the command line: the parser class, its help formatter and ``--version``.

Only ``main.build_parser`` imports this module (and with it argparse): a plain ``status`` is read
by cli/options.py without them.
"""

import argparse
import os
import sys


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, sized without ``shutil``: argparse makes one per ``add_argument``, and
    the first would import shutil (with bz2, lzma and zlib) on every run just to ask for the width."""

    def __init__(self, prog, **kwargs):
        kwargs.setdefault("width", _terminal_columns() - 2)
        super().__init__(prog, **kwargs)


def _terminal_columns():
    """$COLUMNS, else the terminal's width, else 80 (what shutil.get_terminal_size answers)."""
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns or 80
    except (AttributeError, ValueError, OSError):
        return 80


class Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


class Version(argparse.Action):
    """--version: galaxyctl_libs.__version__.  Read off the package already loaded (it is where this
    module lives), not imported: the package's lazy API sits above the CLI's floor."""

    def __init__(self, option_strings, dest, **kwargs):
        # SUPPRESS: no ``version`` attribute in the parsed arguments (as argparse's own version action)
        super().__init__(
            option_strings, dest, nargs=0, default=argparse.SUPPRESS, help="print galaxyctl's version and exit"
        )

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog} {sys.modules['galaxyctl_libs'].__version__}")
        parser.exit()
