"""Control of the one supervisord of a state dir over XML-RPC on its unix socket.

``SupervisorClient.apply_changes`` makes a running supervisord pick up what ``update`` wrote.
As root with a Galaxy user, every call, pid-file read and signal happens with that user's ids.
"""

import os
import sys

from galaxyctl_libs import gate
from galaxyctl_libs.backends.base import (
    CONTROL_TIMEOUT,
    MANAGER_DOWN,
    MANAGER_NOT_ANSWERING,
    MANAGER_RUNNING,
    MANAGER_SHUTTING_DOWN,
    RUNNING,
    STARTING,
    UP_STATES,
    Controller,
    Survey,
)
from galaxyctl_libs.backends.supervisor import rpc
from galaxyctl_libs.backends.supervisor.paths import Paths
from galaxyctl_libs.errors import GalaxyctlError
from galaxyctl_libs.probes import procfs
from galaxyctl_libs.probes.poll import wait_until
from galaxyctl_libs.rootpolicy import as_user, subprocess_credentials

MAX_SOCKET_PATH = 100  # AF_UNIX paths are limited to 107 bytes

LAUNCHER = "galaxyctl_libs.backends.supervisor.launch"  # runs supervisord (see its docstring)

START_BATCH = 200  # startProcess calls in one system.multicall (start_many)

RPC_TIMEOUT = CONTROL_TIMEOUT  # seconds for one call from stop/shutdown


class SupervisorClient(Controller):
    """Start, query and drive the one supervisord of a state dir (backends.base.Controller)."""

    manager = "supervisord"  # what the messages name (SystemdController: systemd)

    def __init__(self, paths, timeout=30, slow_timeout=600, run_as=(None, None)):
        self.paths = paths
        self.run_as = tuple(run_as)  # (user, group) supervisord runs as; root talks to it as that user
        if len(paths.socket) > MAX_SOCKET_PATH:
            raise GalaxyctlError(
                f"state dir path too long for supervisord's unix socket ({paths.socket}); use a shorter --state-dir"
            )
        self.timeout = timeout
        self.slow_timeout = slow_timeout  # stopping waits inside supervisord for the service's stopwaitsecs

    def call(self, method, *args, slow=False, namespace="supervisor"):
        """One XML-RPC call; supervisord not answering is a user-facing error, not a traceback."""
        try:
            with as_user(*self.run_as):  # the socket is in the Galaxy user's dir: connect with its ids
                return rpc.call(
                    self.paths.socket, f"{namespace}.{method}", args, self.slow_timeout if slow else self.timeout
                )
        except OSError as exc:
            raise GalaxyctlError(f"supervisord ({self.paths.socket}) did not answer {method}: {exc}") from None

    def multicall(self, method, calls, slow=False):
        """``supervisor.method(*args)`` for each ``args`` of ``calls`` in one round trip
        (``system.multicall``): a result, or a Fault, per call, in order."""
        if not calls:
            return []
        requests = [{"methodName": f"supervisor.{method}", "params": list(args)} for args in calls]
        answers = self.call("multicall", requests, slow=slow, namespace="system")
        return [rpc.Fault(a.get("faultCode"), a.get("faultString", "")) if isinstance(a, dict) else a for a in answers]

    def pid(self):
        """supervisord's PID when it runs and proves it is this state dir's (gate.proven_pid: the pid
        file is the Galaxy user's to write, and a supervisord killed with -9 leaves it behind)."""
        return gate.proven_pid(self.paths.pidfile, self.run_as, self.paths.conf)

    def survey(self):
        """Is supervisord running, gone, or there but not answering (within ``timeout``)?  One round trip.

        A stopped supervisord (SIGSTOP, a debugger) cannot answer: said at once, without waiting."""
        pid = self.pid()
        if pid is not None and (procfs.stat_fields(pid) or ("?",))[0] in ("T", "t"):
            return Survey(MANAGER_NOT_ANSWERING, pid)
        if os.path.exists(self.paths.socket):
            try:
                return Survey(MANAGER_RUNNING, pid, _by_group_and_name(self.call("getAllProcessInfo")))
            except rpc.Fault:
                return Survey(MANAGER_SHUTTING_DOWN, pid)
            except GalaxyctlError:
                pass
        return Survey(MANAGER_DOWN if pid is None else MANAGER_NOT_ANSWERING, pid)

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

    def ensure_manager_running(self, timeout=30):
        """Start supervisord (daemonizing) and wait until it answers; stale pid/socket files are fine."""
        if self.is_running():
            return False
        if self.pid() is None:  # left by a supervisord that died: clear them for the new one
            for stale in (self.paths.socket, self.paths.pidfile):
                gate.remove(stale, self.run_as)
        import subprocess

        argv = [sys.executable, "-m", LAUNCHER, "-c", self.paths.conf]  # supervisord, replying in big chunks
        credentials = subprocess_credentials(*self.run_as)  # supervisord runs as the Galaxy user, never root
        if credentials:
            self._check_galaxy_user_can_run(credentials)
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.paths.root,
            stdin=subprocess.DEVNULL,
            **credentials,
        )
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise GalaxyctlError(
                f"supervisord did not start: {detail[-1] if detail else 'exit code ' + str(result.returncode)}"
            )
        if wait_until(self.is_running, timeout):
            return True
        raise GalaxyctlError(
            f"supervisord did not answer on {self.paths.socket} within {timeout}s; see {self.paths.log}"
        )

    def _check_galaxy_user_can_run(self, credentials):
        """supervisord and our herder run with galaxyctl's Python as the Galaxy user: say so clearly
        when that user cannot run it (galaxyctl installed under /root, say)."""
        import subprocess

        probe = [sys.executable, "-c", f"import supervisor.supervisord, galaxyctl_libs.backends.herder, {LAUNCHER}"]
        try:
            ok = (
                subprocess.run(
                    probe, capture_output=True, timeout=60, cwd="/", stdin=subprocess.DEVNULL, **credentials
                ).returncode
                == 0
            )
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

    def apply_changes(self, changes=None, started=None):
        """Make supervisord load changed files: add new groups, replace changed ones, drop removed ones
        (supervisord compares the files itself: ``changes`` is not needed).

        Programs do not start by themselves (``autostart = false``: ``start`` orders them), so a
        changed group that was running is started again, and a new group is started when Galaxy is
        up (something else runs).  The groups started are appended to ``started`` (a list).
        """
        added, changed, removed = self.call("reloadConfig")[0]
        up = {info["group"] for info in self.all_processes().values() if info["statename"] in UP_STATES}
        galaxy_up = bool(up - set(removed))
        for group in removed + changed:
            self._call_ignoring("stopProcessGroup", group, True, slow=True)
            self._call_ignoring("removeProcessGroup", group)
        for group in changed + added:
            self._call_ignoring("addProcessGroup", group)
        for group in [g for g in changed if g in up] + (list(added) if galaxy_up else []):
            self._call_ignoring("startProcessGroup", group, False)
            if started is not None:
                started.append(group)
        return added, changed, removed

    def _call_ignoring(self, method, *args, slow=False):
        """Call, tolerating the faults that mean 'already in that state'."""
        try:
            return self.call(method, *args, slow=slow)
        except rpc.Fault as fault:
            if fault.faultString.split(":")[0] in (
                "BAD_NAME",
                "NOT_RUNNING",
                "ALREADY_STARTED",
                "ALREADY_ADDED",
                "STILL_RUNNING",
            ):
                return None
            raise

    def start(self, name):
        info = self.process_info(name)
        if info["statename"] in (RUNNING, STARTING):
            return False
        self._call_ignoring("startProcess", name, False)
        return True

    def start_many(self, names):
        """Start those of ``names`` not running or starting in a few round trips (what runs,
        ``system.multicall``s of ``startProcess`` without waiting, their PIDs),
        where one start each made three per process: 2,000 handlers started in ~6,000 calls, each
        waiting for a turn of supervisord's event loop.  (The multicall goes in batches of
        START_BATCH, so that supervisord reads its processes' pipes between them.)"""
        up = {key for key, info in self.all_processes().items() if info["statename"] in (RUNNING, STARTING)}
        down = [name for name in names if process_key(name) not in up]
        started, refused, answers = [], {}, []
        for at in range(0, len(down), START_BATCH):  # supervisord serves its other events between batches
            answers += self.multicall(
                "startProcess", [(name, False) for name in down[at : at + START_BATCH]], slow=True
            )
        for name, answer in zip(down, answers):
            if not isinstance(answer, rpc.Fault):
                started.append(name)
            elif answer.faultString.split(":")[0] != "ALREADY_STARTED":
                refused[name] = answer
        found = self.all_processes() if started else {}
        return {name: (found.get(process_key(name)) or {}).get("pid") or 0 for name in started}, refused

    def stop(self, name):
        return self._call_ignoring("stopProcess", name, True, slow=True)

    def kill_group(self, name):
        """SIGKILL a service's whole process group (supervisord makes each child a group leader):
        for a start that is stuck, where there is nothing to drain and a graceful stop only waits."""
        from signal import SIGKILL

        pid = self.process_info(name)["pid"]
        if pid:
            try:
                gate.signal(pid, SIGKILL, self.run_as, group=True)  # a PID from supervisord: only the user's
            except PermissionError:
                pass

    def signal(self, name, signame):
        return self.call("signalProcess", name, signame)

    def unexpected_exits(self):
        """``{process name: [wall-clock times]}`` of the exits supervisord did not expect (a crash,
        a kill -9: it restarts those), from the end of its own log (read over XML-RPC); None when
        it cannot be read."""
        try:
            return parse_unexpected_exits(self.call("readLog", -LOG_SCAN_BYTES, 0))
        except (GalaxyctlError, rpc.Fault):
            return None

    def shutdown(self, timeout=60):
        """Stop every process and end supervisord; wait (bounded) until it is gone."""
        from signal import SIGTERM

        pid = self.pid()
        try:
            self.call("shutdown")
        except (GalaxyctlError, rpc.Fault):
            if pid is None:
                return False
            gate.signal(pid, SIGTERM, self.run_as)
        if pid is not None and not wait_until(lambda: not gate.exists(pid, self.run_as), timeout):
            raise GalaxyctlError(f"supervisord (PID {pid}) did not exit within {timeout}s")
        return True

    def release_runtime_dir(self):
        """The Galaxy user's runtime dir goes once supervisord is gone (its logs live elsewhere)."""
        from galaxyctl_libs.backends.supervisor.paths import remove_runtime_dir

        remove_runtime_dir(self.paths, self.run_as)

    def kill(self, pid, timeout=10):
        """SIGKILL a supervisord that does not answer, wait (bounded) until it is gone, and remove its
        socket and pid files.  Its services outlive it: the caller ends them."""
        from signal import SIGKILL

        try:
            gate.signal(pid, SIGKILL, self.run_as)
        except PermissionError:
            raise GalaxyctlError(f"not allowed to signal supervisord (pid {pid})") from None
        if not wait_until(lambda: not procfs.alive(pid), timeout):
            raise GalaxyctlError(f"supervisord (pid {pid}) did not end on SIGKILL within {timeout}s")
        for stale in (self.paths.socket, self.paths.pidfile):
            try:
                gate.remove(stale, self.run_as)
            except OSError:
                pass  # a read-only state dir: a stale pid file names no live supervisord (see pid)


LOG_SCAN_BYTES = 256 * 1024  # of supervisord's log, for unexpected_exits


def parse_unexpected_exits(text):
    """``exited: NAME (...; not expected)`` lines of a supervisord log, as ``{NAME: [times]}``
    (supervisord writes local time, to the millisecond)."""
    import re
    import time

    found = {}
    pattern = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d+) \w+ exited: (\S+) \(.*; not expected\)$")
    for line in text.splitlines():
        match = pattern.match(line)
        if match:
            try:
                when = time.mktime(time.strptime(match.group(1), "%Y-%m-%d %H:%M:%S")) + int(match.group(2)) / 1000
            except (ValueError, OverflowError):
                continue
            found.setdefault(match.group(3), []).append(when)
    return found


def process_key(name):
    """The ``group:name`` key of ``all_processes`` for a name given to supervisord's calls (a
    process alone in its group is called by its name)."""
    return name if ":" in name else f"{name}:{name}"


def _by_group_and_name(infos):
    return {f"{p['group']}:{p['name']}": p for p in infos}


def controller_for(state_dir, applied=None, **kwargs):
    """The client for the state dir's supervisord, where and as whom the last update put it
    (backends.base.client_for: ``applied`` is a record.Applied, or None for the plain ``STATE/supervisor``)."""
    run_dir = applied.supervisor_dir if applied is not None else None
    run_as = applied.run_as if applied is not None else (None, None)
    log_dir = applied.supervisor_log_dir if applied is not None else None
    return SupervisorClient(Paths(state_dir, run_dir, log_dir), run_as=run_as, **kwargs)
