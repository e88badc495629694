"""Is Galaxy really serving?  Readiness waits after a start, and the ports checked before one.

A web service is ready when it answers HTTP (gunicorn) or its stats server shows a worker
accepting (uWSGI); a port someone else holds is a clear error before starting, not a crash loop.
"""

import os
import time
from dataclasses import dataclass

from galaxyctl_libs.backends.supervisor import client as sup
from galaxyctl_libs.errors import GalaxyctlError, NotReadyError
from galaxyctl_libs.probes import http as health
from galaxyctl_libs.probes import procfs

DEFAULT_READY_TIMEOUT = 120
LOG_TAIL_LINES = 15


@dataclass(frozen=True)
class ReadyResult:
    program: str
    bind: str
    ok: bool
    seconds: float
    detail: str = ""


def tail(path, lines=LOG_TAIL_LINES):
    """The last lines of a log file (empty when there is none)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            data = handle.read().decode("utf-8", "replace")
    except OSError:
        return []
    return data.splitlines()[-lines:]


def log_details(target, client=None):
    """The lines a failure shows under its message: the end of the service's log file, or of its
    journal when a systemd unit logs there (no log_dir)."""
    if target.log_file:
        return [f"last lines of {target.log_file}:"] + ["  " + line for line in tail(target.log_file)]
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
    running = survey.state == sup.SUPERVISORD_RUNNING
    if survey.state == sup.SUPERVISORD_NOT_ANSWERING:
        raise GalaxyctlError(
            f"supervisord (pid {survey.pid}) is not answering; "
            "'galaxyctl shutdown --force' kills it and ends its services"
        )
    marker = procfs.state_id(client.paths.state_dir)
    if survey.state == sup.SUPERVISORD_DOWN:
        orphans = procfs.topmost(procfs.marked_processes(marker))
        if orphans:
            raise GalaxyctlError(
                "cannot start: this state dir's supervisord is gone but left running "
                f"{', '.join(p.describe() for p in orphans)} (orphans); run 'galaxyctl stop' to end them"
            )
    for target in targets:
        if not target.service.bind:
            continue
        try:
            state = client.process_info(target.program)["statename"] if running else sup.STOPPED
        except (GalaxyctlError, sup.rpc.Fault):
            state = sup.STOPPED
        if state in sup.UP_STATES:
            continue
        pid = _port_holder_pid(health.parse_bind(target.service.bind))
        if pid is not None:
            holder = _port_holder(None, pid)
            env = procfs.environ(pid) or {}
            if env.get(procfs.STATE_ID_ENV.encode()) == marker.encode():
                holder += (
                    ", an orphan of this state dir that supervisord does not manage; run 'galaxyctl stop' to end it"
                )
            raise GalaxyctlError(f"cannot start {target.program}: {target.service.bind} is already in use by {holder}")


def wait_ready(client, targets, timeout, progress=None):
    """Wait until every web service among ``targets`` answers HTTP; raise with the log tail if not."""
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
            state = client.process_info(target.program)["statename"]
            if state in (sup.FATAL, sup.EXITED, sup.STOPPED):
                return f"{target.program} is {state}"
            if state == sup.BACKOFF:
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
        )
        seconds = time.monotonic() - started
        if not result.ok:
            reason = result.error or f"HTTP {result.status}"
            raise NotReadyError(
                f"{target.program} did not become ready after {seconds:.0f}s: {reason}",
                details=log_details(target, client),
            )
        results.append(ReadyResult(target.program, target.service.bind, True, seconds))
    return results


def _wait_uwsgi(target, timeout, progress):
    """uWSGI is ready when its stats server shows a worker accepting requests."""
    from galaxyctl_libs.compat.uwsgi import UwsgiStatsServer

    started = time.monotonic()
    stats = UwsgiStatsServer(timeout=timeout, fname=target.service.uwsgi_config)

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
