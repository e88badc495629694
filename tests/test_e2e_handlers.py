"""End to end: a rolling graceful of two real Galaxy job handlers while jobs keep coming.

Galaxy 26.1 from PyPI (the venv tests/test_e2e_galaxy.py builds and caches), web + celery + beat +
two dynamic job handlers.  While a job is submitted every few seconds, ``galaxyctl graceful``
restarts the handlers one by one: no job fails, every job completes, and at every moment at least
one handler is ready (its heartbeat row in Galaxy's ``worker_process`` table, from a live process).
``check`` reports both handlers' heartbeat healthy.

Galaxy 26.1's LocalJobRunner kills the jobs a handler runs when the handler shuts down and fails
them ("job terminated by Galaxy shutdown"; they cannot be recovered, galaxy#6246): graceful drains
each handler first (Galaxy's admin_job_lock sent to that handler, then its local jobs waited for).
Without the drain (``--drain 0``) about one job in a run like this one is killed.  Marked ``e2e``; heavy: run it under
``flock /tmp/galaxyctl-heavy.lock``.  Every process is stopped by PID at the end.
"""

import json
import os
import shutil
import sqlite3
import tempfile
import threading
import time

import pytest
import yaml
from conftest import Galaxyctl, UserGalaxyctl, alive, descendants_of, free_port, install_checkout, kill_pids, wait_for
from test_e2e_galaxy import (  # noqa: F401 - galaxy_venv is a fixture
    API_KEY,
    SETTLE_TIMEOUT,
    START_TIMEOUT,
    _all_running,
    _http,
    _run_as,
    _status,
    _tail,
    galaxy_venv,
    quickstart,
    render_e2e_config,
)

pytestmark = pytest.mark.e2e

HANDLERS = ("handler_0", "handler_1")
JOB_EVERY = 8  # seconds between two job submissions during graceful (a job takes ~30 s on 2 cores)
JOB_TIMEOUT = 900  # every job submitted must end within this (bounded)
KILLED_BY_SHUTDOWN = ("job terminated by Galaxy shutdown", "killed when Galaxy was restarted")


def _config(root, port, user, venv):
    text = render_e2e_config(root, port, user, venv)
    data = yaml.safe_load(text)
    data["gravity"]["handlers"]["handler"]["processes"] = 2
    path = os.path.join(root, "config", "galaxy.yml")
    with open(path, "w") as handle:
        yaml.safe_dump(data, handle, sort_keys=False)
    return path


def ready_handlers(database):
    """The handlers whose heartbeat row exists and whose process lives: {server_name: pid}."""
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as conn:
            rows = conn.execute("SELECT server_name, pid FROM worker_process").fetchall()
    except sqlite3.Error:
        return None  # busy: no sample
    return {name: pid for name, pid in rows if name in HANDLERS and pid and alive(pid)}


class Jobs:
    """A user and a history; ``submit`` uploads pasted text (a real job for a handler)."""

    def __init__(self, base):
        self.base = base
        _, user = _http(
            base + "/api/users",
            "POST",
            {"username": "e2e", "email": "e2e@example.org", "password": "e2e-password-123"},
            key=API_KEY,
        )
        self.key = _http(base + f"/api/users/{user['id']}/api_key", "POST", key=API_KEY)[1]
        self.history = _http(base + "/api/histories", "POST", {"name": "e2e"}, key=self.key)[1]["id"]
        self.ids, self.errors = [], []

    def submit(self):
        body = {
            "history_id": self.history,
            "targets": [
                {
                    "destination": {"type": "hdas"},
                    "elements": [{"src": "pasted", "paste_content": f"job {len(self.ids)}\n", "ext": "txt"}],
                }
            ],
        }
        try:
            self.ids.append(
                _http(self.base + "/api/tools/fetch", "POST", body, key=self.key, timeout=60)[1]["jobs"][0]["id"]
            )
        except OSError as exc:
            self.errors.append(repr(exc))

    def states(self):
        return {job: _http(self.base + f"/api/jobs/{job}", key=API_KEY)[1]["state"] for job in self.ids}


def job_rows(database):
    """(id, state, handler, info) of every job in Galaxy's database."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30) as conn:
        return conn.execute("SELECT id, state, handler, info FROM job ORDER BY id").fetchall()


def _watch(database, samples, stop):
    while not stop.is_set():
        found = ready_handlers(database)
        if found is not None:
            samples.append((time.monotonic(), found))
        time.sleep(0.1)


def _submit_every(jobs, stop):
    while not stop.wait(JOB_EVERY):
        jobs.submit()


def _longest_gap(samples):
    """The longest stretch of samples without a ready handler (seconds)."""
    longest, since = 0.0, None
    for moment, found in samples:
        if not found and since is None:
            since = moment
        elif found and since is not None:
            longest, since = max(longest, moment - since), None
    return longest


def test_rolling_graceful_of_two_real_handlers_fails_no_job(galaxy_venv, record_property):  # noqa: F811
    user = _run_as()
    root = tempfile.mkdtemp(prefix="gxe2h")
    os.chmod(root, 0o755)
    for sub in ("config", "data", "logs"):
        os.makedirs(os.path.join(root, sub))
    port = free_port()
    config = _config(root, port, user, galaxy_venv)
    quickstart.create_database(galaxy_venv, config, os.path.join(root, "logs", "create-db.log"))
    if user:
        for sub in ("data", "logs"):
            quickstart.chown_tree(os.path.join(root, sub), user)
        install_checkout(galaxy_venv)
        gctl = UserGalaxyctl(os.path.join(root, "state"), galaxy_venv)
    else:
        gctl = Galaxyctl(os.path.join(root, "state"))
    base = f"http://127.0.0.1:{port}"
    database = os.path.join(root, "data", "universe.sqlite")
    figures, service_pids = {}, set()
    try:
        gctl("register", config)
        gctl("start", "--timeout", str(START_TIMEOUT), timeout=START_TIMEOUT + 60)
        rows = wait_for(lambda: _all_running(gctl), timeout=SETTLE_TIMEOUT, interval=2)
        assert rows and set(HANDLERS) <= set(rows), _status(gctl)
        service_pids.update(row["pid"] for row in rows.values())
        assert wait_for(lambda: len(ready_handlers(database) or {}) == 2, timeout=SETTLE_TIMEOUT, interval=1), _tail(
            os.path.join(root, "logs", "handler_0.log")
        )

        # check: both handlers' heartbeat healthy; celery's ping cannot cross Galaxy's default
        # broker (kombu's SQLAlchemy transport has no broadcast): said so, and no problem
        check = gctl("check", "--restart-window", "0", "--timeout", "30", check=False, timeout=180)
        assert check.returncode == 0, check.stdout + check.stderr
        assert "handlers_heartbeat=2;;;0;2" in check.stdout and "celery_answering" not in check.stdout
        report = json.loads(gctl("status", "--json", "--ping", "--timeout", "30", timeout=180).stdout)
        celery = next(row for row in report["services"] if row["service"] == "celery")
        assert celery["health"]["state"] == "unavailable" and "sqlalchemy" in celery["health"]["detail"], celery

        jobs = Jobs(base)
        jobs.submit()
        before = ready_handlers(database)
        samples, stop = [], threading.Event()
        threads = [
            threading.Thread(target=_watch, args=(database, samples, stop)),
            threading.Thread(target=_submit_every, args=(jobs, stop)),
        ]
        for thread in threads:
            thread.start()
        try:
            time.sleep(JOB_EVERY * 2)  # jobs under way before the restarts
            started = time.monotonic()
            result = gctl("graceful", "--timeout", str(START_TIMEOUT), timeout=START_TIMEOUT * 3)
            figures["graceful_s"] = round(time.monotonic() - started, 1)
            time.sleep(JOB_EVERY * 2)  # and after them
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=120)
        assert all(f"{name}: reloaded" in result.stdout for name in HANDLERS), result.stdout
        for name in HANDLERS:  # each was drained: Galaxy's own log says it took the job lock
            with open(os.path.join(root, "logs", f"{name}.log"), errors="replace") as handle:
                assert "Administrative Job Lock is now set to True" in handle.read(), name
        after = ready_handlers(database)
        assert set(after) == set(HANDLERS) and all(after[n] != before[n] for n in HANDLERS), (before, after)
        figures["samples"] = len(samples)
        figures["longest_without_ready_handler_s"] = round(_longest_gap(samples), 2)
        assert samples and min(len(found) for _, found in samples) >= 1, [s for s in samples if not s[1]][:5]

        # every job completes, none fails
        assert jobs.errors == [] and len(jobs.ids) >= 5, (jobs.errors, jobs.ids)
        figures["jobs"] = len(jobs.ids)
        states = wait_for(
            lambda: (s := jobs.states()) and all(v in ("ok", "error", "failed", "deleted") for v in s.values()) and s,
            timeout=JOB_TIMEOUT,
            interval=2,
        )
        assert states, jobs.states()
        rows = job_rows(database)
        failed = [row for row in rows if row[1] != "ok"]
        killed = [row for row in failed if any(text in (row[3] or "") for text in KILLED_BY_SHUTDOWN)]
        figures["jobs_ok"] = len(rows) - len(failed)
        figures["jobs_killed_running_in_a_stopped_handler"] = len(killed)
        assert failed == [], failed  # none killed by a handler's restart (drained), none failed otherwise

        check = gctl("check", "--restart-window", "0", "--timeout", "30", check=False, timeout=180)
        assert check.returncode == 0 and "handlers_heartbeat=2;;;0;2" in check.stdout, check.stdout + check.stderr
        rows = _status(gctl)[1]
        service_pids.update(row["pid"] for row in rows.values() if row["pid"])
        gctl("stop", timeout=300)
    finally:
        record_property("figures", figures)
        print("\ne2e handler figures:", json.dumps(figures, sort_keys=True))
        gctl.remember()
        for pid in list(service_pids):
            service_pids.update(descendants_of(pid))
        gctl.cleanup()
        kill_pids(sorted(p for p in service_pids if p), timeout=30)
        shutil.rmtree(root, ignore_errors=True)


def test_heartbeat_read_through_galaxys_interpreter(galaxy_venv, tmp_path):  # noqa: F811
    """A database other than a SQLite file is read by Galaxy's interpreter and its SQLAlchemy (here a
    relative SQLite URL takes that path); a driver Galaxy's venv lacks is one clear line."""
    from galaxyctl_libs.errors import GalaxyctlError
    from galaxyctl_libs.probes import heartbeat

    with sqlite3.connect(os.path.join(tmp_path, "universe.sqlite")) as conn:
        conn.execute("CREATE TABLE worker_process (server_name, hostname, pid, update_time TIMESTAMP)")
        conn.execute(
            "INSERT INTO worker_process VALUES ('handler_0', ?, 7, datetime('now', '-5 seconds'))",
            (heartbeat.hostname(),),
        )
    python = os.path.join(galaxy_venv, "bin", "python")
    url = f"sqlite:///{tmp_path}/universe.sqlite"
    rows = heartbeat._read_foreign(url, heartbeat.HEARTBEAT_SQL, {"host": heartbeat.hostname()}, python, None, 60)
    beats = heartbeat._beats(rows)
    assert beats["handler_0"].pid == 7 and beats["handler_0"].age_seconds < 60
    try:
        heartbeat.read("mysql+nosuchdriver://galaxy:secret@127.0.0.1:1/galaxy", python, None, 60)
        raise AssertionError("an unknown driver must be an error")
    except GalaxyctlError as exc:
        assert exc.message.startswith("cannot read Galaxy's mysql+nosuchdriver database: ")
        assert "secret" not in exc.message
