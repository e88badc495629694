"""check for cron and Nagios/Icinga (one line, exit 0/1/2/3) and the Prometheus textfile.

Built on monitoring's status: ``verdict`` turns what was observed into the answer and nothing else
(unit tests feed it synthetic supervisord answers).
"""

from galaxyctl_libs import exitcodes, fsutil
from galaxyctl_libs.actions.monitoring import (
    ORPHANED,
    applied,
    probe_service_web,
    status_from_record,
    web_workers_of,
)
from galaxyctl_libs.backends import base
from galaxyctl_libs.core import targets as targets_mod
from galaxyctl_libs.errors import GalaxyctlError
from galaxyctl_libs.records import Record


class CheckResult(Record):
    code: int  # Nagios: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN
    summary: str
    services_running: int
    services_total: int
    web_ms: float  # None when no web service answered
    workers_busy: int
    workers_total: int
    problems: tuple = ()
    unplanned_restarts: int = 0  # restarts galaxyctl did not do, in the window, all services together
    web_up: bool = None  # every web server answered (None: none was probed)
    health: tuple = ()  # the ServiceStatus rows of handlers and celery workers, with their probe's answer

    @property
    def label(self):
        return exitcodes.NAGIOS_LABELS[self.code]

    def line(self):
        """The plugin output: ``GALAXY OK - summary | perfdata``."""
        perf = [f"services_running={self.services_running};;;0;{self.services_total}"]
        if self.web_ms is not None:
            perf.append(f"web_ms={self.web_ms:.0f}ms")
        perf.append(f"workers_busy={self.workers_busy};;;0;{self.workers_total}")
        if self.health:
            from galaxyctl_libs.actions.health import perfdata

            perf += perfdata(self.health)
        return f"GALAXY {self.label} - {self.summary} | {' '.join(perf)}"


def check(state_dir, names=(), timeout=10.0, restart_window=300, heartbeat_age=None, ping=True):
    """Nagios-style health: CRITICAL when a service is down, the web does not answer in ``timeout``,
    a handler's heartbeat is older than ``heartbeat_age`` s or a celery worker does not answer a ping;
    WARNING when every worker is busy, a service restarted in the last ``restart_window`` s without
    galaxyctl doing it (a crash supervisord or systemd restarted), or a service is still starting
    although galaxyctl did not start it or its start timeout has passed.  Right after a planned
    start or graceful, services still starting are not a problem (backends.planned)."""
    try:
        record = applied(state_dir)  # read once: status, probes and workers all work from it
    except GalaxyctlError as exc:
        return _unknown(exc.message)
    health_probes = {"max_age": heartbeat_age, "ping": ping}
    report = status_from_record(state_dir, record, names, False, timeout, health_probes, restart_window)
    probes, workers = (), ()
    if report.supervisord_running:
        targets = targets_mod.select(record.targets, names)
        probes = tuple(
            (t.program, result) for t in targets for result in [probe_service_web(t.service, timeout)] if result
        )
        workers = tuple(web_workers_of(state_dir, targets, timeout))
    return verdict(report, probes, workers, restart_window)


def _times(count):
    return "once" if count == 1 else f"{count} times"


def verdict(report, probes=(), workers=(), restart_window=300):
    """The check's answer from what was observed, and nothing else (unit tests feed it synthetic
    answers): a StatusReport, ``(program, http.ProbeResult)`` of each web service, and WebWorkers."""
    if report.supervisord_state == base.MANAGER_NOT_ANSWERING:  # nothing can be managed: critical, not unknown
        return _not_answering(report)
    if report.exit_code == exitcodes.LSB_UNKNOWN or not report.services:
        return _unknown(report.message or "nothing registered")
    running = [r for r in report.services if r.state in (base.RUNNING, base.STARTING)]
    critical = _down(report, running)
    warnings = _unsettled(report, running, restart_window)
    silent = {program for program, result in probes if not result.ok}
    answered = {program for program, result in probes if result.ok}
    starting = {
        r.program
        for r in running
        if r.in_grace and r.program not in answered and (r.state == base.STARTING or r.program in silent)
    }
    probes = [(program, result) for program, result in probes if result.ok or program not in starting]
    answered = [result.elapsed_ms for _, result in probes if result.ok]
    web_ms = max(answered) if answered else None
    critical += [
        f"{program} web not answering ({result.error or result.status})" for program, result in probes if not result.ok
    ]
    probed = tuple(r for r in report.services if r.health)
    if probed:
        from galaxyctl_libs.actions.health import problems as health_problems

        more_critical, more_warnings = health_problems(probed)
        critical += more_critical
        warnings += more_warnings
    total = sum(len(web.workers) for web in workers)
    busy = sum(1 for web in workers for w in web.workers if w.status == "busy")
    if total and busy == total:
        warnings.append(f"all {total} web workers busy")
    problems = tuple(critical or warnings)
    code = exitcodes.NAGIOS_CRITICAL if critical else exitcodes.NAGIOS_WARNING if warnings else exitcodes.NAGIOS_OK
    return CheckResult(
        code=code,
        summary=_summary(len(running), len(report.services), len(starting), web_ms, problems),
        services_running=len(running),
        services_total=len(report.services),
        web_ms=web_ms,
        workers_busy=busy,
        workers_total=total,
        problems=problems,
        unplanned_restarts=sum(r.unplanned_restarts for r in running),
        web_up=all(result.ok for _, result in probes) if probes else None,
        health=probed,
    )


def _not_answering(report):
    """CRITICAL: the process manager does not answer."""
    who = f"{report.manager} (pid {report.supervisord_pid})" if report.supervisord_pid else report.manager
    problem = f"{who} is not answering"
    return CheckResult(
        code=exitcodes.NAGIOS_CRITICAL,
        summary=problem,
        services_running=0,
        services_total=len(report.services),
        web_ms=None,
        workers_busy=0,
        workers_total=0,
        problems=(problem,),
    )


def _unknown(summary):
    """UNKNOWN: nothing could be observed."""
    return CheckResult(
        code=exitcodes.NAGIOS_UNKNOWN,
        summary=summary,
        services_running=0,
        services_total=0,
        web_ms=None,
        workers_busy=0,
        workers_total=0,
    )


def _summary(running, total, starting, web_ms, problems):
    """``3/4 services running (1 starting), web 12 ms: PROBLEM; PROBLEM``."""
    summary = f"{running}/{total} services running"
    if starting:
        summary += f" ({starting} starting)"
    if web_ms is not None:
        summary += f", web {web_ms:.0f} ms"
    if problems:
        summary += ": " + "; ".join(problems)
    return summary


def _down(report, running):
    """The critical problems of process state: services not running, a process manager gone (and
    what it left running), required storage not mounted."""
    up = {id(r) for r in running}  # by identity: comparing whole rows made check O(services²)
    critical = [f"{r.program} {r.state}" for r in report.services if id(r) not in up]
    if not report.supervisord_running:
        critical = [f"{report.manager} is not running"]
        rows = [r for r in report.services if r.state == ORPHANED]
        critical += [f"{r.program} {ORPHANED} (pid {r.pid})" for r in rows]
        critical += [f"{ORPHANED} {o.describe()}" for o in report.orphans if o.pid not in {r.pid for r in rows}]
    return critical + [f"required storage {path} not mounted" for path in report.storage_missing]


def _unsettled(report, running, restart_window):
    """The warnings about running services: restarts galaxyctl did not do, a start that outlasted its
    grace, memory past a limit."""
    minutes = f"{restart_window / 60:g} min"
    warnings = [
        f"{r.program} restarted {_times(r.unplanned_restarts)} in the last {minutes}, not by galaxyctl"
        for r in running
        if r.unplanned_restarts
    ]
    warnings += [f"{r.program} starting" for r in running if r.state == base.STARTING and not r.in_grace]
    return warnings + [f"{r.program} {r.memory}" for r in report.services if r.memory]


def _web_up(result):
    if result.web_up is not None:
        return result.web_up
    return result.web_ms is not None and result.code != exitcodes.NAGIOS_CRITICAL


def render_prometheus(result):
    """node_exporter textfile format for a CheckResult."""
    metrics = [
        (
            "galaxy_check_status",
            "Nagios status of galaxyctl check (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN)",
            result.code,
        ),
        ("galaxy_services_running", "Galaxy services running or starting", result.services_running),
        ("galaxy_services_total", "Galaxy services configured", result.services_total),
        ("galaxy_web_up", "1 when every web server answered", int(_web_up(result))),
        ("galaxy_workers_busy", "web workers serving a request now", result.workers_busy),
        ("galaxy_workers_total", "web workers", result.workers_total),
        (
            "galaxy_unplanned_restarts",
            "restarts in check's window that galaxyctl did not do (crashes the process manager restarted)",
            result.unplanned_restarts,
        ),
    ]
    if result.web_ms is not None:
        metrics.append(
            ("galaxy_web_response_seconds", "time for the web server to answer /api/version", result.web_ms / 1000)
        )
    lines = []
    for name, text, value in metrics:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} gauge", f"{name} {value:g}"]
    if result.health:
        from galaxyctl_libs.actions.health import prometheus_lines

        lines += prometheus_lines(result.health)
    return "\n".join(lines) + "\n"


def write_prometheus(path, result):
    """Replace the textfile atomically: node_exporter never reads half a file.

    A file that cannot be written fails with Nagios' UNKNOWN: the check itself could not finish.
    """
    try:
        fsutil.atomic_write(path, render_prometheus(result), mode=0o644)
    except GalaxyctlError as exc:
        raise GalaxyctlError(exc.message, exit_code=exitcodes.NAGIOS_UNKNOWN) from None
