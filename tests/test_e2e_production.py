"""End to end in the production shape (issue 23): the real Galaxy on PostgreSQL, RabbitMQ and Redis.

The config is ``scripts/galaxy-quickstart``'s production one (``render_config(servers=...)``):
Galaxy's database on PostgreSQL, its control queues and celery's broker on RabbitMQ, celery's
results in Redis, job assignment ``db-skip-locked``; gunicorn (1 worker), celery (and beat), 2 job
handlers.  The servers are the session's throwaway ones (tests/servers.py); Galaxy's venv is the
one tests/test_e2e_galaxy.py builds, plus the two drivers this set-up needs (psycopg2, redis).  As
there, galaxyctl runs as root with ``GALAXYCTL_E2E_USER`` the Galaxy user when set.

One Galaxy start on an empty database, shared by every step (a Galaxy start costs a minute of CI):

1. ordered start; ``status``/``check`` read both handlers' heartbeats from PostgreSQL and get the
   celery worker's answer to a ping through RabbitMQ; how long ``check`` takes;
2. a rolling ``graceful`` of the handlers while jobs come in: each drained through its RabbitMQ
   control queue, no job fails, a handler ready at every moment (read from PostgreSQL);
3. a SIGSTOPped handler turns ``check --heartbeat-age 90`` CRITICAL naming it once its heartbeat
   is older than that (up to 2.5 min: steps 4 and 5 run meanwhile), the live one not;
4. a SIGSTOPped celery worker turns ``check`` CRITICAL naming it;
5. PostgreSQL stopped, then RabbitMQ stopped: ``check`` says so in one line, in bounded time, and
   its probe works again once the server is back; once the handler is continued, ``check`` is OK;
6. stop and shutdown; every process ended by PID whatever happened.

Marked ``e2e`` and in the xdist group of the other real-Galaxy test: never two Galaxies at once.
"""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

import galaxy_api
import pytest
from conftest import Galaxyctl, UserGalaxyctl, alive, descendants_of, free_port, install_checkout, kill_pids, wait_for
from test_e2e_galaxy import (  # noqa: F401 - galaxy_venv: the shared session fixture (the Galaxy venv)
    GALAXY_VERSION,
    JOB_TIMEOUT,
    SETTLE_TIMEOUT,
    START_TIMEOUT,
    _all_running,
    _cmdline,
    _run_a_job,
    _run_as,
    _status,
    _tail,
    galaxy_venv,
    quickstart,
)

from galaxyctl_libs.fsutil import exclusive_lock
from galaxyctl_libs.probes import heartbeat

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("galaxy")]

# Galaxy's PostgreSQL driver and the Redis client celery's result backend needs: not in galaxy-web-apps;
# pinned as Galaxy 26.1's galaxy/dependencies/conditional-requirements.txt pins them
EXTRAS = ("psycopg2-binary==2.9.10", "redis>=5.3.0,<6")
EXTRA_MODULES = "import psycopg2, redis"
HANDLERS = galaxy_api.HANDLERS
CHECK_TIMEOUT = 10  # check --timeout in the fault steps
FAULT_VERDICT_WITHIN = 60  # seconds check may take to give its line with a server down
RECOVER_TIMEOUT = 240  # check OK again once a server is back (celery's reconnect backs off up to 30 s)
PING_TIMEOUT = 90  # a stopped worker's ping times out (check --timeout) and check says so
# Jobs during the graceful: each upload job is two Python processes of Galaxy's (~40-60 s on 2 busy
# cores) and the 2 local-runner workers of the one handler left while the other restarts (~90 s for a
# Galaxy start here) must keep up, else the queue a handler holds outlasts its drain: one every 40 s.
JOB_EVERY = 40
# check's --heartbeat-age for the stopped handler: past Galaxy's heartbeat interval (60 s) with room
# for a late one of the live handler, where the default (heartbeat.STALE_AFTER, 3 min) held the
# test's worker about 100 s longer
STALE_AGE = 90
DRAIN = 300  # graceful --drain: bounded, generous for a loaded CI machine (it ends when the jobs do)


@pytest.fixture(scope="session")
def production_venv(galaxy_venv):  # noqa: F811 - the fixture imported above
    """The Galaxy venv with psycopg2 and redis (installed once, under the venv's build lock)."""
    python = os.path.join(galaxy_venv, "bin", "python")
    with exclusive_lock(galaxy_venv + ".lock"):
        if subprocess.run([python, "-c", EXTRA_MODULES], capture_output=True, timeout=300).returncode != 0:
            subprocess.run(
                [python, "-m", "pip", "--disable-pip-version-check", "install", "-q", *EXTRAS],
                check=True,
                timeout=900,
            )
    return galaxy_venv


def postgres_reader(postgres, dbname):
    """``(sql) -> rows`` of Galaxy's PostgreSQL database for galaxy_api.query (psql as the superuser
    over the server's unix socket, each row as JSON: any text survives); None when it cannot read."""

    def rows(sql):
        out = postgres.psql(f"SELECT coalesce(json_agg(row_to_json(q)), '[]') FROM ({sql}) q", dbname, check=False)
        try:
            return [tuple(row.values()) for row in json.loads(out)]
        except ValueError:
            return None

    return rows


def _check(gctl, *args, timeout=180):
    """(rc, stdout, stderr, seconds) of ``galaxyctl check``: the probes' verdict on everything."""
    started = time.monotonic()
    result = gctl("check", "--restart-window", "0", *args, check=False, timeout=timeout)
    return result.returncode, result.stdout, result.stderr, time.monotonic() - started


def _ok(gctl):
    """check's answer when it is OK with both heartbeats and the worker's ping, else None."""
    rc, out, err, seconds = _check(gctl, "--timeout", "30")
    healthy = rc == 0 and "handlers_heartbeat=2;;;0;2" in out and "celery_answering=1;;;0;1" in out
    return (out, seconds) if healthy else None


def _answering(gctl):
    """check's answer once the celery worker answers its ping (whatever else it says)."""
    out = _check(gctl)[1]
    return out if "celery_answering=1;;;0;1" in out else None


def _heartbeats_read(gctl):
    """check's answer once it reads the handlers' heartbeats from Galaxy's database again."""
    out = _check(gctl, "--no-ping")[1]
    return out if "handlers_heartbeat=" in out and "heartbeat unknown" not in out else None


def _one_line(rc, out, err, seconds):
    """check's output with a server down: one truthful line, a Nagios problem code, no traceback, in time."""
    lines = out.strip().splitlines()
    assert rc in (1, 2, 3) and len(lines) == 1, (rc, out, err)
    assert "Traceback" not in out + err and not err.strip(), (out, err)
    assert seconds < FAULT_VERDICT_WITHIN, (seconds, out)
    return lines[0]


def _health(gctl):
    """{service: its health row} from ``status --json --ping``."""
    report = json.loads(gctl("status", "--json", "--ping", "--timeout", "30", check=False, timeout=180).stdout)
    return {row["service"]: row.get("health") for row in report["services"]}


def _graceful_handlers_under_jobs(gctl, root, database, jobs, figures):
    """While a job is submitted every JOB_EVERY s, ``graceful`` restarts both handlers one by one, each
    first drained by Galaxy's admin_job_lock sent through its RabbitMQ control queue: a handler ready
    at every moment (its heartbeat row in PostgreSQL, from a live process), no job fails."""
    before = galaxy_api.ready_handlers(database)
    assert set(before) == set(HANDLERS), before
    with galaxy_api.JobTraffic(jobs, database, JOB_EVERY) as traffic:
        time.sleep(JOB_EVERY + 5)  # a job under way before the restarts
        started = time.monotonic()
        argv = ("graceful", "--timeout", str(START_TIMEOUT), "--drain", str(DRAIN), *HANDLERS)
        result = gctl(*argv, timeout=START_TIMEOUT * 3 + DRAIN * 2)
        figures["graceful_s"] = round(time.monotonic() - started, 1)
    jobs.submit()  # and one after them
    print("graceful said:", result.stdout.strip(), result.stderr.strip(), sep="\n")
    assert "ended by the restart" not in result.stderr, result.stderr  # every handler drained in time
    galaxy_api.handed_over(result.stdout, HANDLERS, os.path.join(root, "logs"), database, before)
    figures.update(traffic.figures())
    assert traffic.samples and figures["fewest_ready_handlers"] >= 1, [s for s in traffic.samples if not s[1]][:5]
    assert jobs.errors == [] and len(jobs.ids) >= 4, (jobs.errors, jobs.ids)
    figures["jobs"] = len(jobs.ids)
    assert wait_for(jobs.all_finished, timeout=JOB_TIMEOUT, interval=2), jobs.states()
    outcome = galaxy_api.job_outcome(database)
    figures["jobs_ok"] = outcome["jobs_ok"]
    assert outcome["failed"] == [], outcome["failed"]  # none killed by a restart (drained), none failed otherwise


def _stopped(pid):
    """Whether ``pid`` is stopped (SIGSTOP): its /proc state is T."""
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().rsplit(")", 1)[1].split()[0] == "T"


def test_production_galaxy_on_postgresql_rabbitmq_redis(
    production_venv, postgres_server, rabbitmq_server, redis_server, record_property
):
    venv = production_venv
    user = _run_as()
    root = tempfile.mkdtemp(prefix="gxprod")  # short: supervisor's unix socket path is limited
    os.chmod(root, 0o755)
    for sub in ("config", "data", "logs"):
        os.makedirs(os.path.join(root, sub))
    # an empty database and a vhost of this Galaxy's own; Redis db 1 for celery's results
    name, servers = galaxy_api.site_servers(postgres_server, rabbitmq_server, redis_server)
    database = postgres_reader(postgres_server, name)
    port = free_port()
    config = os.path.join(root, "config", "galaxy.yml")
    text = galaxy_api.render_config(quickstart, root, port, user, venv, handlers=2, servers=servers)
    assert "db-skip-locked" in text and "postgresql://" in text and "pyamqp://" in text, text
    with open(config, "w") as handle:
        handle.write(text)
    if user:
        for sub in ("data", "logs"):
            quickstart.chown_tree(os.path.join(root, sub), user)
        install_checkout(venv)  # galaxyctl in Galaxy's venv, as the quickstart installs it
        gctl = UserGalaxyctl(os.path.join(root, "state"), venv)
    else:
        gctl = Galaxyctl(os.path.join(root, "state"))
    base = f"http://127.0.0.1:{port}"
    figures = {}
    service_pids = set()
    sigstopped = set()
    down = []  # servers this test stopped and has not started again

    def remember_services():
        rows = wait_for(lambda: _all_running(gctl), timeout=SETTLE_TIMEOUT, interval=2)
        assert rows, _status(gctl)
        gctl.remember()
        for row in rows.values():
            service_pids.add(row["pid"])
            service_pids.update(descendants_of(row["pid"]))
        return rows

    try:
        # ---- 1. ordered start on the empty database; heartbeats from PostgreSQL, ping through RabbitMQ
        gctl("register", config)
        started = time.monotonic()
        result = gctl("start", "--timeout", str(START_TIMEOUT), timeout=START_TIMEOUT + 60)
        figures["start_to_ready_s"] = round(time.monotonic() - started, 1)
        assert "ready on" in result.stdout, result.stdout
        status, body = galaxy_api.version(base)
        assert status == 200 and body["version_major"] == GALAXY_VERSION.rsplit(".", 1)[0], body
        rows = remember_services()
        assert {"gunicorn", "celery", "celery-beat", *HANDLERS} <= set(rows), sorted(rows)
        # Galaxy's tables are in PostgreSQL: its handlers' heartbeat rows are read there
        assert wait_for(lambda: len(galaxy_api.ready_handlers(database) or {}) == 2, SETTLE_TIMEOUT, 1), _tail(
            os.path.join(root, "logs", "handler_0.log")
        )
        healthy = wait_for(lambda: _ok(gctl), timeout=SETTLE_TIMEOUT, interval=2)
        assert healthy, _check(gctl, "--timeout", "30") + (_tail(os.path.join(root, "logs", "celery.log")),)
        figures["ready_to_check_ok_s"] = round(time.monotonic() - started - figures["start_to_ready_s"], 1)
        health = _health(gctl)
        for handler in HANDLERS:
            assert health[handler]["probe"] == "heartbeat" and health[handler]["state"] == "ok", health
            assert health[handler]["pid"] == rows[handler]["pid"], (health, rows[handler])
        assert health["celery"]["probe"] == "ping" and health["celery"]["state"] == "ok", health
        # Galaxy's control queues are RabbitMQ's: one per process, each with its consumer
        listed = rabbitmq_server.rabbitmqctl("list_queues", "-p", name, "name", "consumers")
        queues = {q: c for q, _, c in (line.partition("\t") for line in listed.splitlines()[1:])}
        for handler in HANDLERS:
            assert int(queues.get(f"control.{handler}@{heartbeat.hostname()}", 0)) >= 1, listed
        # how long check takes here (both heartbeats read through Galaxy's interpreter, one ping)
        times = []
        for _ in range(3):
            rc, out, err, seconds = _check(gctl)
            assert rc == 0, (out, err)
            times.append(seconds)
        figures["check_s"] = round(sorted(times)[1], 2)  # the median of three
        figures["check_s_all"] = [round(t, 2) for t in times]
        print(f"\ncheck on PostgreSQL + RabbitMQ + Redis: {figures['check_s']} s (runs: {figures['check_s_all']})")
        print("check said:", out.strip())

        # ---- 2. a real job, then the rolling graceful of the handlers while jobs come in
        jobs = galaxy_api.Jobs(base)
        job_started = time.monotonic()
        assert _run_a_job(jobs) == "ok"
        figures["upload_job_s"] = round(time.monotonic() - job_started, 1)
        _graceful_handlers_under_jobs(gctl, root, database, jobs, figures)
        rows = remember_services()
        healthy = wait_for(lambda: _ok(gctl), timeout=SETTLE_TIMEOUT, interval=2)
        assert healthy, _check(gctl, "--timeout", "30")

        # ---- 3. a handler that stops heartbeating: its row grows old while the next steps run (it
        # is CRITICAL once older than STALE_AGE, given to check: shared with steps 4 and 5)
        worker, handler = rows["celery"]["pid"], rows["handler_0"]["pid"]
        assert any("celery" in part for part in _cmdline(worker)[:3]), _cmdline(worker)
        os.kill(handler, signal.SIGSTOP)
        sigstopped.add(handler)
        stopped_at = time.monotonic()

        # ---- 4. a worker that does not answer: CRITICAL, named; answering again once continued
        os.kill(worker, signal.SIGSTOP)
        sigstopped.add(worker)
        try:
            # (a signal is taken when the process next runs: a thread in the kernel first finishes)
            assert wait_for(lambda: _stopped(worker) and _stopped(handler), timeout=30, interval=0.1)
            rc, out, err, seconds = _check(gctl, "--timeout", str(CHECK_TIMEOUT))
            assert rc == 2 and "celery no reply to ping" in out and "celery_answering=0;;;0;1" in out, (out, err)
            assert seconds < PING_TIMEOUT, seconds
            figures["check_worker_stopped"] = out.strip()
        finally:
            os.kill(worker, signal.SIGCONT)
            sigstopped.discard(worker)
        assert wait_for(lambda: _answering(gctl), timeout=RECOVER_TIMEOUT, interval=3), _check(gctl)

        # ---- 5. PostgreSQL down, then RabbitMQ down: one truthful line, in bounded time; then each
        # probe works again once its server is back (the heartbeats read, the worker answering)
        for server, what, expected, back_again in (
            (postgres_server, "postgresql", "postgresql database: sqlalchemy.exc.OperationalError", _heartbeats_read),
            (rabbitmq_server, "rabbitmq", "ping failed", _answering),
        ):
            server.stop()
            down.append(server)
            try:
                answer = _check(gctl, "--timeout", str(CHECK_TIMEOUT), timeout=FAULT_VERDICT_WITHIN * 3)
                line = _one_line(*answer)
                figures[f"check_{what}_down"], figures[f"check_{what}_down_s"] = line, round(answer[3], 2)
                print(f"check with {what} down:", line)
                assert expected in line and "Connection refused" in line, line
            finally:
                server.start()
                down.remove(server)
            back = time.monotonic()
            assert wait_for(lambda: back_again(gctl), timeout=RECOVER_TIMEOUT, interval=3), _check(gctl)
            figures[f"check_recovered_after_{what}_back_s"] = round(time.monotonic() - back, 1)

        # ---- 3, continued: the stopped handler is CRITICAL, named, the other one is not
        def stale():
            rc, out, err, _ = _check(gctl, "--timeout", str(CHECK_TIMEOUT), "--heartbeat-age", str(STALE_AGE))
            return (rc, out) if rc == 2 and "handler_0 last heartbeat" in out else None

        try:
            found = wait_for(stale, timeout=STALE_AGE + heartbeat.INTERVAL + 60, interval=5)
            assert found, _check(gctl)
            figures["handler_stale_after_sigstop_s"] = round(time.monotonic() - stopped_at, 1)
            figures["check_handler_stopped"] = found[1].strip()
            assert "handler_1" not in found[1].split("|")[0] and "handlers_heartbeat=1;;;0;2" in found[1], found
        finally:
            os.kill(handler, signal.SIGCONT)
            sigstopped.discard(handler)
        # everything OK again: both heartbeats fresh (from PostgreSQL), the worker answering (through RabbitMQ)
        continued = time.monotonic()
        assert wait_for(lambda: _ok(gctl), timeout=RECOVER_TIMEOUT, interval=3), _check(gctl)
        figures["check_ok_after_sigcont_s"] = round(time.monotonic() - continued, 1)
        assert galaxy_api.version(base)[0] == 200
        remember_services()

        # ---- 6. stop: services down, supervisord exits
        supervisord = gctl.supervisord_pid()
        started = time.monotonic()
        gctl("stop", timeout=300)
        figures["stop_s"] = round(time.monotonic() - started, 1)
        assert _status(gctl)[0] == 3
        gctl("shutdown", timeout=120)
        pids = service_pids | gctl.seen_pids | {supervisord}
        assert wait_for(lambda: not any(alive(p) for p in pids), timeout=30, interval=0.2), [
            p for p in pids if alive(p)
        ]
    finally:
        for pid in sigstopped:  # a stopped process would not end on SIGTERM
            if alive(pid):
                os.kill(pid, signal.SIGCONT)
        for server in down:
            server.start()
        record_property("figures", figures)
        print("\nproduction e2e figures:", json.dumps(figures, sort_keys=True))
        gctl.cleanup()
        kill_pids(sorted(service_pids), timeout=30)
        shutil.rmtree(root, ignore_errors=True)
