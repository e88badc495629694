"""Lifecycle commands: start, stop, restart, graceful, shutdown, startup.

Each subcommand is ``cmd_x(args) -> int`` beside ``add_x(subparsers)``; heavy modules are imported
inside the commands that need them, so ``status`` and ``--help`` start fast.
"""

import os

from galaxyctl_libs import exitcodes
from galaxyctl_libs.cli.args import (
    force_argument,
    names_argument,
    print_ended,
    print_lifecycle,
    run_waiting,
    state_dir,
    wait_arguments,
)


def add_start(sub):
    p = sub.add_parser(
        "start",
        help="start Galaxy (update first) and wait until it answers",
        description="Start the process manager (supervisord; under systemd, the units) and Galaxy's services "
        "in the background, then wait until "
        "the web server answers HTTP. With nothing registered, run from a Galaxy source tree "
        "registers its config/galaxy.yml first.",
    )
    p.add_argument(
        "-f", "--foreground", action="store_true", help="stay in the foreground following the logs; Ctrl+C stops Galaxy"
    )
    p.add_argument(
        "--quiet",
        action="store_true",
        help="with --foreground, follow supervisord's own log only, not the services' logs (as gravity's "
        "--quiet; under systemd the units' journal is followed either way)",
    )
    wait_arguments(p)
    names_argument(p)
    p.set_defaults(func=cmd_start)


def cmd_start(args):
    import signal

    from galaxyctl_libs.actions import lifecycle
    from galaxyctl_libs.cli import interrupts

    if args.foreground:
        interrupts.install()  # a service manager's stop = Ctrl+C
    try:
        result = run_waiting(lifecycle.start, args, auto_cwd=os.getcwd())
        print_lifecycle(result, "started", args.wait)
        for log_dir in result.log_dirs:
            if log_dir == lifecycle.JOURNAL:
                print(f"Logs are in {log_dir} ('galaxyctl follow' shows them)", flush=True)
            else:
                print(f"Log files are in {log_dir}", flush=True)
        if args.foreground:
            from galaxyctl_libs.cli.process_cmds import follow_logs

            follow_logs(args, manager_only=args.quiet)
    except KeyboardInterrupt:
        if not args.foreground:
            raise
    if args.foreground:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # finish the shutdown whatever comes
        lifecycle.shutdown(state_dir(args))
        print("Shut down", flush=True)
    return exitcodes.SUCCESS


def _add_waiting(sub, name, helptext, func):
    p = sub.add_parser(name, help=helptext, description=helptext)
    wait_arguments(p)
    names_argument(p)
    p.set_defaults(func=func)
    return p


def add_restart(sub):
    _add_waiting(sub, "restart", "stop and start services, then wait until Galaxy answers", cmd_restart)


def add_graceful(sub):
    p = _add_waiting(
        sub,
        "graceful",
        "reload services with the least interruption (handlers one by one, each waiting for its "
        "heartbeat), start what is stopped, then wait until Galaxy answers",
        cmd_graceful,
    )
    p.add_argument(
        "--start-if-stopped",
        action="store_true",
        help="gravity's option, kept: graceful always starts what is stopped (tusd too), and supervisord when down",
    )
    p.add_argument(
        "--batch",
        type=int,
        default=1,
        metavar="N",
        help="restart job handlers and workflow schedulers N at a time, each batch waiting for its "
        "heartbeat before the next (default: %(default)s)",
    )
    p.add_argument(
        "--delay", type=float, default=0.0, metavar="S", help="seconds to wait between two steps (default: none)"
    )
    p.add_argument(
        "--drain",
        type=float,
        default=120.0,
        metavar="S",
        help="before a handler restarts, stop its job dispatch and wait up to S seconds for its running "
        "local-runner jobs, which Galaxy kills when a handler stops (default: %(default)s; 0: no drain)",
    )


def add_stop(sub):
    p = sub.add_parser(
        "stop",
        help="stop services (supervisord exits when nothing is left running)",
        description="Stop services; under supervisord, it exits when nothing is left running, and processes a "
        "supervisord that died left running are ended too. Under systemd, the units are stopped.",
    )
    force_argument(p)
    names_argument(p)
    p.set_defaults(func=cmd_stop)


def cmd_stop(args):
    from galaxyctl_libs.actions import lifecycle

    result = lifecycle.stop(state_dir(args), args.names, force=args.force)
    print_lifecycle(result, "stopped")
    if not (result.programs or result.already or result.ended or result.manager_stopped):
        print(f"{result.manager} was not running: nothing to stop")  # a second stop says so too
    return exitcodes.SUCCESS


def cmd_restart(args):
    from galaxyctl_libs.actions import lifecycle

    print_lifecycle(run_waiting(lifecycle.restart, args), "restarted", args.wait)
    return exitcodes.SUCCESS


def cmd_graceful(args):
    from galaxyctl_libs.actions import rolling

    result = run_waiting(
        rolling.graceful,
        args,
        batch=args.batch,
        delay=args.delay,
        drain=args.drain,
    )
    print_lifecycle(result, "reloaded", args.wait)
    return exitcodes.SUCCESS


def add_shutdown(sub):
    p = sub.add_parser(
        "shutdown",
        help="stop every process and end supervisord (under systemd: stop the target)",
        description="Stop every process and end supervisord; processes a supervisord that died "
        "left running are ended too. Under systemd, Galaxy's target and its units are stopped.",
    )
    force_argument(p)
    p.set_defaults(func=cmd_shutdown)


def cmd_shutdown(args):
    from galaxyctl_libs.actions import lifecycle

    result = lifecycle.shutdown(state_dir(args), force=args.force)
    print_ended(result)
    if result.manager_stopped:
        print("Shut down")
    elif result.ended:
        print(f"{result.manager} was not running; ended what it had left running")
    else:
        print(f"{result.manager} was not running")
    return exitcodes.SUCCESS


def add_startup(sub):
    p = sub.add_parser("startup", help="first start: start and wait; restart a stuck start up to --retries times")
    p.add_argument("--retries", type=int, default=2, help="restarts after a stuck start (default: %(default)s)")
    wait_arguments(p)
    p.set_defaults(wait=True)
    names_argument(p)
    p.set_defaults(func=cmd_startup)


def cmd_startup(args):
    from galaxyctl_libs.actions import lifecycle

    result = run_waiting(lifecycle.startup, args, auto_cwd=os.getcwd(), retries=args.retries)
    print_lifecycle(result, "started")
    return exitcodes.SUCCESS
