"""graceful: reload every service with the least interruption it allows, one step at a time.

- what is stopped is started first (tusd included): graceful is safe on a partly stopped Galaxy;
- web servers: HUP (gunicorn without preload, uWSGI), our herder's zero-downtime re-exec
  (preloaded gunicorn; a gunicorn list rolls one by one, each waiting for its new master), else a
  restart; tusd is left running (uploads must not be cut);
- celery workers one at a time: stop is a warm shutdown (SIGTERM: running tasks finish, up to
  stop_timeout), then start;
- job handlers and workflow schedulers in batches (``batch``, 1 by default): each batch is
  drained, restarted, then waited for until every one of them heartbeats again from its new
  process (Galaxy's ``worker_process`` row, written once the job handler runs), so the others keep
  the jobs moving meanwhile.  Without a readable heartbeat, Galaxy's log line
  ``Galaxy server instance 'NAME' is running`` does.  Draining (up to ``drain`` seconds): Galaxy's
  local runner kills the jobs a handler runs when it stops, so the batch is first told to dispatch
  no new job (Galaxy's own ``admin_job_lock`` control task, sent to each handler's control queue
  with Galaxy's interpreter and config) and its running local jobs are waited for; the others
  take the new jobs.  The new process starts unlocked.

``delay`` seconds pass between two steps.  Everything goes through the backend's controller
(supervisord, systemd).
"""

import os
import time

from galaxyctl_libs import gate
from galaxyctl_libs.actions import health
from galaxyctl_libs.actions.lifecycle import LifecycleResult, prepare
from galaxyctl_libs.actions.readiness import (
    DEFAULT_READY_TIMEOUT,
    log_details,
    log_offsets,
    service_user,
    wait_ready,
    wait_up,
)
from galaxyctl_libs.actions.starting import start_grace, start_in_order, start_program
from galaxyctl_libs.backends import base, planned
from galaxyctl_libs.core.kinds import ROLL_DRAINED, ROLL_WARM, kind_of
from galaxyctl_libs.core.services import GRACEFUL_HERDER, GRACEFUL_HUP, GRACEFUL_NONE
from galaxyctl_libs.core.state import operation_lock
from galaxyctl_libs.errors import GalaxyctlError, NotReadyError, carrying
from galaxyctl_libs.probes import heartbeat, procfs
from galaxyctl_libs.probes.poll import wait_until
from galaxyctl_libs.rootpolicy import as_user, subprocess_credentials

_MARKERS = (procfs.STATE_ID_ENV, procfs.SERVICE_ENV)  # the lock's process is no service of ours

FAILED_STATES = (base.FATAL, base.EXITED, base.STOPPED)
DEFAULT_DRAIN = 120.0  # seconds a handler's running local jobs may take to finish before its restart
LOCK_TIMEOUT = 120.0  # seconds to load Galaxy's config and send the lock (Galaxy's import: ~10 s)
LOCK_ACK_WAIT = 30.0  # seconds for a handler to log that it took the lock
LOG_SCAN_BYTES = 4 * 1024 * 1024  # of a handler's log written since a restart began, scanned for a line
LOCKED_LINE = "Administrative Job Lock is now set to True"  # galaxy.queue_worker.admin_job_lock's log line

# run by a handler's interpreter with GALAXY_CONFIG_FILE: tell each named handler to dispatch no new job
_LOCK = """\
import socket, sys, time
from kombu import Connection, Producer
from galaxy.celery import get_config
host = socket.gethostname()
with Connection(get_config().amqp_internal_connection) as conn:
    producer = Producer(conn.default_channel, serializer="json")
    for name in sys.argv[1:]:
        producer.publish(
            {"task": "admin_job_lock", "kwargs": {"job_lock": True}},
            exchange="",
            routing_key=f"control.{name}@{host}",
            headers={"epoch": time.time()},
            retry=True,
        )
print("locked")
"""


def graceful(
    state_dir,
    names=(),
    wait=True,
    timeout=DEFAULT_READY_TIMEOUT,
    progress=None,
    start_if_stopped=False,
    batch=1,
    delay=0.0,
    drain=DEFAULT_DRAIN,
):
    """Reload with the least interruption each service allows (see the module's docstring).

    ``start_if_stopped`` is gravity's name, accepted so that callers written for gravity keep
    working, and ignored: stopped services are always started (the CLI's --start-if-stopped says so)."""
    if batch < 1:
        raise GalaxyctlError(f"--batch must be at least 1, not {batch}")
    if delay < 0 or drain < 0:
        raise GalaxyctlError(f"--delay and --drain must not be negative, not {min(delay, drain)}")
    with operation_lock(state_dir):
        result, targets = prepare(state_dir, names)
        client = result.client
        roll = _Roll(client, timeout, progress, delay, drain)
        with carrying(result.warnings):
            started_supervisord = client.ensure_manager_running()
            if started_supervisord:  # it starts nothing by itself (autostart = false): start all, in order
                start_in_order(state_dir, client, targets, timeout, progress, wait, action="graceful")
            acted = () if started_supervisord else roll.run(targets, batch)
            # what galaxyctl restarted, and when: check does not count these as crashes (backends/planned.py)
            planned.record(
                state_dir,
                [(t.program, roll.when[t.program], start_grace(t, timeout), roll.pid(t)) for t in acted],
                "graceful",
            )
    with carrying(result.warnings):
        ready = _settled(client, targets, timeout, progress) if wait else ()
    return LifecycleResult(
        "graceful",
        tuple(t.program for t in acted),
        tuple(ready),
        started_supervisord,
        warnings=tuple(result.warnings) + tuple(roll.notes),
    )


def _settled(client, targets, timeout, progress):
    """Every service answers or is past its start timeout: a reload that crashed one is said
    (NotReadyError), not reported as done.  Returns the web servers' ReadyResults."""
    deadline = time.monotonic() + timeout
    ready = wait_ready(client, targets, timeout, progress)
    wait_up(client, targets, max(0.0, deadline - time.monotonic()), progress)
    return ready


class _Roll:
    def __init__(self, client, timeout, progress, delay, drain=0.0):
        self.client, self.timeout, self.progress, self.delay, self.drain = client, timeout, progress, delay, drain
        self.run_as = tuple(getattr(client, "run_as", (None, None)))
        self.steps = 0
        self.when = {}  # program -> when it was last started or reloaded (after it: explained by it)
        self.notes = []  # what the admin should know afterwards (jobs a restart could not spare)

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

    def pid(self, target):
        return self.client.process_info(target.program)["pid"]

    def run(self, targets, batch):
        stopped = [t for t in targets if self.state(t) not in base.UP_STATES]
        for target in stopped:
            start_program(self.client, target)
            self.when[target.program] = time.time()
        up = [t for t in targets if t not in stopped]
        handlers = [t for t in up if kind_of(t.service.service_type).roll == ROLL_DRAINED]
        workers = [t for t in up if kind_of(t.service.service_type).roll == ROLL_WARM]
        others = [t for t in up if t not in handlers and t not in workers and t.service.graceful != GRACEFUL_NONE]
        for target in others:
            self.step()
            self.reload(target)
        for target in workers:
            self.step()
            self.say(f"{target.program}: warm shutdown (running tasks finish), then start")
            self.client.stop(target.program)
            start_program(self.client, target)
            self.when[target.program] = time.time()
            self.wait_running(target)
        for index in range(0, len(handlers), batch):
            self.step()
            self.restart_handlers(handlers[index : index + batch])
        return stopped + others + workers + handlers

    def reload(self, target):
        method = target.service.graceful
        if method in (GRACEFUL_HUP, GRACEFUL_HERDER) and self.state(target) in base.UP_STATES[:2]:
            self.client.signal(target.program, "HUP")
            self.when[target.program] = time.time()
            if method == GRACEFUL_HERDER:
                _wait_for_reload(self.client, target, self.timeout, self.progress)
        else:
            self.client.stop(target.program)
            start_program(self.client, target)
            self.when[target.program] = time.time()

    def wait_running(self, target):
        """Until supervisord / systemd calls ``target`` running (after its start_timeout), bounded."""
        state = wait_until(lambda: self.state(target) not in (base.STARTING, base.BACKOFF), self.timeout)
        if state and self.state(target) == base.RUNNING:
            return
        raise NotReadyError(
            f"{target.program} is {self.state(target)} after its restart",
            details=log_details(target, self.client),
        )

    def restart_handlers(self, batch):
        """Restart ``batch`` and wait until each heartbeats from its new process (bounded)."""
        logs = log_offsets(batch)
        if self.drain > 0 and all(t.service.heartbeat_db for t in batch):
            self.drain_handlers(batch, logs)
        for target in batch:
            self.client.stop(target.program)
        for target in batch:
            start_program(self.client, target)
            self.when[target.program] = time.time()
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
            details=log_details(target, self.client),
        )

    def drain_handlers(self, batch, offsets):
        """Lock job dispatch on ``batch``, then wait (up to ``drain`` s) for their local runner's jobs."""
        names = [t.service.service_name for t in batch]
        reason = _lock(batch[0].service, names)
        if reason:
            self.say(f"cannot pause job dispatch on {', '.join(names)} ({reason}); restarting without draining")
            return
        # the handler reads its control queue every second or so: until it says so, it may still dispatch
        wait_until(lambda: all(_log_has(t, offsets[t.program], LOCKED_LINE) for t in batch), LOCK_ACK_WAIT)
        service = batch[0].service
        started = time.monotonic()
        left = {}

        def drained():
            try:
                with as_user(*self.run_as):
                    credentials = subprocess_credentials(service.user, service.group)
                    counts = heartbeat.running_jobs(
                        service.heartbeat_db, heartbeat.interpreter(service.argv), credentials, 30.0
                    )
            except GalaxyctlError:
                return True  # cannot tell: do not hold the restart up
            left.clear()
            left.update({name: counts[name] for name in names if counts.get(name)})
            return not left

        def report(_):
            jobs = ", ".join(f"{name}: {count}" for name, count in left.items())
            self.say(f"draining {', '.join(names)} (running local jobs {jobs}): {time.monotonic() - started:.0f}s")

        if not wait_until(drained, self.drain, max_interval=1.0, progress=report if self.progress else None):
            jobs = ", ".join(f"{count} on {name}" for name, count in left.items())
            self.notes.append(
                f"local jobs still running after the {self.drain:g}s drain were ended by the restart: {jobs}"
            )

    def handler_ready(self, target, log_offset):
        info = self.client.process_info(target.program)
        if info["statename"] not in base.UP_STATES[:2] or not info["pid"]:
            return False
        if not target.service.heartbeat_db:
            return _log_says_running(target, log_offset)
        beats = health.read_beats([target], self.run_as, timeout=5.0)[target.service.heartbeat_db]
        if isinstance(beats, GalaxyctlError):
            return _log_says_running(target, log_offset)
        beat = beats.get(target.service.service_name)
        return beat is not None and (beat.pid == info["pid"] or beat.pid in procfs.descendants(info["pid"]))


def _lock(service, names):
    """Send Galaxy's ``admin_job_lock`` to the handlers ``names`` (with the handler's interpreter,
    environment, config and user); '' when sent, else why not."""
    import subprocess

    argv = service.argv
    config = argv[argv.index("-c") + 1] if "-c" in argv[:-1] else None
    if not config:
        return "no -c config on the handler's command line"
    env = {k: v for k, v in service.full_environment(os.environ).items() if k not in _MARKERS}
    env.update(GALAXY_CONFIG_FILE=config, PYTHONPATH="lib")
    try:
        done = gate.run(  # as the handler's user, entering its working directory with that user's ids
            [heartbeat.interpreter(argv), "-c", _LOCK, *names],
            (service.user, service.group),
            cwd=service.cwd,
            timeout=LOCK_TIMEOUT,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return f"no answer within {LOCK_TIMEOUT:.0f}s"
    except OSError as exc:
        return exc.strerror
    if done.returncode != 0 or "locked" not in done.stdout:
        return ((done.stderr.strip().splitlines() or ["no output"])[-1])[:160]
    return ""


def _log_says_running(target, offset):
    """Galaxy's own line once a galaxy-main is up, written to its log since ``offset``."""
    return _log_has(target, offset, f"Galaxy server instance '{target.service.service_name}' is running")


def _log_has(target, offset, line):
    """Has ``line`` been written to the target's log since ``offset``?  (No log file to read,
    e.g. journald: yes, the state the process manager reports has to do.)"""
    if not target.log_file:
        return True
    data = gate.read(target.log_file, service_user(target), LOG_SCAN_BYTES, start=offset)
    return data is not None and line.encode("utf-8") in data


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
        details=log_details(target, client),
    )
