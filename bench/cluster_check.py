#!/usr/bin/env python3
"""``galaxyctl check --cluster``: its time with 2 hosts, and how it grows with hosts and handlers.

Usage (as root, PostgreSQL from Debian's packages for ``--postgres``)::

    .venv/bin/python bench/cluster_check.py [--runs N] [--postgres] [--sizes 2x1,2x4,10x4,100x4]

Each size ``HOSTSxHANDLERS`` is a stand-in Galaxy (galaxyctl_libs.demo) whose galaxy.yml names that
many hosts in ``gravity.hosts``, each running that many processes of one shared handler entry
(named ``handler_HOST_N``), celery-beat off, no web server; Galaxy's database holds a fresh
``worker_process`` row for every one of them (simulated: what the handlers would write) and a few
unfinished jobs.  The database is SQLite in the data dir, or with ``--postgres`` a throwaway
PostgreSQL server (tests/servers.py) read with galaxyctl's own interpreter (SQLAlchemy 2.0 and
psycopg2 from the test extras), as Galaxy's would.  Every run must be OK; medians in seconds.
"""

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path[:0] = [os.path.join(ROOT, "tests"), ROOT]

from galaxyctl_libs.demo import make_demo_galaxy  # noqa: E402

GALAXYCTL = os.path.join(ROOT, "galaxyctl")
TABLES = (
    "CREATE TABLE worker_process (id integer PRIMARY KEY, server_name varchar(255), hostname varchar(255), "
    "pid integer, update_time timestamp)",
    "CREATE TABLE job (id integer PRIMARY KEY, state varchar(64), handler varchar(255))",
)


def config_for(root, hosts, handlers, database=None):
    gravity = {
        "celery": {"enable": False, "enable_beat": False},
        "handlers": {"handler": {"pools": ["job-handlers"]}},
        "hosts": {f"h{i:03d}": {"handlers": {"handler": handlers}, "address": "127.0.0.1"} for i in range(hosts)},
    }
    galaxy = {"job_config": {"handling": {"assign": ["db-skip-locked"]}}}
    if database:
        galaxy["database_connection"] = database
    return make_demo_galaxy(root, 8080, gravity=gravity, galaxy=galaxy)


def rows(hosts, handlers):
    beats = [(f"handler_h{h:03d}_{p}", f"h{h:03d}", 1000 + h * 10 + p) for h in range(hosts) for p in range(handlers)]
    jobs = [("running", beats[i % len(beats)][0]) for i in range(20)] + [("new", "job-handlers")] * 5
    return beats, jobs


def fill_sqlite(root, hosts, handlers):
    beats, jobs = rows(hosts, handlers)
    with sqlite3.connect(os.path.join(root, "database", "universe.sqlite")) as conn:
        for table in TABLES:
            conn.execute(table)
        conn.executemany(
            "INSERT INTO worker_process (server_name, hostname, pid, update_time) VALUES (?, ?, ?, datetime('now'))",
            beats,
        )
        conn.executemany("INSERT INTO job (state, handler) VALUES (?, ?)", jobs)


def fill_postgres(server, name, hosts, handlers):
    beats, jobs = rows(hosts, handlers)
    values = ", ".join(f"('{n}', '{h}', {p}, now() at time zone 'utc')" for n, h, p in beats)
    jobs_sql = ", ".join(f"('{s}', '{h}')" for s, h in jobs)
    sql = ";".join(t.replace("integer PRIMARY KEY", "serial PRIMARY KEY") for t in TABLES)
    sql += f"; INSERT INTO worker_process (server_name, hostname, pid, update_time) VALUES {values}"
    sql += f"; INSERT INTO job (state, handler) VALUES {jobs_sql}"
    sql += f"; ALTER TABLE worker_process OWNER TO {name}; ALTER TABLE job OWNER TO {name}"
    server.psql(sql, name)


def measure(config, state, runs):
    env = dict(os.environ, GALAXYCTL_ALLOW_ROOT="1")
    base = [sys.executable, GALAXYCTL, "--state-dir", state]
    subprocess.run(base + ["register", config], check=True, capture_output=True, env=env, timeout=60)
    times, line = [], ""
    for _ in range(runs):
        started = time.monotonic()
        done = subprocess.run(
            base + ["check", "--cluster", "--no-ping"], capture_output=True, text=True, env=env, timeout=300
        )
        times.append(time.monotonic() - started)
        line = done.stdout.strip()
        if done.returncode != 0:
            raise RuntimeError(f"check --cluster was not OK: {line} {done.stderr}")
    return statistics.median(times), line


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--sizes", default="2x1,2x4,10x4,100x1,100x4")
    args = parser.parse_args()
    sizes = [tuple(int(n) for n in size.split("x")) for size in args.sizes.split(",")]
    server = None
    if args.postgres:
        import servers  # tests/servers.py

        server = servers.PostgresServer()
        server.__enter__()
    try:
        print(f"{'hosts':>6} {'handlers':>9} {'check --cluster':>16}  ({'PostgreSQL' if server else 'SQLite'})")
        for hosts, handlers in sizes:
            with tempfile.TemporaryDirectory(prefix="gxcl") as scratch:
                database = None
                if server:
                    name = f"gxbench_{hosts}_{handlers}_{os.getpid()}"
                    database = server.create_database(name, name, "bench-" + name)
                config = config_for(os.path.join(scratch, "galaxy"), hosts, handlers, database)
                if server:
                    fill_postgres(server, name, hosts, handlers)
                else:
                    fill_sqlite(os.path.join(scratch, "galaxy"), hosts, handlers)
                seconds, line = measure(config, os.path.join(scratch, "state"), args.runs)
                print(f"{hosts:>6} {hosts * handlers:>9} {seconds:>14.3f} s  {line.split(' | ')[1]}")
    finally:
        if server:
            server.__exit__(None, None, None)


if __name__ == "__main__":
    main()
