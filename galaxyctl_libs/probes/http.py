"""Is Galaxy really serving?  HTTP probes on a gunicorn-style bind, and bounded readiness waits.

A bound port is not readiness (Galaxy binds ~40 s before it answers), so readiness is an HTTP
response below 500 from ``/api/version``.
"""

import time

from galaxyctl_libs.probes import netio
from galaxyctl_libs.probes.poll import Deadline, wait_until
from galaxyctl_libs.records import Record
from galaxyctl_libs.rootpolicy import as_user

READY_PATH = "/api/version"
MAX_REPLY = 1 << 20  # never read more than this of an answer


class Endpoint(Record):
    """Where to connect for a bind string: TCP host/port, or a unix socket path."""

    host: str = None
    port: int = None
    unix_path: str = None

    def __str__(self):
        return f"unix:{self.unix_path}" if self.unix_path else f"{self.host}:{self.port}"


def parse_bind(bind):
    """gunicorn's ``-b``: ``HOST``, ``HOST:PORT``, ``[IPv6]:PORT``, ``unix:PATH``; None for ``fd://``."""
    bind = bind.strip()
    if bind.startswith("unix:"):
        return Endpoint(unix_path=bind[len("unix:") :])
    if bind.startswith("fd://"):
        return None
    if bind.startswith("["):
        host, _, port = bind[1:].partition("]")
        port = port.lstrip(":")
    elif bind.count(":") == 1:
        host, port = bind.split(":")
    elif ":" in bind:
        host, port = bind, ""  # a bare IPv6 address
    else:
        host, port = bind, ""
    port = int(port) if port.isdigit() else 8000  # gunicorn's default port
    wildcard = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}
    return Endpoint(host=wildcard.get(host, host), port=port)


class ProbeResult(Record):
    ok: bool
    status: int  # HTTP status, or None when no response
    elapsed_ms: float
    error: str = ""
    body: str = ""


def probe(endpoint, path=READY_PATH, timeout=5.0, run_as=(None, None)):
    """One ``GET`` over HTTP/1.0 on a plain socket (no http.client: it costs ``status`` ~15 ms of
    imports); ok when the server answered with a status below 500.  A unix socket is connected with
    the ids of ``run_as`` (the service's user): as root, its path is that user's to choose."""
    started = time.monotonic()
    deadline = started + timeout
    host = "localhost" if endpoint.unix_path else endpoint.host
    request = f"GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: galaxyctl\r\nConnection: close\r\n\r\n"
    try:
        if endpoint.unix_path:
            with as_user(*run_as):
                sock = netio.connect_unix(endpoint.unix_path, timeout)
        else:
            sock = netio.connect_tcp(endpoint.host, endpoint.port, timeout)
        reply = netio.exchange(sock, request.encode("latin-1"), deadline, MAX_REPLY)
    except OSError as exc:
        return ProbeResult(False, None, (time.monotonic() - started) * 1000, str(exc) or type(exc).__name__)
    elapsed = (time.monotonic() - started) * 1000
    head, _, body = reply.partition(b"\r\n\r\n")
    parts = head.split(b"\r\n", 1)[0].split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return ProbeResult(
            False, None, elapsed, "not an HTTP response" if reply else "connection closed without a reply"
        )
    status = int(parts[1])
    reason = parts[2].decode("latin-1") if len(parts) > 2 else ""
    return ProbeResult(
        status < 500, status, elapsed, "" if status < 500 else reason, body[:4096].decode("utf-8", "replace")
    )


def wait_ready(
    endpoint, timeout, path=READY_PATH, progress=None, still_starting=None, interval=0.25, run_as=(None, None)
):
    """Probe until ok or ``timeout`` seconds pass; ``still_starting()`` returning a reason stops early.

    ``progress(elapsed_seconds, last_result)`` is called after each failed probe (the CLI draws a
    live line from it).  Returns the last ProbeResult.  Probes come every 50 ms at first, slowing
    (poll.wait_until's doubling) to ``interval``: a quick start is reported at once, a 40 s Galaxy
    start is not polled needlessly often.
    """
    deadline, started, last = Deadline(timeout), time.monotonic(), None

    def answered():
        """One probe: the result when ok, a (true) result carrying the reason to give up, else None."""
        nonlocal last
        result = last = probe(endpoint, path, timeout=max(0.5, min(5.0, deadline.left())), run_as=run_as)
        if result.ok:
            return result
        reason = still_starting() if still_starting is not None else ""
        if reason:
            return ProbeResult(False, result.status, result.elapsed_ms, reason)
        if progress is not None:
            progress(time.monotonic() - started, result)
        return None

    return wait_until(answered, deadline, interval=min(0.05, interval), max_interval=interval) or last
