"""Health for people and monitors: status (LSB codes), web workers, and check (Nagios, Prometheus).

Everything here only looks: nothing is written except the Prometheus textfile an admin asks for.
"""

from galaxyctl_libs import exitcodes
from galaxyctl_libs.backends import base, memlimits, planned
from galaxyctl_libs.backends import record as backend_record
from galaxyctl_libs.core import targets as targets_mod
from galaxyctl_libs.errors import NOTHING_CONFIGURED, GalaxyctlError, NothingConfigured
from galaxyctl_libs.probes import http, procfs
from galaxyctl_libs.records import Record, replace

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
    rss_bytes: int = 0  # resident memory of its process tree (RSS summed), 0 when not running
    memory: str = ""  # "over memory_high 1 GB" when past one of its limits (memlimits.excess)
    planned: str = ""  # the galaxyctl action that started this process (start, restart, graceful, update)
    in_grace: bool = False  # galaxyctl started it and its start timeout has not passed: starting is expected
    unplanned_restarts: int = 0  # restarts galaxyctl did not do (crashes) in check's window
    health: object = None  # handlers' heartbeat, celery's ping: actions.health.ServiceHealth


ORPHANED = "ORPHANED"  # a service's process runs, but the supervisord that started it is gone


class StatusReport(Record):
    supervisord_running: bool
    supervisord_pid: int
    services: tuple
    exit_code: int
    message: str = ""
    storage_missing: tuple = ()  # required mount points that are not mounted
    # the process manager's state (backends.base.MANAGER_*: RUNNING, DOWN, NOT_ANSWERING, SHUTTING_DOWN);
    # the supervisord_* names are kept for the JSON of status, whichever manager it is
    supervisord_state: str = ""
    orphans: tuple = ()  # procfs.Marked: the main processes a manager that died left running
    manager: str = "supervisord"  # which process manager: supervisord or systemd (for the messages)


def status(state_dir, names=(), probe_web=True, timeout=5.0, heartbeat_age=None, ping=False):
    """One row per service; LSB exit code: 0 all running, 3 something is not, 4 unknown (supervisord
    does not answer within ``timeout``), 1 supervisord died but left services running (orphans).
    Running handlers show their heartbeat (older than ``heartbeat_age`` s: stale), celery workers
    their answer to a ping when ``ping`` (it loads Galaxy's app: seconds)."""
    try:
        record = applied(state_dir)
    except GalaxyctlError as exc:
        return StatusReport(False, None, (), exitcodes.LSB_UNKNOWN, exc.message)
    probes = {"max_age": heartbeat_age, "ping": ping}
    return status_from_record(state_dir, record, names, probe_web, timeout, probes)


def status_from_record(state_dir, record, names, probe_web, timeout, health_probes=None, restart_window=None):
    """status for the targets of ``record`` (a backends.record.Applied) named by ``names``; handlers'
    heartbeat and celery's ping when ``health_probes`` gives their options (actions.health.annotate);
    unexpected exits counted over ``restart_window`` seconds when given."""
    try:
        targets = targets_mod.select(record.targets, names)
    except GalaxyctlError as exc:
        return StatusReport(False, None, (), exitcodes.LSB_UNKNOWN, exc.message)
    if not targets:
        return StatusReport(False, None, (), exitcodes.LSB_NOT_RUNNING, NOTHING_CONFIGURED)
    missing = missing_storage(record)
    client = base.client_for(state_dir, record, timeout=timeout)
    survey = client.survey()
    if not survey.answering:
        return _status_without_manager(state_dir, targets, survey, missing, client.manager)
    exits = (client.unexpected_exits() or {}) if restart_window else None  # supervisord: its log; systemd: none
    rows = _rows_of(state_dir, client, survey, targets, probe_web, timeout, exits, restart_window)
    if health_probes is not None:
        from galaxyctl_libs.actions import health

        rows = health.annotate(targets, rows, record.run_as, timeout, **health_probes)
    down = [r for r in rows if r.state not in (base.RUNNING, base.STARTING)]
    return StatusReport(
        supervisord_running=True,
        supervisord_pid=survey.pid,
        services=_with_memory(rows, targets),
        exit_code=exitcodes.LSB_NOT_RUNNING if down else exitcodes.LSB_RUNNING,
        message=f"required storage not mounted: {', '.join(missing)}" if missing else "",
        storage_missing=missing,
        supervisord_state=survey.state,
        manager=client.manager,
    )


def _rows_of(state_dir, client, survey, targets, probe_web, timeout, exits, restart_window):
    """A row per target from the manager's answer (``survey.processes``)."""
    plans = planned.load(state_dir)
    rows = []
    for target in targets:
        key = target.program if ":" in target.program else f"{target.program}:{target.program}"
        info = survey.processes.get(key) or survey.processes.get(target.program)  # systemd: keyed by unit name
        if info is None:
            rows.append(
                ServiceStatus(
                    instance=target.instance_name,
                    service=target.service.service_name,
                    program=target.program,
                    state="UNKNOWN",
                    pid=None,
                    uptime_seconds=0,
                    description=f"not loaded in {client.manager}; run 'galaxyctl update'",
                )
            )
            continue
        rows.append(_row(target, info, plans.get(target.program), probe_web, timeout, exits, restart_window))
    return rows


def _with_memory(rows, targets):
    """Each row with a PID gets the RSS of its process tree (walked down the kernel's child lists) and,
    when past one of its service's memory limits, which."""
    if not any(row.pid for row in rows):
        return tuple(rows)
    services = {t.program: t.service for t in targets}
    found = []
    for row in rows:
        if row.pid:
            rss = procfs.tree_rss(row.pid)  # the kernel's child lists: no scan of every process
            service = services.get(row.program)
            row = replace(row, rss_bytes=rss, memory=memlimits.excess(service, rss) if service else "")
        found.append(row)
    return tuple(found)


def _row(target, info, plan, probe_web, timeout, exits, restart_window):
    """One service's row.  A process galaxyctl started whose start timeout has not passed is
    ``in_grace``: a web server of it that does not answer yet is STARTING, not a failure."""
    import time

    state = info["statename"]
    now = time.time()
    started_at = now - (info["now"] - info["start"]) if info["start"] else None
    explained = plan is not None and started_at is not None and plan.explains(started_at, info["pid"])
    in_grace = explained and plan.in_grace(now) and state in base.UP_STATES
    probe = probe_service_web(target.service, timeout) if probe_web and state in base.UP_STATES else None
    web = (
        "" if probe is None else f"ok {probe.elapsed_ms:.0f}ms" if probe.ok else (probe.error or f"HTTP {probe.status}")
    )
    if probe is not None and not probe.ok and in_grace:
        state, web = base.STARTING, f"starting ({web})"
    if probe is not None and probe.ok and state == base.STARTING:
        state = base.RUNNING  # it answers (as start said: ready), still inside supervisord's startsecs
    uptime = int(info["now"] - info["start"]) if state == base.RUNNING and info["start"] else 0
    restarts = 0
    if exits is not None and state in base.UP_STATES:
        since = max(now - restart_window, plan.at if plan is not None else 0)
        restarts = sum(1 for when in exits.get(target.program.split(":")[-1], ()) if when > since)
        if not restarts and plan is not None and not explained and started_at and started_at > since:
            restarts = 1  # started after galaxyctl's last action on it, and not by galaxyctl
    return ServiceStatus(
        target.instance_name,
        target.service.service_name,
        target.program,
        state,
        info["pid"] or None,
        uptime,
        base.state_reason(info) or info["description"],  # FATAL, BACKOFF, EXITED: why
        web,
        planned=plan.action if explained else "",
        in_grace=bool(in_grace),
        unplanned_restarts=restarts,
    )


def _status_without_manager(state_dir, targets, survey, missing, manager="supervisord"):
    """Rows when the process manager does not answer: it hangs (LSB 4, unknown: its services may run
    or not), it is shutting down (3), or it is gone.  Gone, /proc is searched for the processes it
    left: they run unmanaged (LSB 1, "dead and pid file exists": the manager died, what it ran did
    not; 3 would tell a cron job to start a second copy), else everything is stopped (3).
    ``manager`` names it (supervisord; systemd, when systemctl cannot reach it)."""
    who = f"{manager} (pid {survey.pid})" if survey.pid else manager
    found = {"storage_missing": missing, "supervisord_state": survey.state, "manager": manager}
    if survey.state == base.MANAGER_NOT_ANSWERING:
        message = f"{who} is not answering (state dir {state_dir})"
        rows = _rows(targets, base.UNKNOWN, message, manager)
        return StatusReport(False, survey.pid, rows, exitcodes.LSB_UNKNOWN, message, **found)
    if survey.state == base.MANAGER_SHUTTING_DOWN:
        message = f"{who} is shutting down (state dir {state_dir})"
        rows = _rows(targets, base.STOPPING, message, manager)
        return StatusReport(False, survey.pid, rows, exitcodes.LSB_NOT_RUNNING, message, **found)
    orphans = procfs.topmost(procfs.marked_processes(procfs.state_id(state_dir)))
    if not orphans:
        message = f"{manager} is not running (state dir {state_dir})"
        rows = _rows(targets, base.STOPPED, f"{manager} is not running", manager)
        return StatusReport(False, None, rows, exitcodes.LSB_NOT_RUNNING, message, **found)
    pids = {}
    for orphan in orphans:
        pids.setdefault(orphan.service, orphan.pid)
    message = (
        f"{manager} is not running, but left running {', '.join(o.describe() for o in orphans)}; "
        "'galaxyctl stop' ends them"
    )
    rows = _with_memory(_rows(targets, ORPHANED, f"running without {manager}", manager, pids), targets)
    return StatusReport(False, None, rows, exitcodes.LSB_DEAD_PIDFILE, message, orphans=tuple(orphans), **found)


def _rows(targets, state, description, manager, pids=None):
    """A row per target in ``state``; given ``pids`` ({service key: PID}), targets without one are STOPPED."""
    rows = []
    for t in targets:
        pid = None if pids is None else pids.get(procfs.service_key(t.instance_name, t.service.service_name))
        stopped = pids is not None and not pid  # the manager left no process of this one running
        rows.append(
            ServiceStatus(
                instance=t.instance_name,
                service=t.service.service_name,
                program=t.program,
                state=base.STOPPED if stopped else state,
                pid=None if stopped else pid,
                uptime_seconds=0,
                description=f"{manager} is not running" if stopped else description,
            )
        )
    return tuple(rows)


def probe_service_web(service, timeout):
    """One probe of a web service's readiness URL; None for services that serve no HTTP (or fd:// binds)."""
    endpoint = http.parse_bind(service.bind) if service.bind else None
    if endpoint is None:
        return None
    return http.probe(
        endpoint, service.url_prefix + http.READY_PATH, timeout=timeout, run_as=(service.user, service.group)
    )


# ---------------------------------------------------------------- workers


class WebWorkers(Record):
    program: str
    server: str
    master_pid: int
    workers: tuple  # workers.WorkerInfo
    error: str = ""


def web_workers(state_dir, names=()):
    """Each web server's workers, busy or idle (gunicorn from /proc, uWSGI from its stats server)."""
    targets = applied_targets(state_dir, names)
    if not targets:
        raise NothingConfigured(exitcodes.LSB_NOT_RUNNING)
    return web_workers_of(state_dir, targets)


def web_workers_of(state_dir, targets, timeout=30):
    from galaxyctl_libs.probes import workers as workersmod

    targets = [t for t in targets if t.service.bind or t.service.uwsgi_config]
    client = base.client_for(state_dir, backend_record.load_applied(state_dir), timeout=timeout)
    if not client.is_running():
        raise GalaxyctlError(
            f"{client.manager} is not running (state dir {state_dir})", exit_code=exitcodes.LSB_NOT_RUNNING
        )
    results = []
    for target in targets:
        info = client.process_info(target.program)
        if info["statename"] not in base.UP_STATES or not info["pid"]:
            results.append(WebWorkers(target.program, target.service.service_type, None, (), f"{info['statename']}"))
            continue
        try:
            if target.service.uwsgi_config:
                from galaxyctl_libs.compat.uwsgi import uwsgi_workers

                found = uwsgi_workers(target.service.uwsgi_config)
                results.append(WebWorkers(target.program, "uwsgi", info["pid"], found))
            else:
                master = workersmod.gunicorn_master(info["pid"])
                endpoint = http.parse_bind(target.service.bind)
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
        from galaxyctl_libs.backends.update import unapplied_record

        record = unapplied_record(state_dir)
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
