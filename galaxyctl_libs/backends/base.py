"""The seam between galaxyctl and a process manager (supervisord or systemd).

A backend turns the services (core.services.Service, plain data) into files (``render`` →
``{path: content}``), gives each service the name the manager knows it by, and hands out a
controller that drives the manager (start, stop, signal, ask).  What every backend shares lives
here: the contract (``Backend``, ``Controller``, the factory ``client_for``), the process states
(supervisor's names, the vocabulary of status and check), the manager's own states, and
``reconcile``, the one step that writes what changed and removes what is stale.
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
DEAD_STATES = (FATAL, EXITED, STOPPED)  # nothing runs: it died, gave up or was never started


def state_reason(info):
    """Why a process is FATAL, BACKOFF or EXITED, in the manager's own words ('' for other states):
    supervisord's spawn error or description ("Exited too quickly (process log may have details)"),
    an exit status, or systemd's ActiveState/SubState."""
    state = info.get("statename")
    if state in (FATAL, BACKOFF):
        return info.get("spawnerr") or info.get("description") or ""
    if state == EXITED:
        status = info.get("exitstatus")
        return f"exit status {status}" if status is not None else info.get("description") or ""
    return ""


# the process manager itself, as a controller's ``survey`` finds it
MANAGER_RUNNING = "RUNNING"  # it answers
MANAGER_DOWN = "DOWN"  # not running for this state dir (no supervisord; systemd cannot be asked)
MANAGER_NOT_ANSWERING = "NOT_ANSWERING"  # it lives but no answer came within the timeout
MANAGER_SHUTTING_DOWN = "SHUTTING_DOWN"  # it answers with a fault: it is on its way out (supervisord)

CONTROL_TIMEOUT = 10  # seconds for one call from stop/shutdown: a healthy manager answers in milliseconds


DEFAULT_INSTANCE = "_default_"  # gravity's instance name when a config sets none


def instances_grouped(instance_names):
    """gravity 1.x's rule for names: they carry the instance's name (supervisord's ``main:celery``,
    systemd's ``galaxy-main-celery``) when a state dir serves several instances, or one not named
    ``_default_``."""
    names = list(instance_names)
    return len(names) > 1 or any(name != DEFAULT_INSTANCE for name in names)


class Refusal(Exception):
    """The manager answered, refusing (supervisord's XML-RPC fault: supervisor.rpc.Fault).
    ``faultString`` is its reason, e.g. ``'BAD_NAME: gunicorn'``."""

    faultString = ""


class Survey(Record):
    """The manager's state and, when it answers, every process as supervisor's ``getProcessInfo``
    describes one, keyed by the name the manager knows it by."""

    state: str
    pid: int = None
    processes: dict = None

    @property
    def answering(self):
        return self.processes is not None

    def info(self, program):
        """The process the manager knows as ``program``, or None."""
        return process_of(self.processes or {}, program)


def process_of(processes, program):
    """``program``'s entry in ``{key: info}`` as Controller.all_processes gives them (supervisord
    keys ``group:name``, systemd the unit), or None."""
    return processes.get(program if ":" in program else f"{program}:{program}") or processes.get(program)


class Changes(Record):
    written: tuple
    removed: tuple
    added: tuple = ()  # of the written, those that did not exist before (systemd: the new units)

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
        """Its Controller for ``paths``, acting as ``run_as``."""
        raise NotImplementedError

    def persistent_paths(self, paths, log_dirs):
        """``paths`` adjusted once the services' log dirs are known (supervisord's own log)."""
        return paths

    def write(self, paths, files, run_as=(None, None)):
        """Write the rendered ``files``, remove stale ones: Changes."""
        raise NotImplementedError

    def recorded(self, paths):
        """What the record of an update says about this backend beyond its name (None: nothing)."""
        return None

    def unloaded(self, paths):
        """What update says when the manager cannot be reached to load its files (None: the manager
        reads them itself when it starts, as supervisord does)."""
        return None


class Controller:
    """What the actions ask of a process manager.  Each process is described as supervisor's
    ``getProcessInfo`` describes one (``name``, ``group``, ``statename``: one of the process states
    above, ``pid``, ``start``, ``now``, ``description``)."""

    manager = None  # the manager's name in messages: "supervisord", "systemd"
    run_as = (None, None)  # (user, group) the manager's processes run as, when galaxyctl is root
    paths = None  # the backend's paths

    def survey(self):
        """Survey: the manager's state (MANAGER_*) and, when it answers, its processes.  One round trip."""
        raise NotImplementedError

    def is_running(self):
        raise NotImplementedError

    def pid(self):
        """The manager's PID when it is ours to signal, else None."""
        return None

    def ensure_manager_running(self, timeout=30):
        """Make the manager answer (start it if it is ours to start): True when it was started."""
        raise NotImplementedError

    def apply_changes(self, changes, started=None):
        """Make the running manager pick up what ``write`` changed (``changes``: Changes).  Groups it
        started are appended to ``started`` (a list).  Returns (added, changed, removed) groups."""
        raise NotImplementedError

    def all_processes(self):
        raise NotImplementedError

    def process_info(self, name):
        raise NotImplementedError

    def start(self, name):
        """Start one process unless it is up: True when it was started."""
        raise NotImplementedError

    def start_many(self, names):
        """Start those of ``names`` that are not up, with as few round trips as the manager allows
        (the start order is the caller's: these may start together).  Returns ``(started,
        refused)``: ``{name: PID or 0}`` of those started, ``{name: Refusal}`` of those refused."""
        started, refused = {}, {}
        for name in names:
            try:
                if self.start(name):
                    started[name] = self.process_info(name)["pid"]
            except Refusal as fault:
                refused[name] = fault
        return started, refused

    def stop(self, name):
        raise NotImplementedError

    def signal(self, name, signame):
        raise NotImplementedError

    def kill_group(self, name):
        """SIGKILL a process and its children (a start that is stuck)."""
        raise NotImplementedError

    def shutdown(self, timeout=60):
        """Stop everything (and end the manager when it is ours): True when something was stopped."""
        raise NotImplementedError

    def kill(self, pid, timeout=10):
        """SIGKILL a manager that does not answer (only one galaxyctl started can be)."""
        raise GalaxyctlError(f"{self.manager} is not galaxyctl's to kill")

    def release_runtime_dir(self):
        """After a shutdown: remove what the manager kept in the runtime dir, if it may go."""

    def unexpected_exits(self):
        """``{process name: [times]}`` of exits the manager did not expect; None when it cannot tell."""
        return None


# the controller of each process_manager a record of an update may name; imported by name, only
# the one asked for (status loads one controller, and the controllers import this module)
CONTROLLERS = {
    "supervisor": "galaxyctl_libs.backends.supervisor.client",
    "systemd": "galaxyctl_libs.backends.systemd.client",
}


def client_for(state_dir, applied=None, **kwargs):
    """The Controller of the state dir's process manager, where and as whom the last update put it
    (``applied``: a backends.record.Applied, or None for supervisord in the plain ``STATE/supervisor``)."""
    name = applied.process_manager if applied is not None else "supervisor"
    module = __import__(CONTROLLERS.get(name, CONTROLLERS["supervisor"]), fromlist=["controller_for"])
    return module.controller_for(state_dir, applied, **kwargs)


def running_client(state_dir, applied=None):
    """The Controller of the state dir's process manager when it answers, else None."""
    if applied is None:
        from galaxyctl_libs.backends.record import load_applied

        applied = load_applied(state_dir)
    client = client_for(state_dir, applied)
    return client if client.is_running() else None


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
