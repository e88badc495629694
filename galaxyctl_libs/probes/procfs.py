"""Reading processes from /proc: parent, children, state, command line, memory, CPU, and environment
(which finds the processes of a state dir by their marker).

Every reader tolerates a process that exits while it is read (it returns None, empty or 0): the
processes we look at are alive one moment and gone the next, and that is never an error.
"""

import os

from galaxyctl_libs.records import Record

PROC = "/proc"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def stat_fields(pid):
    """/proc/PID/stat fields after the command name: state is [0], ppid [1], utime [11], stime [12]."""
    try:
        with open(f"{PROC}/{pid}/stat", encoding="utf-8", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def cgroup(pid):
    """/proc/PID/cgroup: the process's cgroup per hierarchy ("" when it is gone)."""
    try:
        with open(f"{PROC}/{pid}/cgroup", encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return ""


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


_KERNEL_LISTS_CHILDREN = []  # [bool] once known: does /proc/PID/task/TID/children exist here?


def _kernel_lists_children():
    if not _KERNEL_LISTS_CHILDREN:
        _KERNEL_LISTS_CHILDREN.append(os.path.exists(f"{PROC}/self/task/{os.getpid()}/children"))
    return _KERNEL_LISTS_CHILDREN[0]


def _direct_children(pid):
    """The children of ``pid`` from the kernel's lists of each of its threads: a few small reads
    where children_map reads every process's stat (a Galaxy host runs hundreds)."""
    try:
        tids = os.listdir(f"{PROC}/{pid}/task")
    except OSError:
        return []
    kids = []
    for tid in tids:
        try:
            with open(f"{PROC}/{pid}/task/{tid}/children", "rb") as handle:  # int() reads b"123" too
                kids += [int(p) for p in handle.read().split()]
        except (OSError, ValueError):
            continue  # that thread ended meanwhile
    return kids


def _children_of(tree):
    """A children lookup: ``tree`` (a children_map) when given, else the kernel's lists when it
    keeps them, else one children_map made now."""
    if tree is None and _kernel_lists_children():
        return _direct_children
    tree = children_map() if tree is None else tree
    return lambda pid: tree.get(pid, [])


def children(pid):
    return sorted(_children_of(None)(pid))


def descendants(pid, tree=None):
    kids_of, found, todo = _children_of(tree), [], [pid]
    while todo:
        kids = kids_of(todo.pop())
        found += kids
        todo += kids
    return found


def cmdline(pid):
    try:
        with open(f"{PROC}/{pid}/cmdline", "rb") as handle:
            return [part.decode("utf-8", "replace") for part in handle.read().split(b"\0") if part]
    except OSError:
        return []


PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes(pid):
    """Resident memory (VmRSS, which is statm's second field in pages: a short read, where status
    is 1.5 KB of text to search; 2-5 times cheaper, for every process of status), 0 when unknown."""
    try:
        with open(f"{PROC}/{pid}/statm", "rb") as handle:
            return int(handle.read().split()[1]) * PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return 0


def tree_rss(pid, tree=None):
    """RSS of ``pid`` and all its descendants, summed (pages shared between them count once per
    process).  ``tree``: a children_map() to reuse when asking about many processes."""
    return sum(rss_bytes(current) for current in [pid] + descendants(pid, tree))


def uids(pid):
    """The set of a process's real, effective, saved and file-system uids (empty when gone)."""
    try:
        with open(f"{PROC}/{pid}/status", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("Uid:"):
                    return {int(uid) for uid in line.split()[1:]}
    except (OSError, ValueError):
        pass
    return set()


_BOOT_TIME = []  # [seconds since the epoch] once read from /proc/stat


def started_at(pid):
    """When the process started, in seconds since the epoch (None when gone)."""
    fields = stat_fields(pid)
    if fields is None:
        return None
    if not _BOOT_TIME:
        try:
            with open(f"{PROC}/stat", encoding="ascii", errors="replace") as handle:
                _BOOT_TIME.append(next(int(line.split()[1]) for line in handle if line.startswith("btime ")))
        except (OSError, StopIteration, ValueError, IndexError):
            return None
    return _BOOT_TIME[0] + int(fields[19]) / CLOCK_TICKS


def cpu_seconds(pid):
    fields = stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS if fields else 0.0


# ---------------------------------------------------------------- processes of a state dir

# Every service galaxyctl starts carries these in its environment (services._common), and every
# process it forks inherits them: they find a state dir's processes when supervisord cannot be asked
# (it died and left them running, or it hangs), where /proc's parent links no longer lead anywhere.
STATE_ID_ENV = "GALAXYCTL_STATE_ID"
SERVICE_ENV = "GALAXYCTL_SERVICE"
MAX_ENVIRON_BYTES = 1 << 21  # the kernel's usual limit for argv + environment (ARG_MAX)


def state_id(state_dir):
    """The marker value of a state dir: 12 hex digits of the SHA-1 of its absolute path."""
    from galaxyctl_libs.paths import StatePaths

    return StatePaths.of(state_dir).state_id


def service_key(instance_name, service_name):
    """The GALAXYCTL_SERVICE value of one service."""
    return f"{instance_name}/{service_name}"


def environ(pid, limit=MAX_ENVIRON_BYTES):
    """``{name: value}`` of a process's environment (bytes), None when unreadable or gone."""
    try:
        with open(f"{PROC}/{pid}/environ", "rb") as handle:
            data = handle.read(limit)
    except OSError:
        return None
    found = {}
    for entry in data.split(b"\0"):
        name, sep, value = entry.partition(b"=")
        if sep:
            found.setdefault(name, value)
    return found


class Marked(Record):
    """A process of a state dir: found by its marker, or read from supervisord's process tree."""

    pid: int
    pgid: int  # its process group (a service under supervisord leads its own)
    ppid: int
    service: str  # GALAXYCTL_SERVICE: "instance/service", "" when absent
    command: str
    started: int = None  # start time (clock ticks after boot): with the PID, who it is

    def describe(self):
        """'PID N (service)', the service without the default instance's name; else its command."""
        name = self.service[len("_default_/") :] if self.service.startswith("_default_/") else self.service
        return f"PID {self.pid} ({name or self.command[:80] or '?'})"


def snapshot(pid, service=""):
    """A Marked record of any live process (e.g. supervisord's children, read before it is killed)."""
    fields = stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return Marked(int(pid), int(fields[2]), int(fields[1]), service, " ".join(cmdline(pid)), int(fields[19]))


def same_process(marked):
    """Is ``marked`` still alive, and still the process it was (not a new one with its PID)?"""
    fields = stat_fields(marked.pid)
    return fields is not None and fields[0] not in ("Z", "X") and int(fields[19]) == marked.started


def marked_processes(marker, exclude=()):
    """Live processes whose environment carries ``GALAXYCTL_STATE_ID=marker``, by PID.

    Never this process nor its ancestors (a galaxyctl run from a service's shell must not end
    itself), nor ``exclude`` (supervisord); unreadable environments are skipped.
    """
    skip = set(exclude)
    pid = os.getpid()
    while pid and pid not in skip:
        skip.add(pid)
        pid = parent_pid(pid)
    wanted = marker.encode()
    found = []
    for entry in os.listdir(PROC):
        if not entry.isdigit() or int(entry) in skip:
            continue
        env = environ(entry)
        if not env or env.get(STATE_ID_ENV.encode()) != wanted:
            continue
        found_one = snapshot(entry, env.get(SERVICE_ENV.encode(), b"").decode("utf-8", "replace"))
        if found_one is not None:
            found.append(found_one)
    return sorted(found, key=lambda m: m.pid)


def topmost(marked):
    """Of marked processes, those whose parent is not one of them (a service's main process)."""
    pids = {m.pid for m in marked}
    return [m for m in marked if m.ppid not in pids]
