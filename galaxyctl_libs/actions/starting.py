"""Start services in dependency order, through a backend's controller (start/process_info only).

The first Galaxy web server of each instance starts alone and is waited for until it answers
HTTP: it creates or migrates the database, and a handler or celery worker that started beside it
on an empty database would see half-made tables and exit.  Then the rest, in core.order's order
(job handlers, workflow schedulers, celery, beat, reports, gx-it-proxy, tusd), processes of one
kind ``start_stagger`` seconds apart.  What galaxyctl started is recorded (backends.planned), so
``check`` knows these starts were planned.
"""

import time

from galaxyctl_libs.actions.readiness import MigrationNeeded, log_offsets, wait_ready
from galaxyctl_libs.backends import planned
from galaxyctl_libs.backends.base import UP_STATES, Refusal
from galaxyctl_libs.core import order
from galaxyctl_libs.errors import GalaxyctlError


def start_grace(target, timeout):
    """How long a planned start may take before ``check`` counts it as a problem: a web server may
    take as long as ``start`` waits for it; anything else its start timeout."""
    service = target.service
    if service.bind or service.uwsgi_config:
        return max(float(service.start_timeout), float(timeout or 0))
    return float(service.start_timeout)


def start_in_order(state_dir, client, targets, timeout, progress=None, wait=True, action="start"):
    """Start whatever among ``targets`` is not running, in order (see the module), and record it.

    With ``wait`` the first web servers are waited for before the rest start (a service that does not
    come up raises, and the rest stay stopped); without it everything is started at once, in order.
    Returns the ReadyResults of the first web servers waited for."""
    first, rest = order.start_stages(targets)
    since = log_offsets(first) if wait else None
    _start_each(state_dir, client, first, timeout, action, progress)
    ready = []
    if wait and first:
        try:
            ready = wait_ready(client, first, timeout, progress, since=since)
        except MigrationNeeded:
            for target in first:  # supervisord would only retry a Galaxy that cannot load
                client.stop(target.program)
            raise
    _start_each(state_dir, client, rest, timeout, action, progress)
    return ready


def wait_for_the_rest(client, targets, first_ready, timeout, progress=None):
    """After start_in_order: the first web servers' ReadyResults and those of the other web servers
    (waited for now, within ``timeout``)."""
    done = {result.program for result in first_ready}
    return list(first_ready) + wait_ready(client, [t for t in targets if t.program not in done], timeout, progress)


def _start_each(state_dir, client, targets, timeout, action, progress):
    """Start ``targets`` in order: those that may start together (no ``start_stagger`` between
    them) as one batch (Controller.start_many: a few round trips whatever their number), a
    staggered one after its pause."""
    entries, batch, previous = [], [], None
    try:
        for target in targets:
            pause = order.stagger_before(previous, target)
            previous = target
            if pause:
                _start_batch(client, batch, timeout, entries)
                batch = []
                if client.process_info(target.program)["statename"] not in UP_STATES:
                    if progress:
                        progress(f"start_stagger: {pause:g}s before {target.program}")
                    time.sleep(pause)
            batch.append(target)
        _start_batch(client, batch, timeout, entries)
    finally:
        planned.record(state_dir, entries, action)


def _start_batch(client, batch, timeout, entries):
    """Start ``batch`` together; ``(program, at, grace, pid)`` of those started go to ``entries``
    (recorded even when one of them was refused: that refusal is raised then, as start_program says it)."""
    if not batch:
        return
    at = time.time()
    started, refused = client.start_many([target.program for target in batch])
    entries += [(t.program, at, start_grace(t, timeout), started[t.program]) for t in batch if t.program in started]
    for target in batch:
        if target.program in refused and not died_at_once(client, target, refused[target.program]):
            raise refusal_error(client, target, refused[target.program])


def start_program(client, target):
    """``client.start``; supervisord refusing (SPAWN_ERROR: it could not open the service's log file
    or run its command; NO_FILE, NOT_EXECUTABLE) is one line naming the service, the fault and its
    cause, and where to read more, not a traceback in the middle of a start."""
    try:
        return client.start(target.program)
    except Refusal as fault:
        if died_at_once(client, target, fault):
            return True
        raise refusal_error(client, target, fault) from fault


EXITED_TOO_QUICKLY = "Exited too quickly"  # supervisord's spawnerr for a process that died within startsecs


def died_at_once(client, target, fault):
    """Is ``fault`` supervisord's SPAWN_ERROR for a process it did spawn, which exited at once?  It
    says so when the exit comes before startProcess returns; it retries the process (BACKOFF, then
    FATAL).  That is a start that failed, for the wait after the start to report with its log's end
    (readiness.wait_up), as when the exit comes a moment later; not a refusal."""
    if not fault.faultString.startswith("SPAWN_ERROR"):
        return False
    try:
        return (client.process_info(target.program).get("spawnerr") or "").startswith(EXITED_TOO_QUICKLY)
    except (Refusal, GalaxyctlError):
        return False


def refusal_error(client, target, fault):
    """The GalaxyctlError for the manager refusing to start ``target`` (see start_program)."""
    name, _, rest = fault.faultString.partition(":")
    reason = rest.strip()
    try:
        reason = client.process_info(target.program).get("spawnerr") or reason  # supervisord's own words
    except (Refusal, GalaxyctlError):
        pass
    logs = [f"its log file {target.log_file}"] if target.log_file else []
    manager_log = getattr(getattr(client, "paths", None), "log", None)  # supervisord's; systemd has none
    logs += [f"supervisord's log {manager_log}"] if manager_log else []
    see = f" (see {' and '.join(logs)})" if logs else ""
    return GalaxyctlError(f"supervisord refused startProcess {target.program}: {name}: {reason}{see}")
