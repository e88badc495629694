"""Which process is *listening* on a TCP port or a unix socket — never a client connected to it.

Pre-forking servers (uWSGI, gunicorn) bind the socket in the master and the workers inherit it,
so every one of them holds a LISTEN socket; ``listening_master_pid`` keeps the one whose parent
is not itself a holder.  ``lsof`` is asked when installed (it sees through namespaces and is what
admins trust); otherwise, or when it fails, the kernel tables under ``/proc`` are read directly.
"""

import ipaddress
import os
import re
import socket

from galaxyctl_libs.errors import GalaxyctlError
from galaxyctl_libs.probes.procfs import parent_pid

__all__ = [
    "listening_pids",
    "listening_master_pid",
    "unix_socket_listening_pids",
    "unix_socket_master_pid",
    "master_pid",
    "established_socket_inodes",
    "socket_inodes",
    "parent_pid",
]

LSOF_TIMEOUT = 10  # seconds; lsof can hang on a stale NFS mount, we never wait longer
PROC = "/proc"
_TCP_LISTEN = "0A"
_TCP_ESTABLISHED = "01"
_UNIX_ACCEPTCON = 0x00010000  # __SO_ACCEPTCON in /proc/net/unix "Flags": a listening socket
_SOCKET_LINK = re.compile(r"^socket:\[(\d+)\]$")


def listening_pids(port, host=None, use_lsof=None):
    """Every PID holding a LISTEN TCP socket on ``port`` (master and inheriting workers alike).

    ``host`` restricts to sockets bound to that address or to the wildcard (0.0.0.0 / ::).
    ``use_lsof``: None picks lsof when it is on PATH, False forces /proc, True requires lsof.
    """
    port = _check_port(port)
    hosts = _resolve(host)
    lsof = _lsof_path(use_lsof)
    if lsof:
        found = _lsof_tcp(lsof, port, hosts)
        if found is not None:
            return found
    return _pids_holding(_proc_tcp_inodes(port, hosts))


def listening_master_pid(port, host=None, use_lsof=None):
    """The PID of the process that owns the listening socket (the master), or None."""
    return master_pid(listening_pids(port, host=host, use_lsof=use_lsof))


def unix_socket_listening_pids(path):
    """Every PID holding a listening unix socket bound to ``path`` (from /proc/net/unix)."""
    wanted = {path}
    if not path.startswith("@"):
        wanted.add(os.path.abspath(path))
    inodes = set()
    for fields in _proc_table(os.path.join(PROC, "net", "unix")):
        if len(fields) < 8 or fields[7] not in wanted:
            continue
        try:
            flags = int(fields[3], 16)
        except ValueError:
            continue
        if flags & _UNIX_ACCEPTCON:
            inodes.add(fields[6])
    return _pids_holding(inodes)


def unix_socket_master_pid(path):
    """The PID of the process that owns the unix socket ``path`` (the master), or None."""
    return master_pid(unix_socket_listening_pids(path))


def established_socket_inodes(port):
    """Inodes of ESTABLISHED TCP sockets whose *local* port is ``port``: connections a server accepted."""
    return frozenset(_proc_tcp_inodes(_check_port(port), None, state=_TCP_ESTABLISHED))


def socket_inodes(pid):
    """Socket inodes among ``pid``'s open file descriptors (empty when it vanished or is not ours)."""
    inodes = set()
    fd_dir = os.path.join(PROC, str(pid), "fd")
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return frozenset()
    for name in names:
        try:
            match = _SOCKET_LINK.match(os.readlink(os.path.join(fd_dir, name)))
        except OSError:
            continue
        if match:
            inodes.add(match.group(1))
    return frozenset(inodes)


def master_pid(pids):
    """Of a set of holders, the one whose parent is not a holder; the lowest if several are."""
    pids = frozenset(pids)
    roots = [pid for pid in pids if parent_pid(pid) not in pids]
    if roots:
        return min(roots)
    return min(pids) if pids else None


# -- lsof ---------------------------------------------------------------------------------------


def _lsof_path(use_lsof):
    if use_lsof is False:
        return None
    import shutil  # here and below: `check` reads /proc for workers and never runs lsof

    path = shutil.which("lsof")
    if use_lsof and not path:
        raise GalaxyctlError("lsof is not installed (or not on PATH)")
    return path


def _lsof_tcp(lsof, port, hosts):
    """PIDs from lsof, or None when lsof could not answer (then /proc is read instead)."""
    argv = [lsof, "-nP", "-iTCP:%d" % port, "-sTCP:LISTEN"]
    argv += ["-t"] if hosts is None else ["-F", "pn"]
    import subprocess

    try:
        proc = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            timeout=LSOF_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    out = proc.stdout.decode("ascii", "replace")
    if proc.returncode != 0:
        # lsof exits 1 both for "nothing found" and for real failures; only silence means the former
        return frozenset() if not out.strip() and not proc.stderr.strip() else None
    if hosts is None:
        return frozenset(int(tok) for tok in out.split() if tok.isdigit())
    pids, pid = set(), None
    for line in out.splitlines():
        if line.startswith("p") and line[1:].isdigit():
            pid = int(line[1:])
        elif line.startswith("n") and pid is not None:
            addr = line[1:].rsplit(":", 1)[0].strip("[]")
            if _host_matches(None if addr == "*" else addr, hosts):
                pids.add(pid)
    return frozenset(pids)


# -- /proc --------------------------------------------------------------------------------------


def _proc_tcp_inodes(port, hosts, state=_TCP_LISTEN):
    inodes = set()
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        path = os.path.join(PROC, "net", name)
        if family == socket.AF_INET6 and not os.path.exists(path):
            continue  # kernel without IPv6
        for fields in _proc_table(path):
            if len(fields) < 10 or fields[3] != state:
                continue
            addr_hex, _, port_hex = fields[1].partition(":")
            try:
                if int(port_hex, 16) != port:
                    continue
                addr = _decode_addr(addr_hex, family)
            except ValueError:
                continue
            if _host_matches(addr, hosts):
                inodes.add(fields[9])
    return inodes


def _proc_table(path):
    """Rows of a /proc/net table, split on whitespace, header dropped."""
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            lines = fh.read().splitlines()[1:]
    except OSError as exc:
        raise GalaxyctlError(f"cannot read {path}: {exc.strerror} (and lsof is not available)") from None
    return [line.split() for line in lines]


def _decode_addr(addr_hex, family):
    """Kernel hex address → text; each 32-bit word is in host (little-endian) byte order."""
    raw = bytes.fromhex(addr_hex)
    raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    text = socket.inet_ntop(family, raw)
    return None if text in ("0.0.0.0", "::") else text


def _pids_holding(inodes):
    """Scan /proc/*/fd for ``socket:[INODE]`` links; PIDs that vanish or deny access are skipped."""
    if not inodes:
        return frozenset()
    inodes = set(inodes)
    pids = set()
    try:
        entries = os.listdir(PROC)
    except OSError as exc:
        raise GalaxyctlError(f"cannot list {PROC}: {exc.strerror}") from None
    for entry in entries:
        if not entry.isdigit():
            continue
        fd_dir = os.path.join(PROC, entry, "fd")
        try:
            fds = os.listdir(fd_dir)
        except OSError:  # vanished, or not ours to look at
            continue
        for fd in fds:
            try:
                match = _SOCKET_LINK.match(os.readlink(os.path.join(fd_dir, fd)))
            except OSError:
                continue
            if match and match.group(1) in inodes:
                pids.add(int(entry))
                break
    return frozenset(pids)


# -- addresses ----------------------------------------------------------------------------------


def _check_port(port):
    try:
        port = int(port)
    except (TypeError, ValueError):
        raise GalaxyctlError(f"invalid TCP port: {port!r}") from None
    if not 0 < port < 65536:
        raise GalaxyctlError(f"invalid TCP port: {port}")
    return port


def _resolve(host):
    """None (any address) or the set of normalised IP texts ``host`` stands for."""
    if host in (None, "", "*", "0.0.0.0", "::", "[::]"):
        return None
    host = host.strip("[]")
    try:
        return {str(ipaddress.ip_address(host))}
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise GalaxyctlError(f"cannot resolve host {host!r}: {exc}") from None
    return {str(ipaddress.ip_address(info[4][0].split("%")[0])) for info in infos}


def _host_matches(addr, hosts):
    """A wildcard listener (addr None) accepts any host; IPv4-mapped IPv6 counts as IPv4."""
    if hosts is None or addr is None:
        return True
    try:
        ip = ipaddress.ip_address(addr.split("%")[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return str(ip) in hosts or (mapped is not None and str(mapped) in hosts)
