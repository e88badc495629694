"""Laniakea's galaxyctl_libs uWSGI API, kept working as its README shows it.

``UwsgiSocket(fname=...).get_uwsgi_master_pid()`` and ``UwsgiStatsServer(...)`` with
``GetUwsgiStatsServer()``, ``CheckUwsgiWorkers``, ``GetBusyList()``: the PEP 8 names are primary and
the CamelCase ones aliases.  Settings come from core/uwsgi_config.py; the master's PID from the
listener probe, the stats over netio, every wait through probes/poll.py.
"""

import dataclasses
import json
import time

from galaxyctl_libs.core.uwsgi_config import (  # noqa: F401 - part of this API since Laniakea's
    UwsgiAddress,
    UwsgiConfig,
    _address_from_args,
    parse_address,
    read_uwsgi_config,
)
from galaxyctl_libs.errors import GalaxyctlError
from galaxyctl_libs.probes import listeners, netio
from galaxyctl_libs.probes.poll import Deadline, wait_until
from galaxyctl_libs.probes.procfs import cpu_seconds, rss_bytes
from galaxyctl_libs.probes.workers import WorkerInfo
from galaxyctl_libs.rootpolicy import as_user

__all__ = [
    "UwsgiAddress",
    "UwsgiConfig",
    "UwsgiWorker",
    "UwsgiSocket",
    "UwsgiStatsServer",
    "parse_address",
    "read_uwsgi_config",
    "DEFAULT_STATS_TIMEOUT",
]

DEFAULT_STATS_TIMEOUT = 5.0  # seconds: enough for a running Galaxy; pass ~300 while it starts
_MAX_STATS_BYTES = 64 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class UwsgiWorker:
    """One worker as the stats server reports it; ``rss`` in bytes (from /proc when uWSGI says 0)."""

    id: int
    pid: int
    status: str  # idle, busy, cheap, pause, sig…
    requests: int
    rss: int
    accepting: bool


class UwsgiSocket:
    """The uWSGI socket of a Galaxy config and the PID of the uWSGI master listening on it."""

    def __init__(self, server=None, port=None, timeout=None, fname=None, use_lsof=None):
        self.fname = fname
        self.timeout = timeout  # kept for Laniakea's signature; the lookup itself is bounded
        self.use_lsof = use_lsof
        address = _address_from_args(server, port, "UwsgiSocket")
        if address is not None:
            self.addresses = (address,)
        elif fname:
            self.addresses = read_uwsgi_config(fname).listen_addresses
            if not self.addresses:
                raise GalaxyctlError(f"{fname}: uwsgi has no socket, http-socket or http setting")
        else:
            raise GalaxyctlError("UwsgiSocket: give fname= (galaxy.ini/galaxy.yml) or server= and port=")
        first = self.addresses[0]
        self.server = first.path if first.kind == "unix" else first.connect_host
        self.port = first.port

    def get_server(self):
        return self.server

    def get_port(self):
        return self.port

    def get_uwsgi_master_pid(self):
        """``(master_pid, stderr, status)`` as in Laniakea's galaxyctl_libs, but with the master's PID alone.

        ``status`` 0: found (``stderr`` ''); 1: nothing listens (``master_pid`` None, ``stderr``
        says where we looked); 2: the lookup itself failed (``stderr`` says why).  Every address
        (socket, http-socket, http) is tried in that order; the first one with a listener wins.
        """
        try:
            for address in self.addresses:
                if address.kind == "unix":
                    pid = listeners.unix_socket_master_pid(address.path)
                else:
                    pid = listeners.listening_master_pid(address.port, host=address.host, use_lsof=self.use_lsof)
                if pid is not None:
                    return pid, "", 0
        except GalaxyctlError as exc:
            return None, str(exc), 2
        where = ", ".join(str(address) for address in self.addresses)
        return None, f"no uWSGI master is listening on {where}", 1


class UwsgiStatsServer:
    """Read the uWSGI stats server: readiness (a worker accepting) and busy workers.

    The address comes from ``server``/``port`` (``server`` alone may be a unix socket path) or the
    ``stats`` setting of ``fname``; ``stats-http`` makes it an HTTP GET.  ``timeout`` is a deadline
    for the whole read: connection refusals are retried with short back-off sleeps (0.05 s doubling
    to 1 s) until it passes, then ``GalaxyctlError`` is raised.  ``None`` means 5 seconds.
    """

    def __init__(
        self, server=None, port=None, timeout=DEFAULT_STATS_TIMEOUT, fname=None, stats_http=None, run_as=(None, None)
    ):
        self.timeout = DEFAULT_STATS_TIMEOUT if timeout is None else float(timeout)
        self.run_as = tuple(run_as)  # as root: a unix stats socket is the service user's path, connected as it
        self.fname = fname
        self.address = _address_from_args(server, port, "UwsgiStatsServer")
        self.stats_http = bool(stats_http)
        if self.address is None and fname:
            self._use_file(fname, stats_http)

    def _use_file(self, fname, stats_http=None):
        config = read_uwsgi_config(fname)
        if config.stats is None:
            raise GalaxyctlError(f"{fname}: uwsgi has no stats setting (the stats server is off)")
        self.fname, self.address = fname, config.stats
        self.stats_http = config.stats_http if stats_http is None else bool(stats_http)

    def _address(self, fname=None):
        if fname is not None:
            self._use_file(fname)
        if self.address is None:
            raise GalaxyctlError("UwsgiStatsServer: give fname= (galaxy.ini/galaxy.yml) or server= and port=")
        return self.address

    @property
    def server(self):
        address = self.address
        return None if address is None else (address.path if address.kind == "unix" else address.connect_host)

    @property
    def port(self):
        return None if self.address is None else self.address.port

    # -- reading --------------------------------------------------------------------------------

    def get_stats_json(self, fname=None):
        """The stats server's JSON text, read to EOF within the deadline."""
        return json.dumps(self.get_uwsgi_stats_server(fname))

    def get_uwsgi_stats_server(self, fname=None):
        """The parsed stats document (a dict with ``workers``, ``sockets``, ``pid``…)."""
        address = self._address(fname)
        deadline, errors = Deadline(self.timeout), []

        def read():
            try:
                return (self._read_once(address, deadline.end),)  # in a tuple: even {} ends the wait
            except (OSError, ValueError) as exc:  # refused/not there yet, or a truncated answer
                errors.append(exc)
                return None

        answer = wait_until(read, deadline, interval=0.05, max_interval=1.0)
        if answer:
            return answer[0]
        reason = getattr(errors[-1], "strerror", None) or errors[-1] or "timed out"
        raise GalaxyctlError(f"uWSGI stats server {address} did not answer within {self.timeout:g}s: {reason}")

    def _read_once(self, address, deadline):
        wait = max(deadline - time.monotonic(), 0.05)
        if address.kind == "unix":
            with as_user(*self.run_as):
                sock = netio.connect_unix(address.path, wait)
        else:
            sock = netio.connect_tcp(address.connect_host, address.port, wait)
        request = b""  # the plain stats server talks first
        if self.stats_http:
            host = address.connect_host if address.kind == "tcp" else "localhost"
            request = f"GET / HTTP/1.0\r\nHost: {host}\r\nAccept: application/json\r\n\r\n".encode()
        data = netio.exchange(sock, request, deadline, limit=_MAX_STATS_BYTES + 1)
        if len(data) > _MAX_STATS_BYTES:
            raise ValueError("stats answer too large")
        if self.stats_http:
            head, sep, data = data.partition(b"\r\n\r\n")
            status = head.split(b"\r\n", 1)[0].split()
            if not sep or len(status) < 2 or status[1] != b"200":
                raise ValueError(f"unexpected HTTP answer {head[:60]!r}")
        document = json.loads(data.decode("utf-8", "replace"))
        if not isinstance(document, dict):
            raise ValueError("stats answer is not a JSON object")
        return document

    # -- workers --------------------------------------------------------------------------------

    def workers(self, stats=None):
        """Each worker as a frozen ``UwsgiWorker``; pass ``stats`` to reuse one read."""
        stats = self.get_uwsgi_stats_server() if stats is None else stats
        result = []
        for item in stats.get("workers") or ():
            pid = int(item.get("pid") or 0)
            rss = int(item.get("rss") or 0) or rss_bytes(pid)
            result.append(
                UwsgiWorker(
                    id=int(item.get("id") or 0),
                    pid=pid,
                    status=str(item.get("status", "")),
                    requests=int(item.get("requests") or 0),
                    rss=rss,
                    accepting=bool(item.get("accepting")),
                )
            )
        return tuple(result)

    def workers_accepting(self, fname=None):
        """True when at least one worker has ``accepting == 1`` (Galaxy can serve a request)."""
        if fname is not None:
            self._address(fname)
        return any(worker.accepting for worker in self.workers())

    def wait_until_accepting(self, progress=None):
        """Poll until a worker accepts, within ``timeout``; ``progress(seconds_left)`` is called
        between polls.  Returns True, or raises ``GalaxyctlError`` when the deadline passes."""
        deadline = Deadline(self.timeout)

        def accepting():
            reader = UwsgiStatsServer(
                timeout=max(deadline.left(), 0.05), stats_http=self.stats_http, run_as=self.run_as
            )
            reader.address = self._address()
            try:
                return reader.workers_accepting()
            except GalaxyctlError:
                return False

        if wait_until(accepting, deadline, interval=0.1, max_interval=1.0, progress=progress):
            return True
        raise GalaxyctlError(
            f"no uWSGI worker accepting requests after {self.timeout:g}s (stats server {self.address})"
        )

    def get_busy_list(self, fname=None):
        """PIDs of the workers whose status is ``busy`` (serving a request), as Laniakea's returned PIDs.

        A worker with ``accepting == 0`` (loading the app, being respawned or cheaped) is not
        reported here unless its status is ``busy``: see ``workers()`` (``accepting``) and
        ``workers_accepting()`` for that.
        """
        if fname is not None:
            self._address(fname)
        return [worker.pid for worker in self.workers() if worker.status == "busy"]

    # -- Laniakea's names -------------------------------------------------------------------------

    def GetUwsgiStatsServer(self, fname=None):  # noqa: N802 - Laniakea's name
        """Laniakea's API: without ``fname`` the stats dict (truthy); with ``fname``, as Laniakea's README
        shows it, the workers-accepting status (bool) read with that file's stats address."""
        if fname is None:
            return self.get_uwsgi_stats_server()
        return self.workers_accepting(fname)

    GetStatsJson = get_stats_json
    CheckUwsgiWorkers = workers_accepting
    GetBusyList = get_busy_list


def uwsgi_workers(config_path, timeout=5.0):
    """Each uWSGI worker from the stats server named in the config, as the workers probe reports them."""
    stats = UwsgiStatsServer(timeout=timeout, fname=config_path)
    return tuple(
        WorkerInfo(
            pid=w.pid,
            status=w.status,
            connections=None,
            requests=w.requests,
            rss_bytes=w.rss,
            cpu_seconds=cpu_seconds(w.pid),
            server="uwsgi",
        )
        for w in stats.workers()
    )
