"""supervisord: its files in the state dir, and control over XML-RPC on its unix socket.

Services are rendered to ``{path: content}``; ``reconcile`` writes what changed and removes what is
stale; ``SupervisorClient.apply_changes`` makes the running supervisord pick the change up.  Layout
(gravity's): ``STATE/supervisor/supervisord.conf`` and ``supervisord.conf.d/INSTANCE.d/*.conf``.
"""

import errno
import os
import sys
import time

from galaxyctl_libs import fsutil
from galaxyctl_libs.probes import procfs
from galaxyctl_libs.backends.supervisor import rpc
from galaxyctl_libs.errors import GalaxyctlError
from galaxyctl_libs.records import Record
from galaxyctl_libs.rootpolicy import as_user, subprocess_credentials

HEADER = ";\n; Maintained by galaxyctl - CHANGES WILL BE OVERWRITTEN\n;\n"
MAX_SOCKET_PATH = 100  # AF_UNIX paths are limited to 107 bytes

# supervisor process states (supervisor.states.ProcessStates), by name
STOPPED, STARTING, RUNNING, BACKOFF, STOPPING, EXITED, FATAL, UNKNOWN = (
    "STOPPED", "STARTING", "RUNNING", "BACKOFF", "STOPPING", "EXITED", "FATAL", "UNKNOWN",
)
UP_STATES = (STARTING, RUNNING, BACKOFF)

# supervisord itself, as ``SupervisorClient.survey`` finds it
SUPERVISORD_RUNNING = "RUNNING"  # it answers
SUPERVISORD_DOWN = "DOWN"  # no supervisord process for this state dir
SUPERVISORD_NOT_ANSWERING = "NOT_ANSWERING"  # its process lives but no answer came within the timeout
SUPERVISORD_SHUTTING_DOWN = "SHUTTING_DOWN"  # it answers with a fault: it is on its way out

RPC_TIMEOUT = 10  # seconds for one call from stop/shutdown: a healthy supervisord answers in milliseconds


class Paths(Record):
    """Where supervisord's files live for one state dir: ``STATE/supervisor``, or as root with a
    Galaxy user, that user's runtime dir (``run_dir``; see services.runtime_dir)."""

    state_dir: str
    run_dir: str = None

    @property
    def root(self):
        return self.run_dir or os.path.join(self.state_dir, "supervisor")

    @property
    def conf(self):
        return os.path.join(self.root, "supervisord.conf")

    @property
    def conf_dir(self):
        return os.path.join(self.root, "supervisord.conf.d")

    @property
    def socket(self):
        return os.path.join(self.root, "supervisor.sock")

    @property
    def pidfile(self):
        return os.path.join(self.root, "supervisord.pid")

    @property
    def log(self):
        return os.path.join(self.root, "supervisord.log")


# ---------------------------------------------------------------- rendering


# How supervisor 4 reads these files (options.py, datatypes.py): configparser with
# inline_comment_prefixes=(';', '#') ends a value at whitespace followed by ';' or '#' and strips
# whitespace at both ends; then every value we write is %-expanded (stdout_logfile twice); then
# command is split with shlex (POSIX) and environment with a non-POSIX shlex.  Before expanding,
# supervisor replaces the text '%(here)s' in every value (expand_here).

# Expands to "" in every section we write ('here' is always among the expansions); placed between
# whitespace and ';'/'#', or at either end of a value, it keeps configparser off them.
_NOTHING = "%(here).0s"
# A bare word of supervisor's environment lexer (shlex's non-POSIX wordchars plus its own)
_ENV_WORD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_/.+-():")
_QUOTES = ("'", '"')
# Program and group names: they sit in [program:NAME] headers, 'programs = a,b' lists, XML-RPC
# 'group:name' and process_name (expanded); letters, digits and these are safe in all of them.
_NAME_PUNCTUATION = frozenset("_.@+-")
_ENV_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def _shown(value):
    """``value`` for a one-line message: quoted, escaped, and cut short if long."""
    return repr(value) if len(value) <= 80 else repr(value[:77]) + "..."


def _checked(value, what):
    """``value`` as a string, refused in one line when no supervisor file can hold it."""
    value = str(value)
    if "\n" in value or "\r" in value or "\0" in value:
        raise GalaxyctlError(f"{what} {_shown(value)}: supervisord's files cannot carry a newline or NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise GalaxyctlError(f"{what} {_shown(value)}: not valid UTF-8, the encoding of supervisord's files") from None
    return value


def _percent(text, expansions=1):
    """Escape ``%`` for supervisor's %-expansion applied ``expansions`` times, and break up any
    '%(here)s' so supervisor's textual replacement of it (done before expanding) never matches."""
    text = text.replace("%", "%" * 2 ** expansions)
    return text.replace("%(here)s", "%(here" + _NOTHING + ")s")


def _ini_value(text):
    """A whole value as configparser must see it: an empty expansion goes between whitespace and
    a following ';' or '#' (else a comment starts there) and before/after whitespace at the ends
    (else it is stripped).  ``text`` is already %-escaped: the expansion removes what we add."""
    out = [_NOTHING] if text[:1].isspace() else []
    for index, char in enumerate(text):
        if char in ";#" and index and text[index - 1].isspace():
            out.append(_NOTHING)
        out.append(char)
    if text[-1:].isspace():
        out.append(_NOTHING)
    return "".join(out)


def _raw_path(value, what, expansions=1):
    """A path field (directory, log and pid files, socket, user): taken as is after expansion."""
    return _ini_value(_percent(_checked(value, what), expansions))


def _command(argv, what):
    """``command=``: supervisor expands it once, then splits it with POSIX shlex, so each element is
    shell-quoted and %-escaped; whitespace inside quotes is kept off ';'/'#' by ``_ini_value``."""
    import shlex  # here: status never renders, and shlex compiles a regex on import

    return _ini_value(" ".join(_percent(shlex.quote(_checked(arg, what))) for arg in argv))


def _env_token(value, what):
    """One value as a token of supervisor's environment lexer (non-POSIX shlex, then the value is
    stripped of quote characters at both ends): quoted with whichever quote it lacks, bare if it
    has both and only word characters, else refused: there is no escape character."""
    if value.startswith(_QUOTES) or value.endswith(_QUOTES):
        raise GalaxyctlError(f"{what} {_shown(value)}: supervisord cannot pass an environment value that "
                             "begins or ends with a quote character")
    if '"' not in value:
        return f'"{value}"'
    if "'" not in value:
        return f"'{value}'"
    if all(char in _ENV_WORD_CHARS or char in _QUOTES for char in value):
        return value
    raise GalaxyctlError(f"{what} {_shown(value)}: supervisord cannot pass an environment value with both "
                         "quote characters and characters other than letters, digits and _/.+-():")


def _environment(service, what):
    """``environment=``: KEY=token pairs, expanded once before they are split."""
    entries = []
    if service.path_prepend:
        prefix = ""
        for directory in service.path_prepend:
            directory = _checked(directory, f"{what}: PATH directory")
            if os.pathsep in directory:
                raise GalaxyctlError(f"{what}: PATH directory {_shown(directory)}: "
                                     "PATH cannot carry a ':' in a directory")
            prefix += directory + os.pathsep
        token = _env_token(prefix, f"{what}: PATH directory")
        quote = token[0] if token[0] in _QUOTES else ""
        entries.append(f"PATH={quote}{_percent(prefix)}%(ENV_PATH)s{quote}")  # supervisord's own PATH follows
    for name, value in service.environment:
        if not name or name[0].isdigit() or not set(name) <= _ENV_NAME_CHARS:
            raise GalaxyctlError(f"{what}: {_shown(name)} is not a valid environment variable name")
        where = f"{what}: environment {name}"
        entries.append(f"{name}={_percent(_env_token(_checked(value, where), where))}")
    return _ini_value(",".join(entries))


def _check_name(name, what):
    """``name`` if it is safe as (part of) a program or group name, else a one-line refusal."""
    if not name or not all(c.isalnum() or c in _NAME_PUNCTUATION for c in name):
        raise GalaxyctlError(f"{what} {_shown(name)} cannot name a supervisord program "
                             "(use letters, digits, '_', '-', '.', '@' and '+')")
    return name


def program_names(service, grouped):
    """(section name in the ini file, name for XML-RPC calls) of one service."""
    instance = _check_name(service.instance_name, "instance name")
    name = _check_name(service.service_name, f"{instance}: service name")
    if grouped:
        section = f"{instance}_{_check_name(service.config_type, 'config type')}_{service.service_type}_{name}"
        return _check_name(section, "program name"), f"{instance}:{name}"
    return name, name


def render_supervisord_conf(paths):
    """The main file: socket, log and pid file in the state dir, and the include of the program files."""
    state_dir = _checked(paths.state_dir, "state dir")
    if paths.socket != os.path.normpath(os.path.abspath(paths.socket)):  # supervisord binds the normalised path
        raise GalaxyctlError(f"state dir {_shown(state_dir)}: give it as an absolute path without '.' or '..'")
    what = f"state dir {_shown(state_dir)}:"
    return HEADER + (
        "\n[unix_http_server]\n"
        f"file = {_raw_path(paths.socket, what + ' socket path')}\n"
        "chmod = 0700\n"
        "\n[supervisord]\n"
        f"logfile = {_raw_path(paths.log, what + ' log path')}\n"
        f"pidfile = {_raw_path(paths.pidfile, what + ' pid path')}\n"
        "loglevel = info\n"
        "nodaemon = false\n"
        "\n[rpcinterface:supervisor]\n"
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n"
        "\n[supervisorctl]\n"
        f"serverurl = {_raw_path('unix://' + paths.socket, what + ' socket path')}\n"
        "\n[include]\n"
        "files = supervisord.conf.d/*.d/*.conf supervisord.conf.d/*.conf\n"
    )


def log_file(service, log_dir, grouped):
    name = program_names(service, grouped)[0]
    return os.path.join(log_dir, f"{name}.log")


def render_program(service, log_dir, grouped):
    """One ``[program:x]`` file; each field escaped for how supervisor reads it (see ``_NOTHING``)."""
    section, _ = program_names(service, grouped)
    what = f"{service.instance_name}/{service.service_name}"
    log_dir = _checked(log_dir, f"{service.instance_name}: log dir")
    if any((char < " " and char != "\t") or char in "\ufffe\uffff" for char in log_dir):
        # getProcessInfo returns the log file's path, and XML 1.0 has no way to write these
        raise GalaxyctlError(f"{service.instance_name}: log dir {_shown(log_dir)}: supervisord reports log file "
                             "paths over XML-RPC, which cannot carry control characters")
    lines = [
        f"[program:{section}]",
        "command = " + _command(service.argv, f"{what}: command line argument"),
        f"directory = {_raw_path(service.cwd, f'{what}: working directory')}",
        f"umask = {service.umask}",
        "autostart = true",
        "autorestart = true",
        f"startsecs = {service.start_timeout}",
        f"stopwaitsecs = {service.stop_timeout}",
        # gunicorn's master stops its own workers gracefully; the rest may leave children behind
        "stopasgroup = " + ("false" if service.service_type == "gunicorn" else "true"),
        "killasgroup = true",
        f"environment = {_environment(service, what)}",
        "process_name = " + (service.service_name if grouped else "%(program_name)s"),
        # stdout_logfile is expanded twice (once when read, once more for the log file)
        f"stdout_logfile = {_raw_path(log_file(service, log_dir, grouped), f'{what}: log file', expansions=2)}",
        "redirect_stderr = true",
    ]
    if service.user:
        lines.append(f"user = {_raw_path(service.user, f'{what}: user')}")
    return HEADER + "\n" + "\n".join(lines) + "\n"


def render_files(paths, instances_services, log_dirs):
    """All supervisor files for ``{instance_name: services}``: returns ``{path: content}``."""
    grouped = len(instances_services) > 1
    files = {paths.conf: render_supervisord_conf(paths)}
    for instance_name, services in instances_services.items():
        instance_dir = os.path.join(paths.conf_dir, f"{instance_name}.d")
        for service in services:
            name = f"{service.config_type}_{service.service_type}_{service.service_name}.conf"
            files[os.path.join(instance_dir, name)] = render_program(service, log_dirs[instance_name], grouped)
        if grouped and services:
            programs = ",".join(program_names(s, True)[0] for s in services)
            files[os.path.join(paths.conf_dir, f"group_{instance_name}.conf")] = (
                HEADER + f"\n[group:{instance_name}]\nprograms = {programs}\n"
            )
    return files


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


def reconcile(paths, files):
    """Write files whose content changed, remove program files nobody wants any more."""
    fsutil.ensure_private_dir(paths.root)
    fsutil.ensure_private_dir(paths.conf_dir)
    for directory in sorted({os.path.dirname(path) for path in files}):
        os.makedirs(directory, mode=0o700, exist_ok=True)
    written = fsutil.write_many_if_changed(files, mode=0o600)
    touched = set()  # directories to fsync once at the end, not once per removed file
    removed = []
    for dirpath, dirnames, filenames in os.walk(paths.conf_dir, topdown=False):
        for filename in filenames:
            path = os.path.join(dirpath, filename)
            if filename.endswith(".conf") and path not in files:
                fsutil.remove_file(path, sync_dir=False)
                removed.append(path)
                touched.add(dirpath)
        if dirpath != paths.conf_dir and not os.listdir(dirpath):
            os.rmdir(dirpath)
            touched.discard(dirpath)
            touched.add(os.path.dirname(dirpath))
    for directory in sorted(touched):
        fsutil.fsync_dir(directory)
    return Changes(tuple(written), tuple(removed))


# ---------------------------------------------------------------- control


class SupervisorClient:
    """Start, query and drive the one supervisord of a state dir."""

    def __init__(self, paths, timeout=30, slow_timeout=600, run_as=(None, None)):
        self.paths = paths
        self.run_as = tuple(run_as)  # (user, group) supervisord runs as; root talks to it as that user
        if len(paths.socket) > MAX_SOCKET_PATH:
            raise GalaxyctlError(
                f"state dir path too long for supervisord's unix socket ({paths.socket}); use a shorter --state-dir"
            )
        self.timeout = timeout
        self.slow_timeout = slow_timeout  # stopping waits inside supervisord for the service's stopwaitsecs

    def call(self, method, *args, slow=False):
        """One XML-RPC call; supervisord not answering is a user-facing error, not a traceback."""
        try:
            with as_user(*self.run_as):  # the socket is in the Galaxy user's dir: connect with its ids
                return rpc.call(self.paths.socket, f"supervisor.{method}", args, self.slow_timeout if slow else self.timeout)
        except OSError as exc:
            raise GalaxyctlError(f"supervisord ({self.paths.socket}) did not answer {method}: {exc}") from None

    def pid(self):
        """supervisord's PID if it is running (per its pid file, and /proc says it is this state dir's
        supervisord: a supervisord killed with -9 leaves its pid file, and the PID is reused), else None."""
        try:
            with as_user(*self.run_as):  # a pid file the Galaxy user can write: read it as that user
                with open(self.paths.pidfile) as handle:
                    pid = int(handle.read().strip())
        except (OSError, ValueError):
            return None
        if not procfs.alive(pid):
            return None
        argv = procfs.cmdline(pid)
        if self.paths.conf in argv or any(os.path.basename(arg).startswith("supervisord") for arg in argv[:3]):
            return pid
        return None

    def survey(self):
        """Is supervisord running, gone, or there but not answering (within ``timeout``)?  One round trip.

        A stopped supervisord (SIGSTOP, a debugger) cannot answer: said at once, without waiting."""
        pid = self.pid()
        if pid is not None and (procfs.stat_fields(pid) or ("?",))[0] in ("T", "t"):
            return Survey(SUPERVISORD_NOT_ANSWERING, pid)
        if os.path.exists(self.paths.socket):
            try:
                return Survey(SUPERVISORD_RUNNING, pid, _by_group_and_name(self.call("getAllProcessInfo")))
            except rpc.Fault:
                return Survey(SUPERVISORD_SHUTTING_DOWN, pid)
            except GalaxyctlError:
                pass
        return Survey(SUPERVISORD_DOWN if pid is None else SUPERVISORD_NOT_ANSWERING, pid)

    def _answer_if_running(self, method):
        """supervisord's answer to ``method``, or None when it is not running or not answering
        (a supervisord shutting down answers with a fault)."""
        if not os.path.exists(self.paths.socket):
            return None
        try:
            return self.call(method)
        except (GalaxyctlError, rpc.Fault):
            return None

    def is_running(self):
        state = self._answer_if_running("getState")
        return state is not None and state["statename"] == "RUNNING"

    def start_supervisord(self, timeout=30):
        """Start supervisord (daemonizing) and wait until it answers; stale pid/socket files are fine."""
        if self.is_running():
            return False
        if self.pid() is None:  # left by a supervisord that died: clear them for the new one
            for stale in (self.paths.socket, self.paths.pidfile):
                fsutil.remove_file(stale)
        import subprocess

        argv = [sys.executable, "-m", "supervisor.supervisord", "-c", self.paths.conf]
        credentials = subprocess_credentials(*self.run_as)  # supervisord runs as the Galaxy user, never root
        if credentials:
            self._check_galaxy_user_can_run(credentials)
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=self.paths.root,
                                stdin=subprocess.DEVNULL, **credentials)
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise GalaxyctlError(f"supervisord did not start: {detail[-1] if detail else 'exit code ' + str(result.returncode)}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.is_running():
                return True
            time.sleep(0.05)
        raise GalaxyctlError(f"supervisord did not answer on {self.paths.socket} within {timeout}s; see {self.paths.log}")

    def _check_galaxy_user_can_run(self, credentials):
        """supervisord and our herder run with galaxyctl's Python as the Galaxy user: say so clearly
        when that user cannot run it (galaxyctl installed under /root, say)."""
        import subprocess

        probe = [sys.executable, "-c", "import supervisor.supervisord, galaxyctl_libs.backends.herder"]
        try:
            ok = subprocess.run(probe, capture_output=True, timeout=60, cwd="/", stdin=subprocess.DEVNULL,
                                **credentials).returncode == 0
        except OSError:
            ok = False
        if not ok:
            raise GalaxyctlError(
                f"the Galaxy user {self.run_as[0]} cannot run galaxyctl's Python ({sys.executable}) with supervisor and "
                "galaxyctl_libs: install galaxyctl where that user can read it (e.g. into Galaxy's virtualenv)"
            )

    def all_processes(self):
        """``getAllProcessInfo`` keyed by ``group:name``."""
        return _by_group_and_name(self.call("getAllProcessInfo"))

    def process_info(self, name):
        return self.call("getProcessInfo", name)

    def apply_changes(self):
        """Make supervisord load changed files: add new groups, replace changed ones, drop removed ones.

        Changed groups that were running come back (autostart); a removed group is stopped first.
        """
        added, changed, removed = self.call("reloadConfig")[0]
        for group in removed + changed:
            self._call_ignoring("stopProcessGroup", group, True, slow=True)
            self._call_ignoring("removeProcessGroup", group)
        for group in changed + added:
            self._call_ignoring("addProcessGroup", group)
        return added, changed, removed

    def _call_ignoring(self, method, *args, slow=False):
        """Call, tolerating the faults that mean 'already in that state'."""
        try:
            return self.call(method, *args, slow=slow)
        except rpc.Fault as fault:
            if fault.faultString.split(":")[0] in ("BAD_NAME", "NOT_RUNNING", "ALREADY_STARTED", "ALREADY_ADDED", "STILL_RUNNING"):
                return None
            raise

    def start(self, name):
        info = self.process_info(name)
        if info["statename"] in (RUNNING, STARTING):
            return False
        self._call_ignoring("startProcess", name, False)
        return True

    def stop(self, name):
        return self._call_ignoring("stopProcess", name, True, slow=True)

    def kill_group(self, name):
        """SIGKILL a service's whole process group (supervisord makes each child a group leader):
        for a start that is stuck, where there is nothing to drain and a graceful stop only waits."""
        from signal import SIGKILL

        pid = self.process_info(name)["pid"]
        if pid:
            try:
                with as_user(*self.run_as):  # a PID from supervisord: only the Galaxy user's may be hit
                    os.killpg(pid, SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def signal(self, name, signame):
        return self.call("signalProcess", name, signame)

    def shutdown(self, timeout=60):
        """Stop every process and end supervisord; wait (bounded) until it is gone."""
        from signal import SIGTERM

        pid = self.pid()
        try:
            self.call("shutdown")
        except (GalaxyctlError, rpc.Fault):
            if pid is None:
                return False
            with as_user(*self.run_as):
                os.kill(pid, SIGTERM)
        deadline = time.monotonic() + timeout
        while pid is not None and time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except OSError as exc:
                if exc.errno == errno.ESRCH:
                    break
            time.sleep(0.05)
        else:
            if pid is not None:
                raise GalaxyctlError(f"supervisord (PID {pid}) did not exit within {timeout}s")
        return True

    def kill(self, pid, timeout=10):
        """SIGKILL a supervisord that does not answer, wait (bounded) until it is gone, and remove its
        socket and pid files.  Its services outlive it: the caller ends them."""
        from signal import SIGKILL

        try:
            os.kill(pid, SIGKILL)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while procfs.alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if procfs.alive(pid):
            raise GalaxyctlError(f"supervisord (pid {pid}) did not end on SIGKILL within {timeout}s")
        for stale in (self.paths.socket, self.paths.pidfile):
            try:
                fsutil.remove_file(stale)
            except OSError:
                pass  # a read-only state dir: a stale pid file names no live supervisord (see pid)


def _by_group_and_name(infos):
    return {f"{p['group']}:{p['name']}": p for p in infos}


def client_for(state_dir, applied=None, **kwargs):
    """The client for the state dir's supervisord, where and as whom the last update put it
    (``applied``: a targets.Applied record, or None for the plain ``STATE/supervisor``)."""
    run_dir = applied.supervisor_dir if applied is not None else None
    run_as = applied.run_as if applied is not None else (None, None)
    return SupervisorClient(Paths(state_dir, run_dir), run_as=run_as, **kwargs)


def running_client(state_dir, applied=None):
    """A client for the state dir's supervisord when it is running, else None."""
    if applied is None:
        from galaxyctl_libs.core.targets import load_applied

        applied = load_applied(state_dir)
    client = client_for(state_dir, applied)
    return client if client.is_running() else None
