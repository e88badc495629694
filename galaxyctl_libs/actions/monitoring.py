"""Health for people and monitors: status (LSB codes), web workers, and check (Nagios, Prometheus).

Everything here only looks: nothing is written except the Prometheus textfile an admin asks for.
"""

from galaxyctl_libs import exitcodes, fsutil
from galaxyctl_libs.backends import record as backend_record
from galaxyctl_libs.backends.supervisor import client as sup
from galaxyctl_libs.core import targets as targets_mod
from galaxyctl_libs.errors import GalaxyctlError
from galaxyctl_libs.probes import http as health
from galaxyctl_libs.probes import procfs
from galaxyctl_libs.records import Record

# ---------------------------------------------------------------- status


class ServiceStatus(Record):
    instance: str
    service: str
    program: str
    state: str
    pid: int
    uptime_seconds: int
    description: str
    web: str = ""  # for web services: "ok 12ms", or why not
    health: object = None  # handlers' heartbeat, celery's ping: actions.health.ServiceHealth


ORPHANED = "ORPHANED"  # a service's process runs, but the supervisord that started it is gone


class StatusReport(Record):
    supervisord_running: bool
    supervisord_pid: int
    services: tuple
    exit_code: int
    message: str = ""
    storage_missing: tuple = ()  # required mount points that are not mounted
    supervisord_state: str = ""  # supervisor.SUPERVISORD_*: RUNNING, DOWN, NOT_ANSWERING, SHUTTING_DOWN
    orphans: tuple = ()  # procfs.Marked: the main processes a supervisord that died left running


def status(state_dir, names=(), probe_web=True, timeout=5.0, heartbeat_age=None, ping=False):
    """One row per service; LSB exit code: 0 all running, 3 something is not, 4 unknown (supervisord
    does not answer within ``timeout``), 1 supervisord died but left services running (orphans).
    Running handlers show their heartbeat (older than ``heartbeat_age`` s: stale), celery workers
    their answer to a ping when ``ping`` (it loads Galaxy's app: seconds)."""
    try:
        record = applied(state_dir)
    except GalaxyctlError as exc:
        return StatusReport(False, None, (), exitcodes.LSB_UNKNOWN, exc.message)
    return _status(state_dir, record, names, probe_web, timeout, {"max_age": heartbeat_age, "ping": ping})


def _status(state_dir, record, names, probe_web, timeout, health=None):
    try:
        targets = targets_mod.select(record.targets, names)
    except GalaxyctlError as exc:
        return StatusReport(False, None, (), exitcodes.LSB_UNKNOWN, exc.message)
    if not targets:
        return StatusReport(False, None, (), exitcodes.LSB_NOT_RUNNING, "no Galaxy config is registered")
    missing = missing_storage(record)
    client = sup.client_for(state_dir, record, timeout=timeout)
    survey = client.survey()
    if not survey.answering:
        return _status_without_supervisord(state_dir, targets, survey, missing)
    infos = survey.processes
    rows = []
    for target in targets:
        key = target.program if ":" in target.program else f"{target.program}:{target.program}"
        info = infos.get(key) or infos.get(target.program)  # systemd: keyed by unit name
        if info is None:
            rows.append(
                ServiceStatus(
                    target.instance_name,
                    target.service.service_name,
                    target.program,
                    "UNKNOWN",
                    None,
                    0,
                    "not loaded in supervisord; run 'galaxyctl update'",
                )
            )
            continue
        uptime = int(info["now"] - info["start"]) if info["statename"] == sup.RUNNING and info["start"] else 0
        probe = _probe_web(target.service, timeout) if probe_web and info["statename"] in sup.UP_STATES else None
        web = (
            ""
            if probe is None
            else f"ok {probe.elapsed_ms:.0f}ms"
            if probe.ok
            else (probe.error or f"HTTP {probe.status}")
        )
        rows.append(
            ServiceStatus(
                target.instance_name,
                target.service.service_name,
                target.program,
                info["statename"],
                info["pid"] or None,
                uptime,
                info["description"],
                web,
            )
        )
    if health is not None:
        from galaxyctl_libs.actions import health as healthmod

        rows = healthmod.annotate(targets, rows, record.run_as, timeout, **health)
    down = [r for r in rows if r.state not in (sup.RUNNING, sup.STARTING)]
    code = exitcodes.LSB_NOT_RUNNING if down else exitcodes.LSB_RUNNING
    message = f"required storage not mounted: {', '.join(missing)}" if missing else ""
    return StatusReport(True, survey.pid, tuple(rows), code, message, missing, survey.state)


def _status_without_supervisord(state_dir, targets, survey, missing):
    """Rows when supervisord does not answer: it hangs (LSB 4, unknown: its services may run or not),
    it is shutting down (3), or it is gone.  Gone, /proc is searched for the processes it left:
    they run unmanaged (LSB 1, "dead and pid file exists": the manager died, what it ran did not;
    3 would tell a cron job to start a second copy), else everything is stopped (3)."""
    if survey.state == sup.SUPERVISORD_NOT_ANSWERING:
        message = f"supervisord (pid {survey.pid}) is not answering (state dir {state_dir})"
        return StatusReport(
            False,
            survey.pid,
            _rows(targets, sup.UNKNOWN, message),
            exitcodes.LSB_UNKNOWN,
            message,
            missing,
            survey.state,
        )
    if survey.state == sup.SUPERVISORD_SHUTTING_DOWN:
        message = f"supervisord (pid {survey.pid}) is shutting down (state dir {state_dir})"
        return StatusReport(
            False,
            survey.pid,
            _rows(targets, sup.STOPPING, message),
            exitcodes.LSB_NOT_RUNNING,
            message,
            missing,
            survey.state,
        )
    orphans = procfs.topmost(procfs.marked_processes(procfs.state_id(state_dir)))
    if not orphans:
        message = f"supervisord is not running (state dir {state_dir})"
        return StatusReport(
            False,
            None,
            _rows(targets, sup.STOPPED, "supervisord is not running"),
            exitcodes.LSB_NOT_RUNNING,
            message,
            missing,
            survey.state,
        )
    pids = {}
    for orphan in orphans:
        pids.setdefault(orphan.service, orphan.pid)
    message = (
        f"supervisord is not running, but left running {', '.join(o.describe() for o in orphans)}; "
        "'galaxyctl stop' ends them"
    )
    return StatusReport(
        False,
        None,
        _rows(targets, ORPHANED, "running without supervisord", pids),
        exitcodes.LSB_DEAD_PIDFILE,
        message,
        missing,
        survey.state,
        tuple(orphans),
    )


def _rows(targets, state, description, pids=None):
    """A row per target in ``state``; given ``pids`` ({service key: PID}), targets without one are STOPPED."""
    rows = []
    for t in targets:
        pid = None if pids is None else pids.get(procfs.service_key(t.instance_name, t.service.service_name))
        if pids is None or pid:
            rows.append(ServiceStatus(t.instance_name, t.service.service_name, t.program, state, pid, 0, description))
        else:
            rows.append(
                ServiceStatus(
                    t.instance_name,
                    t.service.service_name,
                    t.program,
                    sup.STOPPED,
                    None,
                    0,
                    "supervisord is not running",
                )
            )
    return tuple(rows)


def _probe_web(service, timeout):
    """One probe of a web service's readiness URL; None for services that serve no HTTP (or fd:// binds)."""
    endpoint = health.parse_bind(service.bind) if service.bind else None
    if endpoint is None:
        return None
    return health.probe(endpoint, service.url_prefix + health.READY_PATH, timeout=timeout)


# ---------------------------------------------------------------- workers


class WebWorkers(Record):
    program: str
    server: str
    master_pid: int
    workers: tuple  # workers.WorkerInfo
    error: str = ""


def web_workers(state_dir, names=()):
    """Each web server's workers, busy or idle (gunicorn from /proc, uWSGI from its stats server)."""
    return _web_workers(state_dir, applied_targets(state_dir, names))


def _web_workers(state_dir, targets, timeout=30):
    from galaxyctl_libs.probes import workers as workersmod

    targets = [t for t in targets if t.service.bind or t.service.uwsgi_config]
    client = sup.client_for(state_dir, backend_record.load_applied(state_dir), timeout=timeout)
    if not client.is_running():
        raise GalaxyctlError(f"supervisord is not running (state dir {state_dir})", exit_code=exitcodes.LSB_NOT_RUNNING)
    results = []
    for target in targets:
        info = client.process_info(target.program)
        if info["statename"] not in sup.UP_STATES or not info["pid"]:
            results.append(WebWorkers(target.program, target.service.service_type, None, (), f"{info['statename']}"))
            continue
        try:
            if target.service.uwsgi_config:
                from galaxyctl_libs.compat.uwsgi import uwsgi_workers

                found = uwsgi_workers(target.service.uwsgi_config)
                results.append(WebWorkers(target.program, "uwsgi", info["pid"], found))
            else:
                master = workersmod.gunicorn_master(info["pid"])
                endpoint = health.parse_bind(target.service.bind)
                port = endpoint.port if endpoint and not endpoint.unix_path else None
                results.append(
                    WebWorkers(target.program, "gunicorn", master, workersmod.gunicorn_workers(master, port))
                )
        except GalaxyctlError as exc:
            results.append(WebWorkers(target.program, target.service.service_type, info["pid"], (), exc.message))
    return results


def applied(state_dir):
    """What supervisord was told to run (a small JSON record; no YAML, no config code on this path)."""
    record = backend_record.load_applied(state_dir)
    if record is None:
        from galaxyctl_libs.backends.update import resolved_targets

        record = backend_record.Applied(resolved_targets(state_dir))
    return record


def applied_targets(state_dir, names=()):
    return targets_mod.select(applied(state_dir).targets, names)


def missing_storage(record):
    """Required mount points (``gravity.storage.required`` of an Applied record) that are not mounted."""
    required = record.required_storage
    if not required:
        return ()
    from galaxyctl_libs.storage.config import is_mounted

    return tuple(path for path in required if not is_mounted(path))


# ---------------------------------------------------------------- check (Nagios) and Prometheus


class CheckResult(Record):
    code: int  # Nagios: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN
    summary: str
    services_running: int
    services_total: int
    web_ms: float  # None when no web service answered
    workers_busy: int
    workers_total: int
    problems: tuple = ()
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
    WARNING when every worker is busy or a service (re)started less than ``restart_window`` s ago."""
    try:
        record = applied(state_dir)  # read once: status, probes and workers all work from it
    except GalaxyctlError as exc:
        return CheckResult(exitcodes.NAGIOS_UNKNOWN, exc.message, 0, 0, None, 0, 0)
    report = _status(state_dir, record, names, False, timeout, {"max_age": heartbeat_age, "ping": ping})
    probes, workers = (), ()
    if report.supervisord_running:
        targets = targets_mod.select(record.targets, names)
        probes = tuple((t.program, result) for t in targets for result in [_probe_web(t.service, timeout)] if result)
        workers = tuple(_web_workers(state_dir, targets, timeout))
    return verdict(report, probes, workers, restart_window)


def verdict(report, probes=(), workers=(), restart_window=300):
    """The check's answer from what was observed, and nothing else (unit tests feed it synthetic
    answers): a StatusReport, ``(program, http.ProbeResult)`` of each web service, and WebWorkers."""
    if report.supervisord_state == sup.SUPERVISORD_NOT_ANSWERING:  # nothing can be managed: critical, not unknown
        problem = f"supervisord (pid {report.supervisord_pid}) is not answering"
        return CheckResult(exitcodes.NAGIOS_CRITICAL, problem, 0, len(report.services), None, 0, 0, (problem,))
    if report.exit_code == exitcodes.LSB_UNKNOWN or not report.services:
        return CheckResult(exitcodes.NAGIOS_UNKNOWN, report.message or "nothing registered", 0, 0, None, 0, 0)
    running = [r for r in report.services if r.state in (sup.RUNNING, sup.STARTING)]
    critical = [f"{r.program} {r.state}" for r in report.services if r not in running]
    if not report.supervisord_running:
        critical = ["supervisord is not running"]
        rows = [r for r in report.services if r.state == ORPHANED]
        critical += [f"{r.program} {ORPHANED} (pid {r.pid})" for r in rows]
        critical += [f"{ORPHANED} {o.describe()}" for o in report.orphans if o.pid not in {r.pid for r in rows}]
    critical += [f"required storage {path} not mounted" for path in report.storage_missing]
    warnings = [
        f"{r.program} {'starting' if r.state == sup.STARTING else f'up {r.uptime_seconds}s'}"
        for r in running
        if restart_window > 0 and (r.state == sup.STARTING or r.uptime_seconds < restart_window)
    ]
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
    summary = f"{len(running)}/{len(report.services)} services running"
    if web_ms is not None:
        summary += f", web {web_ms:.0f} ms"
    problems = tuple(critical or warnings)
    if problems:
        summary += ": " + "; ".join(problems)
    code = exitcodes.NAGIOS_CRITICAL if critical else exitcodes.NAGIOS_WARNING if warnings else exitcodes.NAGIOS_OK
    web_up = all(result.ok for _, result in probes) if probes else None
    return CheckResult(code, summary, len(running), len(report.services), web_ms, busy, total, problems, web_up, probed)


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
