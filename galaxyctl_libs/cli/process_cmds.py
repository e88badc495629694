"""Logs, supervisorctl and exec: the commands that hand over to another program.

Each subcommand is ``cmd_x(args) -> int`` beside ``add_x(subparsers)``; heavy modules are imported
inside the commands that need them, so ``status`` and ``--help`` start fast.
"""

import argparse
import os
import sys

from galaxyctl_libs import exitcodes
from galaxyctl_libs.cli.args import names_argument, state_dir
from galaxyctl_libs.errors import GalaxyctlError


def add_follow(sub):
    p = sub.add_parser("follow", help="follow the services' log files (like tail -f)")
    names_argument(p)
    p.set_defaults(func=cmd_follow)


def cmd_follow(args):
    try:
        follow_logs(args)
    except KeyboardInterrupt:
        pass
    return exitcodes.SUCCESS


def follow_logs(args):
    """Follow the logs with tail -F until interrupted (KeyboardInterrupt propagates)."""
    import subprocess

    from galaxyctl_libs.actions import views
    from galaxyctl_libs.backends.record import load_applied
    from galaxyctl_libs.rootpolicy import subprocess_credentials

    files = views.log_files(state_dir(args), args.names)
    if not files:
        raise GalaxyctlError("no services, no log files to follow")
    applied = load_applied(state_dir(args))
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


def add_supervisorctl(sub):
    p = sub.add_parser(
        "supervisorctl",
        help="run supervisorctl against galaxyctl's supervisord",
        description="Pass arguments through to supervisorctl (no arguments: its shell).",
    )
    p.add_argument(
        "arguments", nargs=argparse.REMAINDER, help="supervisorctl arguments, e.g. 'status' or 'tail -f gunicorn'"
    )
    p.set_defaults(func=cmd_supervisorctl)


def cmd_supervisorctl(args):
    import subprocess

    from galaxyctl_libs.backends.record import load_applied
    from galaxyctl_libs.backends.supervisor.client import client_for
    from galaxyctl_libs.rootpolicy import subprocess_credentials

    client = client_for(state_dir(args), load_applied(state_dir(args)))
    if not os.path.exists(client.paths.conf):
        raise GalaxyctlError(f"no supervisord configuration in {client.paths.root}: run 'galaxyctl update' first")
    argv = [sys.executable, "-m", "supervisor.supervisorctl", "-c", client.paths.conf, *args.arguments]
    return subprocess.run(argv, **subprocess_credentials(*client.run_as)).returncode


def add_exec(sub):
    p = sub.add_parser("exec", help="run one service in the foreground, as galaxyctl would (or print it with -n)")
    p.add_argument(
        "-n",
        "--dry-run",
        action="store_true",
        help="print the working dir, environment and command line (of every service when none is named)",
    )
    p.add_argument("--instance", help="instance name (default: the first)")
    p.add_argument("service", nargs="?", help="service name (default: the first, usually gunicorn)")
    p.set_defaults(func=cmd_exec)


def cmd_exec(args):
    from galaxyctl_libs.actions import views

    if args.dry_run and not args.service:
        for number, target in enumerate(views.find_targets(state_dir(args), args.instance)):
            print(("\n" if number else "") + f"# {target.program}")
            print("\n".join(views.exec_description(target)))
        return exitcodes.SUCCESS
    target = views.find_targets(state_dir(args), args.instance, args.service)[0]
    if args.dry_run:
        print("\n".join(views.exec_description(target)))
        return exitcodes.SUCCESS
    views.exec_service(target)
    return exitcodes.FAILURE  # not reached: exec replaced us
