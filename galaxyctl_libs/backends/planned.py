"""What galaxyctl itself started, restarted or reloaded, and when: ``STATE/planned.json``.

``check`` tells a planned (re)start from one it did not do (a crash that supervisord or systemd
restarted) by comparing a process's start time with this record, and gives a service that galaxyctl
just started its start timeout before a slow start is a problem.  One entry per program (the latest
action), at most ``MAX_ENTRIES``; written whole and atomically under the operation lock; read as a
regular file only (never through a symbolic link), at most ``MAX_BYTES``.  The state dir is the
running user's own (rootpolicy rule 1: root's state dir is root's alone), so nothing the Galaxy
user can write steers it.
"""

import os
import time

from galaxyctl_libs import fsutil, smalljson
from galaxyctl_libs.errors import GalaxyctlError
from galaxyctl_libs.paths import PLANNED_FILE, StatePaths
from galaxyctl_libs.records import Record

PLANNED_NAME = PLANNED_FILE
MAX_BYTES = 1 << 20
MAX_ENTRIES = 2000
STARTED_SLACK = 2.0  # seconds between galaxyctl's action and the process's start time (supervisor: whole seconds)


class Planned(Record):
    """The last thing galaxyctl did to one program."""

    action: str  # start, restart, graceful, update
    at: float  # when (time.time())
    grace: float = 0  # seconds after ``at`` during which starting (not yet answering) is expected
    pid: int = 0  # the process it left running, when known

    def explains(self, started_at, pid=None):
        """Is the process now running (``pid``, started at ``started_at``, wall clock) the one this
        action left running?  By PID when both are known, else by its start time."""
        if self.pid and pid:
            return pid == self.pid
        return started_at <= self.at + STARTED_SLACK

    def in_grace(self, now=None):
        return (time.time() if now is None else now) < self.at + self.grace


def path_of(state_dir):
    return StatePaths.of(state_dir).planned


def load(state_dir):
    """``{program: Planned}``; empty when there is no record or it is damaged, too big or not a
    regular file (a record is advice: losing it only makes ``check`` less forgiving)."""
    try:
        data = fsutil.read_bytes(path_of(state_dir), MAX_BYTES, follow_symlinks=False)
    except GalaxyctlError:
        return {}
    if not data:
        return {}
    try:
        raw = smalljson.loads(data.decode("utf-8"))
        return {
            str(program): Planned(
                str(entry["action"]), float(entry["at"]), float(entry.get("grace", 0)), int(entry.get("pid") or 0)
            )
            for program, entry in raw["programs"].items()
        }
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):  # UnicodeDecodeError is a ValueError
        return {}


def record(state_dir, entries, action):
    """Note that galaxyctl ``action``-ed programs: ``entries`` are ``(program, at, grace, pid)``
    (``at``: time.time() when it acted; ``pid``: the process it left running, or 0).  The caller
    holds the operation lock."""
    import json  # here: status only reads (smalljson)

    entries = list(entries)
    if not entries:
        return
    known = load(state_dir)
    for program, at, grace, pid in entries:
        known.pop(program, None)  # re-inserted last: the newest are kept when trimming
        known[program] = Planned(action, float(at), float(grace or 0), int(pid or 0))
    newest = sorted(known.items(), key=lambda item: item[1].at)[-MAX_ENTRIES:]
    body = {
        "programs": {
            program: {"action": p.action, "at": round(p.at, 3), "grace": round(p.grace, 1), "pid": p.pid}
            for program, p in newest
        }
    }
    path = path_of(state_dir)
    fsutil.ensure_private_dir(os.path.dirname(path))
    fsutil.atomic_write(path, json.dumps(body, sort_keys=True) + "\n")
