"""Does a celery worker answer?  ``celery inspect ping`` through the broker, with Galaxy's app.

The ping (celery's ``app.control.ping``, what ``celery inspect ping`` sends) runs with the worker's
own interpreter, app (``--app``), environment and working directory, as the worker's user, so it
reaches the broker the worker uses whatever Galaxy's config says.  Loading Galaxy's app takes
seconds (~9 s on 2 busy cores): the ping is started first and collected last (``start``/``finish``),
and the whole run is bounded.

A ping is a broadcast: brokers whose kombu transport cannot fan out (SQLAlchemy, Galaxy's default
``amqp_internal_connection`` on a database) never deliver it.  There the answer is "unavailable",
not a failure.
"""

import os
import time

from galaxyctl_libs.probes import procfs
from galaxyctl_libs.records import Record

APP_LOAD_ALLOWANCE = 60.0  # seconds the ping's process may take beyond the reply timeout (loading Galaxy)
_MARKERS = (procfs.STATE_ID_ENV, procfs.SERVICE_ENV)  # not on the ping: it is no service of ours


# run by the worker's interpreter: argv = app, node, timeout; prints one JSON line
_PING = """\
import json, sys
from celery.app.utils import find_app
app = find_app(sys.argv[1])
with app.connection_for_write() as conn:
    channel = conn.default_channel
    if not getattr(channel, "supports_fanout", True):
        print(json.dumps({"fanout": False, "transport": conn.transport.driver_name}))
        sys.exit(0)
    replies = app.control.ping(destination=[sys.argv[2]], timeout=float(sys.argv[3]), connection=conn)
print(json.dumps({"fanout": True, "replies": replies}))
"""


class PingResult(Record):
    node: str
    ok: bool
    seconds: float
    error: str = ""
    unavailable: bool = False  # the broker's transport cannot carry a ping (no broadcast)


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


def _no_read(path):
    return ""


def interpreter(celery_exe, first_line=_no_read):
    """The Python of the worker's celery: its virtualenv's, else the one its script's ``#!`` names.
    ``first_line(path)`` reads that line: the caller's gate (as root, the venv is the Galaxy user's,
    so it is read with that user's ids, never through a link nor from a FIFO)."""
    beside = os.path.join(os.path.dirname(celery_exe), "python")
    if os.access(beside, os.X_OK):
        return beside
    first = first_line(celery_exe)
    return first[2:].strip().split()[0] if first.startswith("#!/") and first[2:].strip() else beside


def ping_argv(service, timeout, first_line=_no_read):
    argv = service.argv
    app = _option(argv, "-A", "--app") or "galaxy.celery"
    node = node_name(argv)
    return node, [interpreter(argv[0], first_line), "-c", _PING, app, node, f"{timeout:g}"]


def start(service, timeout, allowance=APP_LOAD_ALLOWANCE, first_line=_no_read):
    """Start pinging the worker of ``service`` (a core.targets.Service); collect with ``finish``.
    ``first_line``: see ``interpreter``."""
    import subprocess

    from galaxyctl_libs.rootpolicy import subprocess_credentials

    node, command = ping_argv(service, timeout, first_line)
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
    return _judge(pending, process.returncode, out, err, time.monotonic() - pending.started)


def _judge(pending, returncode, out, err, seconds):
    import json

    answer = None
    for line in reversed(out.splitlines()):
        if line.startswith("{"):
            try:
                answer = json.loads(line)
            except ValueError:
                continue
            break
    if returncode != 0 or not isinstance(answer, dict):
        lines = [line.strip() for line in (err + "\n" + out).splitlines() if line.strip()]
        reason = next((line for line in reversed(lines) if "Error" in line), lines[-1] if lines else "no output")
        return PingResult(pending.node, False, seconds, f"ping failed ({reason[:160]})")
    if answer.get("fanout") is False:
        transport = answer.get("transport", "?")
        return PingResult(pending.node, False, seconds, f"no ping: the {transport} broker carries no broadcast", True)
    replies = answer.get("replies") or []
    if any(isinstance(r, dict) and pending.node in r for r in replies):
        return PingResult(pending.node, True, seconds)
    return PingResult(pending.node, False, seconds, f"no reply to ping from {pending.node}")
