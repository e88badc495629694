"""main.quick_status reads a plain ``status`` command line without argparse (cli/options.py): what it
accepts, argparse must read to the same values; what it does not know, it leaves to argparse."""

import contextlib
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from galaxyctl_libs.cli import health_cmds
from galaxyctl_libs.cli import main as cli

WORDS = [
    "status",
    "check",
    "--json",
    "--ping",
    "--timeout",
    "--timeout=2.5",
    "--timeout=",
    "--heartbeat-age",
    "--heartbeat-age=90",
    "3",
    "-1",
    "nan",
    "x",
    "-c",
    "-c=a.yml",
    "-dc",
    "--config-file",
    "--config-file=b.yml",
    "--config",
    "a.yml",
    "--state-dir",
    "--state-dir=/s",
    "--state",
    "/t",
    "-d",
    "--debug",
    "--user",
    "--no-user",
    "--allow-root",
    "--json=1",
    "--js",
    "gunicorn",
    "handler_0",
    "-h",
    "--help",
    "--version",
    "--",
    "-",
    "",
]


def same(quick, parsed):
    """Equal values (NaN, which --timeout=nan gives, compared by its repr)."""
    return parsed is not None and repr(sorted(vars(quick).items())) == repr(sorted(parsed.items()))


def by_argparse(argv):
    """argparse's reading of argv as {dest: value}, or None when it refuses (or prints help)."""
    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            return vars(cli.build_parser(argv).parse_args(argv))
    except SystemExit:
        return None


@settings(max_examples=1500, deadline=None)
@given(
    st.tuples(st.lists(st.sampled_from(WORDS), max_size=4), st.lists(st.sampled_from(WORDS), max_size=6)).map(
        lambda parts: parts[0] + ["status"] + parts[1]
    )
)
def test_whatever_quick_status_accepts_argparse_reads_the_same(argv):
    quick = cli.quick_status(argv)
    if quick is None:
        return
    assert same(quick, by_argparse(argv)), (argv, vars(quick), by_argparse(argv))


@pytest.mark.parametrize(
    "argv",
    [
        ["status"],
        ["status", "--json"],
        ["--state-dir", "/srv/state", "status", "--timeout", "2", "gunicorn", "handler_0"],
        ["-c", "galaxy.yml", "--config-file=other.yml", "-d", "--no-user", "status", "--ping"],
        ["--allow-root", "--user", "status", "gunicorn", "--heartbeat-age=90", "--json"],
        ["--state-dir=", "status", "--timeout=nan"],
    ],
)
def test_plain_status_command_lines_are_read_without_argparse(argv):
    quick = cli.quick_status(argv)
    assert quick is not None and quick.func is health_cmds.cmd_status
    assert same(quick, by_argparse(argv)), (vars(quick), by_argparse(argv))


@pytest.mark.parametrize(
    "argv",
    [
        ["status", "--help"],
        ["--version", "status"],
        ["status", "--js"],  # an abbreviation: argparse's to accept
        ["-dc", "a.yml", "status"],
        ["status", "--timeout", "-1"],
        ["status", "--timeout", "soon"],
        ["status", "a", "--json", "b"],
        ["status", "--", "x"],
        ["check"],
        ["status", "--state-dir", "/x"],  # a global option after the command
    ],
)
def test_anything_else_is_left_to_argparse(argv):
    assert cli.quick_status(argv) is None
