"""Health beyond the web server: job handlers' heartbeat and celery workers' ping.

``annotate`` adds a ServiceHealth to the status rows of running handlers and workflow schedulers
(their heartbeat in Galaxy's database, probes/heartbeat.py) and, when asked, celery workers (a
ping through the broker, probes/celeryping.py).  A stale heartbeat or a failed ping is
``critical``; a handler up for less than the stale age with no heartbeat yet is ``starting``; a
database that cannot be read is ``unknown``.
"""

from galaxyctl_libs import gate
from galaxyctl_libs.core import kinds
from galaxyctl_libs.probes import heartbeat
from galaxyctl_libs.records import Record, replace
from galaxyctl_libs.rootpolicy import as_user, subprocess_credentials

OK, STARTING, CRITICAL, UNKNOWN = "ok", "starting", "critical", "unknown"
UNAVAILABLE = "unavailable"  # the probe cannot work here (a broker without broadcast): no verdict
HEARTBEAT, PING = kinds.PROBE_HEARTBEAT, kinds.PROBE_PING  # ServiceHealth.probe: the kind's probe


class ServiceHealth(Record):
    probe: str  # heartbeat | ping
    state: str  # ok | starting | critical | unknown | unavailable
    detail: str  # for people: "heartbeat 12s ago (pid 4242)", "no reply to ping (...)"
    seconds: float = None  # heartbeat: its age; ping: how long celery inspect ping took
    pid: int = None  # heartbeat: the PID that wrote it


def annotate(targets, rows, run_as=(None, None), timeout=5.0, max_age=None, ping=True):
    """``rows`` (monitoring.ServiceStatus) with ``health`` set where a probe applies (``max_age``:
    a heartbeat older is stale; None: heartbeat.STALE_AFTER)."""
    max_age = heartbeat.STALE_AFTER if max_age is None else max_age
    by_program = {t.program: t for t in targets}
    live = [r for r in rows if r.state in ("RUNNING", "STARTING") and r.program in by_program]
    handlers = [r for r in live if by_program[r.program].service.heartbeat_db]
    workers = [r for r in live if r.state == "RUNNING" and _probe(by_program[r.program]) == kinds.PROBE_PING]
    workers = workers if ping else []
    if not workers and not handlers:
        return rows
    pending = {}
    if workers:  # the pings run while the heartbeats are read
        from galaxyctl_libs.probes import celeryping

        pending = {r.program: start_ping(by_program[r.program].service, timeout) for r in workers}
    found = heartbeats([by_program[r.program] for r in handlers], rows, run_as, timeout, max_age)
    for program, started in pending.items():
        found[program] = ping_health(celeryping.finish(started))
    return tuple(replace(r, health=found[r.program]) if r.program in found else r for r in rows)


def _probe(target):
    """The health probe of ``target``'s kind (core/kinds.py)."""
    return kinds.kind_of(target.service.service_type).probe


def start_ping(service, timeout, host=None):
    """A ping of a celery worker (on ``host``, when not this machine); its script's ``#!`` is read
    through the gate, as the worker's user."""
    from galaxyctl_libs.probes import celeryping  # only where there is a worker to ping

    return celeryping.start(
        service, timeout, first_line=lambda path: gate.first_line(path, (service.user, service.group)), host=host
    )


def ping_health(result):
    if result.ok:
        return ServiceHealth(PING, OK, f"ping {result.seconds:.1f}s", result.seconds)
    if result.unavailable:
        return ServiceHealth(PING, UNAVAILABLE, result.error)
    return ServiceHealth(PING, CRITICAL, result.error, result.seconds)


def read_beats(targets, run_as=(None, None), timeout=5.0):
    """{database URL: {server_name: Beat} or the GalaxyctlError met reading it} for ``targets``."""
    from galaxyctl_libs.errors import GalaxyctlError

    found = {}
    for url in sorted({t.service.heartbeat_db for t in targets if t.service.heartbeat_db}):
        service = next(t.service for t in targets if t.service.heartbeat_db == url)
        try:
            with as_user(*run_as):  # rootpolicy: the Galaxy user's database is read with its ids
                credentials = subprocess_credentials(service.user, service.group)  # inside: no setgroups
                found[url] = heartbeat.read(url, heartbeat.interpreter(service.argv), credentials, timeout)
        except GalaxyctlError as exc:
            found[url] = exc
    return found


def heartbeats(targets, rows, run_as, timeout, max_age):
    """{program: ServiceHealth} of running handlers, from one read of each database."""
    beats = read_beats(targets, run_as, timeout)
    row = {r.program: r for r in rows}
    return {
        t.program: heartbeat_health(
            beats[t.service.heartbeat_db],
            t.service.service_name,
            row[t.program].uptime_seconds,
            max_age,
            row[t.program].pid,
        )
        for t in targets
    }


def heartbeat_health(beats, server_name, uptime, max_age, pid=None):
    """One handler's verdict from its database's rows (or the error reading them).  Until it has
    been up ``max_age`` seconds, a handler without a heartbeat of its own (none, or an old one a
    killed predecessor left) is starting."""
    if isinstance(beats, Exception):
        return ServiceHealth(HEARTBEAT, UNKNOWN, f"heartbeat unknown: {beats}")
    beat = beats.get(server_name)
    age = None if beat is None else beat.age_seconds
    if age is not None and age <= max_age:
        return ServiceHealth(HEARTBEAT, OK, f"heartbeat {age:.0f}s ago", age, beat.pid)
    if uptime < max_age and (age is None or beat.pid != pid):
        return ServiceHealth(HEARTBEAT, STARTING, "no heartbeat yet")
    if age is None:
        return ServiceHealth(HEARTBEAT, CRITICAL, f"no heartbeat in Galaxy's database after {uptime}s up")
    return ServiceHealth(HEARTBEAT, CRITICAL, f"last heartbeat {age:.0f}s ago", age, beat.pid)


def problems(rows):
    """(critical, warnings) lines of check for the rows' health."""
    critical = [f"{r.program} {r.health.detail}" for r in rows if r.health and r.health.state == CRITICAL]
    warnings = [f"{r.program} {r.health.detail}" for r in rows if r.health and r.health.state == UNKNOWN]
    return critical, warnings


def perfdata(rows):
    """Nagios perfdata for the probed services: handlers with a fresh heartbeat, workers answering."""
    perf = []
    for probe, label in ((HEARTBEAT, "handlers_heartbeat"), (PING, "celery_answering")):
        probed = [r.health for r in rows if r.health and r.health.probe == probe and r.health.state != UNAVAILABLE]
        if probed:
            perf.append(f"{label}={sum(h.state == OK for h in probed)};;;0;{len(probed)}")
    return perf


def _label(value):
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


PROMETHEUS = (
    ("galaxy_service_healthy", "1 when a handler's heartbeat is fresh or a celery worker answers a ping", None),
    ("galaxy_handler_heartbeat_age_seconds", "age of a job handler's heartbeat in Galaxy's database", HEARTBEAT),
    ("galaxy_celery_ping_seconds", "time celery inspect ping took to get the worker's answer", PING),
)


def prometheus_lines(rows):
    """node_exporter textfile lines, one sample per probed service (labels: instance, service, probe)."""
    probed = [r for r in rows if r.health and r.health.state != UNAVAILABLE]
    lines = []
    for name, text, probe in PROMETHEUS:
        samples = []
        for r in probed:
            labels = f'instance="{_label(r.instance)}",service="{_label(r.service)}",probe="{r.health.probe}"'
            if probe is None:
                samples.append(f"{name}{{{labels}}} {int(r.health.state == OK)}")
            elif (
                r.health.probe == probe
                and r.health.seconds is not None
                and (probe == HEARTBEAT or r.health.state == OK)
            ):
                samples.append(f"{name}{{{labels}}} {r.health.seconds:g}")
        if samples:
            lines += [f"# HELP {name} {text}", f"# TYPE {name} gauge"] + samples
    return lines
