"""Does a celery worker answer?  ``celery inspect ping`` through the broker Galaxy's config names.

The ping (celery's ``app.control.ping``, what ``celery inspect ping`` sends) runs with the worker's
own interpreter, environment and working directory, as the worker's user, but not with Galaxy's app:
a bare celery app is given the broker URL and ``broker_*`` settings that Galaxy's config gives the
worker (core/broker.py, worked out when the service is built and kept in the applied record).  That
costs importing celery and one round trip to the broker, not loading Galaxy (seconds).  The request
(URL, settings, node, timeout) goes to the ping on its stdin: a password in the URL is never on a
command line, and is masked in what the ping prints.  A record written before galaxyctl knew the
broker (no ``broker_url``) falls back to the old ping through Galaxy's app (``--app``).

A ping is a broadcast: brokers whose kombu transport cannot fan out (SQLAlchemy, Galaxy's default
``amqp_internal_connection`` on a database) never deliver it.  That is known from the transport's
declared exchange types without connecting: the answer is "unavailable", not a failure.
"""

import os
import time

from galaxyctl_libs.probes import procfs
from galaxyctl_libs.records import Record

PING_ALLOWANCE = 15.0  # seconds the ping's process may take beyond the reply timeout (celery's import, connecting)
APP_LOAD_ALLOWANCE = 60.0  # the same for the old ping through Galaxy's app (loading Galaxy)
_MARKERS = (procfs.STATE_ID_ENV, procfs.SERVICE_ENV)  # not on the ping: it is no service of ours
_CELERY_BROKER_ENV = ("CELERY_BROKER_URL", "CELERY_BROKER_READ_URL", "CELERY_BROKER_WRITE_URL")
_MAX_REQUEST = 60000  # bytes: the request is written to a pipe before the ping runs (a pipe holds 64 KiB)


# run by the worker's interpreter: stdin = {"url", "conf", "node", "timeout"}; prints one JSON line
_PING = """\
import json, sys
request = json.loads(sys.stdin.read())
conf = dict(request["conf"], broker_url=request["url"])
from kombu import Connection
probe = Connection(request["url"], transport=conf.get("broker_transport"))
transport = probe.get_transport_cls()
if "fanout" not in transport.implements.exchange_type:
    name = getattr(transport, "driver_name", "") or "N/A"
    print(json.dumps({"fanout": False, "transport": name if name != "N/A" else probe.transport_cls}))
    sys.exit(0)
from celery import Celery
app = Celery("galaxyctl-ping", set_as_current=False)
app.conf.update(conf)
conn = app.connection_for_write()
timeout = float(request["timeout"])
try:
    conn.ensure_connection(max_retries=1, interval_start=0, timeout=timeout)
    replies = app.control.ping(destination=[request["node"]], timeout=timeout, connection=conn)
except Exception as exc:
    print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
    sys.exit(3)
finally:
    conn.release()
print(json.dumps({"fanout": True, "replies": replies}))
"""

# the old ping, through Galaxy's app: argv = app, node, timeout
_PING_APP = """\
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
    broker_url: str = ""  # its passwords are masked in what the ping says


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


def ping_argv(service, timeout, first_line=_no_read, host=None):
    """(node, argv, request): the command of the ping and what it reads on stdin (None: nothing).
    With the broker known (``service.broker_url``), the bare-celery ping; else the one through
    Galaxy's app (``--app``).  ``host``: the worker's host when it is not this machine (celery's
    %h in its node name is that host's name)."""
    import json

    argv = service.argv
    node = node_name(argv, host)
    python = interpreter(argv[0], first_line)
    if not getattr(service, "broker_url", None):
        app = _option(argv, "-A", "--app") or "galaxy.celery"
        return node, [python, "-c", _PING_APP, app, node, f"{timeout:g}"], None
    request = {"url": service.broker_url, "conf": service.broker_options or {}, "node": node, "timeout": timeout}
    return node, [python, "-c", _PING], json.dumps(request, default=str)


def _stdin_with(text):
    """A pipe's reading end that holds ``text`` (written and closed now: small, so no blocking)."""
    data = text.encode()
    if len(data) > _MAX_REQUEST:
        raise ValueError(f"celery's broker settings are too long to hand to the ping ({len(data)} bytes)")
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, data)
    finally:
        os.close(write_end)
    return read_end


def start(service, timeout, allowance=None, first_line=_no_read, host=None):
    """Start pinging the worker of ``service`` (a core.targets.Service); collect with ``finish``.
    ``first_line``: see ``interpreter``; ``allowance``: seconds beyond ``timeout`` the ping may
    take (default: PING_ALLOWANCE, APP_LOAD_ALLOWANCE through Galaxy's app); ``host``: see
    ``ping_argv``."""
    import subprocess

    from galaxyctl_libs.rootpolicy import as_user, subprocess_credentials

    node, command, request = ping_argv(service, timeout, first_line, host)
    if allowance is None:
        allowance = APP_LOAD_ALLOWANCE if request is None else PING_ALLOWANCE
    secret = getattr(service, "broker_url", None) or ""
    env = {k: v for k, v in service.full_environment(os.environ).items() if k not in _MARKERS}
    if request is not None:  # celery prefers these to its conf: only the worker's own count, not ours
        own = {name for name, _ in service.environment}
        for name in _CELERY_BROKER_ENV:
            if name not in own:
                env.pop(name, None)
    started = time.monotonic()
    stdin = subprocess.DEVNULL
    try:
        if request is not None:
            stdin = _stdin_with(request)
        # started with the worker's user's ids: subprocess enters ``cwd`` (that user's to swap for a
        # link) before it drops them, and it must do so as that user, not as root
        with as_user(service.user, service.group):
            process = subprocess.Popen(
                command,
                cwd=service.cwd,
                env=env,
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                **subprocess_credentials(service.user, service.group),
            )
    except OSError as exc:
        return Pending(node, None, started, started, f"cannot run {command[0]}: {exc.strerror}", secret)
    except ValueError as exc:
        return Pending(node, None, started, started, str(exc), secret)
    finally:
        if stdin is not subprocess.DEVNULL:
            os.close(stdin)  # the child has its copy
    return Pending(node, process, started, started + timeout + allowance, "", secret)


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
        return PingResult(pending.node, False, limit, f"no answer from the celery ping within {limit:.0f}s")
    if pending.broker_url:
        out, err = redact(out, pending.broker_url), redact(err, pending.broker_url)
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


def passwords(url):
    """The passwords in a broker URL (kombu takes ``;``-separated fail-over URLs), to keep out of messages."""
    from urllib.parse import unquote, urlsplit

    found = []
    for part in (url or "").split(";"):
        scheme, _, rest = part.partition("://")
        if not rest:
            continue
        try:
            password = urlsplit("x://" + rest).password
        except ValueError:
            password = None
        if not password:  # an unparsable one: whatever sits between "user:" and "@"
            netloc = rest.split("/", 1)[0]
            userinfo = netloc.rpartition("@")[0]
            password = userinfo.partition(":")[2] or None
        if password:
            found += [password, unquote(password)]
    return [p for p in dict.fromkeys(found) if p]


def redact(text, url):
    """``text`` with the passwords of ``url`` replaced by ``***``."""
    for password in sorted(passwords(url), key=len, reverse=True):
        text = text.replace(password, "***")
    return text
