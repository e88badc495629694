"""End to end: a real Galaxy from PyPI (galaxy-web-apps) under galaxyctl.

Slow (a first start creates Galaxy's database: ~50 s on 2 cores) and needs the Galaxy venv, so it is
marked ``e2e``: ``pytest -m e2e tests/test_e2e_galaxy.py``.

The venv is keyed by the pinned version and reused between local runs:

- ``GALAXYCTL_E2E_VENV=/path``: use (or build) exactly that venv. CI points it at a fresh path so
  it is built from PyPI every run.
- otherwise ``$GALAXYCTL_E2E_CACHE/galaxy-VERSION``, where the cache is by default
  ``galaxyctl-e2e-UID`` in the system temp dir (``/tmp/galaxyctl-e2e-0`` for root): outside the
  checkout, which the Galaxy user may not be able to enter.

Galaxy runs with the config ``scripts/galaxy-quickstart`` writes (imported from it), with galaxyctl
from this checkout and ``gravity.virtualenv`` pointing at the Galaxy venv. As root, the services run
as root (``--allow-root``) unless ``GALAXYCTL_E2E_USER`` names the user to run them as
(``gravity.galaxy_user``): then galaxyctl is installed into the Galaxy venv (as the quickstart does)
and supervisord, the herder and every service run as that user.

One Galaxy, one run: ``register`` + ``start`` on an empty database (ordered start), ``check`` right
after it, status and heartbeats, a job, then a rolling ``graceful`` of both handlers while a job
is submitted every half minute (no job fails, a handler is always ready), and ``stop``.  Heavy: run
it under ``flock /tmp/galaxyctl-heavy.lock``.

Every process is stopped by PID at the end, whatever happened.
"""

import glob
import json
import os
import pwd
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

import galaxy_api
import pytest
from conftest import (
    Galaxyctl,
    UserGalaxyctl,
    alive,
    descendants_of,
    free_port,
    install_checkout,
    kill_pids,
    own_tmp_path,
    wait_for,
)

from galaxyctl_libs.fsutil import exclusive_lock

# one xdist group: both tests share the Galaxy venv, and xdist hands out its work units biggest first,
# so the longest test of the suite starts at once and runs beside the rest (README: the test command)
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("galaxy")]

GALAXY_VERSION = "26.1.2"
INSTALL_TIMEOUT = 1800
START_TIMEOUT = 240  # galaxyctl start/graceful --timeout; the subprocess gets a minute more
SETTLE_TIMEOUT = 120  # celery and the handler reach RUNNING after their startsecs
JOB_EVERY = 30  # seconds between two job submissions during graceful (each job is a Python process of
# Galaxy's, seconds of CPU: fewer of them leave more of the 2 cores to the rest of the suite)
JOB_TIMEOUT = 900  # every job submitted must end within this (bounded)
COMPLETE_MARKER = ".galaxyctl-e2e-complete"


quickstart = galaxy_api.load_quickstart()


# ---------------------------------------------------------------- the Galaxy venv (cached by version)


def _cache_root():
    if os.environ.get("GALAXYCTL_E2E_CACHE"):
        return os.environ["GALAXYCTL_E2E_CACHE"]
    name = f"galaxyctl-e2e-{os.getuid()}"
    os.makedirs(os.path.join(tempfile.gettempdir(), name), mode=0o755, exist_ok=True)
    return own_tmp_path(name)  # anyone may create names in /tmp: ours alone, or the test fails


def _venv_path():
    return os.environ.get("GALAXYCTL_E2E_VENV") or os.path.join(_cache_root(), f"galaxy-{GALAXY_VERSION}")


def _venv_ok(venv):
    if not os.path.exists(os.path.join(venv, "bin", "python")):
        return False
    try:
        return quickstart.installed_version(venv, quickstart.GALAXY_PACKAGE) == GALAXY_VERSION
    except (OSError, subprocess.SubprocessError):
        return False


def _build_venv(venv, python):
    if os.path.exists(venv):
        shutil.rmtree(venv)  # a broken or partial build, or another version
    subprocess.run([python, "-m", "venv", venv], check=True, timeout=300)
    log = venv + ".install.log"
    started = time.monotonic()
    quickstart.run_with_progress(
        [
            os.path.join(venv, "bin", "python"),
            "-m",
            "pip",
            "--disable-pip-version-check",
            "install",
            f"{quickstart.GALAXY_PACKAGE}=={GALAXY_VERSION}",
        ],
        "installing Galaxy for the e2e test",
        log,
        timeout=INSTALL_TIMEOUT,
    )
    with open(os.path.join(venv, COMPLETE_MARKER), "w") as handle:
        handle.write(f"{GALAXY_VERSION} installed in {time.monotonic() - started:.0f}s\n")


@pytest.fixture(scope="session")
def galaxy_venv():
    venv = os.path.abspath(_venv_path())
    user = os.environ.get("GALAXYCTL_E2E_USER")
    os.makedirs(os.path.dirname(venv), exist_ok=True)
    with exclusive_lock(venv + ".lock"):  # one build at a time (pytest-xdist workers, parallel runs)
        if not _venv_ok(venv):
            python = quickstart.choose_python(None, user) if user else sys.executable
            try:
                _build_venv(venv, python)
            except quickstart.QuickstartError as exc:
                pytest.fail(str(exc))
    return venv


# ---------------------------------------------------------------- helpers


def _run_as():
    """(user or None, galaxyctl env additions)."""
    user = os.environ.get("GALAXYCTL_E2E_USER")
    if user:
        pwd.getpwnam(user)  # fail early and clearly if it does not exist
    return user


def _status(gctl):
    result = gctl("status", "--json", check=False, timeout=60)
    report = json.loads(result.stdout)
    return result.returncode, {row["service"]: row for row in report["services"]}


def _all_running(gctl):
    code, rows = _status(gctl)
    return rows if code == 0 and rows and all(r["state"] == "RUNNING" for r in rows.values()) else None


def _cmdline(pid):
    with open(f"/proc/{pid}/cmdline", "rb") as handle:
        return [part.decode() for part in handle.read().split(b"\0") if part]


def _tail(path, lines=8):
    try:
        with open(path, errors="replace") as handle:
            return "\n".join(handle.read().splitlines()[-lines:])
    except OSError as exc:
        return str(exc)


def _started_at(pid):
    """When a process started (wall clock, to the clock tick), from /proc."""
    with open(f"/proc/{pid}/stat") as handle:
        ticks = int(handle.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/stat") as handle:
        boot = next(int(line.split()[1]) for line in handle if line.startswith("btime "))
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def _rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _run_a_job(jobs):
    """Upload pasted text: the job must be grabbed by a handler and finish ok."""
    jobs.submit()
    assert jobs.errors == [], jobs.errors
    states = wait_for(jobs.all_finished, timeout=180, interval=1)
    return states and states[jobs.ids[-1]]


def _rolling_graceful_under_jobs(gctl, root, database, jobs, figures):
    """While a job is submitted every JOB_EVERY s, ``graceful`` of the handlers restarts them one by
    one, each drained first (Galaxy's admin_job_lock through its control queue, here on SQLite:
    Galaxy 26.1's local runner kills the jobs of a handler that stops and fails them, galaxy#6246):
    at every moment one handler is ready (its heartbeat row, from a live process), no job fails,
    and ``check`` sees both heartbeats healthy afterwards.  (The whole ``graceful``, web server and
    celery too, under jobs: test_two_hosts' playbook; handlers on RabbitMQ: test_e2e_production.)"""
    handlers = galaxy_api.HANDLERS
    before = galaxy_api.ready_handlers(database)
    assert set(before) == set(handlers), before
    with galaxy_api.JobTraffic(jobs, database, JOB_EVERY) as traffic:
        time.sleep(JOB_EVERY)  # a job under way before the restarts
        started = time.monotonic()
        result = gctl("graceful", "--timeout", str(START_TIMEOUT), *handlers, timeout=START_TIMEOUT * 3)
        figures["graceful_s"] = round(time.monotonic() - started, 1)
        time.sleep(JOB_EVERY)  # and one after them
    galaxy_api.handed_over(result.stdout, handlers, os.path.join(root, "logs"), database, before)
    figures.update(traffic.figures())
    assert traffic.samples and figures["fewest_ready_handlers"] >= 1, [s for s in traffic.samples if not s[1]][:5]

    # every job completes, none fails
    assert jobs.errors == [] and len(jobs.ids) >= 3, (jobs.errors, jobs.ids)
    figures["jobs"] = len(jobs.ids)
    assert wait_for(jobs.all_finished, timeout=JOB_TIMEOUT, interval=2), jobs.states()
    outcome = galaxy_api.job_outcome(database)
    figures["jobs_ok"] = outcome["jobs_ok"]
    figures["jobs_killed_running_in_a_stopped_handler"] = len(outcome["killed"])
    assert outcome["failed"] == [], outcome["failed"]  # none killed by a restart (drained), none failed otherwise
    check = gctl("check", "--restart-window", "0", "--timeout", "30", check=False, timeout=180)
    assert check.returncode == 0 and "handlers_heartbeat=2;;;0;2" in check.stdout, check.stdout + check.stderr


# ---------------------------------------------------------------- the test


def test_real_galaxy_under_galaxyctl(galaxy_venv, record_property):
    user = _run_as()
    root = tempfile.mkdtemp(prefix="gxe2e")  # short: supervisor's unix socket path is limited
    os.chmod(root, 0o755)
    for sub in ("config", "data", "logs"):
        os.makedirs(os.path.join(root, sub))
    port = free_port()
    config = os.path.join(root, "config", "galaxy.yml")
    with open(config, "w") as handle:
        handle.write(galaxy_api.render_config(quickstart, root, port, user, galaxy_venv, handlers=2))
    # No database is created beforehand: galaxyctl starts the web server first, alone, and the rest
    # once it answers (it has created the database by then); started all at once, one of them would
    # see the tables another is still creating (NoVersionTableError).
    if user:
        for sub in ("data", "logs"):
            quickstart.chown_tree(os.path.join(root, sub), user)
    base = f"http://127.0.0.1:{port}"
    if user:  # as root with a Galaxy user, supervisord runs as that user with galaxyctl's Python:
        install_checkout(galaxy_venv)  # galaxyctl in Galaxy's venv, as the quickstart installs it
        gctl = UserGalaxyctl(os.path.join(root, "state"), galaxy_venv)
    else:
        gctl = Galaxyctl(os.path.join(root, "state"))
    figures = {}
    service_pids = set()
    try:
        gctl("register", config)

        # start: galaxyctl waits until the web server answers HTTP; a poller notes when it first did
        first_200, stop_polling = [], threading.Event()
        poller = threading.Thread(
            target=galaxy_api.poll_first_200, args=(base, first_200, stop_polling, time.time), daemon=True
        )
        poller.start()
        started = time.monotonic()
        try:
            result = gctl("start", "--timeout", str(START_TIMEOUT), timeout=START_TIMEOUT + 60)
        finally:
            stop_polling.set()
            poller.join(timeout=10)
        figures["start_to_ready_s"] = round(time.monotonic() - started, 1)
        assert "ready on" in result.stdout, result.stdout
        status, body = galaxy_api.version(base)
        assert status == 200 and body["version_major"] == GALAXY_VERSION.rsplit(".", 1)[0], body
        assert first_200, "the poller never saw /api/version answer"
        figures["first_200_s"] = round(first_200[0] - (time.time() - (time.monotonic() - started)), 1)

        # right after a planned start, check is OK even while the handlers and celery still start
        # (the cron example's check --quiet mails nothing after a deploy)
        checked = gctl("check", check=False, timeout=120)
        assert checked.returncode == 0, checked.stdout + checked.stderr

        # status: every service RUNNING (celery and the handler after their startsecs)
        rows = wait_for(lambda: _all_running(gctl), timeout=SETTLE_TIMEOUT, interval=2)
        assert rows, _status(gctl)
        handlers = sorted(name for name in rows if name.startswith("handler"))
        assert {"gunicorn", "celery", "celery-beat"} <= set(rows) and len(handlers) == 2, sorted(rows)
        # the handlers and celery started once the web server answered: galaxyctl's own probe saw it
        # a little before the poller's answer arrived (a loaded machine: up to seconds); started all
        # at once, they would have started with the web server, tens of seconds before it answered
        for name in handlers + ["celery", "celery-beat"]:
            started_at = _started_at(rows[name]["pid"])
            figures[f"{name}_started_after_web_s"] = round(started_at - first_200[0], 1)
            assert started_at > first_200[0] - 5, (name, started_at, first_200)
        gctl.remember()
        service_pids.update(row["pid"] for row in rows.values())
        for pid in list(service_pids):
            service_pids.update(descendants_of(pid))

        # celery beat really works once it has written its schedule (supervisord calls it RUNNING
        # after startsecs, before beat has even opened the file)
        beat_argv = _cmdline(rows["celery-beat"]["pid"])
        schedule = beat_argv[beat_argv.index("--schedule") + 1]
        assert wait_for(lambda: glob.glob(glob.escape(schedule) + "*"), timeout=SETTLE_TIMEOUT, interval=1), (
            f"celery beat never wrote {schedule}: " + _tail(os.path.join(root, "logs", "celery-beat.log"))
        )
        assert _all_running(gctl), _status(gctl)

        # each handler is a galaxy-main with its --server-name (and pools) on the command line
        for handler in handlers:
            handler_argv = _cmdline(rows[handler]["pid"])
            assert f"--server-name={handler}" in handler_argv, handler_argv
            assert os.path.basename(handler_argv[1]) == "galaxy-main" or "galaxy-main" in handler_argv[0], handler_argv
            assert "--attach-to-pool=job-handlers" in handler_argv, handler_argv
        if user:
            uid = pwd.getpwnam(user).pw_uid
            # every process: supervisord, galaxyctl's gunicorn herder and all of Galaxy's
            supervisord = gctl.supervisord_pid()
            owners = {
                f"{_cmdline(pid)[:3]} {pid}": os.stat(f"/proc/{pid}").st_uid
                for pid in [supervisord] + descendants_of(supervisord)
            }
            assert len(owners) > len(rows) and set(owners.values()) == {uid}, owners

        # RSS per service (gunicorn: master and its workers)
        for name, row in rows.items():
            figures[f"rss_mb_{name}"] = round(_rss_kb(row["pid"]) / 1024)
            children = descendants_of(row["pid"])
            if children:
                figures[f"rss_mb_{name}_children"] = round(sum(_rss_kb(c) for c in children) / 1024)

        # check: both handlers' heartbeat healthy; celery's ping cannot cross Galaxy's default
        # broker (kombu's SQLAlchemy transport has no broadcast): said so, and no problem
        database = os.path.join(root, "data", "universe.sqlite")
        assert wait_for(lambda: len(galaxy_api.ready_handlers(database) or {}) == 2, SETTLE_TIMEOUT, 1), _tail(
            os.path.join(root, "logs", "handler_0.log")
        )
        check = gctl("check", "--restart-window", "0", "--timeout", "30", check=False, timeout=180)
        assert check.returncode == 0, check.stdout + check.stderr
        assert "handlers_heartbeat=2;;;0;2" in check.stdout and "celery_answering" not in check.stdout
        report = json.loads(gctl("status", "--json", "--ping", "--timeout", "30", timeout=180).stdout)
        celery = next(row for row in report["services"] if row["service"] == "celery")
        assert celery["health"]["state"] == "unavailable" and "sqlalchemy" in celery["health"]["detail"], celery

        # a real job: grabbed by the dynamic handler (db-transaction-isolation on sqlite), not the web process
        jobs = galaxy_api.Jobs(base)
        job_started = time.monotonic()
        assert _run_a_job(jobs) == "ok"
        figures["upload_job_s"] = round(time.monotonic() - job_started, 1)
        grabbed = []
        for handler in handlers:
            with open(os.path.join(root, "logs", f"{handler}.log"), errors="replace") as handle:
                grabbed.append("Grabbed Job(s)" in handle.read())
        assert any(grabbed), handlers

        # graceful while jobs keep coming; then Galaxy answers, everything running
        _rolling_graceful_under_jobs(gctl, root, database, jobs, figures)
        assert galaxy_api.version(base)[0] == 200
        rows = wait_for(lambda: _all_running(gctl), timeout=SETTLE_TIMEOUT, interval=2)
        assert rows, _status(gctl)
        gctl.remember()
        service_pids.update(row["pid"] for row in rows.values())

        # stop: services down, supervisord exits; status says "not running" (LSB 3)
        supervisord = gctl.supervisord_pid()
        started = time.monotonic()
        gctl("stop", timeout=300)
        figures["stop_s"] = round(time.monotonic() - started, 1)
        assert _status(gctl)[0] == 3
        assert galaxy_api.version(base)[0] is None
        gctl("shutdown", timeout=120)
        leftover = wait_for(
            lambda: not any(alive(p) for p in service_pids | gctl.seen_pids | {supervisord}), timeout=30, interval=0.2
        )
        assert leftover, [p for p in service_pids | gctl.seen_pids if alive(p)]
    finally:
        record_property("figures", figures)
        print("\ne2e figures:", json.dumps(figures, sort_keys=True))
        gctl.cleanup()
        kill_pids(sorted(service_pids), timeout=30)
        shutil.rmtree(root, ignore_errors=True)


def test_heartbeat_read_through_galaxys_interpreter(galaxy_venv, tmp_path):
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
    beats = heartbeat._beats(rows, heartbeat._age_of_datetime)
    assert beats["handler_0"].pid == 7 and beats["handler_0"].age_seconds < 60
    try:
        heartbeat.read("mysql+nosuchdriver://galaxy:secret@127.0.0.1:1/galaxy", python, None, 60)
        raise AssertionError("an unknown driver must be an error")
    except GalaxyctlError as exc:
        assert exc.message.startswith("cannot read Galaxy's mysql+nosuchdriver database: ")
        assert "secret" not in exc.message
