"""What the command modules share: the state dir, warnings, progress, common arguments, result printing.

Public names (no leading underscore): every cli/*_cmds.py module imports them from here.
"""

import sys

PROG = "galaxyctl"


def state_dir(args):
    """The state dir as a paths.StatePaths, resolved once per run (then every layer asks it for paths)."""
    resolved = getattr(args, "_state_paths", None)
    if resolved is None:
        from galaxyctl_libs.paths import StatePaths

        resolved = StatePaths.resolve(args.state_dir)
        args._state_paths = resolved
    return resolved


def warn(messages):
    for message in messages:
        print(f"{PROG}: warning: {message}", file=sys.stderr)


class Progress:
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


def names_argument(parser):
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help="instance and/or service names to act on (default: everything registered)",
    )


def wait_arguments(parser):
    parser.add_argument(
        "--timeout",
        type=float,
        default=120,
        metavar="SECONDS",
        help="how long to wait for Galaxy to answer HTTP (default: %(default)s)",
    )
    parser.add_argument(
        "--no-wait",
        dest="wait",
        action="store_false",
        help="return as soon as the processes are launched, without waiting for Galaxy to answer",
    )


def print_lifecycle(result, verb, waited=True):
    """What a lifecycle action did; ``waited`` False (--no-wait): launched, not seen to come up."""
    warn(result.warnings)
    for program in result.programs:
        print(f"{program}: {verb}" + ("" if waited else ", not waited for"))
    for program in result.already:
        print(f"{program}: already {verb}")
    for ready in result.ready:
        print(f"{ready.program}: ready on {ready.bind} after {ready.seconds:.1f}s")
    print_ended(result)
    if result.manager_stopped:
        print("All processes stopped" + (", supervisord exited" if result.manager == "supervisord" else ""))


def print_ended(result):
    """What stop/shutdown had to end without supervisord (killed, or left behind when it died)."""
    if result.killed_supervisord:
        print(f"supervisord (pid {result.killed_supervisord}) was not answering: killed")
    for ended in result.ended:
        print(f"Ended {ended}")


def run_waiting(function, args, **kwargs):
    progress = Progress()
    try:
        return function(state_dir(args), args.names, wait=args.wait, timeout=args.timeout, progress=progress, **kwargs)
    finally:
        progress.done()


def force_argument(parser):
    parser.add_argument(
        "--force",
        action="store_true",
        help="when supervisord does not answer: kill it, then end its services (TERM, then KILL); "
        "under systemd, systemd ends them",
    )


def print_json(result):
    """A result (or list of results) as JSON; json is imported only when --json asks for it."""
    import json

    from galaxyctl_libs.records import asdict

    return json.dumps(asdict(result), indent=2)
