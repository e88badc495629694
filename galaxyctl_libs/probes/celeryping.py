"""Does a celery worker answer?  ``celery inspect ping`` through the broker, with Galaxy's app.

The ping runs with the worker's own celery executable, app (``--app``), environment and working
directory, as the worker's user, so it reaches the broker the worker uses whatever Galaxy's config
says.  Loading Galaxy's app takes seconds (~9 s on 2 busy cores): the ping is started first and
collected last (``start``/``finish``), and the whole run is bounded.
"""

import os
import time

from galaxyctl_libs.probes import procfs
from galaxyctl_libs.records import Record

APP_LOAD_ALLOWANCE = 60.0  # seconds the ping's process may take beyond the reply timeout (loading Galaxy)
_MARKERS = (procfs.STATE_ID_ENV, procfs.SERVICE_ENV)  # not on the ping: it is no service of ours


class PingResult(Record):
    node: str
    ok: bool
    seconds: float
    error: str = ""


class Pending(Record):
    node: str
    process: object  # subprocess.Popen, or None when it could not start
    started: float
    deadline: float
    error: str = ""


def _option(argv, short, long):
    """The value of ``-X VALUE``, ``--long VALUE`` or ``--long=VALUE`` in a celery command line."""
    for index, arg in enumerate(argv):
        if arg in (short, long) and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith(long + "="):
            return arg.partition("=")[2]
    return None


def node_name(argv, host=None):
    """The worker's node name: its ``-n/--hostname`` (celery's %h, %n, %d expanded), else ``celery@HOST``."""
    host = host or os.uname().nodename
    name = _option(argv, "-n", "--hostname")
    if not name:
        return f"celery@{host}"
    short, _, domain = host.partition(".")
    name = name.replace("%h", host).replace("%n", short).replace("%d", domain).replace("%%", "%")
    return name if "@" in name else f"celery@{name}"


def ping_argv(service, timeout):
    argv = service.argv
    app = _option(argv, "-A", "--app") or "galaxy.celery"
    node = node_name(argv)
    command = [argv[0], "--app", app, "inspect", "ping", "--destination", node, "--timeout", f"{timeout:g}", "--json"]
    return node, command


def start(service, timeout, allowance=APP_LOAD_ALLOWANCE):
    """Start pinging the worker of ``service`` (a core.targets.Service); collect with ``finish``."""
    import subprocess

    from galaxyctl_libs.rootpolicy import subprocess_credentials

    node, command = ping_argv(service, timeout)
    env = {k: v for k, v in service.full_environment(os.environ).items() if k not in _MARKERS}
    started = time.monotonic()
    try:
        process = subprocess.Popen(
            command,
            cwd=service.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            **subprocess_credentials(service.user, service.group),
        )
    except OSError as exc:
        return Pending(node, None, started, started, f"cannot run {command[0]}: {exc.strerror}")
    return Pending(node, process, started, started + timeout + allowance)


def finish(pending):
    """The answer of a ping ``start`` began: ok when the worker replied ``pong`` in time."""
    import subprocess

    if pending.process is None:
        return PingResult(pending.node, False, 0.0, pending.error)
    process = pending.process
    try:
        out, err = process.communicate(timeout=max(0.1, pending.deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        process.kill()  # our own child, by its PID
        process.communicate()
        limit = pending.deadline - pending.started
        return PingResult(pending.node, False, limit, f"no answer from celery inspect within {limit:.0f}s")
    seconds = time.monotonic() - pending.started
    if process.returncode == 0 and "pong" in out:
        return PingResult(pending.node, True, seconds)
    lines = [line.strip() for line in (err + "\n" + out).splitlines() if line.strip()]
    reason = next((line for line in reversed(lines) if "Error" in line), lines[-1] if lines else "no reply")
    return PingResult(pending.node, False, seconds, f"no reply to ping ({reason[:160]})")
