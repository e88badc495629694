"""galaxyctl's command line: the parser, ``main`` and the entry points; commands live in cli/*_cmds.py.

``main`` is the one place that prints a user error (one line, ``galaxyctl: error: ...``) and picks
the exit code.  Heavy modules are imported inside the commands that need them, so ``status`` and
``--help`` start fast.
"""

import os
import sys

from galaxyctl_libs.cli import options, run_configs
from galaxyctl_libs.cli.args import PROG, state_dir, warn
from galaxyctl_libs.errors import GalaxyctlError

# (subcommand, module under galaxyctl_libs.cli, its adder), in --help order.  Only the module of the
# command named on the command line is imported (a cron ``status`` loads one small module).
COMMANDS = (
    ("register", "config_cmds", "add_register"),
    ("deregister", "config_cmds", "add_deregister"),
    ("list", "config_cmds", "add_list"),
    ("instances", "config_cmds", "add_instances"),
    ("show", "config_cmds", "add_show"),
    ("rename", "config_cmds", "add_rename"),
    ("update", "config_cmds", "add_update"),
    ("start", "lifecycle_cmds", "add_start"),
    ("stop", "lifecycle_cmds", "add_stop"),
    ("restart", "lifecycle_cmds", "add_restart"),
    ("graceful", "lifecycle_cmds", "add_graceful"),
    ("startup", "lifecycle_cmds", "add_startup"),
    ("shutdown", "lifecycle_cmds", "add_shutdown"),
    ("status", "health_cmds", "add_status"),
    ("check", "health_cmds", "add_check"),
    ("workers", "health_cmds", "add_workers"),
    ("luks", "storage_cmds", "add_luks"),
    ("onedata", "storage_cmds", "add_onedata"),
    ("follow", "process_cmds", "add_follow"),
    ("supervisorctl", "process_cmds", "add_supervisorctl"),
    ("pm", "process_cmds", "add_pm"),
    ("exec", "process_cmds", "add_exec"),
)


def _adder(module, name):
    import importlib

    return getattr(importlib.import_module(f"galaxyctl_libs.cli.{module}"), name)


def _command_word(argv):
    """The subcommand named in ``argv`` (skipping the global options), or None."""
    argv = iter(argv)
    for word in argv:
        if word == "--":
            return None
        if word.startswith("-"):
            if len(word) > 1 and options.consumes_next(word, GLOBAL_OPTIONS):
                next(argv, None)  # its value
            continue
        return word
    return None


STATE_DIR = options.Option(
    "--state-dir",
    dest="state_dir",
    help="state directory (default: $GRAVITY_STATE_DIR, else $XDG_CONFIG_HOME/galaxy-gravity)",
)
# The global options of main's own (run_configs has gravity's)
MAIN_OPTIONS = (
    STATE_DIR,
    options.Option(
        "--allow-root",
        dest="allow_root",
        action="store_true",
        help="as root, let Galaxy's services run as root when no galaxy_user is set (not recommended)",
    ),
    options.Option(
        "--host",
        dest="host",
        metavar="NAME",
        help="act as host NAME of gravity.hosts: run its share of the services (default: $GALAXYCTL_HOST, "
        "else this machine's name)",
    ),
)
GLOBAL_OPTIONS = run_configs.GLOBAL_OPTIONS + MAIN_OPTIONS
# Commands that start or change things say, once, when gravity's scripts share our names (cli/gravity_scripts.py)
NOTE_COMMANDS = frozenset(("register", "update", "start", "restart", "graceful", "startup", "exec"))


def build_parser(argv=None):
    """The parser; given ``argv`` naming a subcommand, with only that one registered (a cron
    ``status`` then builds one subparser instead of twenty-one).  --help and typos get them all."""
    from galaxyctl_libs.cli.parser import Parser

    parser = Parser(
        prog=PROG,
        description=(
            "Manage Galaxy's processes (gunicorn, celery, handlers, …) under supervisord or systemd, "
            "and check their health."
        ),
        epilog=run_configs.PRECEDENCE_HELP,
    )
    run_configs.add_global_options(parser)
    options.add(parser, MAIN_OPTIONS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    wanted = _command_word(argv) if argv is not None else None
    chosen = [entry for entry in COMMANDS if entry[0] == wanted] or COMMANDS
    for _, module, adder in chosen:
        _adder(module, adder)(sub)
    return parser


def quick_status(argv):
    """The arguments of a plain ``status`` command line, read without argparse (see cli/options.py),
    or None: then argparse reads it."""
    if _command_word(argv) != "status":
        return None
    from types import SimpleNamespace

    from galaxyctl_libs.cli import health_cmds

    values = options.read(argv, GLOBAL_OPTIONS, "status", health_cmds.STATUS_OPTIONS, positional="names")
    return None if values is None else SimpleNamespace(command="status", func=health_cmds.cmd_status, **values)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = quick_status(argv) or build_parser(argv).parse_args(argv)
    if args.allow_root:
        from galaxyctl_libs.rootpolicy import ALLOW_ROOT_ENV

        os.environ[ALLOW_ROOT_ENV] = "1"  # our own process environment: read by rootpolicy.run_as
    if args.host:
        os.environ["GALAXYCTL_HOST"] = args.host  # core.hosts.HOST_ENV: our own process environment
    if args.user_mode is not None:
        os.environ["GALAXYCTL_SYSTEMD_USER"] = "1" if args.user_mode else "0"  # backends.update.USER_MODE_ENV
    try:
        run_configs.apply(args)
        if os.geteuid() == 0:
            from galaxyctl_libs.rootpolicy import enter_state_dir

            enter_state_dir(state_dir(args), needs_root=_needs_root(args))
        if args.command in NOTE_COMMANDS:
            from galaxyctl_libs.cli.gravity_scripts import notice

            notice(state_dir(args))  # once per state dir: gravity's galaxyctl and galaxy are ours now
        return args.func(args)
    except GalaxyctlError as exc:
        warn(exc.warnings)
        return _report(exc.message, exc.details, exc.exit_code, args.debug)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # last resort: what the OS or supervisord refused, where no caller said it
        message = _outside_failure(exc)
        if message is None:
            raise  # anything else is a bug: its traceback
        return _report(message, (), 1, args.debug)


def _report(message, details, exit_code, debug):
    """The one place errors are printed: one line (its traceback before it with --debug)."""
    if debug:
        import traceback

        traceback.print_exc()
    print(f"{PROG}: error: {GalaxyctlError(message).message}", file=sys.stderr)
    for line in details:
        print(line, file=sys.stderr)
    return exit_code


def _outside_failure(exc):
    """One line for an OS error (its cause and file) or a fault of supervisord's (its fault string),
    else None.  The rpc module is looked up, not imported: a fault means it is loaded already, and
    ``status`` stays light."""
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename is not None else ""
        return f"{exc.strerror or exc}{where}"
    rpc = sys.modules.get("galaxyctl_libs.backends.supervisor.rpc")
    if rpc is not None and isinstance(exc, rpc.Fault):
        return f"supervisord refused a request: {exc.faultString} (supervisord's log says why)"
    return None


# Commands that act as root (cryptsetup, mount, oneclient): refused on a state dir a user owns.
ROOT_ACTIONS = {"luks": ("open", "close"), "onedata": ("mount", "umount")}


def _needs_root(args):
    return getattr(args, "action", None) in ROOT_ACTIONS.get(args.command, ())


def galaxy_main(argv=None):
    """``galaxy``: register (from a Galaxy root), update and run in the foreground; Ctrl+C stops."""
    import argparse

    parser = argparse.ArgumentParser(prog="galaxy", description="Run Galaxy in the foreground (galaxyctl start -f).")
    options.add(parser, (STATE_DIR,))
    parser.add_argument("--allow-root", action="store_true", help="as root, allow Galaxy to run as root")
    args, rest = parser.parse_known_args(argv)
    prefix = (["--state-dir", args.state_dir] if args.state_dir else []) + (["--allow-root"] if args.allow_root else [])
    return main(prefix + ["start", "--foreground"] + rest)


# Commands that only read and print (check's Prometheus file is written whole and closed before it
# returns).  Their entry point ends with os._exit once the output is flushed: the interpreter's
# teardown of ~150 modules cost ~3 ms of a ~28 ms cron ``status`` (bench/run.py).
QUICK_EXIT_COMMANDS = frozenset(("status", "check"))


def run():
    argv = sys.argv[1:]
    code = main(argv)
    if _command_word(argv) in QUICK_EXIT_COMMANDS:
        _exit_now(code)
    sys.exit(code)


def _exit_now(code):
    """Leave at once with ``code``, the output flushed; a flush that fails (a closed pipe) leaves the
    usual way, so that Python reports it as it always does.  A stream Python started without (its
    descriptor was closed: None) has nothing to flush."""
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            try:
                stream.flush()
            except (OSError, ValueError):  # ValueError: closed by someone
                sys.exit(code)
    os._exit(code if isinstance(code, int) else 0 if code is None else 1)


def run_galaxy():
    sys.exit(galaxy_main())
