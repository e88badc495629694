"""herder: gunicorn reloaded with zero downtime, driven for real (gunicorn 27, supervisord) on loopback.

The demo Galaxy answers /api/version with the VERSION file read when its app loads, and with the
worker's PID, so a reload shows new code and which master's worker answered.  Every process a test
starts is recorded and stopped by PID in a ``finally`` (SIGTERM, bounded wait, SIGKILL).
"""

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import xmlrpc.client

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from galaxyctl_libs.demo import make_demo_galaxy  # noqa: E402

GUNICORN = os.path.join(os.path.dirname(sys.executable), "gunicorn")
pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the herder follows processes via /proc"),
    pytest.mark.skipif(not os.path.exists(GUNICORN), reason="gunicorn is not installed next to this python"),
]


from conftest import alive, children_of, descendants_of, free_port, kill_pids, wait_for  # noqa: E402


def read_pid(path):
    try:
        with open(path) as handle:
            return int(handle.read().strip())
    except (OSError, ValueError):
        return None


def version(port, timeout=3):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/version", timeout=timeout) as response:
        return response.status, json.loads(response.read().decode())


def serving_version(port):
    try:
        return version(port)[1]["version_minor"]
    except (OSError, ValueError):
        return None


class Client(threading.Thread):
    """Sequential GETs with a short timeout, until stopped and at least ``minimum`` were made."""

    def __init__(self, port, minimum=300, limit=60, timeout=3.0):
        super().__init__(daemon=True)
        self.port, self.minimum, self.limit, self.timeout = port, minimum, limit, timeout
        self.ok, self.failures, self.versions = 0, [], set()
        self.done = threading.Event()

    @property
    def count(self):
        return self.ok + len(self.failures)

    def run(self):
        deadline = time.monotonic() + self.limit
        while time.monotonic() < deadline and not (self.done.is_set() and self.count >= self.minimum):
            try:
                status, body = version(self.port, timeout=self.timeout)
            except (OSError, ValueError) as exc:
                self.failures.append(repr(exc))
                continue
            if status == 200:
                self.ok += 1
                self.versions.add(body["version_minor"])
            else:
                self.failures.append(f"HTTP {status}")

    def finish(self):
        self.done.set()
        self.join(self.limit + 5)
        assert not self.is_alive()


class Demo:
    """A demo Galaxy tree, its herder command line, and every PID seen (for cleanup)."""

    def __init__(self, root):
        self.root, self.port = root, free_port()
        self.galaxy = os.path.join(root, "galaxy")
        make_demo_galaxy(self.galaxy, self.port)
        self.pidfile = os.path.join(root, "gunicorn.pid")
        self.log = os.path.join(root, "herder.log")
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.path.join(self.galaxy, "lib")]))
        self.seen = []

    def argv(self, preload, ready_timeout=30):
        self.preload = preload  # wait_serving: who loads the app (the master, or each worker)
        gunicorn = [
            GUNICORN,
            "galaxy.webapps.galaxy.fast_factory:factory()",
            "--timeout",
            "300",
            "--pythonpath",
            "lib",
            "-k",
            "galaxy.webapps.galaxy.workers.Worker",
            "-b",
            f"127.0.0.1:{self.port}",
            "--workers=2",
            "--config",
            "python:galaxy.web_stack.gunicorn_config",
            "--no-control-socket",
        ]
        gunicorn += ["--preload"] if preload else []
        return [
            sys.executable,
            "-m",
            "galaxyctl_libs.backends.herder",
            "--pidfile",
            self.pidfile,
            "--ready-timeout",
            str(ready_timeout),
            "--stop-timeout",
            "15",
            "--",
            *gunicorn,
        ]

    def start(self, preload, ready_timeout=30):
        with open(self.log, "ab") as log:
            herder = subprocess.Popen(
                self.argv(preload, ready_timeout),
                cwd=self.galaxy,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.seen.append(herder.pid)
        return herder

    def master(self):
        """The current master and its workers, recorded for cleanup."""
        master = read_pid(self.pidfile)
        workers = children_of(master) if master else []
        self.seen += [master, *workers]
        return master, workers

    def wait_serving(self, expected, timeout=30):
        """The app answers with version ``expected``, and both workers have loaded it: without
        preload each worker imports the app after the fork, and one still importing when a test
        breaks the code would fail to boot (gunicorn's master then halts, exit code 3)."""
        assert wait_for(lambda: serving_version(self.port) == expected, timeout), self.text()
        assert wait_for(lambda: len(self.master()[1]) == 2, 10)
        events = os.path.join(self.galaxy, "database", "events.log")

        def all_loaded():
            master, workers = self.master()
            with open(events) as handle:
                text = handle.read()
            return all(f"app loaded {pid}" in text for pid in ([master] if self.preload else workers))

        assert wait_for(all_loaded, 20), self.text()

    def text(self):
        with open(self.log, errors="replace") as handle:
            return handle.read()

    def herder_lines(self):
        return [line for line in self.text().splitlines() if line.startswith("herder:")]

    def cleanup(self):
        for pid in list(self.seen):
            if pid and alive(pid):
                self.seen += descendants_of(pid)
        kill_pids(self.seen[:1], timeout=20)  # the herder (or supervisord) stops its gunicorn
        kill_pids(self.seen)


@pytest.fixture
def demo():
    root = tempfile.mkdtemp(prefix="herder")
    made = Demo(root)
    try:
        yield made
    finally:
        print("\n".join(made.herder_lines()) if os.path.exists(made.log) else "no herder log")
        made.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def reload_under_load(demo, send_hup, timeout=3.0):
    """HUP while a client loop runs; returns (client, old master, its workers)."""
    old_master, old_workers = demo.master()
    with open(os.path.join(demo.galaxy, "VERSION"), "w") as handle:
        handle.write("2\n")
    client = Client(demo.port, timeout=timeout)
    client.start()
    try:
        assert wait_for(lambda: client.count >= 20, 10)
        done_before = demo.text().count("reload complete")
        send_hup()
        assert wait_for(lambda: demo.text().count("reload complete") > done_before, 30), demo.text()
        time.sleep(0.3)
    finally:
        client.finish()
    print(f"client: {client.count} requests, {len(client.failures)} failed, versions {sorted(client.versions)}")
    assert client.failures == [], client.failures[:5]
    assert client.count >= 300
    assert client.versions == {"1", "2"}  # the loop really spanned the reload
    return client, old_master, old_workers


def assert_new_code_served_by_new_master(demo, old_master, old_workers):
    status, body = version(demo.port)
    assert (status, body["version_minor"]) == (200, "2")
    new_master, new_workers = demo.master()
    assert new_master and new_master != old_master
    assert body["pid"] in new_workers
    assert wait_for(lambda: not any(alive(p) for p in [old_master, *old_workers]), 10)
    return new_master, new_workers


@pytest.mark.parametrize("preload", [True, False], ids=["preload", "no-preload"])
def test_reload_has_zero_failed_requests_and_stop_leaves_nothing(demo, preload):
    herder = demo.start(preload)
    demo.wait_serving("1")

    def hup_twice():  # the second one arrives while the first reload runs: ignored, and said so
        os.kill(herder.pid, signal.SIGHUP)
        time.sleep(0.1)
        os.kill(herder.pid, signal.SIGHUP)

    _, old_master, old_workers = reload_under_load(demo, hup_twice)
    assert herder.poll() is None
    assert "herder: ignored 1 SIGHUP received during the reload" in demo.herder_lines()
    new_master, new_workers = assert_new_code_served_by_new_master(demo, old_master, old_workers)
    assert new_master in children_of(herder.pid)  # adopted: the herder is its child subreaper

    herder.send_signal(signal.SIGTERM)
    assert herder.wait(30) == 0
    assert not any(alive(p) for p in [old_master, *old_workers, new_master, *new_workers])
    assert demo.herder_lines()[-1] == "herder: stopped"


def test_reload_under_supervisord(demo):
    from supervisor.xmlrpc import SupervisorTransport

    sock = os.path.join(demo.root, "supervisor.sock")
    conf = os.path.join(demo.root, "supervisord.conf")
    with open(conf, "w") as handle:
        handle.write(
            f"[unix_http_server]\nfile={sock}\nchmod=0700\n\n"
            f"[supervisord]\nlogfile={demo.root}/supervisord.log\npidfile={demo.root}/supervisord.pid\n"
            f"nodaemon=true\nchildlogdir={demo.root}\n\n"
            "[rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n"
            f"[program:gunicorn]\ncommand={shlex.join(demo.argv(preload=True))}\ndirectory={demo.galaxy}\n"
            f'environment=PYTHONPATH="{demo.env["PYTHONPATH"]}"\nautostart=true\nautorestart=true\n'
            f"startsecs=1\nstopsignal=TERM\nstopwaitsecs=30\nkillasgroup=true\n"
            f"redirect_stderr=true\nstdout_logfile={demo.log}\n"
        )
    with open(os.path.join(demo.root, "supervisord.out"), "wb") as out:
        supervisord = subprocess.Popen(
            [sys.executable, "-m", "supervisor.supervisord", "-c", conf],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    demo.seen.insert(0, supervisord.pid)

    def rpc():  # a fresh connection each call: one refused while supervisord starts is not reusable
        return xmlrpc.client.ServerProxy(
            "http://127.0.0.1", transport=SupervisorTransport(None, None, f"unix://{sock}")
        )

    def info():
        try:
            return rpc().supervisor.getProcessInfo("gunicorn")
        except (OSError, xmlrpc.client.Fault):
            return None

    assert wait_for(lambda: (info() or {}).get("statename") == "RUNNING", 30)
    herder_pid = info()["pid"]
    demo.seen.append(herder_pid)
    demo.wait_serving("1")

    _, old_master, old_workers = reload_under_load(demo, lambda: rpc().supervisor.signalProcess("gunicorn", "HUP"))
    assert_new_code_served_by_new_master(demo, old_master, old_workers)
    after = info()
    assert (after["statename"], after["pid"]) == ("RUNNING", herder_pid)

    new_master, new_workers = demo.master()
    rpc().supervisor.shutdown()
    assert supervisord.wait(40) == 0
    assert not any(alive(p) for p in [herder_pid, new_master, *new_workers, old_master, *old_workers])


def test_reload_waits_until_new_workers_have_loaded_slow_code(demo):
    """New code that takes 2.5 s to load in each worker (no preload): the old workers keep serving
    until the new ones have booted, so no request waits in the backlog (client timeout 1 s)."""
    herder = demo.start(preload=False)
    demo.wait_serving("1")
    factory = os.path.join(demo.galaxy, "lib", "galaxy", "webapps", "galaxy", "fast_factory.py")
    with open(factory) as handle:
        code = handle.read()
    with open(factory, "w") as handle:
        handle.write(
            code.replace(
                "    loaded = _read_code_version()\n", "    loaded = _read_code_version()\n    time.sleep(2.5)\n"
            )
        )
    _, old_master, old_workers = reload_under_load(demo, lambda: os.kill(herder.pid, signal.SIGHUP), timeout=1.0)
    assert_new_code_served_by_new_master(demo, old_master, old_workers)
    ready_after = [line for line in demo.herder_lines() if " serves after " in line][0]
    assert float(ready_after.split(" serves after ")[1].split("s;")[0]) >= 2.5


def test_hup_while_gunicorn_starts_is_deferred(demo):
    """USR2 before gunicorn installs its handlers would kill it: a HUP during a (slow) preload waits."""
    factory = os.path.join(demo.galaxy, "lib", "galaxy", "webapps", "galaxy", "fast_factory.py")
    with open(factory) as handle:
        code = handle.read()
    with open(factory, "w") as handle:
        handle.write(
            code.replace(
                "    loaded = _read_code_version()\n", "    loaded = _read_code_version()\n    time.sleep(1.5)\n"
            )
        )
    herder = demo.start(preload=True)
    assert wait_for(lambda: "started gunicorn master" in demo.text(), 10)
    os.kill(herder.pid, signal.SIGHUP)
    assert wait_for(lambda: "reload complete" in demo.text(), 30), demo.text()
    assert herder.poll() is None
    assert any("reload deferred" in line for line in demo.herder_lines())
    demo.wait_serving("1")


def test_reload_that_hangs_is_abandoned_after_ready_timeout(demo):
    """New code that never finishes loading (preload): after --ready-timeout the herder stops that
    master (found before it wrote any pid file) and the old one keeps serving."""
    herder = demo.start(preload=True, ready_timeout=3)
    demo.wait_serving("1")
    old_master, old_workers = demo.master()
    factory = os.path.join(demo.galaxy, "lib", "galaxy", "webapps", "galaxy", "fast_factory.py")
    with open(factory) as handle:
        code = handle.read()
    with open(factory, "w") as handle:
        handle.write(
            code.replace(
                "    loaded = _read_code_version()\n", "    loaded = _read_code_version()\n    time.sleep(600)\n"
            )
        )
    os.kill(herder.pid, signal.SIGHUP)
    assert wait_for(lambda: "reload FAILED" in demo.text(), 20), demo.text()
    stopped = [line for line in demo.herder_lines() if "stopping new master" in line]
    assert stopped, demo.text()
    hung = int(stopped[0].split("stopping new master ")[1].split(":")[0])
    demo.seen.append(hung)
    assert not alive(hung)
    assert "no new master ready within 3s" in demo.text()
    assert (read_pid(demo.pidfile), sorted(children_of(old_master))) == (old_master, sorted(old_workers))
    assert version(demo.port)[1]["version_minor"] == "1"
    assert herder.poll() is None


def test_master_killed_makes_herder_exit_nonzero(demo):
    herder = demo.start(preload=False)
    demo.wait_serving("1")
    master, workers = demo.master()
    os.kill(master, signal.SIGKILL)
    assert herder.wait(20) != 0
    assert wait_for(lambda: not any(alive(p) for p in workers), 10)
    assert any("exited unexpectedly" in line and "signal 9" in line for line in demo.herder_lines()), demo.text()


@pytest.mark.parametrize("preload", [True, False], ids=["preload", "no-preload"])
def test_reload_with_broken_code_keeps_old_master_serving(demo, preload):
    herder = demo.start(preload, ready_timeout=10)
    demo.wait_serving("1")
    old_master, old_workers = demo.master()
    factory = os.path.join(demo.galaxy, "lib", "galaxy", "webapps", "galaxy", "fast_factory.py")
    with open(factory) as handle:
        good = handle.read()
    with open(factory, "w") as handle:
        handle.write(good + "\ndef broken(:\n")
    client = Client(demo.port, minimum=100)
    client.start()
    try:
        os.kill(herder.pid, signal.SIGHUP)
        assert wait_for(lambda: "reload FAILED" in demo.text(), 20), demo.text()
    finally:
        client.finish()
    assert client.failures == [], (client.failures[:5], demo.text()[-4000:])
    assert client.versions == {"1"}
    assert herder.poll() is None
    assert (read_pid(demo.pidfile), sorted(children_of(old_master))) == (old_master, sorted(old_workers))
    assert [line for line in demo.herder_lines() if "reload FAILED" in line][0].endswith(
        f"old master {old_master} keeps serving"
    )
    assert version(demo.port)[1]["version_minor"] == "1"

    # once the code is fixed, the next graceful goes through
    with open(factory, "w") as handle:
        handle.write(good)
    with open(os.path.join(demo.galaxy, "VERSION"), "w") as handle:
        handle.write("3\n")
    os.kill(herder.pid, signal.SIGHUP)
    assert wait_for(lambda: "reload complete" in demo.text(), 20), demo.text()
    assert version(demo.port)[1]["version_minor"] == "3"
    herder.send_signal(signal.SIGTERM)
    assert herder.wait(30) == 0
    assert not any(alive(p) for p in [old_master, *old_workers])


# ---------------------------------------------------------------- through galaxyctl (services wiring)


def _client_loop(url, count, failures, stop):
    import urllib.request as _request

    for _ in range(count):
        if stop.is_set():
            break
        try:
            with _request.urlopen(url, timeout=10) as response:
                if response.status != 200:
                    failures.append(response.status)
        except OSError as exc:
            failures.append(repr(exc))


def test_galaxyctl_graceful_with_default_preload_drops_no_request(gctl, demo_galaxy):
    import threading

    from conftest import http_get, wait_for

    config, port = demo_galaxy(gravity={"gunicorn": {"preload": True, "workers": 2}})
    gctl("register", config)
    assert "--preload" in gctl("exec", "-n", "gunicorn").stdout  # exec -n: gravity's command line
    gctl("start", "--timeout", "60")
    program = os.path.join(
        gctl.state_dir, "supervisor", "supervisord.conf.d", "_default_.d", "galaxy_gunicorn_gunicorn.conf"
    )
    assert "galaxyctl_libs.backends.herder" in open(program).read()  # what supervisord runs: our herder
    url = f"http://127.0.0.1:{port}/api/version"
    first_pid = http_get(url)[1]["pid"]
    with open(os.path.join(os.path.dirname(os.path.dirname(config)), "VERSION"), "w") as handle:
        handle.write("2\n")
    failures, stop = [], threading.Event()
    client = threading.Thread(target=_client_loop, args=(url, 400, failures, stop))
    client.start()
    try:
        gctl("graceful", "--timeout", "90")
        client.join(timeout=120)
    finally:
        stop.set()
        client.join(timeout=30)
    assert failures == []
    assert wait_for(lambda: http_get(url)[1]["version_minor"] == "2", timeout=30)
    assert http_get(url)[1]["pid"] != first_pid
    rows = yaml.safe_load(gctl("status", "--json").stdout)["services"]
    assert rows[0]["state"] in ("RUNNING", "STARTING")
    gctl("stop")
