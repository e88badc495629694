"""Memory limits under supervisord: gravity's ``memory_limit``/``memory_high`` (GB) and what the
watcher (backends/memwatch.py) does when a service goes over them.  Pure: no process is looked at.

systemd applies the two keys itself (MemoryMax=, MemoryHigh=); supervisord has no such setting, so
for it galaxyctl runs a small watcher.  What it does, by the service's kind (``decide``):

==============================  =============================  ===================================
kind (service types)            over ``memory_high``           over ``memory_limit``
==============================  =============================  ===================================
web (gunicorn, reports)         recycle the largest worker     restart the service
                                (SIGTERM: it finishes its
                                requests, the master forks
                                a new one)
celery, celery-beat             restart (warm shutdown:        restart
                                running tasks finish)
job handler (standalone)        restart while it runs no job   restart
                                process, else report
others (uwsgi, tusd,            report (logged, in status)     restart
gx-it-proxy)
==============================  =============================  ===================================

Sizes are a service's whole process tree, RSS summed (what ``status`` shows, in MiB and GiB); one GB is 2**30
bytes, as systemd reads gravity's ``NG``.
"""

from galaxyctl_libs.core import kinds
from galaxyctl_libs.errors import GalaxyctlError
from galaxyctl_libs.records import Record

GB = 2**30
MB = 2**20

# the service kinds, as far as memory goes: each kind's ``memory`` (core/kinds.py)
WEB, CELERY, HANDLER, OTHER = kinds.MEMORY_WEB, kinds.MEMORY_CELERY, kinds.MEMORY_HANDLER, kinds.MEMORY_OTHER

# what the watcher does
RESTART = "restart"  # supervisord stops the service (its stop signal, stop_timeout, then KILL) and starts it
RECYCLE = "recycle"  # SIGTERM to one gunicorn worker: gunicorn's master replaces it, the master stays
REPORT = "report"  # logged (and shown by status); nothing is restarted

MEMORY_LIMIT, MEMORY_HIGH = "memory_limit", "memory_high"
# core.schema.GIGABYTES's highest (not imported: status stays light); checked again here, for a
# record saved before the config refused more (NaN, infinity: int() of them raises)
MAX_GB = 1024


def limit_bytes(gigabytes, what="memory size"):
    """A gravity memory setting (GB, a number) in bytes; 0 for none (unset or 0)."""
    if gigabytes is None:
        return 0
    if isinstance(gigabytes, bool) or not isinstance(gigabytes, (int, float)) or not 0 <= gigabytes <= MAX_GB:
        raise GalaxyctlError(f"{what} {gigabytes!r}: a memory size is a positive number of GB, at most {MAX_GB}")
    return int(round(gigabytes * GB))


def kind_of(service_type):
    """What the watcher does for ``service_type`` (its kind's ``memory``)."""
    return kinds.kind_of(service_type).memory


def size_text(size):
    """``1.5 GiB``, ``612 MiB``: GiB from 1 GiB on, else whole MiB (base 2, as systemd's G and as
    ``workers`` says; gravity's memory settings are in these units too, though it calls them GB)."""
    if size >= GB:
        return f"{size / GB:.2f}".rstrip("0").rstrip(".") + " GiB"
    return f"{size // MB} MiB"


class Watch(Record):
    """One service the watcher watches: its supervisord name, kind, and limits in bytes (0: none)."""

    program: str
    kind: str
    limit: int = 0
    high: int = 0

    def argv(self):
        return ("--watch", self.program, self.kind, str(self.limit), str(self.high))


def watches(targets):
    """A Watch for each ``(service, program)`` with a limit set; the rest are not watched."""
    found = []
    for service, program in targets:
        what = f"{service.instance_name}/{service.service_name}"
        limit = limit_bytes(service.memory_limit, f"{what}: memory_limit")
        high = limit_bytes(service.memory_high, f"{what}: memory_high")
        if limit or high:
            found.append(Watch(program, kind_of(service.service_type), limit, high))
    return found


def parse_watch(values):
    """A Watch from the four words after ``--watch``; ValueError when they are not one."""
    program, kind, limit, high = values
    if kind not in kinds.MEMORY_BEHAVIOURS:
        raise ValueError(f"unknown kind {kind!r}")
    return Watch(program, kind, int(limit), int(high))


class Decision(Record):
    action: str  # RESTART, RECYCLE or REPORT
    level: str  # MEMORY_LIMIT or MEMORY_HIGH: which one was passed
    threshold: int  # its value in bytes
    pid: int = None  # RECYCLE: the worker
    note: str = ""  # why, for the log line


def over(watch, rss):
    """(level, threshold) of the highest limit ``rss`` is over, else None."""
    if watch.limit and rss > watch.limit:
        return MEMORY_LIMIT, watch.limit
    if watch.high and rss > watch.high:
        return MEMORY_HIGH, watch.high
    return None


def excess(service, rss):
    """``over memory_high 1 GiB`` when ``rss`` passes one of ``service``'s limits (status), else ''."""
    try:
        limits = Watch("", OTHER, limit_bytes(service.memory_limit), limit_bytes(service.memory_high))
    except GalaxyctlError:  # a record from before the check: no verdict rather than no status
        return ""
    passed = over(limits, rss)
    return f"over {passed[0]} {size_text(passed[1])}" if passed else ""


def decide(watch, rss, workers=(), jobs=0):
    """What to do about a service whose process tree uses ``rss`` bytes; None when under its limits.

    ``workers``: ((pid, rss), ...) of a gunicorn master's workers; ``jobs``: how many child
    processes a job handler has (a job the local runner runs is one)."""
    passed = over(watch, rss)
    if passed is None:
        return None
    level, threshold = passed
    if level == MEMORY_LIMIT:
        return Decision(RESTART, level, threshold)
    if watch.kind == WEB:
        if not workers:
            return Decision(REPORT, level, threshold, note="no worker to recycle")
        pid, size = max(workers, key=lambda worker: (worker[1], -worker[0]))
        return Decision(RECYCLE, level, threshold, pid, f"worker {pid} uses {size_text(size)}")
    if watch.kind == CELERY:
        return Decision(RESTART, level, threshold, note="warm shutdown: running tasks finish first")
    if watch.kind == HANDLER:
        if jobs:
            return Decision(REPORT, level, threshold, note=f"{jobs} job process(es) running; restarted once idle")
        return Decision(RESTART, level, threshold, note="no job process running")
    return Decision(REPORT, level, threshold, note="this service is not restarted below memory_limit")
