"""Is Galaxy really serving?  HTTP probes on a gunicorn-style bind, and bounded readiness waits.

A bound port is not readiness (Galaxy binds ~40 s before it answers), so readiness is an HTTP
response below 500 from ``/api/version``.
"""

import http.client
import socket
import time
from dataclasses import dataclass

READY_PATH = "/api/version"


@dataclass(frozen=True)
class Endpoint:
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
        return Endpoint(unix_path=bind[len("unix:"):])
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


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    status: int  # HTTP status, or None when no response
    elapsed_ms: float
    error: str = ""
    body: str = ""


def probe(endpoint, path=READY_PATH, timeout=5.0):
    """One GET; ok when the server answered with a status below 500."""
    started = time.monotonic()
    if endpoint.unix_path:
        conn = _UnixHTTPConnection(endpoint.unix_path, timeout)
    else:
        conn = http.client.HTTPConnection(endpoint.host, endpoint.port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"User-Agent": "galaxyctl", "Connection": "close"})
        response = conn.getresponse()
        body = response.read(4096).decode("utf-8", "replace")
        elapsed = (time.monotonic() - started) * 1000
        return ProbeResult(response.status < 500, response.status, elapsed, "" if response.status < 500 else response.reason, body)
    except (OSError, http.client.HTTPException) as exc:
        elapsed = (time.monotonic() - started) * 1000
        return ProbeResult(False, None, elapsed, str(exc) or type(exc).__name__)
    finally:
        conn.close()


def wait_ready(endpoint, timeout, path=READY_PATH, progress=None, still_starting=None, interval=0.25):
    """Probe until ok or ``timeout`` seconds pass; ``still_starting()`` returning a reason stops early.

    ``progress(elapsed_seconds, last_result)`` is called after each failed probe (the CLI draws a
    live line from it).  Returns the last ProbeResult.
    """
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    while True:
        result = probe(endpoint, path, timeout=max(0.5, min(5.0, deadline - time.monotonic())))
        if result.ok:
            return result
        if still_starting is not None:
            reason = still_starting()
            if reason:
                return ProbeResult(False, result.status, result.elapsed_ms, reason)
        if progress is not None:
            progress(time.monotonic() - started, result)
        if time.monotonic() >= deadline:
            return result
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
