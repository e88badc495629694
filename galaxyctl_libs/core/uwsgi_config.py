"""uWSGI's settings for galaxyctl: the ``[uwsgi]`` section of ``galaxy.ini`` or ``uwsgi:`` of galaxy.yml.

Where the master listens and where its stats server is: what ``app_server: uwsgi`` runs and what
the Laniakea uWSGI names (compat/uwsgi.py) ask.
"""

import dataclasses
import os
from typing import Optional, Tuple

import yaml

from galaxyctl_libs import fsutil
from galaxyctl_libs.errors import GalaxyctlError

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
        """Every address the master listens on, uwsgi sockets first (Laniakea's ``socket``)."""
        return self.sockets + self.http_sockets + self.http

    def values(self, key):
        """All values of ``key`` (``_`` and ``-`` spellings are the same key, as in uWSGI)."""
        key = _norm_key(key)
        return [value for name, value in self.options if name == key]


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


CONFIG_LIMIT = 4 << 20  # a Galaxy config is kilobytes; more is a mistake or a trap


def read_uwsgi_config(fname):
    """Read the uWSGI settings of ``fname`` (galaxy.ini ``[uwsgi]`` or galaxy.yml ``uwsgi:``)."""
    text = fsutil.read_text(fname, CONFIG_LIMIT)  # bounded, and a FIFO in its place cannot hang us
    if text is None:
        raise GalaxyctlError(f"cannot read {fname}: No such file or directory")
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
        path=fname,
        options=tuple(options),
        sockets=addresses("socket", "uwsgi-socket"),
        http_sockets=addresses("http-socket"),
        http=addresses("http", "https"),
        stats=stats[0] if stats else None,
        stats_http=stats_http,
        processes=processes,
    )


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
