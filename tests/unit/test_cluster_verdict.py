"""check --cluster's answer from what was observed (actions/cluster.py), and where another host
reaches a web server (pure: synthetic reports)."""

from galaxyctl_libs.actions import cluster
from galaxyctl_libs.actions.cluster import ClusterReport, Item
from galaxyctl_libs.probes import clusterdb, heartbeat

ITEMS = (
    Item("a", "handler", "handler_a_0", "ok", "heartbeat 3s ago (pid 7)", 3.0),
    Item("b", "handler", "handler_b_0", "ok", "heartbeat 5s ago (pid 8)", 5.0),
    Item("b", "celery", "celery@b", "ok", "ping 0.3s", 0.3),
    Item("a", "web", "gunicorn 0.0.0.0:8080", "ok", "a:8080 answered in 4 ms", 0.004),
)


def test_all_well_is_ok_with_perfdata():
    result = cluster.verdict(ClusterReport(ITEMS, (), ("b",), "b", ("a", "b")))
    assert result.code == 0
    assert result.line() == (
        "GALAXY CLUSTER OK - 2 hosts, 2/2 handlers heartbeating, 1/1 celery answering, 1/1 web up, 1 celery-beat | "
        "hosts=2 handlers_heartbeat=2;;;0;2 celery_answering=1;;;0;1 web_up=1;;;0;1 orphaned_jobs=0 celery_beats=1"
    )


def test_a_silent_handler_its_jobs_and_two_beats_are_critical():
    items = ITEMS[:1] + (Item("b", "handler", "handler_b_0", "critical", "silent: no heartbeat in Galaxy's database"),)
    held = clusterdb.HeldJobs("handler_b_0", 2, 0, 11, 14)
    report = ClusterReport(items, ((held, "a configured handler with no live heartbeat"),), ("a", "b"), "b", ("a", "b"))
    result = cluster.verdict(report)
    assert result.code == 2
    assert "b handler handler_b_0: silent: no heartbeat in Galaxy's database" in result.summary
    assert "2 unfinished jobs (ids 11..14) assigned to handler_b_0" in result.summary
    assert "2 celery-beats run (on a, b): each periodic task runs 2 times" in result.summary
    assert "orphaned_jobs=2" in result.line()
    text = cluster.render_prometheus(result)
    assert 'galaxy_cluster_healthy{host="b",what="handler",name="handler_b_0"} 0' in text
    assert "galaxy_cluster_orphaned_jobs 2" in text and "galaxy_cluster_celery_beats 2" in text


def test_beat_on_the_wrong_host_or_none_or_unknown():
    assert cluster.beat_problem(("a",), "b") == "celery-beat runs on a, not on gravity.beat_host (b)"
    assert cluster.beat_problem((), "b") == "no celery-beat runs (gravity.beat_host: b)"
    assert cluster.beat_problem((), None) is None
    assert cluster.verdict(ClusterReport(ITEMS, (), None, "b", ("a", "b"))).code == 1  # unknown: a warning


def test_nothing_readable_is_unknown():
    result = cluster.verdict(ClusterReport((), error="no Galaxy config is registered"))
    assert result.code == 3 and result.line().startswith("GALAXY CLUSTER UNKNOWN - no Galaxy config is registered")


def test_orphans_leave_out_pool_tags_waiting_and_live_handlers():
    jobs = {
        "handler_a_0": clusterdb.HeldJobs("handler_a_0", 3, 0, 1, 3),
        "_default_": clusterdb.HeldJobs("_default_", 4, 4, 4, 7),
        "gone": clusterdb.HeldJobs("gone", 2, 1, 8, 9),
        "handler_b_0": clusterdb.HeldJobs("handler_b_0", 1, 1, 10, 10),
    }
    orphans = cluster._orphans(jobs, {"handler_a_0"}, {"handler_a_0", "handler_b_0"})
    assert [(held.handler, why) for held, why in orphans] == [
        ("gone", "a handler no host runs"),
        ("handler_b_0", "a configured handler with no live heartbeat"),
    ]


def test_a_web_server_is_reached_at_its_hosts_address_unless_bound_elsewhere():
    assert str(cluster.endpoint("0.0.0.0:8080", "10.0.0.1")) == str(cluster.endpoint("localhost:8080", "10.0.0.1"))
    assert cluster.endpoint("0.0.0.0:8080", "10.0.0.1").host == "10.0.0.1"
    assert cluster.endpoint("[::]:8080", "web1").host == "web1"
    assert cluster.endpoint("192.168.1.5:8081", "web1").host == "192.168.1.5"
    assert cluster.endpoint("unix:/run/g.sock", "web1") is None


def test_the_all_hosts_query_is_heartbeats_without_the_host_filter():
    assert " WHERE " not in clusterdb.SQLITE_ALL_BEATS_SQL
    assert clusterdb.SQLITE_ALL_BEATS_SQL.startswith(heartbeat.SQLITE_HEARTBEAT_SQL.rsplit(" WHERE ", 1)[0])
    assert "julianday(update_time)" in clusterdb.SQLITE_ALL_BEATS_SQL


def test_one_read_gives_every_hosts_heartbeats_and_the_jobs_by_handler(tmp_path):
    import sqlite3

    path = tmp_path / "universe.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE worker_process (id integer PRIMARY KEY, server_name text, hostname text, pid integer, update_time timestamp)"
        )
        conn.execute("CREATE TABLE job (id integer PRIMARY KEY, state text, handler text)")
        conn.executemany(
            "INSERT INTO worker_process (server_name, hostname, pid, update_time) VALUES (?, ?, ?, datetime('now', ?))",
            [
                ("handler_a_0", "a", 7, "-5 seconds"),
                ("handler_b_0", "b", 8, "-10 minutes"),
                ("odd", "b", 9, "+0 seconds"),
            ],
        )
        conn.execute("UPDATE worker_process SET update_time = 'now' WHERE server_name = 'odd'")
        conn.executemany(
            "INSERT INTO job (state, handler) VALUES (?, ?)",
            [
                ("running", "handler_b_0"),
                ("queued", "handler_b_0"),
                ("ok", "handler_b_0"),
                ("new", "pool"),
                ("new", None),
            ],
        )
    beats, held = clusterdb.records(f"sqlite:///{path}")
    ages = {(b.server_name, b.hostname): b.age_seconds for b in beats}
    assert ages[("odd", "b")] is None and 0 <= ages[("handler_a_0", "a")] < 60 and ages[("handler_b_0", "b")] > 500
    assert clusterdb.fresh(beats, 180) == {("handler_a_0", "a")}
    assert held == {
        "handler_b_0": clusterdb.HeldJobs("handler_b_0", 2, 0, 1, 2),
        "pool": clusterdb.HeldJobs("pool", 1, 1, 4, 4),
    }
    assert clusterdb.job_ids(f"sqlite:///{path}", ["handler_b_0", "x"]) == {"handler_b_0": [1, 2]}


def test_a_database_without_a_job_table_still_gives_the_heartbeats(tmp_path):
    import sqlite3

    path = tmp_path / "universe.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE worker_process (id integer PRIMARY KEY, server_name text, hostname text, pid integer, update_time timestamp)"
        )
        conn.execute(
            "INSERT INTO worker_process (server_name, hostname, pid, update_time) VALUES ('h', 'a', 1, datetime('now'))"
        )
    beats, held = clusterdb.records(f"sqlite:///{path}")
    assert [(b.server_name, b.hostname) for b in beats] == [("h", "a")] and held == {}


def test_a_workers_node_is_pinged_by_its_hosts_name_not_the_checking_machines(monkeypatch):
    """``-n w@%h`` on host jobs1 is the node w@jobs1, whichever machine runs the check."""
    from galaxyctl_libs.actions import health
    from galaxyctl_libs.core.targets import Service
    from galaxyctl_libs.probes import celeryping

    worker = Service("_default_", "celery", "celery", ("/venv/bin/celery", "worker", "-n", "w@%h"), (), "/")
    asked = []
    monkeypatch.setattr(health, "start_ping", lambda service, timeout, host=None: asked.append(host) or host)
    pending = cluster._start_pings([cluster.Plan("jobs1", "10.0.0.2", (worker,))], 5.0)
    assert asked == ["jobs1"] and pending == {("jobs1", "celery"): "jobs1"}
    assert celeryping.ping_argv(worker, 5.0, host="jobs1")[0] == "w@jobs1"
