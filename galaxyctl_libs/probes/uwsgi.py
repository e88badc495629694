"""uWSGI, the legacy Galaxy app server: its settings, its master process and its stats server.

Reproduces Laniakea's ``galaxyctl_libs`` uWSGI API (``UwsgiSocket``, ``UwsgiStatsServer`` with
``GetUwsgiStatsServer``, ``CheckUwsgiWorkers``, ``GetBusyList``) so admins' scripts keep working;
the PEP 8 names are primary and the CamelCase ones are aliases.  Settings come from the
``[uwsgi]`` section of ``galaxy.ini`` or the ``uwsgi:`` section of ``galaxy.yml``.
"""

import dataclasses
import json
import os
import time
from typing import Optional, Tuple

import yaml

from galaxyctl_libs.probes import listeners
from galaxyctl_libs.probes import netio
from galaxyctl_libs.errors import GalaxyctlError
from galaxyctl_libs.probes.poll import Deadline, wait_until
from galaxyctl_libs.probes.procfs import rss_bytes

__all__ = [
    "UwsgiAddress", "UwsgiConfig", "UwsgiWorker", "UwsgiSocket", "UwsgiStatsServer",
    "parse_address", "read_uwsgi_config", "DEFAULT_STATS_TIMEOUT",
]

DEFAULT_STATS_TIMEOUT = 5.0  # seconds: enough for a running Galaxy; pass ~300 while it starts
_MAX_STATS_BYTES = 64 * 1024 * 1024
_FALSE = ("", "0", "false", "no", "off")


@dataclasses.dataclass(frozen=True)
class UwsgiAddress:
    """One uWSGI address: ``kind`` 'tcp' (host None = all interfaces) or 'unix' (path)."""

    kind: str
    host: Optional[str] = None
    port: Optional[int] = None
    path: Optional[str] = None

    @property
    def connect_host(self):
        """Where a local client connects: the wildcard means this host's loopback."""
        return "127.0.0.1" if self.host in (None, "0.0.0.0") else ("::1" if self.host == "::" else self.host)

    def __str__(self):
        if self.kind == "unix":
            return self.path
        host = self.host or ""
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"


@dataclasses.dataclass(frozen=True)
class UwsgiConfig:
    """The uWSGI settings of one file; ``options`` keeps every (key, value) in order, repeats too."""

    path: str
    options: Tuple[Tuple[str, str], ...]
    sockets: Tuple[UwsgiAddress, ...] = ()  # socket / uwsgi-socket (uwsgi protocol)
    http_sockets: Tuple[UwsgiAddress, ...] = ()  # http-socket (workers speak HTTP)
    http: Tuple[UwsgiAddress, ...] = ()  # http (uWSGI's HTTP router in front)
    stats: Optional[UwsgiAddress] = None
    stats_http: bool = False
    processes: Optional[int] = None

    @property
    def listen_addresses(self):
        """Every address the master listens on, uwsgi sockets first (the seed's ``socket``)."""
        return self.sockets + self.http_sockets + self.http

    def values(self, key):
        """All values of ``key`` (``_`` and ``-`` spellings are the same key, as in uWSGI)."""
        key = _norm_key(key)
        return [value for name, value in self.options if name == key]


@dataclasses.dataclass(frozen=True)
class UwsgiWorker:
    """One worker as the stats server reports it; ``rss`` in bytes (from /proc when uWSGI says 0)."""

    id: int
    pid: int
    status: str  # idle, busy, cheap, pause, sig…
    requests: int
    rss: int
    accepting: bool


def parse_address(value, where="uWSGI setting"):
    """``host:port``, ``:port``, ``[v6]:port``, ``unix:/path``, ``/path`` or ``@abstract`` → address."""
    text = str(value).strip()
    if text.startswith("unix:"):
        text = text[5:]
        if not text:
            raise GalaxyctlError(f"{where}: empty unix socket path")
        return UwsgiAddress("unix", path=text)
    if text.startswith(("/", ".", "@", "~")) or (":" not in text and "/" in text):
        return UwsgiAddress("unix", path=os.path.expanduser(text))
    host, sep, port = text.rpartition(":")
    if not sep:
        raise GalaxyctlError(f"{where}: expected host:port, :port or a unix socket path, got {text!r}")
    host = host.strip("[]") or None
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not 0 < number < 65536:
        raise GalaxyctlError(f"{where}: invalid port in {text!r}")
    return UwsgiAddress("tcp", host=host, port=number)


def read_uwsgi_config(fname):
    """Read the uWSGI settings of ``fname`` (galaxy.ini ``[uwsgi]`` or galaxy.yml ``uwsgi:``)."""
    try:
        with open(fname, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise GalaxyctlError(f"cannot read {fname}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise GalaxyctlError(f"cannot read {fname}: not UTF-8 text") from None
    if _looks_like_ini(fname, text):
        options = _ini_options(fname, text)
    else:
        options = _yaml_options(fname, text)
    return _build_config(fname, options)


def _looks_like_ini(fname, text):
    ext = os.path.splitext(fname.replace(".sample", ""))[1].lower()
    if ext in (".yml", ".yaml"):
        return False
    if ext in (".ini", ".cfg", ".conf"):
        return True
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";")):
            return line.startswith("[")
    return False


def _norm_key(key):
    return str(key).strip().lower().replace("_", "-")


def _strip_inline_comment(value):
    """Drop `` ;…`` / `` #…`` (a comment must follow whitespace, as in configparser)."""
    for index, char in enumerate(value):
        if char in ";#" and index > 0 and value[index - 1].isspace():
            return value[:index].rstrip()
    return value


def _ini_options(fname, text):
    """The ``[uwsgi]`` lines in order; parsed by hand because uWSGI repeats keys (``socket =``)."""
    options, section, seen = [], None, False
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            if not line.endswith("]") or len(line) < 3:
                raise GalaxyctlError(f"{fname}, line {number}: malformed section header {line!r}")
            section = line[1:-1].strip().lower()
            seen = seen or section == "uwsgi"
            continue
        if section is None:
            raise GalaxyctlError(f"{fname}, line {number}: setting outside any [section]: {line!r}")
        if section != "uwsgi" or raw[:1].isspace():
            continue  # other sections (paste, app:main) are not ours to judge; continuations ignored
        key, sep, value = line.partition("=")
        if not key.strip():
            raise GalaxyctlError(f"{fname}, line {number}: missing option name in {line!r}")
        value = _strip_inline_comment(value.strip()) if sep else "true"
        options.append((_norm_key(_strip_inline_comment(key)), value))
    if not seen:
        raise GalaxyctlError(f"{fname}: no [uwsgi] section")
    return options


def _yaml_options(fname, text):
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise GalaxyctlError(f"{fname}: invalid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise GalaxyctlError(f"{fname}: expected a mapping at the top level")
    section = data.get("uwsgi")
    if section is None:
        raise GalaxyctlError(f"{fname}: no uwsgi: section")
    if not isinstance(section, dict):
        raise GalaxyctlError(f"{fname}: uwsgi: expected a mapping, got {type(section).__name__}")
    options = []
    for key, value in section.items():
        values = value if isinstance(value, list) else [value]
        for item in values:
            if isinstance(item, (dict, list)):
                raise GalaxyctlError(f"{fname}: uwsgi.{key}: expected a string or a list of strings")
            if item is None:
                continue
            if isinstance(item, bool):
                item = "true" if item else "false"
            options.append((_norm_key(key), str(item)))
    return options


def _build_config(fname, options):
    def addresses(*keys):
        found = []
        for key, value in options:
            if key in keys:
                # https = addr,cert,key ; keep the address part only
                found.append(parse_address(value.split(",")[0], f"{fname}: uwsgi {key}"))
        return tuple(found)

    stats = addresses("stats", "stats-server")
    processes = None
    for key, value in options:
        if key in ("processes", "workers"):
            try:
                processes = int(value)
            except ValueError:
                raise GalaxyctlError(f"{fname}: uwsgi {key}: expected an integer, got {value!r}") from None
    stats_http = any(key == "stats-http" and value.strip().lower() not in _FALSE for key, value in options)
    return UwsgiConfig(
        path=fname, options=tuple(options), sockets=addresses("socket", "uwsgi-socket"),
        http_sockets=addresses("http-socket"), http=addresses("http", "https"),
        stats=stats[0] if stats else None, stats_http=stats_http, processes=processes)


def _address_from_args(server, port, what):
    if port is not None and port != "":
        try:
            port = int(port)
        except (TypeError, ValueError):
            raise GalaxyctlError(f"{what}: invalid port {port!r}") from None
        return parse_address(f"{server or ''}:{port}", what)
    if server:
        return parse_address(server, what)
    return None


class UwsgiSocket:
    """The uWSGI socket of a Galaxy config and the PID of the uWSGI master listening on it."""

    def __init__(self, server=None, port=None, timeout=None, fname=None, use_lsof=None):
        self.fname = fname
        self.timeout = timeout  # kept for the seed's signature; the lookup itself is bounded
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
        """``(master_pid, stderr, status)`` as in the seed, but with the master's PID alone.

        ``status`` 0: found (``stderr`` ''); 1: nothing listens (``master_pid`` None, ``stderr``
        says where we looked); 2: the lookup itself failed (``stderr`` says why).  Every address
        (socket, http-socket, http) is tried in that order; the first one with a listener wins.
        """
        try:
            for address in self.addresses:
                if address.kind == "unix":
                    pid = listeners.unix_socket_master_pid(address.path)
                else:
                    pid = listeners.listening_master_pid(address.port, host=address.host,
                                                         use_lsof=self.use_lsof)
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

    def __init__(self, server=None, port=None, timeout=DEFAULT_STATS_TIMEOUT, fname=None, stats_http=None):
        self.timeout = DEFAULT_STATS_TIMEOUT if timeout is None else float(timeout)
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
            result.append(UwsgiWorker(id=int(item.get("id") or 0), pid=pid, status=str(item.get("status", "")),
                                      requests=int(item.get("requests") or 0), rss=rss,
                                      accepting=bool(item.get("accepting"))))
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
            reader = UwsgiStatsServer(timeout=max(deadline.left(), 0.05), stats_http=self.stats_http)
            reader.address = self._address()
            try:
                return reader.workers_accepting()
            except GalaxyctlError:
                return False

        if wait_until(accepting, deadline, interval=0.1, max_interval=1.0, progress=progress):
            return True
        raise GalaxyctlError(f"no uWSGI worker accepting requests after {self.timeout:g}s "
                             f"(stats server {self.address})")

    def get_busy_list(self, fname=None):
        """PIDs of the workers whose status is ``busy`` (serving a request), as the seed returned PIDs.

        A worker with ``accepting == 0`` (loading the app, being respawned or cheaped) is not
        reported here unless its status is ``busy``: see ``workers()`` (``accepting``) and
        ``workers_accepting()`` for that.
        """
        if fname is not None:
            self._address(fname)
        return [worker.pid for worker in self.workers() if worker.status == "busy"]

    # -- the seed's names -----------------------------------------------------------------------

    def GetUwsgiStatsServer(self, fname=None):  # noqa: N802 - seed name
        """Seed API: without ``fname`` the stats dict (truthy); with ``fname``, as the seed README
        shows it, the workers-accepting status (bool) read with that file's stats address."""
        if fname is None:
            return self.get_uwsgi_stats_server()
        return self.workers_accepting(fname)

    GetStatsJson = get_stats_json
    CheckUwsgiWorkers = workers_accepting
    GetBusyList = get_busy_list
