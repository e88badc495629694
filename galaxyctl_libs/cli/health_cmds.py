"""Health commands: status (LSB codes), workers, check (Nagios, Prometheus).

Each subcommand is ``cmd_x(args) -> int`` beside ``add_x(subparsers)``; heavy modules are imported
inside the commands that need them, so ``status`` and ``--help`` start fast.
"""

from galaxyctl_libs import exitcodes
from galaxyctl_libs.cli import options
from galaxyctl_libs.cli.args import names_argument, print_json, state_dir
from galaxyctl_libs.cli.options import Option

HEARTBEAT_AGE = Option(
    "--heartbeat-age",
    dest="heartbeat_age",
    type=float,
    metavar="SECONDS",
    help="a job handler's heartbeat older than this is stale (default: 180, three of Galaxy's 60 s beats)",
)
# as data: main.quick_status reads a plain status command line with them, without argparse
STATUS_OPTIONS = (
    Option("--json", dest="json", action="store_true", help="print JSON"),
    Option(
        "--timeout",
        dest="timeout",
        type=float,
        default=5.0,
        help="seconds to wait for the process manager's (supervisord's or systemd's) and the web server's answer",
    ),
    Option(
        "--ping",
        dest="ping",
        action="store_true",
        help="also ping celery workers through the broker (loads Galaxy's app: seconds)",
    ),
    HEARTBEAT_AGE,
    Option(
        "--cluster",
        dest="cluster",
        action="store_true",
        help="the whole Galaxy of gravity.hosts, from any host: every configured handler's heartbeat per host, "
        "jobs held by a silent handler, every celery worker's ping, every web server, the celery-beats",
    ),
)


def add_status(sub):
    p = sub.add_parser(
        "status",
        help="state of each service and whether the web server answers (LSB exit codes)",
        description="Exit 0 when everything runs, 3 when something does not, 4 when unknown "
        "(supervisord does not answer), 1 when supervisord died but left services running.",
    )
    options.add(p, STATUS_OPTIONS)
    names_argument(p)
    p.set_defaults(func=cmd_status)


def heartbeat_argument(parser):
    options.add(parser, (HEARTBEAT_AGE,))


def cmd_status(args):
    if args.cluster:
        return cluster_status(args)
    from galaxyctl_libs.actions import monitoring
    from galaxyctl_libs.backends.base import BACKOFF, EXITED, FATAL
    from galaxyctl_libs.backends.memlimits import size_text

    report = monitoring.status(
        state_dir(args), args.names, timeout=args.timeout, heartbeat_age=args.heartbeat_age, ping=args.ping
    )
    if args.json:
        print(print_json(report))
        return report.exit_code
    if report.message:
        print(report.message)
    for row in report.services:
        pid = f"pid {row.pid}" if row.pid else ""
        uptime = (
            f"uptime {row.uptime_seconds // 3600}:{row.uptime_seconds // 60 % 60:02d}:{row.uptime_seconds % 60:02d}"
            if row.uptime_seconds
            else ""
        )
        web = f"web {row.web}" if row.web else ""
        rss = f"rss {size_text(row.rss_bytes)}" + (f" ({row.memory})" if row.memory else "") if row.pid else ""
        health = row.health.detail if row.health else ""
        why = row.description if row.state in (FATAL, EXITED, BACKOFF) else ""  # e.g. "Exited too quickly"
        print(f"{row.program:<32} {row.state:<10} " + "  ".join(x for x in (pid, uptime, rss, web, health, why) if x))
    return report.exit_code


def cluster_status(args):
    """``status --cluster``: a line per handler, celery worker and web server of every host."""
    from galaxyctl_libs.actions import cluster

    report = cluster.gather(state_dir(args), timeout=args.timeout, max_age=args.heartbeat_age, ping=True)
    if args.json:
        print(print_json(report))
        return cluster.status_code(report)
    if report.error:
        print(report.error)
    for item in report.items:
        print(f"{item.host:<20} {item.what:<8} {item.name:<32} {item.state:<9} {item.detail}")
    for held, why in report.orphans:
        print(f"{'':<20} jobs     {held.handler:<32} {'critical':<9} {cluster.jobs_text(held)}, {why}")
    beats = "unknown" if report.beats is None else ", ".join(report.beats) or "none"
    problem = cluster.beat_problem(report.beats, report.beat_host)
    state = "unknown" if report.beats is None else "critical" if problem else "ok"
    print(
        f"{'':<20} beat     {'celery-beat':<32} {state:<9} running on: {beats}" + (f" ({problem})" if problem else "")
    )
    return cluster.status_code(report)


def add_workers(sub):
    p = sub.add_parser(
        "workers", help="each web worker, busy or idle (gunicorn from /proc, uWSGI from its stats server)"
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    names_argument(p)
    p.set_defaults(func=cmd_workers)


def cmd_workers(args):
    from galaxyctl_libs.actions import monitoring

    results = monitoring.web_workers(state_dir(args), args.names)
    if args.json:
        print(print_json(results))
        return exitcodes.SUCCESS
    for result in results:
        print(
            f"{result.program} ({result.server}, master {result.master_pid or '-'}){': ' + result.error if result.error else ''}"
        )
        for w in result.workers:
            serving = f"connections {w.connections}" if w.connections is not None else f"requests {w.requests}"
            print(
                f"  pid {w.pid:<8} {w.status:<6} {serving:<16} rss {w.rss_bytes // 1048576} MiB  cpu {w.cpu_seconds:.1f}s"
            )
    return exitcodes.SUCCESS


def add_check(sub):
    p = sub.add_parser(
        "check",
        help="one-line health check for cron and Nagios/Icinga (exit 0/1/2/3)",
        description="Prints 'GALAXY OK|WARNING|CRITICAL|UNKNOWN - ... | perfdata' and exits with the "
        "Nagios code. CRITICAL: a service down, the web not answering, a job handler whose heartbeat "
        "is stale or a celery worker that does not answer a ping; WARNING: all workers busy, a service "
        "restarted without galaxyctl doing it (a crash supervisord repaired), a service still starting "
        "after its start timeout, or a heartbeat that cannot be read. Right after galaxyctl start or "
        "graceful, services still starting are OK.",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="seconds the process manager and the web server have to answer (default: %(default)s)",
    )
    p.add_argument(
        "--restart-window",
        type=float,
        default=5.0,
        metavar="MINUTES",
        help="count restarts galaxyctl did not do in the last MINUTES (default: %(default)s)",
    )
    heartbeat_argument(p)
    p.add_argument(
        "--no-ping", action="store_true", help="do not ping celery workers (the ping loads Galaxy's app: seconds)"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing when OK (cron mails only problems)")
    p.add_argument("--prometheus", metavar="FILE", help="also write the figures as a node_exporter textfile")
    p.add_argument(
        "--cluster",
        action="store_true",
        help="check the whole Galaxy of gravity.hosts from here: silent handlers, jobs held by a handler "
        "without a heartbeat, celery pings, web servers at each host's address, exactly one celery-beat",
    )
    names_argument(p)
    p.set_defaults(func=cmd_check)


def cmd_check(args):
    if args.cluster:
        return cluster_check(args)
    from galaxyctl_libs.actions import checks

    result = checks.check(
        state_dir(args),
        args.names,
        args.timeout,
        args.restart_window * 60,
        heartbeat_age=args.heartbeat_age,
        ping=not args.no_ping,
    )
    if args.prometheus:
        checks.write_prometheus(args.prometheus, result)
    if not (args.quiet and result.code == exitcodes.NAGIOS_OK):
        print(result.line())
    return result.code


def cluster_check(args):
    from galaxyctl_libs.actions import cluster

    result = cluster.check(state_dir(args), args.timeout, args.heartbeat_age, ping=not args.no_ping)
    if args.prometheus:
        cluster.write_prometheus(args.prometheus, result)
    if not (args.quiet and result.code == exitcodes.NAGIOS_OK):
        print(result.line())
    return result.code
