"""``status --cluster`` and ``check --cluster`` on real components: PostgreSQL (a Galaxy-like
``worker_process`` and ``job`` table, Galaxy's column names), a real gunicorn serving the stand-in's
/api/version for one host, celery-beat locks held by real processes (backends/beatlock.py).

Two hosts of one shared galaxy.yml, ``hosta`` and ``hostb``, both reached at 127.0.0.1; the rows
are what their handlers would write.  Only loopback is addressed.
"""

import json
import os
import re
import signal
import subprocess
import sys
import uuid

import pytest
from conftest import alive, wait_for

pytestmark = pytest.mark.servers

# Galaxy's model (galaxy.model: WorkerProcess, Job), the columns the cluster check reads
TABLES = """
CREATE TABLE worker_process (id serial PRIMARY KEY, server_name varchar(255), hostname varchar(255),
                             pid integer, update_time timestamp);
CREATE TABLE job (id serial PRIMARY KEY, state varchar(64), handler varchar(255), job_runner_name varchar(255));
"""
NOW = "(now() at time zone 'utc')"


@pytest.fixture
def database(postgres_server):
    name = "gxcluster_" + uuid.uuid4().hex[:8]
    url = postgres_server.create_database(name, name, "secret-" + name)
    postgres_server.psql(TABLES + f"ALTER TABLE worker_process OWNER TO {name}; ALTER TABLE job OWNER TO {name};", name)
    return url, lambda sql: postgres_server.psql(sql, name)


def cluster_config(demo_galaxy, url, port):
    gravity = {
        "gunicorn": {"bind": f"0.0.0.0:{port}", "preload": False},
        "celery": {"enable": False, "enable_beat": True},
        "handlers": {"handler": {"pools": ["job-handlers"]}},
        "hosts": {
            "hosta": {"services": ["gunicorn"], "handlers": {"handler": 1}, "address": "127.0.0.1"},
            "hostb": {"handlers": {"handler": 1}, "address": "127.0.0.1"},
        },
        "beat_host": "hostb",
    }
    galaxy = {"database_connection": url, "job_config": {"handling": {"assign": ["db-skip-locked"]}}}
    config, _ = demo_galaxy(gravity=gravity, galaxy=galaxy, port=port)
    return config


def hold_beat_lock(config, host):
    """A real process holding ``host``'s celery-beat lock (as the beat would), by PID."""
    lock = os.path.join(os.path.dirname(os.path.dirname(config)), "database", "galaxyctl", "beat", f"{host}.lock")
    process = subprocess.Popen(
        [sys.executable, "-m", "galaxyctl_libs.backends.beatlock", lock, "--", "sleep", "300"],
        stdin=subprocess.DEVNULL,
    )
    assert wait_for(lambda: os.path.exists(lock) and open(lock).read().startswith(str(process.pid)), timeout=20)
    return process


def start_web(gctl, config, port):
    """hosta's gunicorn, run by ``galaxyctl --host hosta exec`` (its command line as update would write it)."""
    argv = [*gctl.command, "--state-dir", gctl.state_dir, "--host", "hosta", "exec", "gunicorn"]
    process = subprocess.Popen(argv, env=gctl.env, stdin=subprocess.DEVNULL, start_new_session=True)
    from servers import port_open

    assert wait_for(lambda: port_open(port), timeout=60), "hosta's gunicorn did not listen"
    return process


def stop(process):
    if process is not None and alive(process.pid):
        os.killpg(process.pid, signal.SIGTERM) if process.pid == os.getpgid(process.pid) else process.terminate()
        process.wait(timeout=30)


def check(gctl, *args):
    result = gctl("check", "--cluster", "--timeout", "5", *args, check=False)
    return result.returncode, result.stdout.strip()


def test_cluster_check_sees_silent_handlers_orphaned_jobs_web_and_beats(gctl, demo_galaxy, database, short_tmp):
    from servers import free_port

    url, sql = database
    port = free_port()
    config = cluster_config(demo_galaxy, url, port)
    gctl("register", config)
    web = beat = second_beat = None
    try:
        web = start_web(gctl, config, port)
        beat = hold_beat_lock(config, "hostb")
        sql(
            "INSERT INTO worker_process (server_name, hostname, pid, update_time) VALUES "
            f"('handler_hosta_0', 'hosta', 101, {NOW}), ('handler_hostb_0', 'hostb', 202, {NOW}), "
            f"('main_hosta.1', 'hosta', 303, {NOW})"
        )
        sql(
            "INSERT INTO job (state, handler) VALUES ('running', 'handler_hosta_0'), ('new', '_default_'), "
            "('ok', 'gone_handler'), ('queued', 'handler_hostb_0')"
        )
        code, line = check(gctl)
        assert code == 0, line
        assert line.startswith("GALAXY CLUSTER OK - 2 hosts, 2/2 handlers heartbeating, 1/1 web up, 1 celery-beat |")
        assert "handlers_heartbeat=2;;;0;2" in line and "orphaned_jobs=0" in line and "celery_beats=1" in line

        # hostb's handler falls silent (its heartbeat 10 minutes old): CRITICAL naming it and its job
        sql(f"UPDATE worker_process SET update_time = {NOW} - interval '10 minutes' WHERE hostname = 'hostb'")
        sql("INSERT INTO job (state, handler) VALUES ('running', 'handler_hostb_0'), ('running', 'old_handler')")
        prom = os.path.join(short_tmp, "cluster.prom")
        code, line = check(gctl, "--prometheus", prom)
        assert code == 2, line
        assert re.search(r"hostb handler handler_hostb_0: silent: last heartbeat \d+s ago;", line), line
        assert (
            "2 unfinished jobs (ids 4..5) assigned to handler_hostb_0, a configured handler with no live heartbeat"
            in line
        )
        assert "1 unfinished job (id 6) assigned to old_handler, a handler no host runs" in line
        assert "_default_" not in line and "gone_handler" not in line
        assert "orphaned_jobs=3" in line
        text = open(prom).read()
        assert "galaxy_cluster_check_status 2" in text
        assert 'galaxy_cluster_healthy{host="hostb",what="handler",name="handler_hostb_0"} 0' in text

        # a second beat (hosta's) is CRITICAL; none at all too
        second_beat = hold_beat_lock(config, "hosta")
        sql(f"UPDATE worker_process SET update_time = {NOW}")
        sql("UPDATE job SET state = 'ok'")
        code, line = check(gctl)
        assert code == 2 and "2 celery-beats run (on hosta, hostb)" in line, line
        stop(second_beat)
        stop(beat)
        code, line = check(gctl)
        assert code == 2 and "no celery-beat runs (gravity.beat_host: hostb)" in line, line

        # the web server down: CRITICAL at its host's address
        stop(web)
        beat = hold_beat_lock(config, "hostb")
        code, line = check(gctl)
        assert code == 2 and f"hosta web gunicorn 0.0.0.0:{port}: 127.0.0.1:{port}:" in line, line

        status = gctl("status", "--cluster", "--json", check=False)
        report = json.loads(status.stdout)
        assert status.returncode == 3
        assert {(i["host"], i["what"], i["state"]) for i in report["items"]} == {
            ("hosta", "handler", "ok"),
            ("hostb", "handler", "ok"),
            ("hosta", "web", "critical"),
        }
        assert report["beats"] == ["hostb"]
    finally:
        for process in (web, beat, second_beat):
            stop(process)


def test_a_second_beat_on_one_host_cannot_take_the_lock(short_tmp):
    lock = os.path.join(short_tmp, "beat", "h.lock")
    argv = [sys.executable, "-m", "galaxyctl_libs.backends.beatlock", lock, "--"]
    first = subprocess.Popen(argv + ["sleep", "300"], stdin=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: os.path.exists(lock) and open(lock).read().startswith(str(first.pid)), timeout=20)
        second = subprocess.run(argv + ["true"], capture_output=True, text=True, timeout=30)
        assert second.returncode == 75 and "another beat holds" in second.stderr
        from galaxyctl_libs import gate

        assert gate.held_locks(os.path.dirname(lock)) == ["h.lock"]
    finally:
        first.terminate()
        first.wait(timeout=30)
    assert gate.held_locks(os.path.dirname(lock)) == []


def rewrite(config, change):
    import yaml

    with open(config) as handle:
        data = yaml.safe_load(handle)
    change(data["gravity"])
    with open(config, "w") as handle:
        yaml.safe_dump(data, handle, sort_keys=False)


def test_scale_down_is_refused_while_jobs_are_assigned_to_a_handler_that_goes_away(
    gctl, demo_galaxy, database, short_tmp
):
    from conftest import Galaxyctl
    from servers import free_port

    url, sql = database
    config = cluster_config(demo_galaxy, url, free_port())
    hostb, hosta = gctl, Galaxyctl(os.path.join(short_tmp, "state-a"))  # each host its own state dir
    try:
        for runner in (hosta, hostb):
            runner("register", config)
        hostb("--host", "hostb", "update")
        hosta("--host", "hosta", "update")
        sql("INSERT INTO job (state, handler) VALUES ('running', 'handler_hostb_0'), ('ok', 'handler_hostb_0')")
        sql(
            f"INSERT INTO worker_process (server_name, hostname, pid, update_time) VALUES ('handler_hostb_0', 'hostb', 9, {NOW})"
        )

        # a handler removed from a host: refused on that host, naming the job; nothing changes
        rewrite(config, lambda gravity: gravity["hosts"]["hostb"].update(handlers={}))
        before = open(os.path.join(hostb.state_dir, "configstate.yaml")).read()
        result = hostb("--host", "hostb", "update", check=False)
        assert result.returncode == 1, result
        assert result.stderr.strip().splitlines()[-1] == (
            "galaxyctl: error: refusing to remove job handlers that still hold unfinished jobs: handler_hostb_0 "
            "(this host): job 1; let them finish (or reassign them) first, or run update with --ignore-jobs"
        )
        assert open(os.path.join(hostb.state_dir, "configstate.yaml")).read() == before

        # ... and on any other host, which sees it heartbeat while no host of the new config runs it
        result = hosta("--host", "hosta", "update", check=False)
        assert result.returncode == 1 and "handler_hostb_0 (on hostb): job 1;" in result.stderr, result.stderr

        # a host removed from the config altogether: the same
        rewrite(config, lambda gravity: gravity["hosts"].pop("hostb") and gravity.update(beat_host="hosta"))
        result = hosta("--host", "hosta", "update", check=False)
        assert result.returncode == 1 and "handler_hostb_0 (on hostb): job 1;" in result.stderr, result.stderr

        # told to, or once the job has finished, the update goes through
        hosta("--host", "hosta", "update", "--ignore-jobs")
        sql("UPDATE job SET state = 'ok'")
        hosta("--host", "hosta", "update")
    finally:
        hosta.cleanup()


def test_one_real_host_under_supervisord_heartbeat_ping_web_and_its_beats_lock(gctl, demo_galaxy, short_tmp):
    """The stand-in Galaxy under supervisord as this machine's share: its handler heartbeats into
    SQLite with the machine's name, its celery worker answers the ping as celery@HOST, the beat runs
    under its lock; the cluster check sees all of it, and the beat gone."""
    host = os.uname().nodename
    gravity = {
        "celery": {"enable": True, "enable_beat": True},
        "handlers": {"handler": {"processes": 1}},
        "hosts": {host: {"services": ["gunicorn", "celery"], "handlers": {"handler": 1}}},
        "beat_host": host,
    }
    config, _ = demo_galaxy(
        gravity=gravity, galaxy={"job_config": {"handling": {"assign": ["db-transaction-isolation"]}}}
    )
    gctl("register", config)
    gctl("start", "--timeout", "60")
    status = json.loads(gctl("status", "--json").stdout)
    beat = next(r for r in status["services"] if r["service"] == "celery-beat")
    lock = os.path.join(os.path.dirname(os.path.dirname(config)), "database", "galaxyctl", "beat", f"{host}.lock")
    assert wait_for(lambda: os.path.exists(lock) and open(lock).read().startswith(f"{beat['pid']} "), timeout=30)

    def ok():
        code, line = check(gctl, "--heartbeat-age", "60")
        return line if code == 0 else None

    line = wait_for(ok, timeout=90, interval=1)
    assert line, check(gctl)
    assert "handlers_heartbeat=1;;;0;1 celery_answering=1;;;0;1 web_up=1;;;0;1" in line and "celery_beats=1" in line

    gctl("stop", "celery-beat")
    code, line = check(gctl)
    assert code == 2 and f"no celery-beat runs (gravity.beat_host: {host})" in line, line
