"""Web workers, busy or idle: gunicorn's from /proc, uWSGI's from its stats server.

A gunicorn worker is busy when it holds an ESTABLISHED connection accepted on the bind port: the
listening socket is shared by all workers, but an accepted connection lives only in the worker
that accepted it, so matching socket inodes tells who is serving whom right now.
"""

from galaxyctl_libs.probes import listeners
from galaxyctl_libs.probes.procfs import alive, children, cmdline, cpu_seconds, rss_bytes
from galaxyctl_libs.records import Record

# our herder's module, as a current and an older galaxyctl (still running until the next update) start it
HERDER_MODULES = frozenset(("galaxyctl_libs.backends.herder", "galaxyctl_libs.herder"))


class WorkerInfo(Record):
    pid: int
    status: str  # "busy" / "idle" (uWSGI may also report "cheap", "pause", "sig"…)
    connections: int  # client connections being served now (gunicorn); None for uWSGI
    requests: int  # requests served so far (uWSGI); None for gunicorn
    rss_bytes: int
    cpu_seconds: float
    server: str  # "gunicorn" or "uwsgi"


def gunicorn_master(pid):
    """The gunicorn master under a supervised PID: the PID itself, or the current one under our herder."""
    argv = cmdline(pid)
    if not HERDER_MODULES.intersection(argv):
        return pid
    masters = [child for child in children(pid) if alive(child)]
    return masters[-1] if masters else None


def gunicorn_workers(master_pid, port):
    """Each worker of a gunicorn master, with the client connections it is serving now."""
    accepted = listeners.established_socket_inodes(port) if port else frozenset()
    workers = []
    for pid in children(master_pid):
        serving = len(listeners.socket_inodes(pid) & accepted)
        workers.append(
            WorkerInfo(
                pid=pid,
                status="busy" if serving else "idle",
                connections=serving,
                requests=None,
                rss_bytes=rss_bytes(pid),
                cpu_seconds=cpu_seconds(pid),
                server="gunicorn",
            )
        )
    return tuple(workers)
