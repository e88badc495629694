"""graceful: reload every service with the least interruption it allows, one step at a time.

- what is stopped is started first (tusd included): graceful is safe on a partly stopped Galaxy;
- web servers as before: HUP (gunicorn without preload, uWSGI), our herder's zero-downtime re-exec
  (preloaded gunicorn; a gunicorn list rolls one by one, each waiting for its new master), else a
  restart; tusd is left running (uploads must not be cut);
- celery workers one at a time: stop is a warm shutdown (SIGTERM: running tasks finish, up to
  stop_timeout), then start;
- job handlers and workflow schedulers in batches (``batch``, 1 by default): each batch is
  restarted, then waited for until every one of them heartbeats again from its new process
  (Galaxy's ``worker_process`` row, written once the job handler runs), so the others keep the
  jobs moving meanwhile.  Without a readable heartbeat, Galaxy's log line
  ``Galaxy server instance 'NAME' is running`` does.

``delay`` seconds pass between two steps.  Everything goes through the backend's controller
(supervisord, systemd).
"""

import os
import time

from galaxyctl_libs.actions import health
from galaxyctl_libs.actions.lifecycle import LifecycleResult, _prepare
from galaxyctl_libs.actions.readiness import DEFAULT_READY_TIMEOUT, tail, wait_ready
from galaxyctl_libs.backends.supervisor import client as sup
from galaxyctl_libs.core.registration import operation_lock
from galaxyctl_libs.core.services import GRACEFUL_HERDER, GRACEFUL_HUP, GRACEFUL_NONE
from galaxyctl_libs.errors import GalaxyctlError, NotReadyError
from galaxyctl_libs.probes import procfs
from galaxyctl_libs.probes.poll import wait_until

FAILED_STATES = (sup.FATAL, sup.EXITED, sup.STOPPED)


def graceful(
    state_dir,
    names=(),
    wait=True,
    timeout=DEFAULT_READY_TIMEOUT,
    progress=None,
    start_if_stopped=False,
    batch=1,
    delay=0.0,
):
    """Reload with the least interruption each service allows (see the module's docstring).

    ``start_if_stopped`` (gravity's option) is kept for the command line: stopped services are
    always started."""
    if batch < 1:
        raise GalaxyctlError(f"--batch must be at least 1, not {batch}")
    if delay < 0:
        raise GalaxyctlError(f"--delay must not be negative, not {delay}")
    with operation_lock(state_dir):
        result, targets = _prepare(state_dir, names)
        client = result.client
        started_supervisord = client.start_supervisord()
        acted = () if started_supervisord else _Roll(client, timeout, progress, delay).run(targets, batch)
    ready = wait_ready(client, targets, timeout, progress) if wait else ()
    return LifecycleResult(
        "graceful", tuple(t.program for t in acted), tuple(ready), started_supervisord, warnings=result.warnings
    )


class _Roll:
    def __init__(self, client, timeout, progress, delay):
        self.client, self.timeout, self.progress, self.delay = client, timeout, progress, delay
        self.run_as = tuple(getattr(client, "run_as", (None, None)))
        self.steps = 0

    def say(self, text):
        if self.progress:
            self.progress(text)

    def step(self):
        """Called before each step: the ``delay`` between two of them."""
        if self.steps and self.delay:
            self.say(f"waiting {self.delay:g}s before the next step")
            time.sleep(self.delay)
        self.steps += 1

    def state(self, target):
        return self.client.process_info(target.program)["statename"]

    def run(self, targets, batch):
        stopped = [t for t in targets if self.state(t) not in sup.UP_STATES]
        for target in stopped:
            self.client.start(target.program)
        up = [t for t in targets if t not in stopped]
        handlers = [t for t in up if t.service.service_type == health.HANDLER_TYPE]
        workers = [t for t in up if t.service.service_type == health.CELERY_TYPE]
        others = [t for t in up if t not in handlers and t not in workers and t.service.graceful != GRACEFUL_NONE]
        for target in others:
            self.step()
            self.reload(target)
        for target in workers:
            self.step()
            self.say(f"{target.program}: warm shutdown (running tasks finish), then start")
            self.client.stop(target.program)
            self.client.start(target.program)
            self.wait_running(target)
        for index in range(0, len(handlers), batch):
            self.step()
            self.restart_handlers(handlers[index : index + batch])
        return stopped + others + workers + handlers

    def reload(self, target):
        method = target.service.graceful
        if method in (GRACEFUL_HUP, GRACEFUL_HERDER) and self.state(target) in sup.UP_STATES[:2]:
            self.client.signal(target.program, "HUP")
            if method == GRACEFUL_HERDER:
                _wait_for_reload(self.client, target, self.timeout, self.progress)
        else:
            self.client.stop(target.program)
            self.client.start(target.program)

    def wait_running(self, target):
        """Until supervisord / systemd calls ``target`` running (after its start_timeout), bounded."""
        state = wait_until(lambda: self.state(target) not in (sup.STARTING, sup.BACKOFF), self.timeout)
        if state and self.state(target) == sup.RUNNING:
            return
        raise NotReadyError(
            f"{target.program} is {self.state(target)} after its restart",
            details=[f"last lines of {target.log_file}:"] + ["  " + line for line in tail(target.log_file)],
        )

    def restart_handlers(self, batch):
        """Restart ``batch`` and wait until each heartbeats from its new process (bounded)."""
        logs = {t.program: _size(t.log_file) for t in batch}
        for target in batch:
            self.client.stop(target.program)
        for target in batch:
            self.client.start(target.program)
        started = time.monotonic()
        waiting = list(batch)

        def all_ready():
            failed = [t for t in waiting if self.state(t) in FAILED_STATES]
            if failed:
                return failed
            waiting[:] = [t for t in waiting if not self.handler_ready(t, logs[t.program])]
            return not waiting

        def report(left):
            names = ", ".join(t.program for t in waiting)
            self.say(f"waiting for the heartbeat of {names}: {time.monotonic() - started:.0f}s")

        outcome = wait_until(all_ready, self.timeout, max_interval=1.0, progress=report if self.progress else None)
        if outcome is True:
            return
        target = outcome[0] if outcome else waiting[0]
        reason = f"is {self.state(target)}" if outcome else f"did not heartbeat within {self.timeout:.0f}s"
        raise NotReadyError(
            f"{target.program} {reason} after its restart; the handlers after it were not restarted",
            details=[f"last lines of {target.log_file}:"] + ["  " + line for line in tail(target.log_file)],
        )

    def handler_ready(self, target, log_offset):
        info = self.client.process_info(target.program)
        if info["statename"] not in sup.UP_STATES[:2] or not info["pid"]:
            return False
        if not target.service.heartbeat_db:
            return _log_says_running(target, log_offset)
        beats = health.read_beats([target], self.run_as, timeout=5.0)[target.service.heartbeat_db]
        if isinstance(beats, GalaxyctlError):
            return _log_says_running(target, log_offset)
        beat = beats.get(target.service.service_name)
        return beat is not None and (beat.pid == info["pid"] or beat.pid in procfs.descendants(info["pid"]))


def _size(path):
    try:
        return os.path.getsize(path) if path else 0
    except OSError:
        return 0


def _log_says_running(target, offset):
    """Galaxy's own line once a galaxy-main is up, written to its log since ``offset``."""
    if not target.log_file:
        return True  # nothing to read (journald): supervisor's / systemd's RUNNING has to do
    try:
        with open(target.log_file, "rb") as handle:
            handle.seek(offset if offset <= _size(target.log_file) else 0)
            text = handle.read(4 * 1024 * 1024).decode("utf-8", "replace")
    except OSError:
        return False
    return f"Galaxy server instance '{target.service.service_name}' is running" in text


def _wait_for_reload(client, target, timeout, progress):
    """After HUP, the herder starts a new master and retires the old one once the new one serves:
    wait (bounded) until the master under the herder has changed, so a rolling list goes one by one."""
    from galaxyctl_libs.probes import workers as workersmod

    herder = client.process_info(target.program)["pid"]
    before = workersmod.gunicorn_master(herder)

    def reloaded():
        current = workersmod.gunicorn_master(herder)
        if current and current != before and len(workersmod.children(herder)) == 1:
            return True
        # the herder itself was restarted by supervisord: done here too, wait_ready judges the result
        return client.process_info(target.program)["pid"] != herder

    def report(left):
        progress(f"reloading {target.program}: {left:.0f}s left")

    if wait_until(reloaded, timeout, progress=report if progress else None):
        return
    raise NotReadyError(
        f"{target.program} did not finish its reload within {timeout:.0f}s",
        details=[f"last lines of {target.log_file}:"] + ["  " + line for line in tail(target.log_file)],
    )
