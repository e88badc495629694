"""uwsgi: Laniakea's UwsgiSocket / UwsgiStatsServer API against a real uWSGI, and config parsing.

The uWSGI fixtures run the venv's uWSGI (master, workers, socket, http, stats on loopback) from a
galaxy.ini written by the test, and stop every process they started by PID.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from conftest import wait_for

from galaxyctl_libs.compat.uwsgi import (
    UwsgiAddress,
    UwsgiSocket,
    UwsgiStatsServer,
    UwsgiWorker,
    parse_address,
    read_uwsgi_config,
)
from galaxyctl_libs.errors import GalaxyctlError
from galaxyctl_libs.probes import listeners, procfs

UWSGI = os.path.join(os.path.dirname(sys.executable), "uwsgi")
HAVE_UWSGI = os.access(UWSGI, os.X_OK) or shutil.which("uwsgi") is not None
UWSGI = UWSGI if os.access(UWSGI, os.X_OK) else shutil.which("uwsgi")
HAVE_LSOF = shutil.which("lsof") is not None
needs_uwsgi = pytest.mark.skipif(not HAVE_UWSGI, reason="uWSGI is not installed in this venv")

APP = """
import time

def application(environ, start_response):
    if environ.get("PATH_INFO") == "/slow":
        time.sleep(float(environ.get("QUERY_STRING") or 2))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok\\n"]
"""


def _free_ports(count):
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _children(pid):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and listeners.parent_pid(int(entry)) == pid:
            found.append(int(entry))
    return found


def _stop_uwsgi(proc, timeout=10):
    """SIGTERM the master (--die-on-term), then SIGKILL it and any child left, all by PID."""
    children = _children(proc.pid)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
    deadline = time.monotonic() + 3
    for pid in children:
        while procfs.alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if procfs.alive(pid) and UWSGI in " ".join(procfs.cmdline(pid)):  # still one of ours, not a recycled PID
            os.kill(pid, signal.SIGKILL)


class Uwsgi:
    def __init__(self, proc, directory, ini, yml=None, ports=None):
        self.proc, self.dir, self.ini, self.yml, self.ports = proc, directory, ini, yml, ports

    @property
    def master(self):
        return self.proc.pid


def _start_uwsgi(directory, settings, ready_stats):
    (directory / "app.py").write_text(APP)
    lines = [
        "[uwsgi]",
        "master = true",
        f"wsgi-file = {directory / 'app.py'}",
        "die-on-term = true",
        "need-app = true",
        f"logto = {directory / 'uwsgi.log'}",
        "vacuum = true",
    ]
    lines += [f"{key} = {value}" for key, value in settings]
    lines += [
        "",
        "[app:main]",
        "paste.app_factory = galaxy.web.buildapp:app_factory",
        "filter-with = proxy-prefix",
        "static_dir = %(here)s/static/",
        "",
    ]
    ini = directory / "galaxy.ini"
    ini.write_text("\n".join(lines))
    proc = subprocess.Popen(
        [UWSGI, "--ini", str(ini)],
        cwd=str(directory),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                log = (directory / "uwsgi.log").read_text(errors="replace")[-2000:]
                raise AssertionError(f"uWSGI exited with {proc.returncode}:\n{log}")
            try:
                if ready_stats.workers_accepting():
                    break
            except GalaxyctlError:
                pass
            assert time.monotonic() < deadline, "uWSGI did not become ready in 30 s"
            time.sleep(0.1)
    except BaseException:
        _stop_uwsgi(proc)
        raise
    return proc, ini


@pytest.fixture(scope="module")
def uwsgi_tcp(tmp_path_factory):
    """uWSGI with master, 2 workers, uwsgi socket, http router and stats server on loopback."""
    if not HAVE_UWSGI:
        pytest.skip("uWSGI is not installed in this venv")
    directory = tmp_path_factory.mktemp("uwsgi")
    sock_port, http_port, stats_port = _free_ports(3)
    settings = [
        ("processes", 2),
        ("socket", f"127.0.0.1:{sock_port}"),
        ("http", f"127.0.0.1:{http_port}"),
        ("stats", f"127.0.0.1:{stats_port}"),
    ]
    proc, ini = _start_uwsgi(directory, settings, UwsgiStatsServer("127.0.0.1", stats_port, timeout=0.5))
    yml = directory / "galaxy.yml"
    yml.write_text(
        f"uwsgi:\n  socket: 127.0.0.1:{sock_port}\n  http: [127.0.0.1:{http_port}]\n"
        f"  stats: 127.0.0.1:{stats_port}\n  processes: 2\n  master: true\n"
        f"galaxy:\n  admin_users: admin@example.org\n"
    )
    try:
        yield Uwsgi(proc, directory, str(ini), str(yml), {"socket": sock_port, "http": http_port, "stats": stats_port})
    finally:
        _stop_uwsgi(proc)


@pytest.fixture(scope="module")
def uwsgi_unix(tmp_path_factory):
    """uWSGI with a unix uwsgi socket and a unix stats socket speaking HTTP (stats-http)."""
    if not HAVE_UWSGI:
        pytest.skip("uWSGI is not installed in this venv")
    directory = tmp_path_factory.mktemp("ux")
    sock, stats = directory / "uwsgi.sock", directory / "stats.sock"
    settings = [("processes", 1), ("socket", sock), ("stats", stats), ("stats-http", "true")]
    reader = UwsgiStatsServer(server=str(stats), timeout=0.5, stats_http=True)
    proc, ini = _start_uwsgi(directory, settings, reader)
    try:
        yield Uwsgi(proc, directory, str(ini))
    finally:
        _stop_uwsgi(proc)


# -- Laniakea's galaxyctl_libs README, verbatim (with our paths) ---------------------------------------------------


@needs_uwsgi
def test_laniakea_readme_uwsgi_socket(uwsgi_tcp):
    for fname in (uwsgi_tcp.ini, uwsgi_tcp.yml):
        master_pid, stderr, status = UwsgiSocket(fname=fname).get_uwsgi_master_pid()
        assert (master_pid, stderr, status) == (uwsgi_tcp.master, "", 0)


@needs_uwsgi
def test_laniakea_readme_stats_server(uwsgi_tcp):
    stats = UwsgiStatsServer(timeout=300, fname=uwsgi_tcp.ini)
    socket = stats.GetUwsgiStatsServer()
    assert socket["pid"] == uwsgi_tcp.master
    assert len(socket["workers"]) == 2

    stats = UwsgiStatsServer(timeout=300, fname=uwsgi_tcp.ini)
    status = stats.GetUwsgiStatsServer(uwsgi_tcp.ini)
    assert status is True

    stats = UwsgiStatsServer(timeout=5, fname=uwsgi_tcp.ini)
    busy_list = stats.GetBusyList()
    assert busy_list == []


# -- master PID --------------------------------------------------------------------------------


@needs_uwsgi
def test_master_pid_single_and_same_from_lsof_and_proc(uwsgi_tcp):
    port = uwsgi_tcp.ports["socket"]
    holders = listeners.listening_pids(port, use_lsof=False)
    assert uwsgi_tcp.master in holders and len(holders) == 3  # the master and its 2 workers
    if HAVE_LSOF:
        assert listeners.listening_pids(port, use_lsof=True) == holders
        assert listeners.listening_master_pid(port, use_lsof=True) == uwsgi_tcp.master
    assert listeners.listening_master_pid(port, use_lsof=False) == uwsgi_tcp.master
    for use_lsof in (None, False):
        assert UwsgiSocket(fname=uwsgi_tcp.ini, use_lsof=use_lsof).get_uwsgi_master_pid()[0] == uwsgi_tcp.master
    http_only = UwsgiSocket(server="127.0.0.1", port=uwsgi_tcp.ports["http"])
    assert http_only.get_uwsgi_master_pid() == (uwsgi_tcp.master, "", 0)


@needs_uwsgi
def test_connected_client_is_not_the_master(uwsgi_tcp):
    port = uwsgi_tcp.ports["http"]
    client = socket.create_connection(("127.0.0.1", port))
    try:
        if HAVE_LSOF:  # what Laniakea's galaxyctl ran: it lists us, the client, too
            plain = subprocess.run(
                ["lsof", "-nP", "-t", f"-i:{port}"], stdout=subprocess.PIPE, text=True, timeout=10, check=False
            ).stdout.split()
            assert str(os.getpid()) in plain
        for use_lsof in (None, False):
            assert os.getpid() not in listeners.listening_pids(port, use_lsof=use_lsof)
            result = UwsgiSocket(server="127.0.0.1", port=port, use_lsof=use_lsof).get_uwsgi_master_pid()
            assert result == (uwsgi_tcp.master, "", 0)
    finally:
        client.close()


@needs_uwsgi
def test_without_lsof_proc_is_used(uwsgi_tcp, tmp_path, monkeypatch):
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert shutil.which("lsof") is None
    assert UwsgiSocket(fname=uwsgi_tcp.ini).get_uwsgi_master_pid() == (uwsgi_tcp.master, "", 0)


def test_nothing_listening_is_status_1(tmp_path):
    port = _free_ports(1)[0]
    ini = tmp_path / "galaxy.ini"
    ini.write_text(f"[uwsgi]\nsocket = 127.0.0.1:{port}\n")
    master_pid, stderr, status = UwsgiSocket(fname=str(ini)).get_uwsgi_master_pid()
    assert master_pid is None and status == 1 and f"127.0.0.1:{port}" in stderr


@needs_uwsgi
def test_unix_socket_master_and_http_stats(uwsgi_unix):
    assert UwsgiSocket(fname=uwsgi_unix.ini).get_uwsgi_master_pid() == (uwsgi_unix.master, "", 0)
    stats = UwsgiStatsServer(timeout=5, fname=uwsgi_unix.ini)
    assert stats.stats_http and stats.address.kind == "unix"
    document = stats.get_uwsgi_stats_server()
    assert document["pid"] == uwsgi_unix.master
    assert stats.workers_accepting() and stats.CheckUwsgiWorkers() is True
    assert stats.get_busy_list() == []


# -- stats server ------------------------------------------------------------------------------


@needs_uwsgi
def test_workers_dataclasses(uwsgi_tcp):
    stats = UwsgiStatsServer(timeout=5, fname=uwsgi_tcp.yml)
    workers = stats.workers()
    assert len(workers) == 2 and all(isinstance(w, UwsgiWorker) for w in workers)
    assert {w.id for w in workers} == {1, 2}
    assert all(w.accepting and w.status == "idle" and w.rss > 0 for w in workers)
    assert {w.pid for w in workers} == set(listeners.listening_pids(uwsgi_tcp.ports["socket"])) - {uwsgi_tcp.master}
    assert stats.wait_until_accepting() is True
    assert json.loads(stats.GetStatsJson())["pid"] == uwsgi_tcp.master


@needs_uwsgi
def test_slow_request_makes_exactly_one_worker_busy(uwsgi_tcp):
    stats = UwsgiStatsServer(timeout=5, fname=uwsgi_tcp.ini)
    url = f"http://127.0.0.1:{uwsgi_tcp.ports['http']}/slow?2"
    answers = []

    def request():
        with urllib.request.urlopen(url, timeout=15) as response:
            answers.append(response.read())

    thread = threading.Thread(target=request)
    thread.start()
    try:
        deadline = time.monotonic() + 5
        busy = stats.GetBusyList()
        while not busy and time.monotonic() < deadline:
            time.sleep(0.05)
            busy = stats.GetBusyList()
        workers = {w.pid: w for w in stats.workers()}
        assert len(busy) == 1 and busy[0] in workers
        assert [w.status for w in workers.values()].count("busy") == 1
        assert stats.workers_accepting()  # the other worker still accepts
    finally:
        thread.join(timeout=20)
    assert answers == [b"ok\n"]
    # the worker is idle again once uWSGI has finished with the request, a moment after the client
    # has its answer (under load that moment shows)
    assert wait_for(lambda: stats.get_busy_list() == [], timeout=10), stats.get_busy_list()


def test_stats_deadline_is_a_clear_error():
    port = _free_ports(1)[0]
    stats = UwsgiStatsServer(server="127.0.0.1", port=port, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(GalaxyctlError, match=f"127.0.0.1:{port} did not answer within 0.5s"):
        stats.GetUwsgiStatsServer()
    assert 0.4 < time.monotonic() - started < 3


def test_stats_waits_with_back_off_until_the_server_appears():
    """The stats server comes up late (as during Galaxy's start): the reader retries and gets it."""
    port = _free_ports(1)[0]
    document = {"pid": 1, "workers": [{"id": 1, "pid": 2, "accepting": 0, "status": "idle", "requests": 0, "rss": 7}]}

    def serve_late():
        time.sleep(0.4)
        with socket.create_server(("127.0.0.1", port)) as server:
            server.settimeout(5)
            conn, _ = server.accept()
            with conn:
                conn.sendall(json.dumps(document).encode())

    thread = threading.Thread(target=serve_late)
    thread.start()
    try:
        started = time.monotonic()
        stats = UwsgiStatsServer(server="127.0.0.1", port=port, timeout=5)
        got = stats.get_uwsgi_stats_server()
        assert got == document and time.monotonic() - started >= 0.35
        # accepting=0 is not "busy": it shows in workers() and workers_accepting()
        assert stats.workers(got) == (UwsgiWorker(1, 2, "idle", 0, 7, False),)
    finally:
        thread.join(timeout=10)


def test_stats_needs_an_address(tmp_path):
    ini = tmp_path / "galaxy.ini"
    ini.write_text("[uwsgi]\nsocket = :4001\n")
    with pytest.raises(GalaxyctlError, match=f"{ini}: uwsgi has no stats setting"):
        UwsgiStatsServer(fname=str(ini))
    with pytest.raises(GalaxyctlError, match="give fname"):
        UwsgiStatsServer().get_busy_list()


# -- config parsing ----------------------------------------------------------------------------


def test_ini_variants(tmp_path):
    ini = tmp_path / "galaxy.ini"
    ini.write_text(
        "; Galaxy\n[server:main]\nuse = egg:Paste#http\n\n"
        "[uwsgi]\n"
        "socket = 127.0.0.1:4001   ; the first one\n"
        "socket = :4002 # inline hash comment\n"
        "uwsgi_socket = unix:/run/galaxy/uwsgi.sock\n"
        "socket = /run/galaxy/other.sock\n"
        "http-socket = [::1]:8081\n"
        "stats = 127.0.0.1:9191\n"
        "stats-http\n"
        "processes = 4\n"
        "pythonpath = lib\n"
        "[app:main]\n"
        "static_dir = %(here)s/static/\n"
        "  continuation line of app:main\n"
    )
    config = read_uwsgi_config(str(ini))
    assert config.sockets == (
        UwsgiAddress("tcp", "127.0.0.1", 4001),
        UwsgiAddress("tcp", None, 4002),
        UwsgiAddress("unix", path="/run/galaxy/uwsgi.sock"),
        UwsgiAddress("unix", path="/run/galaxy/other.sock"),
    )
    assert config.http_sockets == (UwsgiAddress("tcp", "::1", 8081),)
    assert config.stats == UwsgiAddress("tcp", "127.0.0.1", 9191) and config.stats_http
    assert config.processes == 4 and config.values("pythonpath") == ["lib"]
    assert config.values("uwsgi-socket") == ["unix:/run/galaxy/uwsgi.sock"]
    sock = UwsgiSocket(fname=str(ini))
    assert (sock.server, sock.port) == ("127.0.0.1", 4001)


def test_http_only_setups(tmp_path):
    ini = tmp_path / "galaxy.ini"
    ini.write_text("[uwsgi]\nhttp = :8080\nstats = 127.0.0.1:9191\nstats-http = false\n")
    config = read_uwsgi_config(str(ini))
    assert config.sockets == () and config.http == (UwsgiAddress("tcp", None, 8080),)
    assert not config.stats_http
    sock = UwsgiSocket(fname=str(ini))
    assert (sock.server, sock.port) == ("127.0.0.1", 8080)
    yml = tmp_path / "galaxy.yml"
    yml.write_text("uwsgi:\n  http: 0.0.0.0:8080\n  stats-http: true\n  stats: /tmp/stats.sock\n")
    config = read_uwsgi_config(str(yml))
    assert config.http == (UwsgiAddress("tcp", "0.0.0.0", 8080),)
    assert config.stats == UwsgiAddress("unix", path="/tmp/stats.sock") and config.stats_http


def test_yml_variants(tmp_path):
    yml = tmp_path / "galaxy.yml"
    yml.write_text(
        "uwsgi:\n  socket:\n    - 127.0.0.1:4001\n    - unix:/srv/uwsgi.sock\n"
        "  http_socket: :8080\n  processes: 2\n  master: true\n  buffer-size: 16384\n"
        "  stats: 127.0.0.1:9191\ngalaxy:\n  admin_users: a@b.c\n"
    )
    config = read_uwsgi_config(str(yml))
    assert config.sockets == (UwsgiAddress("tcp", "127.0.0.1", 4001), UwsgiAddress("unix", path="/srv/uwsgi.sock"))
    assert config.http_sockets == (UwsgiAddress("tcp", None, 8080),)
    assert config.values("master") == ["true"] and config.values("buffer_size") == ["16384"]
    assert str(config.sockets[0]) == "127.0.0.1:4001" and str(config.http_sockets[0]) == ":8080"


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("galaxy.ini", "[uwsgi\nsocket = :4001\n", "line 1: malformed section header"),
        ("galaxy.ini", "socket = :4001\n[uwsgi]\n", "line 1: setting outside any"),
        ("galaxy.ini", "[app:main]\nfoo = bar\n", "no \\[uwsgi\\] section"),
        ("galaxy.ini", "[uwsgi]\nsocket = 127.0.0.1:http\n", "uwsgi socket: invalid port"),
        ("galaxy.ini", "[uwsgi]\nprocesses = many\nsocket = :1\n", "uwsgi processes: expected an integer"),
        ("galaxy.ini", "[uwsgi]\nmaster = true\n", "no socket, http-socket or http setting"),
        ("galaxy.yml", "uwsgi:\n  socket: [a\n", "invalid YAML at line 3, column 1"),
        ("galaxy.yml", "uwsgi:\n  socket: :4001\n   bad: indent\n", "invalid YAML at line 3"),
        ("galaxy.yml", "galaxy:\n  x: 1\n", "no uwsgi: section"),
        ("galaxy.yml", "uwsgi: 127.0.0.1:4001\n", "uwsgi: expected a mapping"),
        ("galaxy.yml", "- uwsgi\n", "expected a mapping at the top level"),
        ("galaxy.yml", "uwsgi:\n  socket: {a: 1}\n", "uwsgi.socket: expected a string"),
    ],
)
def test_broken_files_name_the_file(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(GalaxyctlError, match=message) as info:
        UwsgiSocket(fname=str(path))
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_missing_file_and_missing_arguments(tmp_path):
    missing = tmp_path / "nope" / "galaxy.ini"
    with pytest.raises(GalaxyctlError, match=f"cannot read {missing}: No such file"):
        UwsgiSocket(fname=str(missing))
    with pytest.raises(GalaxyctlError, match="give fname"):
        UwsgiSocket()


def test_parse_address_forms():
    assert parse_address(":9191") == UwsgiAddress("tcp", None, 9191)
    assert parse_address(":9191").connect_host == "127.0.0.1"
    assert parse_address("[::]:80").connect_host == "::1"
    assert parse_address("localhost:80") == UwsgiAddress("tcp", "localhost", 80)
    assert parse_address("unix:/a.sock") == UwsgiAddress("unix", path="/a.sock")
    assert parse_address("@abstract") == UwsgiAddress("unix", path="@abstract")
    assert parse_address("127.0.0.1:443,cert.pem,key.pem".split(",")[0]).port == 443
    with pytest.raises(GalaxyctlError, match="invalid port"):
        parse_address("127.0.0.1:0")
