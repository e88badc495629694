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
import time

import pytest
from conftest import Galaxyctl, UserGalaxyctl, descendants_of, free_port, install_checkout, kill_pids, wait_for
from galaxy_api import HANDLERS, Jobs, JobTraffic, job_outcome, ready_handlers, render_config
from test_e2e_galaxy import (  # noqa: F401 - galaxy_venv is a fixture
    SETTLE_TIMEOUT,
    START_TIMEOUT,
    _all_running,
    _run_as,
    _status,
    _tail,
    galaxy_venv,
    quickstart,
)

pytestmark = pytest.mark.e2e

JOB_EVERY = 8  # seconds between two job submissions during graceful (a job takes ~30 s on 2 cores)
JOB_TIMEOUT = 900  # every job submitted must end within this (bounded)


def _config(root, port, user, venv):
    path = os.path.join(root, "config", "galaxy.yml")
    with open(path, "w") as handle:
        handle.write(render_config(quickstart, root, port, user, venv, handlers=len(HANDLERS)))
    return path


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
        with JobTraffic(jobs, database, JOB_EVERY) as traffic:
            time.sleep(JOB_EVERY * 2)  # jobs under way before the restarts
            started = time.monotonic()
            result = gctl("graceful", "--timeout", str(START_TIMEOUT), timeout=START_TIMEOUT * 3)
            figures["graceful_s"] = round(time.monotonic() - started, 1)
            time.sleep(JOB_EVERY * 2)  # and after them
        assert all(f"{name}: reloaded" in result.stdout for name in HANDLERS), result.stdout
        for name in HANDLERS:  # each was drained: Galaxy's own log says it took the job lock
            with open(os.path.join(root, "logs", f"{name}.log"), errors="replace") as handle:
                assert "Administrative Job Lock is now set to True" in handle.read(), name
        after = ready_handlers(database)
        assert set(after) == set(HANDLERS) and all(after[n] != before[n] for n in HANDLERS), (before, after)
        figures.update(traffic.figures())
        assert traffic.samples and figures["fewest_ready_handlers"] >= 1, [s for s in traffic.samples if not s[1]][:5]

        # every job completes, none fails
        assert jobs.errors == [] and len(jobs.ids) >= 5, (jobs.errors, jobs.ids)
        figures["jobs"] = len(jobs.ids)
        assert wait_for(jobs.all_finished, timeout=JOB_TIMEOUT, interval=2), jobs.states()
        outcome = job_outcome(database)
        figures["jobs_ok"] = outcome["jobs_ok"]
        figures["jobs_killed_running_in_a_stopped_handler"] = len(outcome["killed"])
        # none killed by a handler's restart (drained), none failed otherwise
        assert outcome["failed"] == [], outcome["failed"]

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
