"""listeners: the process LISTENING on a port, via lsof and via /proc, never a connected client.

A tiny pre-forking server (master binds, two forked workers inherit the socket — the shape of
uWSGI and gunicorn) is started for real and stopped by PID.
"""

import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from galaxyctl_libs.errors import GalaxyctlError
from galaxyctl_libs.probes import listeners, procfs

HAVE_LSOF = shutil.which("lsof") is not None
needs_lsof = pytest.mark.skipif(not HAVE_LSOF, reason="lsof is not installed")

PREFORK = textwrap.dedent("""
    import os, socket, sys, time
    kind, addr = sys.argv[1], sys.argv[2]
    if kind == "unix":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(addr)
    else:
        sock = socket.socket(socket.AF_INET6 if kind == "tcp6" else socket.AF_INET)
        sock.bind((addr, 0))
    sock.listen(16)
    master = os.getpid()
    children = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:
            deadline = time.monotonic() + 120
            while os.getppid() == master and time.monotonic() < deadline:
                time.sleep(0.1)
            os._exit(0)
        children.append(pid)
    port = sock.getsockname()[1] if kind != "unix" else 0
    print(port, *children, flush=True)
    held = []
    deadline = time.monotonic() + 120
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            held.append(sock.accept()[0])   # keep accepted connections open
        except socket.timeout:
            pass
""")


def _read_line(proc, timeout=10):
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise AssertionError("the test server did not report its port in time")
    return proc.stdout.readline()


def _stop(pids, timeout=5, marker="prefork.py"):
    """SIGTERM each PID, then SIGKILL what is left after a bounded wait (only if still ours)."""
    pids = [pid for pid in pids if marker in " ".join(procfs.cmdline(pid))]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    for pid in pids:
        while time.monotonic() < deadline and procfs.alive(pid):
            time.sleep(0.05)
        if procfs.alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class Server:
    def __init__(self, master, workers, port, proc):
        self.master, self.workers, self.port, self.proc = master, workers, port, proc

    @property
    def pids(self):
        return frozenset([self.master, *self.workers])


@pytest.fixture
def prefork(tmp_path):
    """Start prefork servers on demand; every process is stopped by PID afterwards."""
    script = tmp_path / "prefork.py"
    script.write_text(PREFORK)
    started = []  # [proc, worker pids] for every server, so each is stopped by PID

    def start(kind="tcp", addr="127.0.0.1"):
        proc = subprocess.Popen(
            [sys.executable, str(script), kind, addr], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
        )
        entry = [proc, []]
        started.append(entry)
        line = _read_line(proc).split()
        assert line, "the test server exited early"
        entry[1] = [int(pid) for pid in line[1:]]
        return Server(proc.pid, entry[1], int(line[0]), proc)

    try:
        yield start
    finally:
        for proc, workers in started:
            _stop([proc.pid, *workers])
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            proc.stdout.close()


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@needs_lsof
def test_lsof_and_proc_agree_master_and_workers(prefork):
    server = prefork()
    assert listeners.listening_pids(server.port) == server.pids
    assert listeners.listening_pids(server.port, use_lsof=True) == server.pids
    assert listeners.listening_pids(server.port, use_lsof=False) == server.pids
    assert listeners.listening_master_pid(server.port, use_lsof=True) == server.master
    assert listeners.listening_master_pid(server.port, use_lsof=False) == server.master


def test_connected_client_is_not_reported(prefork, tmp_path):
    server = prefork()
    client_code = (
        "import socket, sys, time; s = socket.create_connection(('127.0.0.1', int(sys.argv[1])));"
        " print('connected', flush=True); time.sleep(60)"
    )
    client = subprocess.Popen(
        [sys.executable, "-c", client_code, str(server.port)],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert _read_line(client).strip() == "connected"
        own = socket.create_connection(("127.0.0.1", server.port))  # and this process too
        try:
            for use_lsof in (None, False) if HAVE_LSOF else (False,):
                pids = listeners.listening_pids(server.port, use_lsof=use_lsof)
                assert pids == server.pids
                assert client.pid not in pids and os.getpid() not in pids
                assert listeners.listening_master_pid(server.port, use_lsof=use_lsof) == server.master
            if HAVE_LSOF:  # Laniakea's galaxyctl's plain `lsof -t -i :PORT` would have listed the clients
                plain = subprocess.run(
                    ["lsof", "-nP", "-t", f"-i:{server.port}"],
                    stdout=subprocess.PIPE,
                    text=True,
                    timeout=10,
                    check=False,
                ).stdout.split()
                assert str(client.pid) in plain
        finally:
            own.close()
    finally:
        _stop([client.pid], marker="connected")
        client.wait(timeout=5)
        client.stdout.close()


def test_without_lsof_on_path_proc_is_used(prefork, tmp_path, monkeypatch):
    server = prefork()
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert shutil.which("lsof") is None
    assert listeners.listening_pids(server.port) == server.pids
    assert listeners.listening_master_pid(server.port) == server.master
    with pytest.raises(GalaxyctlError, match="lsof is not installed"):
        listeners.listening_pids(server.port, use_lsof=True)


@pytest.mark.parametrize("use_lsof", [None, False])
def test_nobody_listening(use_lsof):
    port = _free_port()
    assert listeners.listening_pids(port, use_lsof=use_lsof) == frozenset()
    assert listeners.listening_master_pid(port, use_lsof=use_lsof) is None


@pytest.mark.parametrize("use_lsof", [None, False])
def test_host_filter(prefork, use_lsof):
    server = prefork()
    assert listeners.listening_master_pid(server.port, host="127.0.0.1", use_lsof=use_lsof) == server.master
    assert listeners.listening_master_pid(server.port, host="localhost", use_lsof=use_lsof) == server.master
    assert listeners.listening_pids(server.port, host="127.0.0.2", use_lsof=use_lsof) == frozenset()


@pytest.mark.parametrize("use_lsof", [None, False])
def test_wildcard_listener_matches_any_host(prefork, use_lsof):
    server = prefork(addr="0.0.0.0")
    assert listeners.listening_master_pid(server.port, host="127.0.0.1", use_lsof=use_lsof) == server.master
    assert listeners.listening_master_pid(server.port, host="0.0.0.0", use_lsof=use_lsof) == server.master


@pytest.mark.skipif(not socket.has_ipv6 or not os.path.exists("/proc/net/tcp6"), reason="no IPv6")
@pytest.mark.parametrize("use_lsof", [None, False])
def test_ipv6_listener(prefork, use_lsof):
    try:
        server = prefork(kind="tcp6", addr="::1")
    except AssertionError:
        pytest.skip("cannot bind ::1 here")
    assert listeners.listening_pids(server.port, use_lsof=use_lsof) == server.pids
    assert listeners.listening_master_pid(server.port, host="::1", use_lsof=use_lsof) == server.master
    assert listeners.listening_pids(server.port, host="127.0.0.1", use_lsof=use_lsof) == frozenset()


def test_unix_socket_listener(prefork, tmp_path):
    path = str(tmp_path / "app.sock")
    server = prefork(kind="unix", addr=path)
    client = socket.socket(socket.AF_UNIX)
    client.connect(path)
    try:
        assert listeners.unix_socket_listening_pids(path) == server.pids
        assert listeners.unix_socket_master_pid(path) == server.master
        assert listeners.unix_socket_master_pid(str(tmp_path / "other.sock")) is None
    finally:
        client.close()


def test_invalid_port_is_a_user_error():
    for port in (0, 70000, "http"):
        with pytest.raises(GalaxyctlError, match="invalid TCP port"):
            listeners.listening_pids(port)


def test_master_pid_picks_root_of_the_holders():
    me, parent = os.getpid(), os.getppid()
    assert listeners.master_pid({me, parent}) == parent
    assert listeners.master_pid(set()) is None
    assert listeners.parent_pid(me) == parent
