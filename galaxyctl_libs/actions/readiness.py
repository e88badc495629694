"""Is Galaxy really serving?  Readiness waits after a start, and the ports checked before one.

A web service is ready when it answers HTTP (gunicorn) or its stats server shows a worker
accepting (uWSGI); a port someone else holds is a clear error before starting, not a crash loop.
"""

import os
import time
from dataclasses import dataclass

from galaxyctl_libs import gate
from galaxyctl_libs.backends import base
from galaxyctl_libs.errors import GalaxyctlError, NotReadyError
from galaxyctl_libs.probes import http as health
from galaxyctl_libs.probes import procfs

DEFAULT_READY_TIMEOUT = 120
LOG_TAIL_LINES = 15
START_SLACK = 10  # seconds beyond a service's start timeout for its manager to call it running
# wait_up's looks are spaced by at least this many times what the last one took: each is the state
# of every process (getAllProcessInfo), which supervisord builds in its one thread, between spawns
UP_LOOK_PACE = 4


@dataclass(frozen=True)
class ReadyResult:
    program: str
    bind: str
    ok: bool
    seconds: float
    detail: str = ""


def tail(path, lines=LOG_TAIL_LINES, run_as=gate.NOBODY):
    """The last lines of a log file (empty when there is none), read through the gate."""
    return gate.tail(path, run_as, lines)


def service_user(target):
    """The (user, group) a service runs as: its log files and unix sockets are that user's, so they
    are read and connected with that user's ids (gate)."""
    return (target.service.user, target.service.group)


def log_details(target, client=None):
    """The lines a failure shows under its message: the end of the service's log file, or of its
    journal when a systemd unit logs there (no log_dir)."""
    if target.log_file:
        lines = tail(target.log_file, run_as=service_user(target))
        if not lines:
            return [f"its log file {target.log_file} is empty"]
        return [f"last lines of {target.log_file}:"] + ["  " + line for line in lines]
    journal = getattr(client, "journal_tail", None)
    if journal is None:
        return [f"its log is in the journal: galaxyctl follow {target.service.service_name}"]
    return [f"last lines of its journal (journalctl -u {target.program}):"] + [
        "  " + line for line in journal(target.program, LOG_TAIL_LINES)
    ]


def _port_holder_pid(endpoint):
    """The PID of whoever listens on the endpoint's TCP port, or None."""
    if endpoint is None or endpoint.unix_path:
        return None
    from galaxyctl_libs.probes import listeners

    try:
        return listeners.listening_master_pid(endpoint.port)
    except GalaxyctlError:
        return None


def _port_holder(endpoint, pid=None):
    """'PID N (command)' of whoever listens on the endpoint's TCP port (or of ``pid``), or ''."""
    pid = pid or _port_holder_pid(endpoint)
    if pid is None:
        return ""
    command = " ".join(procfs.cmdline(pid)) or "?"
    return f"PID {pid} ({command[:80]})"


def check_ports_free(client, targets):
    """Before starting web services that are down: a port someone else holds is a clear error now.

    So are a supervisord that does not answer and what a dead one left running (orphans): a
    second copy would fight them for ports, queues and jobs."""
    survey = client.survey()
    running = survey.state == base.MANAGER_RUNNING
    if survey.state == base.MANAGER_NOT_ANSWERING:
        who = f"{client.manager} (pid {survey.pid})" if survey.pid else client.manager  # systemd has none of ours
        kill = "; 'galaxyctl shutdown --force' kills it and ends its services" if survey.pid else ""
        raise GalaxyctlError(f"{who} is not answering{kill}")
    marker = procfs.state_id(client.paths.state_dir)
    if survey.state == base.MANAGER_DOWN:
        orphans = procfs.topmost(procfs.marked_processes(marker))
        if orphans:
            raise GalaxyctlError(
                f"cannot start: this state dir's {client.manager} is gone but left running "
                f"{', '.join(p.describe() for p in orphans)} (orphans); run 'galaxyctl stop' to end them"
            )
    for target in targets:
        if not target.service.bind:
            continue
        try:
            state = client.process_info(target.program)["statename"] if running else base.STOPPED
        except (GalaxyctlError, base.Refusal):
            state = base.STOPPED
        if state in base.UP_STATES:
            continue
        pid = _port_holder_pid(health.parse_bind(target.service.bind))
        if pid is not None:
            holder = _port_holder(None, pid)
            env = procfs.environ(pid) or {}
            if env.get(procfs.STATE_ID_ENV.encode()) == marker.encode():
                holder += f", an orphan of this state dir that {client.manager} does not manage; run 'galaxyctl stop' to end it"
            raise GalaxyctlError(f"cannot start {target.program}: {target.service.bind} is already in use by {holder}")


def wait_ready(client, targets, timeout, progress=None, since=None):
    """Wait until every web service among ``targets`` answers HTTP; raise with the log tail if not.

    ``since`` (``{program: log offset}`` taken before the start): a service that stops because
    Galaxy's database must be migrated first is then one line saying so (migration_error)."""
    results = []
    deadline = time.monotonic() + timeout
    for target in targets:
        if target.service.uwsgi_config:
            results.append(_wait_uwsgi(target, max(0.0, deadline - time.monotonic()), progress))
            continue
        endpoint = target.service.bind and health.parse_bind(target.service.bind)
        if not endpoint:
            continue
        started = time.monotonic()

        def still_starting(target=target, endpoint=endpoint):
            info = client.process_info(target.program)
            state = info["statename"]
            if state in base.DEAD_STATES:
                return f"{target.program} is {state_text(info)}"
            if state == base.BACKOFF and since is not None and migration_needed(client, target, since):
                return "Galaxy's database needs a migration"
            if state == base.BACKOFF:
                holder = _port_holder(endpoint)
                return f"{target.service.bind} is already in use by {holder}" if holder else ""
            return ""

        def report(elapsed, result, target=target):
            if progress:
                progress(
                    f"waiting for {target.program} on {target.service.bind}: {elapsed:.0f}s ({result.error or result.status})"
                )

        result = health.wait_ready(
            endpoint,
            max(0.0, deadline - time.monotonic()),
            path=target.service.url_prefix + health.READY_PATH,
            progress=report,
            still_starting=still_starting,
            run_as=service_user(target),  # a unix: bind is that user's path
        )
        seconds = time.monotonic() - started
        if not result.ok:
            line = migration_needed(client, target, since) if since is not None else ""
            if line:
                raise migration_error(target, line)
            reason = result.error or f"HTTP {result.status}"
            raise NotReadyError(
                f"{target.program} did not become ready after {seconds:.0f}s: {reason}",
                details=log_details(target, client),
            )
        results.append(ReadyResult(target.program, target.service.bind, True, seconds))
    return results


def state_text(info):
    """``FATAL (Exited too quickly (process log may have details))``: a state and why, when the manager says."""
    reason = base.state_reason(info)
    return f"{info['statename']} ({reason})" if reason else info["statename"]


def is_web(target):
    """Judged by its answer (wait_ready), not by its process state alone."""
    return bool(target.service.uwsgi_config or (target.service.bind and health.parse_bind(target.service.bind)))


def wait_up(client, targets, timeout, progress=None):
    """Wait until each of ``targets`` that serves no HTTP is RUNNING: past its start timeout (what
    supervisord's ``startsecs`` is made of), so it did not die while starting.  A web service is
    judged by its answer instead (wait_ready).  The wait lasts ``timeout`` seconds, and at least
    each service's start timeout and START_SLACK (a crashing service goes FATAL after supervisord's
    retries).  Raises NotReadyError naming every one that died (FATAL, EXITED, STOPPED) or is still
    not running at the end, with the state's reason and the end of its log; returns the programs
    found running."""
    from galaxyctl_libs.probes.poll import Deadline, wait_until

    everything, targets = list(targets), [t for t in targets if not is_web(t)]
    if not targets:
        return []
    waited = max([timeout] + [t.service.start_timeout + START_SLACK for t in targets])
    started = time.monotonic()
    waiting, failed, running = list(targets), [], []
    unknown = {"statename": base.UNKNOWN, "description": "not loaded"}
    seen = {}

    def settled():  # one answer for all of them per look (getAllProcessInfo), however many they are
        seen.update(client.all_processes())
        for target in list(waiting):
            info = base.process_of(seen, target.program) or unknown
            if info["statename"] == base.RUNNING and _past_start_timeout(info, target):
                running.append(target.program)
            elif info["statename"] in base.DEAD_STATES:
                failed.append((target, info, ""))
            else:
                continue
            waiting.remove(target)
        return not waiting

    def report(left):
        names = ", ".join(t.program for t in waiting)
        progress(f"waiting for {names} to pass its start timeout: {time.monotonic() - started:.0f}s")

    wait_until(settled, Deadline(waited), max_interval=0.5, progress=report if progress else None, pace=UP_LOOK_PACE)
    late = f" after {time.monotonic() - started:.0f}s"
    failed += [(t, base.process_of(seen, t.program) or unknown, late) for t in waiting]
    if not failed:
        return running
    raise _not_started(client, failed, [t.program for t in everything if t not in [f[0] for f in failed]])


def _past_start_timeout(info, target):
    """Up for its whole start timeout: supervisord says RUNNING only then (``startsecs``), systemd says
    ``active`` as soon as a simple unit's process is forked, so one that exits at once and is
    restarted looks active between its deaths; its main process's start time tells them apart."""
    return not info.get("start") or info["now"] - info["start"] >= target.service.start_timeout


def _not_started(client, failed, up):
    """One line naming the services that did not start and why, their logs' ends under it."""
    states = [f"{'still ' if late else ''}{state_text(info)}{late}" for _, info, late in failed]
    if len(failed) == 1:
        reasons = states[0]
    else:
        reasons = "; ".join(f"{target.program} {state}" for (target, _, _), state in zip(failed, states))
    details = [line for target, _, _ in failed for line in log_details(target, client)]
    if up:
        details.append(f"up: {', '.join(up)}")
    names = ", ".join(target.program for target, _, _ in failed)
    return NotReadyError(f"{names} did not start: {reasons}", details=details)


# what Galaxy's exceptions say when its database must be migrated before it runs
# (galaxy.model.migrations.exceptions: OutdatedDatabaseError, SAMigrateError, ...)
MIGRATION_MARKERS = ("OutdatedDatabaseError", "SAMigrateError", "IncorrectSAMigrateVersionError")
MIGRATION_SCAN_BYTES = 256 * 1024


def log_offsets(targets):
    """``{program: size of its log}`` now: where the output of a start about to happen begins."""
    return {
        target.program: gate.size(target.log_file, service_user(target)) if target.log_file else 0 for target in targets
    }


def migration_needed(client, target, since):
    """The line of ``target``'s log (written after ``since[program]``) where Galaxy refuses to run
    on a database that needs a migration; '' when there is none (or no log file to read: a systemd
    unit logging to the journal; its failed start then shows the journal's last lines)."""
    if not target.log_file:
        return ""
    offset = (since or {}).get(target.program, 0)
    size = gate.size(target.log_file, service_user(target))
    start = max(offset if offset <= size else 0, size - MIGRATION_SCAN_BYTES)
    data = gate.read(target.log_file, service_user(target), MIGRATION_SCAN_BYTES, start=start)
    text = data.decode("utf-8", "replace") if data else ""
    found = [line for line in text.splitlines() if any(marker in line for marker in MIGRATION_MARKERS)]
    return found[-1].strip() if found else ""


def upgrade_command(service):
    """The command that migrates the database of the Galaxy ``service`` runs (its config, its venv):
    a packaged Galaxy's ``galaxy-manage-db --galaxy-config CONFIG upgrade heads`` (its ``-c`` is
    alembic's own), a source tree's ``sh manage_db.sh -c CONFIG upgrade``."""
    import shlex

    config = dict(service.environment).get("GALAXY_CONFIG_FILE")
    script = os.path.join(service.cwd, "manage_db.sh")
    venv_tool = os.path.join(service.path_prepend[0], "galaxy-manage-db") if service.path_prepend else None
    if not (venv_tool and os.path.exists(venv_tool)) and os.path.exists(script):
        return shlex.join(["sh", script] + (["-c", config] if config else []) + ["upgrade"])
    argv = [venv_tool or "galaxy-manage-db"] + (["--galaxy-config", config] if config else [])
    return shlex.join(argv + ["upgrade", "heads"])


class MigrationNeeded(GalaxyctlError):
    """Galaxy refuses to run until its database is migrated (no retry helps)."""


def migration_error(target, line):
    """One line: Galaxy's database must be migrated, and the command that does it."""
    import re

    found = re.search(r"database has version (\S+), but this code expects version ([^\s.]+)", line)
    detail = f": it is at version {found.group(1)}, this Galaxy expects {found.group(2)}" if found else ""
    return MigrationNeeded(
        f"{target.program} did not start: Galaxy's database needs a migration{detail}; back it up, run "
        f"'{upgrade_command(target.service)}', then start again"
    )


def _wait_uwsgi(target, timeout, progress):
    """uWSGI is ready when its stats server shows a worker accepting requests."""
    from galaxyctl_libs.compat.uwsgi import UwsgiStatsServer

    started = time.monotonic()
    stats = UwsgiStatsServer(timeout=timeout, fname=target.service.uwsgi_config, run_as=service_user(target))

    def report(seconds_left):
        if progress:
            progress(f"waiting for {target.program} (stats server {stats.address}): {time.monotonic() - started:.0f}s")

    try:
        stats.wait_until_accepting(progress=report)
    except GalaxyctlError as exc:
        raise NotReadyError(
            f"{target.program} did not become ready: {exc.message}",
            details=log_details(target),
        ) from None
    return ReadyResult(target.program, str(stats.address), True, time.monotonic() - started)
