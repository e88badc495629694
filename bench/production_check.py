#!/usr/bin/env python3
"""``galaxyctl check`` on the production shape: the real Galaxy 26.1 on PostgreSQL, RabbitMQ and Redis.

Usage, as root (Galaxy runs as ``--user``), after tests/test_e2e_production.py built its venv once::

    .venv/bin/python bench/production_check.py [--runs N] [--venv VENV] [--user galaxy]

Throwaway PostgreSQL, RabbitMQ and Redis servers (tests/servers.py) on free loopback ports; the
quickstart's production config (db-skip-locked) with web, celery, beat and 2 handlers, started with
galaxyctl.  Once ``check`` is OK (both heartbeats read from PostgreSQL, the worker's ping answered
through RabbitMQ), it times, interleaved: ``check`` as it is (the ping is a bare celery app on the
broker from galaxy.yml), and the celery ping alone, new and old (the old one imports Galaxy's celery
app, as ``check`` did before).  Medians in seconds.  Every process is ended by PID at the end.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [BENCH, os.path.join(os.path.dirname(BENCH), "tests"), os.path.dirname(BENCH)]

import servers  # noqa: E402  tests/servers.py
from celery_ping import celery_service  # noqa: E402  bench/celery_ping.py
from real_galaxy import Site, ensure_ours_for_galaxy  # noqa: E402

from galaxyctl_libs.probes import celeryping  # noqa: E402
from galaxyctl_libs.records import replace  # noqa: E402


def timed(function):
    started = time.monotonic()
    value = function()
    return time.monotonic() - started, value


def ping(service, timeout=30.0):
    result = celeryping.finish(celeryping.start(service, timeout))
    if not result.ok:
        raise RuntimeError(f"the ping failed: {result}")
    return result


def measure(site, runs, python):
    """{name: [seconds]} of ``check`` and of the two pings (timed as the Galaxy user, who owns the
    config: as root galaxyctl's library would refuse it), interleaved."""
    ok, done = None, None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and ok is None:
        done = site.run("check", "--restart-window", "0", "--timeout", "30", timeout=120)
        ok = done if done.returncode == 0 and "celery_answering=1" in done.stdout else None
        time.sleep(0 if ok else 3)
    if ok is None:
        raise RuntimeError(f"check never became OK: {done.stdout}{done.stderr}")
    figures = {"check": []}
    for _ in range(runs):
        figures["check"].append(timed(lambda: site.run("check", "--restart-window", "0"))[0])
    as_user = ["runuser", "-u", site.user, "--"] if site.user else []
    pinged = subprocess.run(
        as_user + [python, os.path.abspath(__file__), "--pings", site.config, str(runs)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd="/",
    )
    if pinged.returncode != 0:
        raise RuntimeError(f"the pings failed: {pinged.stderr[-2000:]}")
    figures.update(json.loads(pinged.stdout.strip().splitlines()[-1]))
    return ok.stdout.strip(), figures


def pings(config, runs):
    """The worker's ping, new (bare celery app on galaxy.yml's broker) and old (Galaxy's app), timed."""
    with tempfile.TemporaryDirectory() as scratch:
        new = celery_service(config, scratch)
    old = replace(new, broker_url="")
    figures = {"ping (broker from galaxy.yml)": [], "ping (through Galaxy's app, before)": []}
    for _ in range(runs):
        figures["ping (broker from galaxy.yml)"].append(timed(lambda: ping(new))[0])
        figures["ping (through Galaxy's app, before)"].append(timed(lambda: ping(old))[0])
    print(json.dumps(figures))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--venv", default=f"/tmp/galaxyctl-e2e-{os.getuid()}/galaxy-26.1.2", help="Galaxy's venv")
    parser.add_argument("--user", default="galaxy" if os.getuid() == 0 else None, help="the Galaxy user")
    parser.add_argument("--pings", nargs=2, metavar=("CONFIG", "RUNS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.pings:  # the ping part, run as the Galaxy user by measure()
        return pings(args.pings[0], int(args.pings[1])) or 0
    if not os.path.exists(os.path.join(args.venv, "bin", "galaxy-main")):
        parser.error(f"no Galaxy in {args.venv} (run tests/test_e2e_production.py once to build it)")
    with tempfile.TemporaryDirectory() as workdir:
        argv0 = [os.path.join(ensure_ours_for_galaxy(args.venv, workdir), "bin", "galaxyctl")]
    with servers.PostgresServer() as postgres, servers.RabbitMQServer() as rabbitmq, servers.RedisServer() as redis:
        rabbitmq.add_vhost("bench")
        urls = {
            "database": postgres.create_database("bench", "bench", "benchpw"),
            "amqp": rabbitmq.url("bench"),
            "redis": redis.url(1),
        }
        site = Site("ours", argv0, args.venv, args.user, handlers=2, servers=urls)
        try:
            site.own()
            started = subprocess.run(site.argv + ["start", "--timeout", "300"], capture_output=True, text=True)
            site.remember()
            if started.returncode != 0:
                raise RuntimeError(f"start failed: {started.stdout}{started.stderr}")
            line, figures = measure(site, args.runs, os.path.join(os.path.dirname(argv0[0]), "python"))
        finally:
            site.close()
    print("real Galaxy 26.1 on PostgreSQL 15, RabbitMQ 3.10, Redis 7: web, celery, beat, 2 handlers")
    print(f"check said: {line[:160]}...")
    for name, samples in figures.items():
        print(
            f"  {name:<40} median {statistics.median(samples):6.2f} s  (min {min(samples):.2f}, max {max(samples):.2f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
