"""The whole Galaxy at a glance: ``status --cluster`` and ``check --cluster``, from any host.

Built from the engines' own records, no agent of ours: each host's share is expanded from the shared
config (core/hosts.py), then every configured handler's heartbeat per host is read from Galaxy's
database (``worker_process``), the unfinished jobs assigned to a handler with no live heartbeat from
``job``, every celery worker is pinged through the broker, every web server's ``/api/version`` asked
at its host's address, and the celery-beats are counted by the locks they hold in the shared data
dir (backends/beatlock.py).
"""

import os

from galaxyctl_libs import exitcodes, gate
from galaxyctl_libs.actions import health
from galaxyctl_libs.core import config as configmod
from galaxyctl_libs.core import hosts, kinds, registration
from galaxyctl_libs.core import state as statemod
from galaxyctl_libs.core.database import database_url
from galaxyctl_libs.core.services import build_services, galaxy_data_dir
from galaxyctl_libs.errors import GalaxyctlError
from galaxyctl_libs.probes import clusterdb, heartbeat, http
from galaxyctl_libs.records import Record
from galaxyctl_libs.rootpolicy import as_user, subprocess_credentials

OK, CRITICAL, UNKNOWN = health.OK, health.CRITICAL, health.UNKNOWN
HANDLER, WEB, CELERY, BEAT = "handler", "web", "celery", "beat"
LOCAL_HOSTS = (
    "",
    "0.0.0.0",
    "::",
    "localhost",
    "127.0.0.1",
    "::1",
)  # a bind another host reaches at the host's address


class Item(Record):
    """One thing the cluster check looked at."""

    host: str
    what: str  # handler | web | celery | beat
    name: str  # server name, celery node, URL, lock
    state: str  # ok | critical | unknown
    detail: str
    seconds: float = None  # heartbeat: its age; ping, web: how long the answer took


class Plan(Record):
    """What one host runs, expanded from the shared config."""

    host: str
    address: str
    services: tuple  # core.targets.Service
    run_as: tuple = (None, None)


class ClusterReport(Record):
    items: tuple  # Item
    orphans: tuple = ()  # (HeldJobs, why)
    beats: tuple = None  # hosts whose celery-beat holds its lock (None: unknown)
    beat_host: str = None  # where the config runs it (None: nowhere)
    hosts: tuple = ()  # the hosts looked at
    error: str = ""  # nothing could be looked at

    def problems(self):
        """(critical, warnings) lines."""
        critical = [f"{i.host} {i.what} {i.name}: {i.detail}" for i in self.items if i.state == CRITICAL]
        warnings = [f"{i.host} {i.what} {i.name}: {i.detail}" for i in self.items if i.state == UNKNOWN]
        for held, why in self.orphans:
            critical.append(f"{jobs_text(held)} assigned to {held.handler}, {why}")
        beat = beat_problem(self.beats, self.beat_host)
        if beat:
            (warnings if self.beats is None else critical).append(beat)
        return critical, warnings


def jobs_text(held):
    """``2 unfinished jobs (ids 4..5)``: how the check and ``status --cluster`` name a handler's jobs."""
    ids = f"id {held.first_id}" if held.count == 1 else f"ids {held.first_id}..{held.last_id}"
    return f"{held.count} unfinished job{'s' if held.count != 1 else ''} ({ids})"


def beat_problem(beats, beat_host):
    """The line about celery-beat when there are not exactly the beats the config asks for."""
    if beats is None:
        return "celery-beat count unknown (cannot list the locks in the shared data dir)"
    expected = 1 if beat_host else 0
    if len(beats) == expected and (not beat_host or beats[0] == beat_host):
        return None
    if not beats:
        return f"no celery-beat runs (gravity.beat_host: {beat_host})"
    if len(beats) == 1:
        return f"celery-beat runs on {beats[0]}, not on gravity.beat_host ({beat_host or 'none'})"
    return f"{len(beats)} celery-beats run (on {', '.join(beats)}): each periodic task runs {len(beats)} times"


# ---------------------------------------------------------------- the plan: who runs what where


def cluster_of(record):
    """(Cluster, settings, the loaded file) of a registered config; one without gravity.hosts is refused."""
    loaded = configmod.load_config(record.path)
    settings = configmod.parse_gravity(configmod.merge_attribs(record.attribs, loaded.gravity_raw), record.path)
    cluster = hosts.parse(settings, record.path)
    if cluster is None:
        raise GalaxyctlError(
            f"{record.path}: no gravity.hosts: --cluster needs the config's hosts (README: Many hosts)"
        )
    return cluster, settings, loaded


def plan(record, state_dir, host, cluster, loaded, check=False):
    """What ``host`` runs under the config of ``record`` (``loaded``: its file, read once for all hosts)."""
    instance, _, _ = registration.resolve(
        record, state_dir, enforce_user=True, host=host, check_cluster=check, loaded=loaded
    )
    share = hosts.share_of(cluster, host, record.path)
    return Plan(host, share.address or host, build_services(instance), instance.run_as), instance


def records_of(state_dir):
    records = list(statemod.load_state(state_dir).config_files.values())
    if not records:
        raise GalaxyctlError("no Galaxy config is registered (see 'galaxyctl register')")
    return records


# ---------------------------------------------------------------- looking


def gather(state_dir, timeout=10.0, max_age=None, ping=True):
    """The ClusterReport of every registered config's cluster."""
    max_age = heartbeat.STALE_AFTER if max_age is None else max_age
    try:
        reports = [_gather_one(record, state_dir, timeout, max_age, ping) for record in records_of(state_dir)]
    except GalaxyctlError as exc:
        return ClusterReport((), error=exc.message)
    if len(reports) == 1:
        return reports[0]
    first = reports[0]
    return ClusterReport(
        tuple(i for r in reports for i in r.items),
        tuple(o for r in reports for o in r.orphans),
        None if any(r.beats is None for r in reports) else tuple(b for r in reports for b in r.beats),
        first.beat_host,
        tuple(dict.fromkeys(h for r in reports for h in r.hosts)),
    )


def _gather_one(record, state_dir, timeout, max_age, ping):
    cluster, settings, loaded = cluster_of(record)
    named = cluster.named_hosts()
    plans, instance = [], None
    for index, host in enumerate(named):
        one, resolved = plan(record, state_dir, host, cluster, loaded, check=index == 0)
        plans.append(one)
        instance = instance or resolved
    if instance is None:  # only patterns: any host's view gives the database and data dir
        instance = registration.resolve(record, state_dir, host=hosts.this_host(), loaded=loaded)[0]
    pending = _start_pings(plans, timeout) if ping else {}
    beats, jobs, db_error = _database(instance, plans, timeout)
    if beats is not None:  # hosts of a pattern or the default seen heartbeating: their share is expected too
        for host in sorted({b.hostname for b in beats} - set(named))[: hosts.MAX_HOSTS]:
            if _matches_many(cluster, host):
                plans.append(plan(record, state_dir, host, cluster, loaded)[0])
                pending.update(_start_pings(plans[-1:], timeout) if ping else {})
    items = _handler_items(plans, beats, db_error, max_age)
    items += _web_items(plans, timeout)
    items += _ping_items(pending)
    alive = {name for name, _ in clusterdb.fresh(beats or [], max_age)}
    orphans = _orphans(jobs or {}, alive, {s.service_name for p in plans for s in _handlers(p)})
    data_dir = galaxy_data_dir(instance.galaxy, instance.galaxy_config_file, instance.galaxy_root)
    # no data dir here (an admin box without the share): unknown; a data dir without the locks: no beat
    held = (
        gate.held_locks(hosts.beat_lock_dir(data_dir), instance.run_as)
        if data_dir and os.path.isdir(data_dir)
        else None
    )
    beat_host = cluster.beat_host if settings.celery.enable_beat else None
    held = None if held is None else tuple(name[: -len(".lock")] for name in held)
    return ClusterReport(tuple(items), orphans, held, beat_host, tuple(p.host for p in plans))


def _matches_many(cluster, host):
    try:
        return hosts.share_of(cluster, host, "").many
    except GalaxyctlError:
        return False


def _handlers(one):
    return [s for s in one.services if s.heartbeat_db]


def _database(instance, plans, timeout):
    """(every heartbeat, {handler: HeldJobs}, error): one read of Galaxy's database each."""
    handler = next((s for p in plans for s in _handlers(p)), None)
    cwd = instance.galaxy_root or os.path.dirname(instance.galaxy_config_file)
    url = (
        handler.heartbeat_db
        if handler
        else database_url(instance.galaxy, instance.galaxy_root, instance.galaxy_config_file, cwd)
    )
    python = heartbeat.interpreter(handler.argv) if handler else _python(instance)
    user, group = instance.run_as
    try:
        with as_user(user, group):  # rootpolicy: the Galaxy user's database is read with its ids
            credentials = subprocess_credentials(user, group)
            beats, jobs = clusterdb.records(url, python, credentials, timeout)
    except GalaxyctlError as exc:
        return None, None, exc.message
    return beats, jobs, ""


def _python(instance):
    venv = instance.settings.virtualenv
    import sys

    return os.path.join(venv, "bin", "python") if venv else sys.executable


def _handler_items(plans, beats, db_error, max_age):
    items = []
    latest = {}
    for beat in beats or ():
        key = (beat.server_name, beat.hostname)
        if beat.age_seconds is not None and (key not in latest or beat.age_seconds < latest[key].age_seconds):
            latest[key] = beat
    for one in plans:
        for service in _handlers(one):
            name = service.service_name
            if beats is None:
                items.append(Item(one.host, HANDLER, name, UNKNOWN, f"heartbeat unknown: {db_error}"))
                continue
            beat = latest.get((name, one.host))
            if beat is not None and beat.age_seconds <= max_age:
                detail = f"heartbeat {beat.age_seconds:.0f}s ago (pid {beat.pid})"
                items.append(Item(one.host, HANDLER, name, OK, detail, beat.age_seconds))
            elif beat is not None:
                detail = f"silent: last heartbeat {beat.age_seconds:.0f}s ago"
                items.append(Item(one.host, HANDLER, name, CRITICAL, detail, beat.age_seconds))
            else:
                items.append(Item(one.host, HANDLER, name, CRITICAL, "silent: no heartbeat in Galaxy's database"))
    return items


def _orphans(jobs, alive, configured):
    """(HeldJobs, why) of jobs assigned to a handler without a live heartbeat.  A name no handler
    has that holds only ``new`` jobs is a pool's tag waiting for a handler to grab them: not one."""
    orphans = []
    for name, held in sorted(jobs.items()):
        if name in alive:
            continue
        if name in configured:
            orphans.append((held, "a configured handler with no live heartbeat"))
        elif held.count > held.new:
            orphans.append((held, "a handler no host runs"))
    return tuple(orphans)


def _probe_of(service):
    return kinds.kind_of(service.service_type).probe


def endpoint(bind, address):
    """Where another host reaches a web server bound at ``bind`` on a host reached at ``address``:
    a wildcard or loopback bind at the host's address, any other as bound; None for a unix socket."""
    found = http.parse_bind(bind)
    if found is None or found.unix_path:
        return None
    host = bind.rpartition(":")[0].strip("[]") if bind.count(":") == 1 or bind.startswith("[") else bind
    return http.Endpoint(host=address if host in LOCAL_HOSTS else found.host, port=found.port)


def _web_items(plans, timeout):
    items = []
    for one in plans:
        for service in one.services:
            if _probe_of(service) != kinds.PROBE_HTTP or not service.bind:
                continue
            where = endpoint(service.bind, one.address)
            name = f"{service.service_name} {service.bind}"
            if where is None:
                items.append(Item(one.host, WEB, name, UNKNOWN, "a unix socket: not reachable from another host"))
                continue
            result = http.probe(where, service.url_prefix + http.READY_PATH, timeout=timeout)
            state = OK if result.ok else CRITICAL
            detail = (
                f"{where} answered in {result.elapsed_ms:.0f} ms"
                if result.ok
                else f"{where}: {result.error or result.status}"
            )
            items.append(Item(one.host, WEB, name, state, detail, result.elapsed_ms / 1000))
    return items


def _start_pings(plans, timeout):
    return {
        (one.host, service.service_name): health.start_ping(service, timeout, host=one.host)
        for one in plans
        for service in one.services
        if _probe_of(service) == kinds.PROBE_PING
    }


def _ping_items(pending):
    from galaxyctl_libs.probes import celeryping

    items = []
    for (host, _), started in pending.items():
        answer = health.ping_health(celeryping.finish(started))
        state = {health.OK: OK, health.UNAVAILABLE: UNKNOWN}.get(answer.state, CRITICAL)
        items.append(Item(host, CELERY, started.node, state, answer.detail, answer.seconds))
    return items


# ---------------------------------------------------------------- the answers


def status_code(report):
    """LSB: 0 all well, 3 something critical, 4 unknown."""
    if report.error:
        return exitcodes.LSB_UNKNOWN
    critical, warnings = report.problems()
    return exitcodes.LSB_NOT_RUNNING if critical else exitcodes.LSB_UNKNOWN if warnings else exitcodes.SUCCESS


class ClusterCheck(Record):
    code: int  # Nagios
    summary: str
    perfdata: tuple
    report: ClusterReport

    def line(self):
        return f"GALAXY CLUSTER {exitcodes.NAGIOS_LABELS[self.code]} - {self.summary} | {' '.join(self.perfdata)}"


def _count(report, what):
    """(answering, probed) of one kind of item (unknown ones are not counted as probed)."""
    probed = [i for i in report.items if i.what == what and i.state != UNKNOWN]
    return sum(i.state == OK for i in probed), len(probed)


def check(state_dir, timeout=10.0, max_age=None, ping=True):
    """Nagios-style answer for the whole cluster: CRITICAL when a configured handler is silent, a
    celery worker does not answer, a web server does not answer at its host's address, jobs are
    assigned to a handler with no live heartbeat, or there are not exactly the celery-beats the
    config asks for; WARNING when something could not be read; UNKNOWN when nothing could."""
    return verdict(gather(state_dir, timeout, max_age, ping))


def verdict(report):
    """The check's answer from a ClusterReport, and nothing else (unit tests feed it synthetic ones)."""
    if report.error:
        return ClusterCheck(exitcodes.NAGIOS_UNKNOWN, report.error, (), report)
    critical, warnings = report.problems()
    code = exitcodes.NAGIOS_CRITICAL if critical else exitcodes.NAGIOS_WARNING if warnings else exitcodes.NAGIOS_OK
    counts = {what: _count(report, what) for what in (HANDLER, CELERY, WEB)}
    summary = f"{len(report.hosts)} host{'s' if len(report.hosts) != 1 else ''}"
    for what, label in ((HANDLER, "handlers heartbeating"), (CELERY, "celery answering"), (WEB, "web up")):
        if counts[what][1]:
            summary += f", {counts[what][0]}/{counts[what][1]} {label}"
    beats = None if report.beats is None else len(report.beats)
    if beats is not None:
        summary += f", {beats} celery-beat{'s' if beats != 1 else ''}"
    problems = critical or warnings
    if problems:
        summary += ": " + "; ".join(problems)
    perf = [f"hosts={len(report.hosts)}"]
    for what, label in ((HANDLER, "handlers_heartbeat"), (CELERY, "celery_answering"), (WEB, "web_up")):
        if counts[what][1]:
            perf.append(f"{label}={counts[what][0]};;;0;{counts[what][1]}")
    perf.append(f"orphaned_jobs={sum(held.count for held, _ in report.orphans)}")
    if beats is not None:
        perf.append(f"celery_beats={beats}")
    return ClusterCheck(code, summary, tuple(perf), report)


def _label(value):
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_prometheus(result):
    """node_exporter textfile lines for a ClusterCheck."""
    report = result.report
    lines = []

    def gauge(name, text, samples):
        if samples:
            lines.extend([f"# HELP {name} {text}", f"# TYPE {name} gauge"] + samples)

    gauge(
        "galaxy_cluster_check_status",
        "Nagios status of galaxyctl check --cluster",
        [f"galaxy_cluster_check_status {result.code}"],
    )
    gauge("galaxy_cluster_hosts", "hosts the cluster check looked at", [f"galaxy_cluster_hosts {len(report.hosts)}"])
    orphaned = sum(held.count for held, _ in report.orphans)
    gauge(
        "galaxy_cluster_orphaned_jobs",
        "unfinished jobs assigned to a handler with no live heartbeat",
        [f"galaxy_cluster_orphaned_jobs {orphaned}"],
    )
    if report.beats is not None:
        gauge(
            "galaxy_cluster_celery_beats",
            "celery-beats running (locks held)",
            [f"galaxy_cluster_celery_beats {len(report.beats)}"],
        )
    healthy = [
        f'galaxy_cluster_healthy{{host="{_label(i.host)}",what="{i.what}",name="{_label(i.name)}"}} {int(i.state == OK)}'
        for i in report.items
        if i.state != UNKNOWN
    ]
    gauge(
        "galaxy_cluster_healthy", "1 when a handler heartbeats, a celery worker answers, a web server answers", healthy
    )
    ages = [
        f'galaxy_cluster_handler_heartbeat_age_seconds{{host="{_label(i.host)}",handler="{_label(i.name)}"}} {i.seconds:g}'
        for i in report.items
        if i.what == HANDLER and i.seconds is not None
    ]
    gauge("galaxy_cluster_handler_heartbeat_age_seconds", "age of a handler's heartbeat in Galaxy's database", ages)
    return "\n".join(lines) + "\n"


def write_prometheus(path, result):
    """Replace the textfile atomically; a file that cannot be written is Nagios' UNKNOWN."""
    from galaxyctl_libs import fsutil

    try:
        fsutil.atomic_write(path, render_prometheus(result), mode=0o644)
    except GalaxyctlError as exc:
        raise GalaxyctlError(exc.message, exit_code=exitcodes.NAGIOS_UNKNOWN) from None
