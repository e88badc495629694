#!/usr/bin/env python3
"""The celery ping of ``check``: through Galaxy's app (before) against a bare celery app (now).

Usage (from the checkout, with a venv that has celery, e.g. the test venv)::

    .venv/bin/python bench/celery_ping.py [--runs N] [--galaxy-venv VENV] [--json OUT]

1. The stand-in Galaxy (``galaxyctl_libs.demo``) with its real celery worker on kombu's filesystem
   transport, started from this interpreter's venv: the worker's Service is built by galaxyctl from
   the stand-in's galaxy.yml (so the broker URL is the one galaxyctl reads there), and each round
   times, interleaved, the old ping (``--app galaxy.celery``: the app module imported, as before)
   and the new one (``celery.Celery(broker=URL)``), start to verdict, both answered ``pong``.  The
   stand-in's app is a few lines: this is the floor of the old ping, not Galaxy's cost.
2. With ``--galaxy-venv``: a real Galaxy's venv (read only; nothing is installed there) and a
   minimal galaxy.yml in a temporary directory, with Galaxy's default broker (kombu's SQLAlchemy
   transport on ``control.sqlite``): the old ping loads Galaxy's whole app to learn that this
   broker carries no broadcast, the new one learns it from the transport's declared exchange types.
   No worker is needed for that verdict; this is the time ``check`` spent on the quickstart's Galaxy.

Medians (and min/max) in seconds.  Every process started is stopped by its PID; the temporary
directory is removed.
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, CHECKOUT)

from galaxyctl_libs.core import state  # noqa: E402
from galaxyctl_libs.core.registration import resolve  # noqa: E402
from galaxyctl_libs.core.services import build_services  # noqa: E402
from galaxyctl_libs.demo import make_demo_galaxy  # noqa: E402
from galaxyctl_libs.probes import celeryping  # noqa: E402
from galaxyctl_libs.records import replace  # noqa: E402


def celery_service(config, state_dir):
    instance, _, _ = resolve(state.ConfigRecord(path=config), state_dir, enforce_user=False)
    return next(s for s in build_services(instance) if s.service_type == "celery")


def timed_ping(service, timeout):
    started = time.monotonic()
    result = celeryping.finish(celeryping.start(service, timeout))
    return time.monotonic() - started, result


def summary(samples):
    return {
        "median": round(statistics.median(samples), 3),
        "min": round(min(samples), 3),
        "max": round(max(samples), 3),
        "n": len(samples),
    }


def stop(process):
    """Our worker, by its PID: SIGTERM, then SIGKILL if it lingers."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def stand_in(tmp, runs, timeout):
    venv = os.path.dirname(os.path.dirname(sys.executable))
    root = os.path.join(tmp, "galaxy")
    gravity = {"virtualenv": venv, "celery": {"enable": True, "enable_beat": False, "concurrency": 1}}
    config = make_demo_galaxy(root, 0, gravity=gravity)
    new = celery_service(config, os.path.join(tmp, "state"))
    old = replace(new, broker_url=None)  # a record without the broker: the ping through the app
    print(f"stand-in worker: broker {new.broker_url} (from {new.broker_from})", flush=True)
    env = {k: v for k, v in new.full_environment(os.environ).items()}
    with open(os.path.join(tmp, "celery.log"), "w") as log:
        worker = subprocess.Popen(new.argv, cwd=new.cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while not timed_ping(new, 2.0)[1].ok:
            if time.monotonic() > deadline or worker.poll() is not None:
                raise SystemExit(f"the stand-in's worker does not answer; see {tmp}/celery.log")
        figures = {"old": [], "new": []}
        for run in range(runs):
            for kind in ("old", "new") if run % 2 == 0 else ("new", "old"):
                seconds, result = timed_ping(old if kind == "old" else new, timeout)
                if not result.ok:
                    raise SystemExit(f"{kind} ping failed: {result.error}")
                figures[kind].append(seconds)
        return {kind: summary(samples) for kind, samples in figures.items()}
    finally:
        stop(worker)


def real_galaxy(tmp, galaxy_venv, runs, timeout):
    root = os.path.join(tmp, "real")
    os.makedirs(os.path.join(root, "data"))
    config = os.path.join(root, "galaxy.yml")
    galaxy = {
        "data_dir": os.path.join(root, "data"),
        "database_connection": f"sqlite:///{root}/data/universe.sqlite?isolation_level=IMMEDIATE",
        "conda_auto_init": False,
        "conda_auto_install": False,
        "involucro_auto_init": False,
    }
    gravity = {"virtualenv": galaxy_venv, "galaxy_root": None, "celery": {"enable": True, "enable_beat": False}}
    with open(config, "w") as handle:
        json.dump({"gravity": gravity, "galaxy": galaxy}, handle)  # JSON is YAML
    new = celery_service(config, os.path.join(tmp, "state-real"))
    # read only: no .pyc written into the Galaxy venv
    new = replace(new, environment=new.environment + (("PYTHONDONTWRITEBYTECODE", "1"),))
    old = replace(new, broker_url=None)
    print(f"real Galaxy venv {galaxy_venv}: broker {new.broker_url} (from {new.broker_from})", flush=True)
    figures = {"old": [], "new": []}
    for run in range(runs):
        for kind in ("old", "new") if run % 2 == 0 else ("new", "old"):
            seconds, result = timed_ping(old if kind == "old" else new, timeout)
            if not result.unavailable:
                raise SystemExit(f"{kind} ping: expected 'no broadcast', got {result}")
            figures[kind].append(seconds)
    return {kind: summary(samples) for kind, samples in figures.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=5.0, help="the ping's reply timeout (check's --timeout)")
    parser.add_argument("--galaxy-venv", help="a real Galaxy's venv (read only) for the app-loading figure")
    parser.add_argument("--json", help="write the figures there")
    args = parser.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="galaxyctl-bench-ping-")
    os.chmod(tmp, 0o755)
    results = {}
    try:
        results["stand_in_worker_answering"] = stand_in(tmp, args.runs, args.timeout)
        if args.galaxy_venv:
            results["real_galaxy_sqlite_broker"] = real_galaxy(
                tmp, args.galaxy_venv, max(3, args.runs // 2), args.timeout
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{'case':32} {'old (app) median':>18} {'new (broker) median':>20} {'ratio':>7}")
    for case, figures in results.items():
        old, new = figures["old"]["median"], figures["new"]["median"]
        print(f"{case:32} {old:17.3f}s {new:19.3f}s {old / new:7.1f}")
    print(json.dumps(results, indent=1))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
