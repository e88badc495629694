"""Running commands as the bench user, timed and with their peak RSS; stopping what was started.

``Runner`` runs each command through a tiny fork server, as ``--user`` when the bench runs as root.
``PidRegistry`` remembers supervisord and its descendants by (pid, start time), so that the
clean-up signals only processes the bench started and that are still the same processes.
"""

import contextlib
import marshal
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from .common import CMD_TIMEOUT

# A tiny fork server (``python -I -S``, builtins only, ~7.5 MiB): ru_maxrss survives exec, so a child
# forked from the bench itself (tens of MiB) would report the bench's high-water mark, not its own.
SPAWNER = r"""
import os, marshal, time
def rd(n):
    b = b""
    while len(b) < n:
        c = os.read(0, n - len(b))
        if not c:
            os._exit(0)
        b += c
    return b
def wr(obj):
    data = marshal.dumps(obj)
    os.write(1, len(data).to_bytes(4, "big") + data)
while True:
    argv, env, cwd, uid, gid, out, err = marshal.loads(rd(int.from_bytes(rd(4), "big")))
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            fd = os.open("/dev/null", os.O_RDONLY); os.dup2(fd, 0)
            fd = os.open(out, os.O_WRONLY); os.dup2(fd, 1)
            fd = os.open(err, os.O_WRONLY); os.dup2(fd, 2)
            os.closerange(3, 4096)
            if uid is not None:
                os.setgroups([]); os.setgid(gid); os.setuid(uid)
            os.chdir(cwd)
            os.execve(argv[0], argv, env)
        except BaseException as exc:
            os.write(2, ("spawn failed: %r" % (exc,)).encode() + bytes([10]))
        os._exit(127)
    wr(pid)
    _, status, ru = os.wait4(pid, 0)
    wr((status, ru.ru_maxrss, time.perf_counter() - t0))
"""


class Runner:
    """Runs commands (as ``user`` when the bench runs as root) and measures wall time and peak RSS."""

    def __init__(self, user):
        self.user = user
        self.uid = self.gid = None
        if user is not None and os.geteuid() == 0:
            entry = pwd.getpwnam(user)
            if entry.pw_uid == 0:
                raise SystemExit("bench: --user must not be root (gravity refuses to run as root)")
            self.uid, self.gid = entry.pw_uid, entry.pw_gid
        self.env_base = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
        self._spawner = None
        self._lock = threading.Lock()

    def chown(self, path):
        if self.uid is None:
            return
        for dirpath, dirnames, filenames in os.walk(path):
            os.chown(dirpath, self.uid, self.gid)
            for name in filenames:
                os.lchown(os.path.join(dirpath, name), self.uid, self.gid)

    def spawner_argv(self):
        """How the spawn server starts (a subclass may start it elsewhere, e.g. inside a container)."""
        return [sys.executable, "-I", "-S", "-c", SPAWNER]

    def _spawn_server(self):
        if self._spawner is None or self._spawner.poll() is not None:
            self._spawner = subprocess.Popen(
                self.spawner_argv(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                start_new_session=True,
            )
        return self._spawner

    def resolve(self, argv):
        """``argv`` with its program looked up in PATH, as the spawn server's ``execve`` needs."""
        return [shutil.which(argv[0]) or argv[0]] + list(argv[1:])

    @contextlib.contextmanager
    def output_file(self):
        """→ (open file to read back, its path as the spawn server sees it); removed afterwards."""
        with tempfile.NamedTemporaryFile() as handle:
            if self.uid is not None:
                os.chown(handle.name, self.uid, self.gid)
            yield handle, handle.name

    def kill(self, pid):
        """SIGKILL a command that ran past its timeout (``pid`` as the spawn server reported it)."""
        _kill_quietly(pid, signal.SIGKILL)

    def _read(self, server):
        def exactly(n):
            data = b""
            while len(data) < n:
                chunk = server.stdout.read(n - len(data))
                if not chunk:
                    raise RuntimeError("bench: the spawn server died")
                data += chunk
            return data

        return marshal.loads(exactly(int.from_bytes(exactly(4), "big")))

    def close(self):
        if self._spawner is not None and self._spawner.poll() is None:
            self._spawner.stdin.close()
            try:
                self._spawner.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._spawner.kill()
                self._spawner.wait(timeout=10)

    def run(self, argv, home, cwd=None, timeout=CMD_TIMEOUT, extra_env=None):
        """→ dict(rc, seconds, maxrss_kib, out, err).  Output goes to files: a daemon child may keep pipes open.

        ``seconds`` is fork → ``wait4`` in the spawn server; ``maxrss_kib`` its ``ru_maxrss`` (the command and
        the children it waited for)."""
        env = dict(self.env_base, HOME=home, **(extra_env or {}))
        argv = self.resolve(argv)
        with self._lock, self.output_file() as (out, out_path), self.output_file() as (err, err_path):
            server = self._spawn_server()
            request = marshal.dumps((list(argv), env, cwd or home, self.uid, self.gid, out_path, err_path))
            server.stdin.write(len(request).to_bytes(4, "big") + request)
            server.stdin.flush()
            pid = self._read(server)
            timer = threading.Timer(timeout, self.kill, (pid,))
            timer.start()
            try:
                status, maxrss, seconds = self._read(server)
            finally:
                timer.cancel()
            return {
                "rc": os.waitstatus_to_exitcode(status),
                "seconds": seconds,
                "maxrss_kib": maxrss,
                "out": out.read().decode("utf-8", "replace"),
                "err": err.read().decode("utf-8", "replace"),
            }

    def check(self, argv, home, what, **kwargs):
        result = self.run(argv, home, **kwargs)
        if result["rc"] != 0:
            raise RuntimeError(
                f"{what} failed (exit {result['rc']}): {argv}\n{result['out'][-2000:]}{result['err'][-2000:]}"
            )
        return result


def _kill_quietly(pid, sig):
    try:
        os.kill(pid, sig)
    except OSError:
        pass


# ---------------------------------------------------------------- PID bookkeeping (stop what we started)


def _proc_start_time(pid):
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return int(fields[19]), int(fields[1])  # starttime, ppid
    except (OSError, IndexError, ValueError):
        return None, None


class PidRegistry:
    """Remembers (pid, start time) of supervisord and its descendants; stops survivors at the end."""

    def __init__(self):
        self.known = {}

    def record_tree(self, root_pid):
        if not root_pid:
            return
        children = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                start, ppid = _proc_start_time(int(name))
                if start is not None:
                    children.setdefault(ppid, []).append((int(name), start))
        start, _ = _proc_start_time(root_pid)
        if start is None:
            return
        todo = [(root_pid, start)]
        while todo:
            pid, start = todo.pop()
            self.known[pid] = start
            todo.extend(children.get(pid, ()))

    def alive(self):
        return [pid for pid, start in self.known.items() if _proc_start_time(pid)[0] == start]

    def stop_all(self, grace=5.0):
        survivors = self.alive()
        for pid in survivors:
            _kill_quietly(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while survivors and time.monotonic() < deadline:
            time.sleep(0.1)
            survivors = self.alive()
        for pid in survivors:
            _kill_quietly(pid, signal.SIGKILL)
        return survivors
