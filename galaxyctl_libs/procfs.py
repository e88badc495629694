"""Reading processes from /proc: parent, children, state, command line, memory and CPU.

Every reader tolerates a process that exits while it is read (it returns None, empty or 0): the
processes we look at are alive one moment and gone the next, and that is never an error.
"""

import os

PROC = "/proc"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def stat_fields(pid):
    """/proc/PID/stat fields after the command name: state is [0], ppid [1], utime [11], stime [12]."""
    try:
        with open(f"{PROC}/{pid}/stat", encoding="utf-8", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def parent_pid(pid):
    fields = stat_fields(pid)
    return int(fields[1]) if fields else None


def alive(pid):
    """Running (a zombie has exited, it only waits to be reaped)."""
    fields = stat_fields(pid) if pid else None
    return fields is not None and fields[0] not in ("Z", "X")


def children_map():
    """{parent PID: [child PIDs]} for every process."""
    tree = {}
    for entry in os.listdir(PROC):
        if entry.isdigit():
            fields = stat_fields(entry)
            if fields:
                tree.setdefault(int(fields[1]), []).append(int(entry))
    return tree


def children(pid):
    return sorted(children_map().get(pid, []))


def descendants(pid):
    tree, found, todo = children_map(), [], [pid]
    while todo:
        kids = tree.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def cmdline(pid):
    try:
        with open(f"{PROC}/{pid}/cmdline", "rb") as handle:
            return [part.decode("utf-8", "replace") for part in handle.read().split(b"\0") if part]
    except OSError:
        return []


def rss_bytes(pid):
    """Resident memory (VmRSS), 0 when unknown."""
    try:
        with open(f"{PROC}/{pid}/status", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def cpu_seconds(pid):
    fields = stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS if fields else 0.0
