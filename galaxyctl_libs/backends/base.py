"""The seam between galaxyctl and a process manager (supervisord today; systemd next).

A backend turns the services (core.services.Service, plain data) into files (``render`` →
``{path: content}``), gives each service the name the manager knows it by, and controls the
manager (start, stop, signal, ask).  What every backend shares lives here: the process states
(supervisor's names, the vocabulary of status and check) and ``reconcile``, the one step that
writes what changed and removes what is stale.
"""

import os
import sys

from galaxyctl_libs import fsutil
from galaxyctl_libs.core.targets import GRACEFUL_HERDER
from galaxyctl_libs.errors import GalaxyctlError
from galaxyctl_libs.records import Record

HERDER_MODULE = "galaxyctl_libs.backends.herder"
MEMWATCH_MODULE = "galaxyctl_libs.backends.memwatch"
MEMWATCH_PROGRAM = "galaxyctl_memwatch"  # supervisord's name of the memory watcher (memwatch.py)

# process states (supervisor.states.ProcessStates), by name
STOPPED, STARTING, RUNNING, BACKOFF, STOPPING, EXITED, FATAL, UNKNOWN = (
    "STOPPED",
    "STARTING",
    "RUNNING",
    "BACKOFF",
    "STOPPING",
    "EXITED",
    "FATAL",
    "UNKNOWN",
)
UP_STATES = (STARTING, RUNNING, BACKOFF)

# supervisord itself, as a controller's ``survey`` finds it
SUPERVISORD_RUNNING = "RUNNING"  # it answers
SUPERVISORD_DOWN = "DOWN"  # no supervisord process for this state dir
SUPERVISORD_NOT_ANSWERING = "NOT_ANSWERING"  # its process lives but no answer came within the timeout
SUPERVISORD_SHUTTING_DOWN = "SHUTTING_DOWN"  # it answers with a fault: it is on its way out


class Survey(Record):
    """supervisord's state and, when it answers, ``getAllProcessInfo`` keyed by ``group:name``."""

    state: str
    pid: int = None
    processes: dict = None

    @property
    def answering(self):
        return self.processes is not None


class Changes(Record):
    written: tuple
    removed: tuple

    def __bool__(self):
        return bool(self.written or self.removed)


def reconcile(root, managed_dir, files, suffix=".conf"):
    """Write ``files`` whose content changed; remove files ending in ``suffix`` under ``managed_dir``
    that nobody wants any more (and directories left empty).  ``root`` holds them all."""
    fsutil.ensure_private_dir(root)
    fsutil.ensure_private_dir(managed_dir)
    for directory in sorted({os.path.dirname(path) for path in files}):
        fsutil.make_dirs(directory, mode=0o700)
    written = fsutil.write_many_if_changed(files, mode=0o600)
    touched = set()  # directories to fsync once at the end, not once per removed file
    removed = []
    for dirpath, dirnames, filenames in os.walk(managed_dir, topdown=False):
        for filename in filenames:
            path = os.path.join(dirpath, filename)
            if filename.endswith(suffix) and path not in files:
                fsutil.remove_file(path, sync_dir=False)
                removed.append(path)
                touched.add(dirpath)
        if dirpath != managed_dir and fsutil.remove_empty_dir(dirpath, sync_dir=False):
            touched.discard(dirpath)
            touched.add(os.path.dirname(dirpath))
    for directory in sorted(touched):
        fsutil.fsync_dir(directory)
    return Changes(tuple(written), tuple(removed))


def herded_argv(service, pid_dir):
    """What a backend runs for ``service``: its command line, or for a preloaded gunicorn
    (``graceful: herder``) that command line under our herder, which re-execs gunicorn with zero
    downtime on SIGHUP and stays the one process the manager sees.  Its pid file goes in ``pid_dir``
    (the backend's own directory, which the Galaxy user can write)."""
    if service.graceful != GRACEFUL_HERDER:
        return service.argv
    pidfile = os.path.join(pid_dir, f"{service.instance_name}_{service.service_name}.pid")
    herder = (
        sys.executable,
        "-m",
        HERDER_MODULE,
        "--pidfile",
        pidfile,
        "--bind",
        service.bind,
        "--ready-path",
        service.url_prefix + "/api/version",
        "--ready-timeout",
        str(service.ready_timeout or 300),
        "--stop-timeout",
        str(max(1, service.stop_timeout - 5)),
    )
    return herder + ("--",) + tuple(service.argv)


class Backend:
    """The seam: what a process manager gives galaxyctl.  ``update`` and the actions speak only
    through it (and the controller it returns), so a second manager is a second implementation.

    A backend keeps its files, and its record of what it applied, under its own directory.
    """

    name = None  # the gravity ``process_manager`` value it implements

    def paths(self, state_dir, run_dir=None):
        """Where its files live for ``state_dir`` (``run_dir``: the Galaxy user's runtime dir as root)."""
        raise NotImplementedError

    def render(self, paths, instances_services, log_dirs):
        """Its files for ``{instance: services}``, as ``{path: content}`` (pure: nothing is written)."""
        raise NotImplementedError

    def managed_dir(self, paths):
        """The directory whose files ``reconcile`` owns (stale ones there are removed)."""
        raise NotImplementedError

    def target_name(self, service, grouped):
        """The name the manager knows ``service`` by (to start, stop, signal and ask about it)."""
        raise NotImplementedError

    def log_dir(self, instance):
        """Where ``instance``'s services write their logs (None: the manager keeps them, e.g. the journal)."""
        return instance.log_dir

    def log_file(self, service, log_dir, grouped):
        raise NotImplementedError

    def controller(self, paths, run_as=(None, None), **kwargs):
        """The object that starts, stops, signals and asks the manager (supervisor.client.SupervisorClient)."""
        raise NotImplementedError


def shown(value):
    """``value`` for a one-line message: quoted, escaped, and cut short if long."""
    return repr(value) if len(value) <= 80 else repr(value[:77]) + "..."


def checked_text(value, what, file_kind, forbidden="\0", forbidden_text="a NUL character"):
    """``value`` as a string a ``file_kind`` (UTF-8 text) can hold; else one refusal line."""
    value = str(value)
    if any(char in value for char in forbidden):
        raise GalaxyctlError(f"{what} {shown(value)}: {file_kind} cannot carry {forbidden_text}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise GalaxyctlError(f"{what} {shown(value)}: not valid UTF-8, the encoding of {file_kind}") from None
    return value
