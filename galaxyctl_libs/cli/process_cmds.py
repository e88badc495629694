"""Logs, supervisorctl and exec: the commands that hand over to another program.

Each subcommand is ``cmd_x(args) -> int`` beside ``add_x(subparsers)``; heavy modules are imported
inside the commands that need them, so ``status`` and ``--help`` start fast.
"""

import argparse
import os
import sys

from galaxyctl_libs import exitcodes
from galaxyctl_libs.cli.args import names_argument, state_dir, warn
from galaxyctl_libs.errors import GalaxyctlError, NothingConfigured


def add_follow(sub):
    p = sub.add_parser(
        "follow",
        help="follow the services' logs (tail -F of their log files; under systemd, journalctl -f)",
    )
    names_argument(p)
    p.set_defaults(func=cmd_follow)


def cmd_follow(args):
    from galaxyctl_libs.cli import interrupts

    interrupts.install()  # a SIGTERM ends tail or journalctl too, as Ctrl+C does
    try:
        follow_logs(args)
    except KeyboardInterrupt:
        pass
    return exitcodes.SUCCESS


def follow_logs(args, manager_only=False):
    """Follow the logs until interrupted (KeyboardInterrupt propagates): the log files with tail -F,
    and under systemd the units' journal, as gravity does (units an older galaxyctl gave log files
    keep them until the next update: those are tailed).  ``manager_only`` (``start -f --quiet``)
    follows supervisord's own log instead of the services' files, as gravity's --quiet does."""
    from galaxyctl_libs.actions import views
    from galaxyctl_libs.backends.record import load_applied

    targets = views.selected_targets(state_dir(args), args.names)
    applied = load_applied(state_dir(args))
    if not targets and applied is None:
        raise NothingConfigured()
    if not targets:
        raise GalaxyctlError("no services, no log files to follow")
    files = [t.log_file for t in targets if t.log_file]
    if manager_only and files and applied is not None and applied.process_manager != "systemd":
        from galaxyctl_libs.backends.supervisor.client import controller_for

        files = [controller_for(state_dir(args), applied).paths.log]
    units = [t.program for t in targets if not t.log_file]
    if applied is not None and applied.process_manager == "systemd" and units:
        from galaxyctl_libs.backends.systemd.client import manager_argv, manager_env

        if files:
            raise GalaxyctlError("some services log to files, some to the journal: follow them by name")
        unit_args = [word for unit in units for word in ("-u", unit)]
        argv = manager_argv("journalctl", applied.user_mode, "-f", "-n", "20", "--no-pager", *unit_args)
        return _run_until_interrupted(argv, env=manager_env(applied.user_mode))
    # as root, the logs are the Galaxy user's files: read them as that user (a link there to a
    # root-only file shows nothing), from the record or, before any update, the services' own user;
    # tail -F waits for files that do not exist yet
    run_as = applied.run_as if applied is not None else (targets[0].service.user, targets[0].service.group)
    return _run_until_interrupted(["tail", "-n", "20", "-F", *files], **_as_galaxy_user(run_as))


def _as_galaxy_user(run_as):
    """Popen arguments for a program galaxyctl runs for the Galaxy user on the admin's terminal:
    no id of root left, and, when it drops from root, a session of its own, so root's terminal is
    not its controlling terminal (it could push keystrokes into root's shell with TIOCSTI); an
    interrupt reaches galaxyctl, which ends it.  Started in /, not in the admin's directory."""
    from galaxyctl_libs.rootpolicy import subprocess_credentials

    credentials = subprocess_credentials(*run_as)
    return dict(credentials, cwd="/", start_new_session=bool(credentials))


def _run_until_interrupted(argv, **popen_args):
    import subprocess

    from galaxyctl_libs.cli import interrupts

    child = None
    try:
        with interrupts.holding():  # an interrupt while the child starts comes once it is known
            child = subprocess.Popen(argv, **popen_args)
        return child.wait()
    finally:
        if child is not None and child.poll() is None:
            child.terminate()
            child.wait(timeout=10)


def add_supervisorctl(sub, name="supervisorctl", helptext="run supervisorctl against galaxyctl's supervisord"):
    p = sub.add_parser(
        name,
        help=helptext,
        description="Pass arguments through to supervisorctl (no arguments: its shell).",
    )
    p.add_argument(
        "arguments", nargs=argparse.REMAINDER, help="supervisorctl arguments, e.g. 'status' or 'tail -f gunicorn'"
    )
    p.set_defaults(func=cmd_supervisorctl)


def add_pm(sub):
    """gravity 1.x's name for it: the process manager's own tool (here always supervisorctl)."""
    add_supervisorctl(
        sub, "pm", "gravity 1.x's name for supervisorctl: pass arguments to the process manager's own tool"
    )


def cmd_supervisorctl(args):
    import subprocess

    from galaxyctl_libs.backends.base import client_for
    from galaxyctl_libs.backends.record import load_applied

    client = client_for(state_dir(args), load_applied(state_dir(args)))
    if getattr(client.paths, "unit_dir", None):  # systemd: the arguments go to systemctl, as gravity's pm
        from galaxyctl_libs.backends.systemd.client import manager_argv, manager_env

        user_mode = client.paths.user_mode
        return subprocess.run(
            manager_argv("systemctl", user_mode, *args.arguments), env=manager_env(user_mode)
        ).returncode
    if not os.path.exists(client.paths.conf):
        from galaxyctl_libs.actions import views

        if not views.selected_targets(state_dir(args)):
            raise NothingConfigured()
        raise GalaxyctlError(f"no supervisord configuration in {client.paths.root}: run 'galaxyctl update' first")
    # -I: nothing from the current directory or PYTHON* variables is imported as the Galaxy user
    argv = [sys.executable, "-I", "-m", "supervisor.supervisorctl", "-c", client.paths.conf, *args.arguments]
    return subprocess.run(argv, **_as_galaxy_user(client.run_as)).returncode


def add_exec(sub):
    p = sub.add_parser("exec", help="run one service in the foreground, as galaxyctl would (or print it with -n)")
    p.add_argument(
        "-n",
        "--no-exec",
        "--dry-run",
        dest="dry_run",
        action="store_true",
        help="print the working dir, environment and command line (of every service when none is named)",
    )
    p.add_argument(
        "-i",
        "--service-instance",
        type=int,
        metavar="N",
        help="for a service run as several processes (handler → handler_0, handler_1, …): the Nth, from 0",
    )
    p.add_argument("--instance", help="instance name (default: the first)")
    p.add_argument(
        "--force",
        action="store_true",
        help="run the service even when it already runs (under supervisord or systemd): a second copy",
    )
    p.add_argument(
        "words",
        nargs="*",
        metavar="[INSTANCE] SERVICE",
        help="service name (default: the first, usually gunicorn), after an instance name if given",
    )
    p.set_defaults(func=cmd_exec)


def cmd_exec(args):
    from galaxyctl_libs.actions import views

    if len(args.words) > 2 or (len(args.words) == 2 and args.instance):
        raise GalaxyctlError("exec takes at most one instance and one service name")
    instance = args.words[0] if len(args.words) == 2 else args.instance
    service = args.words[-1] if args.words else None
    warnings = []
    try:
        targets = views.find_targets(state_dir(args), instance, warnings=warnings)
    finally:
        warn(warnings)  # as every command that loads the configs does (a typo in them, say)
    if args.dry_run and not service:
        for number, target in enumerate(targets):
            print(("\n" if number else "") + f"# {target.program}")
            print("\n".join(views.exec_description(target)))
        return exitcodes.SUCCESS
    target = targets[0] if service is None else pick_process(targets, service, args.service_instance)
    if args.dry_run:
        print("\n".join(views.exec_description(target)))
        return exitcodes.SUCCESS
    running = "" if args.force else views.running_copy(state_dir(args), target)
    if running:
        name = target.service.service_name
        raise GalaxyctlError(
            f"{name} is already running: {running}; stop it first ('galaxyctl stop {name}'), "
            "or 'exec --force' runs a second copy"
        )
    views.exec_service(target)
    return exitcodes.FAILURE  # not reached: exec replaced us


def pick_process(targets, service, number=None):
    """The target of ``service``, or with ``number`` the Nth (from 0) of the processes it runs as.

    A service gravity runs as several processes (a gunicorn or tusd list, a handler entry) is one
    service per process here: ``-i N gunicorn`` is the process numbered N of gravity's ``gunicorn``
    (our ``gunicorn_N``).  A record written before those numbers were kept: NAME_N, NAMEN by name."""
    import re

    exact = [t for t in targets if t.service.service_name == service]
    if exact and not number:
        return exact[0]  # the first instance's, as always
    members = sorted(
        (t for t in targets if t.service.gravity_service == service and t.service.process_number is not None),
        key=lambda t: t.service.process_number,
    )
    if not members:
        numbered = re.compile(re.escape(service) + r"_?([0-9]+)\Z")
        found = ((int(m.group(1)), t) for t in targets for m in [numbered.match(t.service.service_name)] if m)
        members = [t for _, t in sorted(found, key=lambda pair: pair[0])]
    processes = exact or members
    if not processes:
        raise GalaxyctlError(f"no service named {service!r}")
    if number is None:
        if len(processes) > 1:
            names = ", ".join(t.service.service_name for t in processes)
            raise GalaxyctlError(f"{service} runs as {len(processes)} processes ({names}): pick one with -i N, from 0")
        return processes[0]
    if not 0 <= number < len(processes):
        raise GalaxyctlError(f"-i {number}: {service} runs as {len(processes)} process(es), number them from 0")
    return processes[number]
