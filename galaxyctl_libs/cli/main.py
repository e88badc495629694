"""galaxyctl's command line: each subcommand is ``cmd_x(args) -> int`` beside ``_add_x(subparsers)``.

``main`` is the one place that prints a user error (one line, ``galaxyctl: error: ...``) and picks
the exit code.  Heavy modules are imported inside the commands that need them, so ``status`` and
``--help`` start fast.
"""

import argparse
import os
import sys

from galaxyctl_libs import exitcodes
from galaxyctl_libs.errors import GalaxyctlError

PROG = "galaxyctl"


def _state_dir(args):
    from galaxyctl_libs.fsutil import default_state_dir

    return os.path.abspath(args.state_dir) if args.state_dir else default_state_dir()


def _warn(messages):
    for message in messages:
        print(f"{PROG}: warning: {message}", file=sys.stderr)


class _Progress:
    """A live progress line on a terminal; silent otherwise (cron mails only what matters)."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self.width = 0

    def __call__(self, message):
        if self.live:
            self.stream.write("\r" + message.ljust(self.width))
            self.stream.flush()
            self.width = len(message)

    def done(self):
        if self.live and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
            self.width = 0


def _names_argument(parser):
    parser.add_argument(
        "names", nargs="*", metavar="NAME",
        help="instance and/or service names to act on (default: everything registered)",
    )


def _wait_arguments(parser):
    parser.add_argument("--timeout", type=float, default=120, metavar="SECONDS",
                        help="how long to wait for Galaxy to answer HTTP (default: %(default)s)")
    parser.add_argument("--no-wait", dest="wait", action="store_false",
                        help="return as soon as the processes are launched, without waiting for Galaxy to answer")


def _print_lifecycle(result, verb):
    _warn(result.warnings)
    for program in result.programs:
        print(f"{program}: {verb}")
    for ready in result.ready:
        print(f"{ready.program}: ready on {ready.bind} after {ready.seconds:.1f}s")
    _print_ended(result)
    if result.supervisord_stopped:
        print("All processes stopped, supervisord exited")


def _print_ended(result):
    """What stop/shutdown had to end without supervisord (killed, or left behind when it died)."""
    if result.killed_supervisord:
        print(f"supervisord (pid {result.killed_supervisord}) was not answering: killed")
    for ended in result.ended:
        print(f"Ended {ended}")


def _run_waiting(function, args, **kwargs):
    progress = _Progress()
    try:
        return function(_state_dir(args), args.names, wait=args.wait, timeout=args.timeout, progress=progress, **kwargs)
    finally:
        progress.done()


# ---------------------------------------------------------------- registration commands


def _add_register(sub):
    p = sub.add_parser("register", help="register Galaxy config files (galaxy.yml) with galaxyctl",
                       description="Register config files; does not update or start. Run 'galaxyctl update' after.")
    p.add_argument("config", nargs="+", help="path to galaxy.yml (or a gravity-only file naming galaxy_config_file)")
    p.set_defaults(func=cmd_register)


def cmd_register(args):
    from galaxyctl_libs.core import registration as operations

    for result in operations.register(_state_dir(args), args.config):
        _warn(result.warnings)
        if result.already:
            print(f"Already registered: {result.path}")
        else:
            print(f"Registered galaxy config: {result.path}")
    return exitcodes.SUCCESS


def _add_deregister(sub):
    p = sub.add_parser("deregister", help="stop managing config files",
                       description="Deregister config files. Run 'galaxyctl update' after to remove their services.")
    p.add_argument("config", nargs="+", help="registered path (or instance name)")
    p.set_defaults(func=cmd_deregister)


def cmd_deregister(args):
    from galaxyctl_libs.core import registration as operations

    for path in operations.deregister(_state_dir(args), args.config):
        print(f"Deregistered config: {path}")
    return exitcodes.SUCCESS


def _add_rename(sub):
    p = sub.add_parser("rename", help="update the path of a registered config file that has moved")
    p.add_argument("old", help="registered path")
    p.add_argument("new", help="new path")
    p.set_defaults(func=cmd_rename)


def cmd_rename(args):
    from galaxyctl_libs.core import registration as operations

    old, new = operations.rename(_state_dir(args), args.old, args.new)
    print(f"Renamed {old} to {new}")
    return exitcodes.SUCCESS


def _add_list(sub):
    p = sub.add_parser("list", help="list registered config files")
    p.set_defaults(func=cmd_list)


def cmd_list(args):
    from galaxyctl_libs.core import state

    records = state.load_state(_state_dir(args)).config_files
    if not records:
        print("No config files registered")
    for record in records.values():
        print(f"{record.instance_name:<20} {record.path}")
    return exitcodes.SUCCESS


def _add_instances(sub):
    p = sub.add_parser("instances", help="list known instances and their services")
    p.set_defaults(func=cmd_instances)


def cmd_instances(args):
    from galaxyctl_libs.core import state

    records = state.load_state(_state_dir(args)).config_files
    if not records:
        print("No config files registered")
    for record in records.values():
        services = ", ".join(s.service_name for s in record.services) or "(none yet: run 'galaxyctl update')"
        print(f"{record.instance_name:<20} {record.path}\n{'':<20} services: {services}")
    return exitcodes.SUCCESS


def _add_show(sub):
    p = sub.add_parser("show", help="show stored and effective settings of a registered config")
    p.add_argument("config", nargs="?", help="registered path or instance name (default: the only one)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_show)


def cmd_show(args):
    import json
    from dataclasses import asdict

    from galaxyctl_libs.core import registration as operations
    from galaxyctl_libs.core import state

    current = state.load_state(_state_dir(args))
    if args.config:
        path = operations.registered_path(current, args.config)
    elif len(current.config_files) == 1:
        path = next(iter(current.config_files))
    else:
        raise GalaxyctlError("name the config to show (several or none are registered; see 'galaxyctl list')")
    record = current.config_files[path]
    instance, _, warnings = operations.resolve(record, current.state_dir)
    _warn(warnings)
    data = {
        "config_file": path,
        "stored": record.as_dict(),
        "effective": {
            "instance_name": instance.name,
            "galaxy_config_file": instance.galaxy_config_file,
            "galaxy_root": instance.galaxy_root,
            "log_dir": instance.log_dir,
            "run_as": instance.run_as[0],
            "gravity": asdict(instance.settings),
        },
    }
    if args.json:
        print(json.dumps(data, indent=2, default=list))
    else:
        import yaml

        print(yaml.safe_dump(json.loads(json.dumps(data, default=list)), default_flow_style=False, sort_keys=False), end="")
    return exitcodes.SUCCESS


def _add_update(sub):
    p = sub.add_parser("update", help="apply config changes to the supervisor files (and to a running supervisord)")
    p.set_defaults(func=cmd_update)


def cmd_update(args):
    from galaxyctl_libs.core import registration as operations

    result = operations.update(_state_dir(args))
    _warn(result.warnings)
    for path in result.changes.written:
        print(f"Wrote {path}")
    for path in result.changes.removed:
        print(f"Removed {path}")
    added, changed, removed = result.applied
    for label, groups in (("added", added), ("updated", changed), ("removed", removed)):
        for group in groups:
            print(f"{group}: {label} process group")
    if not result.changes:
        print("No changes")
    return exitcodes.SUCCESS


# ---------------------------------------------------------------- lifecycle commands


def _add_start(sub):
    p = sub.add_parser("start", help="start Galaxy (update first) and wait until it answers",
                       description="Start supervisord and Galaxy's services in the background, then wait until "
                       "the web server answers HTTP. With nothing registered, run from a Galaxy source tree "
                       "registers its config/galaxy.yml first.")
    p.add_argument("-f", "--foreground", action="store_true",
                   help="stay in the foreground following the logs; Ctrl+C stops Galaxy")
    _wait_arguments(p)
    _names_argument(p)
    p.set_defaults(func=cmd_start)


def cmd_start(args):
    import signal

    from galaxyctl_libs.actions import lifecycle

    if args.foreground:
        signal.signal(signal.SIGTERM, _raise_interrupt)  # a service manager's stop = Ctrl+C
    try:
        result = _run_waiting(lifecycle.start, args, auto_cwd=os.getcwd())
        _print_lifecycle(result, "started")
        for log_dir in result.log_dirs:
            print(f"Log files are in {log_dir}", flush=True)
        if args.foreground:
            _follow(args)
    except KeyboardInterrupt:
        if not args.foreground:
            raise
    if args.foreground:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # finish the shutdown whatever comes
        lifecycle.shutdown(_state_dir(args))
        print("Shut down", flush=True)
    return exitcodes.SUCCESS


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt()


def _add_simple(sub, name, helptext, func, waits=False):
    p = sub.add_parser(name, help=helptext, description=helptext)
    if waits:
        _wait_arguments(p)
    _names_argument(p)
    p.set_defaults(func=func)


def _force_argument(parser):
    parser.add_argument("--force", action="store_true",
                        help="when supervisord does not answer: kill it, then end its services (TERM, then KILL)")


def _add_stop(sub):
    p = sub.add_parser("stop", help="stop services; supervisord exits when nothing is left running",
                       description="Stop services; supervisord exits when nothing is left running. Processes a "
                       "supervisord that died left running are ended too.")
    _force_argument(p)
    _names_argument(p)
    p.set_defaults(func=cmd_stop)


def cmd_stop(args):
    from galaxyctl_libs.actions import lifecycle

    _print_lifecycle(lifecycle.stop(_state_dir(args), args.names, force=args.force), "stopped")
    return exitcodes.SUCCESS


def cmd_restart(args):
    from galaxyctl_libs.actions import lifecycle

    _print_lifecycle(_run_waiting(lifecycle.restart, args), "restarted")
    return exitcodes.SUCCESS


def cmd_graceful(args):
    from galaxyctl_libs.actions import lifecycle

    _print_lifecycle(_run_waiting(lifecycle.graceful, args), "reloaded")
    return exitcodes.SUCCESS


def _add_shutdown(sub):
    p = sub.add_parser("shutdown", help="stop every process and end supervisord",
                       description="Stop every process and end supervisord; processes a supervisord that died "
                       "left running are ended too.")
    _force_argument(p)
    p.set_defaults(func=cmd_shutdown)


def cmd_shutdown(args):
    from galaxyctl_libs.actions import lifecycle

    result = lifecycle.shutdown(_state_dir(args), force=args.force)
    _print_ended(result)
    if result.supervisord_stopped:
        print("Shut down")
    elif result.ended:
        print("supervisord was not running; ended what it had left running")
    else:
        print("supervisord was not running")
    return exitcodes.SUCCESS


def _add_startup(sub):
    p = sub.add_parser("startup", help="first start: start and wait; restart a stuck start up to --retries times")
    p.add_argument("--retries", type=int, default=2, help="restarts after a stuck start (default: %(default)s)")
    _wait_arguments(p)
    p.set_defaults(wait=True)
    _names_argument(p)
    p.set_defaults(func=cmd_startup)


def cmd_startup(args):
    from galaxyctl_libs.actions import lifecycle

    result = _run_waiting(lifecycle.startup, args, auto_cwd=os.getcwd(), retries=args.retries)
    _print_lifecycle(result, "started")
    return exitcodes.SUCCESS


# ---------------------------------------------------------------- logs, supervisorctl, exec


def _add_follow(sub):
    p = sub.add_parser("follow", help="follow the services' log files (like tail -f)")
    _names_argument(p)
    p.set_defaults(func=cmd_follow)


def cmd_follow(args):
    try:
        _follow(args)
    except KeyboardInterrupt:
        pass
    return exitcodes.SUCCESS


def _follow(args):
    """Follow the logs with tail -F until interrupted (KeyboardInterrupt propagates)."""
    import subprocess

    from galaxyctl_libs.core import registration as operations

    from galaxyctl_libs.rootpolicy import subprocess_credentials
    from galaxyctl_libs.core.targets import load_applied

    files = operations.log_files(_state_dir(args), args.names)
    if not files:
        raise GalaxyctlError("no services, no log files to follow")
    applied = load_applied(_state_dir(args))
    # as root, the logs are the Galaxy user's files: read them as that user (a link there to a
    # root-only file shows nothing); tail -F waits for files that do not exist yet
    credentials = subprocess_credentials(*applied.run_as) if applied is not None else {}
    tail = subprocess.Popen(["tail", "-n", "20", "-F", *files], **credentials)
    try:
        tail.wait()
    finally:
        if tail.poll() is None:
            tail.terminate()
            tail.wait(timeout=10)


def _add_supervisorctl(sub):
    p = sub.add_parser("supervisorctl", help="run supervisorctl against galaxyctl's supervisord",
                       description="Pass arguments through to supervisorctl (no arguments: its shell).")
    p.add_argument("arguments", nargs=argparse.REMAINDER, help="supervisorctl arguments, e.g. 'status' or 'tail -f gunicorn'")
    p.set_defaults(func=cmd_supervisorctl)


def cmd_supervisorctl(args):
    import subprocess

    from galaxyctl_libs.rootpolicy import subprocess_credentials
    from galaxyctl_libs.backends.supervisor.files import client_for
    from galaxyctl_libs.core.targets import load_applied

    client = client_for(_state_dir(args), load_applied(_state_dir(args)))
    if not os.path.exists(client.paths.conf):
        raise GalaxyctlError(f"no supervisord configuration in {client.paths.root}: run 'galaxyctl update' first")
    argv = [sys.executable, "-m", "supervisor.supervisorctl", "-c", client.paths.conf, *args.arguments]
    return subprocess.run(argv, **subprocess_credentials(*client.run_as)).returncode


def _add_exec(sub):
    p = sub.add_parser("exec", help="run one service in the foreground, as galaxyctl would (or print it with -n)")
    p.add_argument("-n", "--dry-run", action="store_true",
                   help="print the working dir, environment and command line (of every service when none is named)")
    p.add_argument("--instance", help="instance name (default: the first)")
    p.add_argument("service", nargs="?", help="service name (default: the first, usually gunicorn)")
    p.set_defaults(func=cmd_exec)


def cmd_exec(args):
    from galaxyctl_libs.core import registration as operations

    if args.dry_run and not args.service:
        for number, target in enumerate(operations.find_targets(_state_dir(args), args.instance)):
            print(("\n" if number else "") + f"# {target.program}")
            print("\n".join(operations.exec_description(target)))
        return exitcodes.SUCCESS
    target = operations.find_targets(_state_dir(args), args.instance, args.service)[0]
    if args.dry_run:
        print("\n".join(operations.exec_description(target)))
        return exitcodes.SUCCESS
    operations.exec_service(target)
    return exitcodes.FAILURE  # not reached: exec replaced us


# ---------------------------------------------------------------- entry points


class _HelpFormatter(argparse.HelpFormatter):
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


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)


def _commands():
    """(name, adder) for every subcommand, in --help order; each adder registers its one subcommand."""
    from galaxyctl_libs.cli import health as cli_health

    def simple(name, helptext, func, waits=False):
        return name, lambda sub: _add_simple(sub, name, helptext, func, waits)

    return (
        ("register", _add_register), ("deregister", _add_deregister), ("list", _add_list),
        ("instances", _add_instances), ("show", _add_show), ("rename", _add_rename), ("update", _add_update),
        ("start", _add_start),
        ("stop", _add_stop),
        simple("restart", "stop and start services, then wait until Galaxy answers", cmd_restart, waits=True),
        simple("graceful", "reload services with the least interruption, then wait until Galaxy answers",
               cmd_graceful, waits=True),
        ("startup", _add_startup), ("shutdown", _add_shutdown), ("status", cli_health._add_status),
        ("check", cli_health._add_check), ("workers", cli_health._add_workers), ("luks", cli_health._add_luks),
        ("onedata", cli_health._add_onedata), ("follow", _add_follow), ("supervisorctl", _add_supervisorctl),
        ("exec", _add_exec),
    )


def _command_word(argv):
    """The subcommand named in ``argv`` (skipping the global options), or None."""
    argv = iter(argv)
    for word in argv:
        if word == "--":
            return None
        if word.startswith("-"):
            if "=" not in word and len(word) > 2 and "--state-dir".startswith(word):
                next(argv, None)  # its value
            continue
        return word
    return None


def build_parser(argv=None):
    """The parser; given ``argv`` naming a subcommand, with only that one registered (a cron
    ``status`` then builds one subparser instead of twenty-one).  --help and typos get them all."""
    parser = _Parser(
        prog=PROG,
        description="Manage Galaxy's processes (gunicorn, celery, handlers, …) under supervisord, and check their health.",
    )
    parser.add_argument("--state-dir", help="state directory (default: $GRAVITY_STATE_DIR, else $XDG_CONFIG_HOME/galaxy-gravity)")
    parser.add_argument("--allow-root", action="store_true",
                        help="as root, let Galaxy's services run as root when no galaxy_user is set (not recommended)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    commands = _commands()
    wanted = _command_word(argv) if argv is not None else None
    chosen = [add for name, add in commands if name == wanted]
    for add in chosen or [add for _, add in commands]:
        add(sub)
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    if args.allow_root:
        from galaxyctl_libs.rootpolicy import ALLOW_ROOT_ENV

        os.environ[ALLOW_ROOT_ENV] = "1"  # our own process environment: read by rootpolicy.run_as
    try:
        if os.geteuid() == 0:
            from galaxyctl_libs.rootpolicy import enter

            enter(_state_dir(args), needs_root=_needs_root(args))
        return args.func(args)
    except GalaxyctlError as exc:
        print(f"{PROG}: error: {exc.message}", file=sys.stderr)
        for line in exc.details:
            print(line, file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


# Commands that act as root (cryptsetup, mount, oneclient): refused on a state dir a user owns.
ROOT_ACTIONS = {"luks": ("open", "close"), "onedata": ("mount", "umount")}


def _needs_root(args):
    return getattr(args, "action", None) in ROOT_ACTIONS.get(args.command, ())


def galaxy_main(argv=None):
    """``galaxy``: register (from a Galaxy root), update and run in the foreground; Ctrl+C stops."""
    parser = argparse.ArgumentParser(prog="galaxy", description="Run Galaxy in the foreground (galaxyctl start -f).")
    parser.add_argument("--state-dir", help="state directory (default: $GRAVITY_STATE_DIR, else $XDG_CONFIG_HOME/galaxy-gravity)")
    parser.add_argument("--allow-root", action="store_true", help="as root, allow Galaxy to run as root")
    args, rest = parser.parse_known_args(argv)
    prefix = (["--state-dir", args.state_dir] if args.state_dir else []) + (["--allow-root"] if args.allow_root else [])
    return main(prefix + ["start", "--foreground"] + rest)


def run():
    sys.exit(main())


def run_galaxy():
    sys.exit(galaxy_main())
