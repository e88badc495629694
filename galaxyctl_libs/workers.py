"""Web workers, busy or idle: gunicorn's from /proc, uWSGI's from its stats server.

A gunicorn worker is busy when it holds an ESTABLISHED connection accepted on the bind port: the
listening socket is shared by all workers, but an accepted connection lives only in the worker
that accepted it, so matching socket inodes tells who is serving whom right now.
"""

import os
from dataclasses import dataclass

from galaxyctl_libs import listeners

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class WorkerInfo:
    pid: int
    status: str  # "busy" / "idle" (uWSGI may also report "cheap", "pause", "sig"…)
    connections: int  # client connections being served now (gunicorn); None for uWSGI
    requests: int  # requests served so far (uWSGI); None for gunicorn
    rss_bytes: int
    cpu_seconds: float
    server: str  # "gunicorn" or "uwsgi"


def children(pid):
    """Direct children of ``pid`` from /proc (PIDs that vanish while reading are skipped)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat_fields(int(entry))
            if stat and int(stat[1]) == pid:
                found.append(int(entry))
    return sorted(found)


def _stat_fields(pid):
    """/proc/PID/stat fields after the command name (state is [0], ppid [1], utime [11], stime [12])."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def rss_bytes(pid):
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def cpu_seconds(pid):
    stat = _stat_fields(pid)
    if not stat:
        return 0.0
    return (int(stat[11]) + int(stat[12])) / CLOCK_TICKS


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return [part.decode("utf-8", "replace") for part in handle.read().split(b"\0") if part]
    except OSError:
        return []


def gunicorn_master(pid):
    """The gunicorn master under a supervised PID: the PID itself, or the current one under our herder."""
    argv = cmdline(pid)
    if "galaxyctl_libs.herder" not in argv:
        return pid
    masters = [child for child in children(pid) if _stat_fields(child) and _stat_fields(child)[0] != "Z"]
    return masters[-1] if masters else None


def gunicorn_workers(master_pid, port):
    """Each worker of a gunicorn master, with the client connections it is serving now."""
    accepted = listeners.established_socket_inodes(port) if port else frozenset()
    workers = []
    for pid in children(master_pid):
        serving = len(listeners.socket_inodes(pid) & accepted)
        workers.append(WorkerInfo(
            pid=pid, status="busy" if serving else "idle", connections=serving, requests=None,
            rss_bytes=rss_bytes(pid), cpu_seconds=cpu_seconds(pid), server="gunicorn",
        ))
    return tuple(workers)


def uwsgi_workers(config_path, timeout=5.0):
    """Each uWSGI worker from the stats server named in the config."""
    from galaxyctl_libs.uwsgi import UwsgiStatsServer

    stats = UwsgiStatsServer(timeout=timeout, fname=config_path)
    return tuple(
        WorkerInfo(pid=w.pid, status=w.status, connections=None, requests=w.requests,
                   rss_bytes=w.rss or rss_bytes(w.pid), cpu_seconds=cpu_seconds(w.pid), server="uwsgi")
        for w in stats.workers()
    )
