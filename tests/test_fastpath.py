"""The cron path: what `status` loads, the lazy parser, records, the socket helpers, batched writes.

No timing asserts (bench/ has the figures); these pin down the *causes* of a fast status — which
modules it must not import — and that the lean replacements behave like what they replace.  Only
public interfaces of the standard library: ``socket`` (and with it ``enum``) is on the status path,
``sqlite3`` too when handlers' heartbeats are in a SQLite database.
"""

import dataclasses
import os
import socket
import stat
import subprocess
import sys
import threading
import time

import pytest
from conftest import GALAXYCTL, REPO, run_listing_modules

from galaxyctl_libs import fsutil, records
from galaxyctl_libs.cli import main as cli
from galaxyctl_libs.errors import GalaxyctlError
from galaxyctl_libs.probes import http as health
from galaxyctl_libs.probes import netio

# Heavy modules a cron `status` used to pay for; none is needed to ask supervisord and probe the web.
# (socket and enum are: supervisord and the web are asked through socket, which imports enum.)
NOT_ON_STATUS_PATH = (
    "json",  # the records status reads are read by smalljson (small) and json only when big
    "re",  # json's decoder and rpc's old fast path imported it
    "argparse",  # a plain status command line is read by cli/options.py
    "gettext",
    "dataclasses",
    "inspect",
    "yaml",
    "subprocess",
    "shutil",
    "tempfile",
    "contextlib",
    "signal",
    "shlex",
    "hashlib",
    "typing",
    "http.client",
    "xmlrpc.client",
    "encodings.idna",  # an ASCII host goes to getaddrinfo as bytes
    "xml.parsers.expat",  # getAllProcessInfo's reply is read by rpc's fast path
    "galaxyctl_libs.backends.supervisor.render",
    "galaxyctl_libs.core.config",
    "galaxyctl_libs.core.registration",
    "galaxyctl_libs.core.state",
    "galaxyctl_libs.core.services",
)


def _run_and_list_modules(gctl, *args):
    return run_listing_modules(
        "from galaxyctl_libs.cli.main import main\nsys.exit(main(sys.argv[1:]))",
        "--state-dir",
        gctl.state_dir,
        *args,
        env=gctl.env,
    )


def test_status_with_supervisord_up_loads_no_heavy_module(gctl, demo_galaxy, user_venv):
    config, _ = demo_galaxy(gravity={"celery": {"enable": False, "enable_beat": False}})
    gctl("register", config)
    gctl("start", timeout=180)
    result, modules = _run_and_list_modules(gctl, "status")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "gunicorn" in result.stdout and "web ok" in result.stdout
    assert sorted(m for m in NOT_ON_STATUS_PATH if m in modules) == []
    as_json = gctl("status", "--json")  # through records.asdict
    assert '"program": "gunicorn"' in as_json.stdout and '"web": "ok ' in as_json.stdout
    # gravity 1.x's way, the config named with -c: noted for this run, still no config code loaded
    result, modules = _run_and_list_modules(gctl, "-c", config, "status")
    assert result.returncode == 0 and "web ok" in result.stdout, result.stdout + result.stderr
    assert sorted(m for m in NOT_ON_STATUS_PATH if m in modules) == []
    # as installed (not editable) by pip and run through its shebang: galaxyctl is our own script,
    # not pip's console-script wrapper, which imports re; PYTHONPROFILEIMPORTTIME (-X importtime)
    # lists every module the run imports, start-up included
    result = subprocess.run(
        [os.path.join(user_venv, "bin", "galaxyctl"), "--state-dir", gctl.state_dir, "status"],
        capture_output=True, text=True, timeout=60, env={**gctl.env, "PYTHONPROFILEIMPORTTIME": "1"},
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0 and "web ok" in result.stdout, result.stdout + result.stderr
    imported = {
        line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")
    }
    assert "galaxyctl_libs.actions.monitoring" in imported
    assert sorted(m for m in NOT_ON_STATUS_PATH if m in imported) == []


def test_help_loads_no_library_module(gctl):
    result, modules = _run_and_list_modules(gctl, "--help")
    assert result.returncode == 0
    assert "status" in result.stdout and "supervisorctl" in result.stdout  # every command listed
    assert (
        sorted(
            m
            for m in modules
            if m.startswith("galaxyctl_libs.")
            and not m.startswith("galaxyctl_libs.cli")
            and m not in ("galaxyctl_libs.errors", "galaxyctl_libs.exitcodes")
        )
        == []
    )
    assert "shutil" not in modules  # the help formatter is sized without it


@pytest.mark.parametrize("command, torn_down", [("status", False), ("check", False), ("list", True)])
def test_status_and_check_skip_the_interpreters_teardown_once_their_output_is_out(tmp_path, command, torn_down):
    """The entry point ends ``status`` and ``check`` with os._exit after flushing: their output and exit
    code are whole, and nothing of the teardown (atexit here) runs; other commands end as usual."""
    program = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('torn down', flush=True))\n"
        f"sys.argv = ['galaxyctl', '--state-dir', {str(tmp_path)!r}, {command!r}]\n"
        "from galaxyctl_libs.cli.main import run\n"
        "run()\n"
    )
    env = {**os.environ, "PYTHONPATH": REPO, "GALAXYCTL_ALLOW_ROOT": "1"}
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL
    )
    assert ("torn down" in result.stdout) == torn_down, result.stdout + result.stderr
    if command != "list":  # nothing registered: status's LSB 3 and check's Nagios UNKNOWN are both 3
        output = result.stdout + result.stderr
        assert result.returncode == 3 and "no Galaxy config is registered" in output, (result.returncode, output)
        for closed in (1, 2):  # started with stdout or stderr closed (Python's stream is None): the same code
            quiet = subprocess.run(
                [sys.executable, "-c", program], env=env, timeout=60, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                preexec_fn=lambda fd=closed: os.close(fd),
            )  # fmt: skip
            assert quiet.returncode == 3, (closed, quiet.returncode)


# ---------------------------------------------------------------- the lazy parser


@pytest.mark.parametrize(
    "argv, word",
    [
        (["status"], "status"),
        (["--state-dir", "/x", "status", "--json"], "status"),
        (["--state-dir=/x", "--allow-root", "check"], "check"),
        (["--state", "status", "start"], "start"),  # an abbreviated --state-dir takes the next word
        (["--allow-root", "--help"], None),
        (["--", "status"], None),
        ([], None),
    ],
)
def test_command_word(argv, word):
    assert cli._command_word(argv) == word


def test_parser_registers_only_the_named_command_but_all_for_help_and_typos():
    sub = next(a for a in cli.build_parser(["status"])._actions if a.dest == "command")
    assert list(sub.choices) == ["status"]
    everything = next(a for a in cli.build_parser(["statu"])._actions if a.dest == "command")
    assert len(everything.choices) == len(cli.COMMANDS) and "statu" not in everything.choices
    assert list(everything.choices) == [name for name, _, _ in cli.COMMANDS]


def test_typo_lists_every_command(gctl):
    result = gctl("statu", check=False)
    assert result.returncode == 2
    assert "invalid choice: 'statu'" in result.stderr and "'supervisorctl'" in result.stderr


def test_subcommand_help_and_columns(gctl):
    env = dict(gctl.env, COLUMNS="50")
    result = subprocess.run(
        [sys.executable, GALAXYCTL, "status", "--help"], capture_output=True, text=True, timeout=30, env=env
    )
    assert result.returncode == 0 and "--timeout" in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= 50


# ---------------------------------------------------------------- records


class Point(records.Record):
    x: int
    y: int = 0
    label: str = ""

    _not_compared = ("label",)

    @property
    def total(self):
        return self.x + self.y


@dataclasses.dataclass(frozen=True)
class Plain:
    name: str
    points: tuple


def test_record_fields_defaults_and_errors():
    assert Point._fields == ("x", "y", "label")
    p = Point(1, label="a")
    assert (p.x, p.y, p.label, p.total) == (1, 0, "a", 1)
    assert repr(p) == "Point(x=1, y=0, label='a')"
    with pytest.raises(TypeError, match="missing field 'x'"):
        Point()
    with pytest.raises(TypeError, match="unexpected field 'z'"):
        Point(1, z=2)
    with pytest.raises(TypeError, match="twice"):
        Point(1, x=2)
    with pytest.raises(TypeError, match="takes 3 fields"):
        Point(1, 2, "a", 4)


def test_record_is_immutable_comparable_and_hashable():
    p = Point(1, 2, "a")
    with pytest.raises(AttributeError):
        p.x = 5
    with pytest.raises(AttributeError):
        del p.x
    assert p == Point(1, 2, "b")  # label is not compared
    assert p != Point(1, 3, "a")
    assert hash(p) == hash(Point(1, 2, "other"))
    assert (p == (1, 2, "a")) is False
    assert len({p, Point(1, 2), Point(2, 2)}) == 2


def test_record_replace_and_asdict():
    p = Point(1, 2, "a")
    q = records.replace(p, y=5)
    assert (q.x, q.y, q.label) == (1, 5, "a") and p.y == 2
    data = records.asdict([Plain("n", (p, Point(3))), {"k": q}])
    assert data == [
        {"name": "n", "points": ({"x": 1, "y": 2, "label": "a"}, {"x": 3, "y": 0, "label": ""})},
        {"k": {"x": 1, "y": 5, "label": "a"}},
    ]


# ---------------------------------------------------------------- netio and the probe


HTTP_REPLY = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n" + b"x" * 200000


class _OneShotHTTP:
    """A real listener that answers each connection with a fixed reply (then closes)."""

    def __init__(self, family, address, reply=HTTP_REPLY):
        self.reply = reply
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind(address)
        self.sock.listen(8)
        self.sock.settimeout(10)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            while True:
                conn, _ = self.sock.accept()
                with conn:
                    conn.recv(4096)
                    conn.sendall(self.reply)
        except OSError:
            return

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() (a close alone does not)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(timeout=10)


@pytest.fixture
def http_server():
    servers = []

    def make(family, address, reply=HTTP_REPLY):
        server = _OneShotHTTP(family, address, reply)
        servers.append(server)
        return server.sock.getsockname()

    try:
        yield make
    finally:
        for server in servers:
            server.close()


def test_probe_over_tcp_by_address_and_by_name(http_server):
    host, port = http_server(socket.AF_INET, ("127.0.0.1", 0))
    for bind in (f"127.0.0.1:{port}", f"localhost:{port}", f"0.0.0.0:{port}"):
        result = health.probe(health.parse_bind(bind), timeout=5)
        assert result.ok and result.status == 200, (bind, result)
        assert len(result.body) == 4096  # the body kept for messages is bounded


def test_probe_over_ipv6_and_unix_socket(http_server, short_tmp):
    if socket.has_ipv6:
        try:
            _, port, *_ = http_server(socket.AF_INET6, ("::1", 0))
        except OSError:
            port = None  # no IPv6 loopback on this host
        if port:
            assert health.probe(health.parse_bind(f"[::1]:{port}"), timeout=5).ok
    path = os.path.join(short_tmp, "web.sock")
    http_server(socket.AF_UNIX, path)
    assert health.probe(health.parse_bind(f"unix:{path}"), timeout=5).ok


def test_probe_reports_a_refused_connection():
    from conftest import free_port

    refused = health.probe(health.parse_bind(f"127.0.0.1:{free_port()}"), timeout=2)
    assert not refused.ok and refused.status is None and "refused" in refused.error.lower()


def test_exchange_respects_limit_and_closes(http_server):
    _, port = http_server(socket.AF_INET, ("127.0.0.1", 0))
    sock = netio.connect_tcp("127.0.0.1", port, 5)
    reply = netio.exchange(sock, b"GET / HTTP/1.0\r\n\r\n", limit=1000)
    assert reply.startswith(b"HTTP/1.0 200") and len(reply) < 200000
    assert sock.fileno() == -1  # closed


def test_uwsgi_stats_read_through_netio_and_size_bound(http_server, monkeypatch):
    """The uWSGI stats reader shares netio's exchange: an HTTP stats answer is parsed, and one
    larger than the bound is refused (the bound is lowered so the test need not send 64 MiB)."""
    from galaxyctl_libs.compat import uwsgi

    document = b'{"pid": 42, "workers": []}'
    _, port = http_server(socket.AF_INET, ("127.0.0.1", 0), b"HTTP/1.0 200 OK\r\n\r\n" + document)
    stats = uwsgi.UwsgiStatsServer("127.0.0.1", port, timeout=5, stats_http=True)
    assert stats.get_uwsgi_stats_server() == {"pid": 42, "workers": []}
    monkeypatch.setattr(uwsgi, "_MAX_STATS_BYTES", 10)
    oversized = uwsgi.UwsgiStatsServer("127.0.0.1", port, timeout=0.5, stats_http=True)
    with pytest.raises(ValueError, match="stats answer too large"):  # one read; the public call retries it
        oversized._read_once(oversized._address(), time.monotonic() + 5)
    with pytest.raises(GalaxyctlError, match="did not answer within 0.5s"):
        oversized.get_uwsgi_stats_server()


# ---------------------------------------------------------------- batched writes and the lock


def test_write_many_if_changed_parallel_and_in_turn(tmp_path):
    many = {str(tmp_path / "a" / f"f{i:03d}.conf"): f"content {i}\n" for i in range(fsutil.PARALLEL_FROM + 25)}
    few = {str(tmp_path / "b" / f"g{i}.conf"): f"g {i}\n" for i in range(3)}
    for files in (many, few):
        os.makedirs(os.path.dirname(next(iter(files))))
        assert fsutil.write_many_if_changed(files) == sorted(files)
        for path, content in files.items():
            with open(path) as handle:
                assert handle.read() == content
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert fsutil.write_many_if_changed(files) == []  # nothing changed, nothing written
    changed = dict(many)
    changed[sorted(many)[7]] = "new\n"
    assert fsutil.write_many_if_changed(changed) == [sorted(many)[7]]
    leftovers = [n for n in os.listdir(tmp_path / "a") if n.endswith(".tmp")]
    assert leftovers == []


def test_write_many_if_changed_raises_a_writer_error(tmp_path):
    files = {str(tmp_path / f"f{i:03d}"): "x" for i in range(fsutil.PARALLEL_FROM + 4)}
    files[str(tmp_path / "missing-dir" / "f")] = "x"
    with pytest.raises(GalaxyctlError, match="cannot write .*missing-dir/f: No such file or directory"):
        fsutil.write_many_if_changed(files)


def test_exclusive_lock_serialises_and_releases(tmp_path):
    lock = str(tmp_path / "lock")
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from galaxyctl_libs import fsutil\n"
        "with fsutil.exclusive_lock(sys.argv[2]): print('got it', flush=True)"
    )
    other = None
    try:
        with fsutil.exclusive_lock(lock):
            other = subprocess.Popen([sys.executable, "-c", code, REPO, lock], stdout=subprocess.PIPE, text=True)
            with pytest.raises(subprocess.TimeoutExpired):
                other.wait(timeout=0.5)  # blocked while we hold the lock
        out, _ = other.communicate(timeout=30)
        assert out.strip() == "got it"
    finally:
        if other is not None and other.poll() is None:
            other.kill()
            other.wait()
    with pytest.raises(GalaxyctlError, match="cannot open lock file"):
        with fsutil.exclusive_lock(str(tmp_path / "no" / "such" / "lock")):
            pass
