"""Handlers' heartbeat and celery's ping, judged from synthetic answers (pure), and where Galaxy's database is."""

import json
import os
import sqlite3
import sys

from conftest import run_listing_modules

from galaxyctl_libs import exitcodes
from galaxyctl_libs.actions import health
from galaxyctl_libs.actions.checks import render_prometheus, verdict
from galaxyctl_libs.actions.monitoring import ServiceStatus, StatusReport
from galaxyctl_libs.core.database import database_url
from galaxyctl_libs.core.targets import Service
from galaxyctl_libs.errors import GalaxyctlError
from galaxyctl_libs.probes import celeryping, heartbeat
from galaxyctl_libs.records import replace


def row(program, ok=None, uptime=3600, pid=10):
    return ServiceStatus("_default_", program, program, "RUNNING", pid, uptime, "", health=ok)


def report(*rows):
    return StatusReport(True, 1, tuple(rows), exitcodes.LSB_RUNNING, supervisord_state="RUNNING")


def beats(**ages):
    return {name: heartbeat.Beat(name, 10, age) for name, age in ages.items()}


def test_heartbeat_verdicts():
    fresh = health.heartbeat_health(beats(handler_0=12.0), "handler_0", 3600, 180, pid=10)
    assert (fresh.state, fresh.detail, fresh.pid) == ("ok", "heartbeat 12s ago", 10)
    stale = health.heartbeat_health(beats(handler_0=600.0), "handler_0", 3600, 180, pid=10)
    assert (stale.state, stale.detail) == ("critical", "last heartbeat 600s ago")
    missing = health.heartbeat_health({}, "handler_0", 3600, 180)
    assert missing.state == "critical" and "no heartbeat" in missing.detail
    assert health.heartbeat_health({}, "handler_0", 20, 180).state == "starting"
    # a predecessor killed with -9 left an old row: the new process (other PID) is still starting
    assert health.heartbeat_health(beats(handler_0=900.0), "handler_0", 20, 180, pid=99).state == "starting"
    unreadable = health.heartbeat_health(GalaxyctlError("database is locked"), "handler_0", 3600, 180)
    assert unreadable.state == "unknown" and "database is locked" in unreadable.detail


def test_check_names_the_unhealthy_services_and_exports_them():
    ok = health.ServiceHealth("heartbeat", "ok", "heartbeat 3s ago", 3.0, 10)
    stale = health.ServiceHealth("heartbeat", "critical", "last heartbeat 400s ago", 400.0, 11)
    silent = health.ServiceHealth("ping", "critical", "no reply to ping (Error: No nodes replied)", 2.5)
    result = verdict(report(row("handler_0", ok), row("handler_1", stale), row("celery", silent)), restart_window=0)
    assert result.code == exitcodes.NAGIOS_CRITICAL
    assert "handler_1 last heartbeat 400s ago" in result.summary and "celery no reply to ping" in result.summary
    assert "handler_0" not in result.summary
    assert result.line().endswith("handlers_heartbeat=1;;;0;2 celery_answering=0;;;0;1")
    text = render_prometheus(result)
    assert 'galaxy_service_healthy{instance="_default_",service="handler_1",probe="heartbeat"} 0' in text
    assert (
        'galaxy_handler_heartbeat_age_seconds{instance="_default_",service="handler_1",probe="heartbeat"} 400' in text
    )
    assert "galaxy_celery_ping_seconds" not in text  # no answer, no time
    assert text.count("# TYPE galaxy_service_healthy gauge") == 1


def test_an_unreadable_heartbeat_warns_and_a_fresh_one_is_ok():
    unknown = health.ServiceHealth("heartbeat", "unknown", "heartbeat unknown: no such file")
    assert verdict(report(row("handler_0", unknown)), restart_window=0).code == exitcodes.NAGIOS_WARNING
    ok = health.ServiceHealth("heartbeat", "ok", "heartbeat 3s ago", 3.0)
    assert verdict(report(row("handler_0", ok)), restart_window=0).code == exitcodes.NAGIOS_OK
    assert verdict(report(row("gunicorn")), restart_window=0).line().endswith("workers_busy=0;;;0;0")


def test_prometheus_labels_are_escaped():
    odd = replace(row("x", health.ServiceHealth("heartbeat", "ok", "", 1.0)), service='a"b\\c')
    assert 'service="a\\"b\\\\c"' in "\n".join(health.prometheus_lines([odd]))


def test_database_url_follows_galaxy_defaults():
    config = "/srv/galaxy/config/galaxy.yml"
    packaged = database_url({}, None, config, "/srv/galaxy/config")
    assert packaged == "sqlite:////srv/galaxy/config/data/universe.sqlite?isolation_level=IMMEDIATE"
    assert database_url({}, "/srv/src", config, "/srv/src").startswith("sqlite:////srv/src/database/universe.sqlite")
    relative = database_url({"data_dir": "../data"}, None, config, "/srv/galaxy/config")
    assert relative.startswith("sqlite:////srv/galaxy/data/universe.sqlite")
    assert database_url({"database_connection": "sqlite:///db.sqlite"}, "/g", config, "/g") == "sqlite:////g/db.sqlite"
    pg = "postgresql://galaxy:secret@db/galaxy"
    assert database_url({"database_connection": pg}, None, config, "/x") == pg
    assert heartbeat.sqlite_path(pg) is None and heartbeat.sqlite_path("sqlite:////a/b.sqlite?x=1") == "/a/b.sqlite"


def test_heartbeat_read_from_sqlite(tmp_path):
    path = os.path.join(tmp_path, "universe.sqlite")
    url = f"sqlite:///{path}"
    try:
        heartbeat.read(url)
        raise AssertionError("a missing database must be an error")
    except GalaxyctlError as exc:
        assert "does not exist" in exc.message
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE other (x INTEGER)")
    assert heartbeat.read(url) == {}  # no worker_process table yet
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE worker_process (server_name, hostname, pid, update_time)")
        conn.execute(
            "INSERT INTO worker_process VALUES ('handler_0', ?, 42, datetime('now', '-30 seconds'))",
            (heartbeat.hostname(),),
        )
        conn.execute("INSERT INTO worker_process VALUES ('handler_0', 'elsewhere', 43, datetime('now'))")
    found = heartbeat.read(url)
    assert list(found) == ["handler_0"] and found["handler_0"].pid == 42
    assert 29 <= found["handler_0"].age_seconds < 60
    with sqlite3.connect(path) as conn:  # as Galaxy writes it (SQLAlchemy: microseconds), and unreadable
        conn.execute(
            "INSERT INTO worker_process VALUES ('handler_1', ?, 44, strftime('%Y-%m-%d %H:%M:%f000', 'now', '-5 seconds'))",
            (heartbeat.hostname(),),
        )
        for pid, when in ((45, "'yesterday'"), (46, "'now'"), (47, "2461000.5"), (48, "NULL"), (49, "X'00'")):
            conn.execute(
                f"INSERT INTO worker_process VALUES ('handler_{pid}', ?, {pid}, {when})", (heartbeat.hostname(),)
            )
    found = heartbeat.read(url)
    assert 4.5 <= found["handler_1"].age_seconds < 30
    assert [found[f"handler_{pid}"].age_seconds for pid in range(45, 50)] == [None] * 5  # none reads as fresh


def test_heartbeat_age_from_every_form_of_update_time():
    """SQLite's rows carry Unix seconds; other databases' a datetime or ISO text (naive is UTC)."""
    import datetime

    now = 1_800_000_000.0
    seconds, other = heartbeat._age_of_seconds, heartbeat._age_of_datetime
    assert seconds(now - 90, now) == 90 and seconds(int(now) - 90, now) == 90
    assert seconds(now + 5, now) == 0  # a clock a little ahead is no negative age
    for unreadable in (None, float("nan"), float("inf"), -float("inf"), 10**400, True, "now", b"x"):
        assert seconds(unreadable, now) is None, unreadable
    utc = datetime.datetime.fromtimestamp(now - 90, datetime.timezone.utc)
    assert other(utc.replace(tzinfo=None), now) == 90 and other(utc.replace(tzinfo=None).isoformat(), now) == 90
    assert other(utc.astimezone(datetime.timezone(datetime.timedelta(hours=2))), now) == 90  # an offset counts
    assert other(utc.astimezone(datetime.timezone(datetime.timedelta(hours=2))).isoformat(), now) == 90
    for unreadable in (None, now - 90, "soon", "2026-13-01", b"2026-01-01"):
        assert other(unreadable, now) is None, unreadable


def test_heartbeat_read_from_sqlite_in_process(tmp_path):
    """The cron path reads a SQLite database's heartbeats itself, with the standard library's sqlite3:
    no Galaxy interpreter is run for it (run in a fresh interpreter)."""
    path = os.path.join(tmp_path, "universe.sqlite")
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE worker_process (server_name, hostname, pid, update_time)")
        conn.execute("INSERT INTO worker_process VALUES ('handler_0', ?, 42, datetime('now'))", (heartbeat.hostname(),))
    code = "from galaxyctl_libs.probes import heartbeat\nassert heartbeat.read(sys.argv[1])['handler_0'].pid == 42"
    result, modules = run_listing_modules(code, f"sqlite:///{path}")
    assert result.returncode == 0, result.stderr
    assert "galaxyctl_libs.probes.heartbeat" in modules
    assert "sqlite3" in modules and "subprocess" not in modules


def test_celery_node_name_and_ping_command():
    assert celeryping.node_name(["celery", "worker"], "gx.example.org") == "celery@gx.example.org"
    assert celeryping.node_name(["celery", "worker", "-n", "w1@%h"], "gx.example.org") == "w1@gx.example.org"
    assert celeryping.node_name(["celery", "worker", "--hostname=%n"], "gx.example.org") == "celery@gx"

    class Service:
        argv = ("/venv/bin/celery", "--app", "galaxy.celery", "worker", "--concurrency", "2")

    # a record from before galaxyctl knew the broker: the ping through Galaxy's app
    node, argv, request = celeryping.ping_argv(Service, 5.0)
    assert argv[0] == "/venv/bin/python" and argv[1] == "-c" and argv[3:] == ["galaxy.celery", node, "5"]
    assert request is None

    class Known(Service):
        broker_url = "pyamqp://galaxy:s3cret@localhost:5672/galaxy"
        broker_options = {"broker_use_ssl": False}

    # the broker known: a bare celery app, the request (and its password) on stdin, not in argv
    node, argv, request = celeryping.ping_argv(Known, 5.0)
    assert argv == ["/venv/bin/python", "-c", celeryping._PING] and "s3cret" not in " ".join(argv)
    assert json.loads(request) == {
        "url": Known.broker_url,
        "conf": {"broker_use_ssl": False},
        "node": node,
        "timeout": 5.0,
    }


def _worker_service(url, options=None):
    """A celery worker's Service on this venv's celery (the ping needs no worker to say these)."""
    celery = os.path.join(os.path.dirname(sys.executable), "celery")
    return Service(
        "_default_",
        "celery",
        "celery",
        (celery, "--app", "galaxy.celery", "worker"),
        (),
        os.getcwd(),
        broker_url=url,
        broker_options=options or {},
    )


def test_ping_of_a_broker_without_broadcast_is_unavailable_at_once():
    # kombu's consul transport, like SQLAlchemy's, declares no fanout exchange: nothing is connected
    pending = celeryping.start(_worker_service("consul://galaxy:s3cret@127.0.0.1:1/"), 5.0)
    result = celeryping.finish(pending)
    assert result.unavailable and result.error == "no ping: the consul broker carries no broadcast", result
    assert result.seconds < 5.0  # celery's import, no reply timeout


def test_ping_of_an_unreachable_broker_says_why_without_the_password():
    url = "pyamqp://galaxy:s3cret@127.0.0.1:1/galaxy"  # nothing listens on port 1
    pending = celeryping.start(_worker_service(url, {"broker_connection_timeout": 2}), 2.0)
    result = celeryping.finish(pending)
    assert not result.ok and not result.unavailable and result.error.startswith("ping failed ("), result
    assert "Connection refused" in result.error and "s3cret" not in result.error
    assert health.ping_health(result).state == "critical"


def test_ping_answers():
    pending = celeryping.Pending("celery@gx", None, 0.0, 0.0)
    pong = celeryping._judge(
        pending, 0, 'log line\n{"fanout": true, "replies": [{"celery@gx": {"ok": "pong"}}]}\n', "", 3
    )
    assert pong.ok and health.ping_health(pong).state == "ok"
    silent = celeryping._judge(pending, 0, '{"fanout": true, "replies": []}', "", 3)
    assert not silent.ok and silent.error == "no reply to ping from celery@gx"
    assert health.ping_health(silent).state == "critical"
    nofanout = celeryping._judge(pending, 0, '{"fanout": false, "transport": "sqlalchemy"}', "", 3)
    unavailable = health.ping_health(nofanout)
    assert unavailable.state == "unavailable" and "sqlalchemy broker carries no broadcast" in unavailable.detail
    broken = celeryping._judge(pending, 1, "", "Traceback...\nImportError: Error loading galaxy.celery", 3)
    assert not broken.ok and "ImportError: Error loading galaxy.celery" in broken.error
    # an unavailable ping is no problem for check, nor a perfdata figure
    result = verdict(report(row("celery", unavailable)), restart_window=0)
    assert result.code == exitcodes.NAGIOS_OK and "celery_answering" not in result.line()


def test_running_local_jobs_per_handler(tmp_path):
    path = os.path.join(tmp_path, "universe.sqlite")
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE job (id INTEGER PRIMARY KEY, state, handler, job_runner_name)")
        conn.executemany(
            "INSERT INTO job (state, handler, job_runner_name) VALUES (?, ?, ?)",
            [
                ("running", "handler_0", "local"),  # the runner's id in the job config
                ("running", "handler_0", "local:///"),  # an old job's runner URL
                ("running", "handler_1", "slurm://"),  # survives a handler restart: not waited for
                ("queued", "handler_1", "local"),  # in the local runner's queue: it will run there
                ("queued", "handler_1", None),  # not dispatched yet: the restarted handler takes it
                ("ok", "handler_1", "local:///"),
            ],
        )
    assert heartbeat.running_jobs(f"sqlite:///{path}") == {"handler_0": 2, "handler_1": 1}


def test_sqlite_uri_keeps_uri_characters_in_the_path(tmp_path):
    """A database path with ``?``, ``#``, ``%``, a space or non-ASCII is opened as that file, read-only."""
    import urllib.parse

    directory = tmp_path / "a dir?x=1#frag%41 é"
    directory.mkdir()
    path = str(directory / "universe.sqlite")
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (v)")
        conn.execute("INSERT INTO t VALUES (42)")
    conn.close()
    uri = heartbeat.sqlite_uri(path)
    assert uri == f"file:{urllib.parse.quote(path)}?mode=ro"
    assert heartbeat._read_sqlite(path, "SELECT v FROM t", {}, 5) == [(42,)]
    readonly = sqlite3.connect(uri, uri=True)
    try:
        readonly.execute("INSERT INTO t VALUES (1)")
        raise AssertionError("the URI opened the database writable")
    except sqlite3.OperationalError as exc:
        assert "readonly" in str(exc)
    finally:
        readonly.close()
