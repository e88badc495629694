"""galaxyctl's health and storage commands: status, workers, check, luks, onedata.

Kept apart from cli.py (registration, lifecycle, entry points) only for size; each command is
still ``cmd_x(args) -> int`` beside ``_add_x(subparsers)``, and cli.main prints errors.
"""

import sys

from galaxyctl_libs import exitcodes
from galaxyctl_libs.cli.main import _names_argument, _state_dir
from galaxyctl_libs.errors import GalaxyctlError


def _json(result):
    """A result (or list of results) as JSON; json is imported only when --json asks for it."""
    import json

    from galaxyctl_libs.records import asdict

    return json.dumps(asdict(result), indent=2)


def _add_status(sub):
    p = sub.add_parser("status", help="state of each service and whether the web server answers (LSB exit codes)",
                       description="Exit 0 when everything runs, 3 when something does not, 4 when unknown "
                       "(supervisord does not answer), 1 when supervisord died but left services running.")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for supervisord's and the web server's answer")
    _names_argument(p)
    p.set_defaults(func=cmd_status)


def cmd_status(args):
    from galaxyctl_libs.actions import monitoring

    report = monitoring.status(_state_dir(args), args.names, timeout=args.timeout)
    if args.json:
        print(_json(report))
        return report.exit_code
    if report.message:
        print(report.message)
    for row in report.services:
        pid = f"pid {row.pid}" if row.pid else ""
        uptime = f"uptime {row.uptime_seconds // 3600}:{row.uptime_seconds // 60 % 60:02d}:{row.uptime_seconds % 60:02d}" if row.uptime_seconds else ""
        web = f"web {row.web}" if row.web else ""
        print(f"{row.program:<32} {row.state:<10} " + "  ".join(x for x in (pid, uptime, web) if x))
    return report.exit_code


def _add_workers(sub):
    p = sub.add_parser("workers", help="each web worker, busy or idle (gunicorn from /proc, uWSGI from its stats server)")
    p.add_argument("--json", action="store_true", help="print JSON")
    _names_argument(p)
    p.set_defaults(func=cmd_workers)


def cmd_workers(args):
    from galaxyctl_libs.actions import monitoring

    results = monitoring.web_workers(_state_dir(args), args.names)
    if args.json:
        print(_json(results))
        return exitcodes.SUCCESS
    for result in results:
        print(f"{result.program} ({result.server}, master {result.master_pid or '-'}){': ' + result.error if result.error else ''}")
        for w in result.workers:
            serving = f"connections {w.connections}" if w.connections is not None else f"requests {w.requests}"
            print(f"  pid {w.pid:<8} {w.status:<6} {serving:<16} rss {w.rss_bytes // 1048576} MiB  cpu {w.cpu_seconds:.1f}s")
    return exitcodes.SUCCESS


def _add_check(sub):
    p = sub.add_parser("check", help="one-line health check for cron and Nagios/Icinga (exit 0/1/2/3)",
                       description="Prints 'GALAXY OK|WARNING|CRITICAL|UNKNOWN - ... | perfdata' and exits with the "
                       "Nagios code. CRITICAL: a service down or the web not answering; WARNING: all workers busy "
                       "or a service restarted recently.")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="seconds supervisord and the web server have to answer (default: %(default)s)")
    p.add_argument("--restart-window", type=float, default=5.0, metavar="MINUTES",
                   help="warn when a service (re)started less than this long ago (default: %(default)s)")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing when OK (cron mails only problems)")
    p.add_argument("--prometheus", metavar="FILE", help="also write the figures as a node_exporter textfile")
    _names_argument(p)
    p.set_defaults(func=cmd_check)


def cmd_check(args):
    from galaxyctl_libs.actions import monitoring

    result = monitoring.check(_state_dir(args), args.names, args.timeout, args.restart_window * 60)
    if args.prometheus:
        monitoring.write_prometheus(args.prometheus, result)
    if not (args.quiet and result.code == exitcodes.NAGIOS_OK):
        print(result.line())
    return result.code


def _add_luks(sub):
    p = sub.add_parser("luks", help="the encrypted LUKS volume of gravity.luks: status, open, close",
                       description="open: cryptsetup luksOpen + mount (the passphrase is asked on the terminal, "
                       "or read from --key-file; never an argument). close: umount + luksClose, refused while "
                       "Galaxy is running.")
    p.add_argument("action", choices=("status", "open", "close"))
    p.add_argument("--key-file", help="read the passphrase from this file instead of the terminal")
    p.add_argument("--instance", help="instance whose config holds gravity.luks (default: the only one)")
    p.set_defaults(func=cmd_luks)


def cmd_luks(args):
    from galaxyctl_libs.core import registration as operations
    from galaxyctl_libs.storage import volumes

    storage, instance = operations.storage_of(_state_dir(args), args.instance)
    if storage.luks is None:
        raise GalaxyctlError(f"{instance.config_path}: no gravity.luks section")
    if args.action == "open":
        passphrase = None
        if not (args.key_file or storage.luks.key_file):
            if not sys.stdin.isatty():
                raise GalaxyctlError("no terminal to ask the passphrase on: use --key-file (or gravity.luks.key_file)")
            import getpass

            passphrase = getpass.getpass(f"Passphrase for {storage.luks.device_path}: ")
        result = volumes.luks_open(storage.luks, passphrase=passphrase, key_file=args.key_file)
    elif args.action == "close":
        result = volumes.luks_close(storage.luks, galaxy_running=operations.galaxy_running(_state_dir(args)))
    else:
        result = volumes.luks_status(storage.luks)
    state = "open" if result.open else "closed"
    mounted = f"mounted on {result.mount_point}" if result.mounted else f"not mounted ({result.mount_point})"
    print(f"{result.name}: {state}, {mounted}")
    return exitcodes.SUCCESS if args.action != "status" or result.ok else exitcodes.LSB_NOT_RUNNING


def _add_onedata(sub):
    p = sub.add_parser("onedata", help="Onedata spaces of gravity.onedata: status, mount, umount",
                       description="Mount with oneclient; the access token goes to oneclient's environment only.")
    p.add_argument("action", choices=("status", "mount", "umount"))
    p.add_argument("space", nargs="?", help="space name (default for status: every space)")
    p.add_argument("--instance", help="instance whose config holds gravity.onedata (default: the only one)")
    p.set_defaults(func=cmd_onedata)


def cmd_onedata(args):
    from galaxyctl_libs.core import registration as operations
    from galaxyctl_libs.storage import volumes

    storage, _ = operations.storage_of(_state_dir(args), args.instance)
    if args.action != "status" and not args.space:
        raise GalaxyctlError(f"name the space to {args.action}")
    names = [args.space] if args.space else [space.name for space in storage.onedata.spaces]
    if args.action == "mount":
        volumes.onedata_mount(storage.onedata, args.space)
    elif args.action == "umount":
        volumes.onedata_umount(storage.onedata, args.space)
    code = exitcodes.SUCCESS
    for name in names:
        status = volumes.onedata_status(storage.onedata, name)
        print(f"{name}: {'mounted' if status.mounted else 'not mounted'} on {status.mount_point}")
        if not status.mounted and args.action == "status":
            code = exitcodes.LSB_NOT_RUNNING
    return code
