#!/usr/bin/env python3
"""The first start of a real Galaxy: web + celery + beat + 2 handlers, by ``register`` + ``start``.

Usage (as root or a plain user; the real Galaxy venv from tests/test_e2e_galaxy.py)::

    flock /tmp/galaxyctl-heavy.lock python3 bench/ordered_start.py [--runs N] [--db empty|created] \
        [--venv /tmp/galaxyctl-e2e-0/galaxy-26.1.2] [--galaxyctl PATH] [--json OUT]

Per run, in a fresh directory: the quickstart's config with two handler processes, ``--db created``
runs Galaxy's own database check once beforehand (what ``scripts/galaxy-quickstart`` does; its
time is reported as ``db_check_s``), ``--db empty`` starts on no database at all.  Measured:
whether ``galaxyctl start`` succeeded, seconds from ``start`` to the first HTTP 200 on
``/api/version`` (polled every 0.2 s), to ``start``'s exit, and to every service RUNNING.
Also the exits supervisord did not expect (services that crashed and were restarted) and which
logs name ``NoVersionTableError``.  Then ``shutdown``; every process still alive is ended by PID and the directory removed.
"""

import argparse
import importlib.machinery
import importlib.util
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from galaxyctl_libs.probes import procfs  # noqa: E402


def _quickstart():
    path = os.path.join(REPO, "scripts", "galaxy-quickstart")
    loader = importlib.machinery.SourceFileLoader("galaxy_quickstart", path)
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("galaxy_quickstart", loader))
    loader.exec_module(module)
    return module


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _first_200(url, stop, found):
    while not stop.is_set():
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    found.append(time.monotonic())
                    return
        except OSError:
            pass
        time.sleep(0.2)


def _crashes(root):
    """Exits supervisord did not expect (it restarted those), and which logs name NoVersionTableError."""
    try:
        with open(os.path.join(root, "state", "supervisor", "supervisord.log")) as handle:
            exits = [line.split("exited: ", 1)[1] for line in handle if "not expected" in line]
    except OSError:
        exits = []
    named = []
    for name in sorted(os.listdir(os.path.join(root, "logs"))):
        with open(os.path.join(root, "logs", name), errors="replace") as handle:
            if "NoVersionTableError" in handle.read():
                named.append(name)
    return {"unexpected_exits": exits, "no_version_table_in": named}


def one_run(args, quickstart):
    root = tempfile.mkdtemp(prefix="gxbench")
    os.chmod(root, 0o755)
    for sub in ("config", "data", "logs"):
        os.makedirs(os.path.join(root, sub))
    port = _free_port()
    config = os.path.join(root, "config", "galaxy.yml")
    text = quickstart.render_config(root, "127.0.0.1", port, virtualenv=args.venv, state_dir=root + "/state")
    with open(config, "w") as handle:
        handle.write(text.replace("      processes: 1", "      processes: 2"))
    env = dict(os.environ, GALAXYCTL_ALLOW_ROOT="1")
    gctl = [sys.executable, args.galaxyctl, "--state-dir", os.path.join(root, "state")]
    figures = {}
    pids = set()
    try:
        if args.db == "created":
            began = time.monotonic()
            quickstart.create_database(args.venv, config, os.path.join(root, "logs", "create-db.log"))
            figures["db_check_s"] = round(time.monotonic() - began, 1)
            began = time.monotonic()
            quickstart.create_database(args.venv, config, os.path.join(root, "logs", "check-db.log"))
            figures["db_check_again_s"] = round(time.monotonic() - began, 1)
        subprocess.run(gctl + ["register", config], check=True, capture_output=True, env=env, timeout=120)
        stop, found = threading.Event(), []
        poller = threading.Thread(target=_first_200, args=(f"http://127.0.0.1:{port}/api/version", stop, found))
        began = time.monotonic()
        poller.start()
        result = subprocess.run(
            gctl + ["start", "--timeout", "300"], capture_output=True, text=True, env=env, timeout=400
        )
        figures["start_exit_s"] = round(time.monotonic() - began, 1)
        figures["start_ok"] = result.returncode == 0
        if result.returncode:
            figures["start_error"] = (result.stderr or result.stdout).strip().splitlines()[:1]
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            out = subprocess.run(gctl + ["status", "--json"], capture_output=True, text=True, env=env, timeout=60)
            rows = json.loads(out.stdout)["services"]
            pids.update(r["pid"] for r in rows if r["pid"])
            if rows and all(r["state"] == "RUNNING" for r in rows):
                figures["all_running_s"] = round(time.monotonic() - began, 1)
                break
            time.sleep(1)
        poller.join(timeout=max(1.0, 300 - (time.monotonic() - began)))
        stop.set()
        if found:
            figures["first_200_s"] = round(found[0] - began, 1)
        figures["crashes"] = _crashes(root)
    finally:
        supervisord = os.path.join(root, "state", "supervisor", "supervisord.pid")
        try:
            with open(supervisord) as handle:
                pids.add(int(handle.read().strip()))
        except (OSError, ValueError):
            pass
        for pid in list(pids):
            pids.update(procfs.descendants(pid))
        subprocess.run(gctl + ["shutdown"], capture_output=True, env=env, timeout=300)
        for pid in pids:
            if procfs.alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        shutil.rmtree(root, ignore_errors=True)
    return figures


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--db", choices=("empty", "created"), default="empty")
    parser.add_argument("--venv", default=f"/tmp/galaxyctl-e2e-{os.getuid()}/galaxy-26.1.2")
    parser.add_argument("--galaxyctl", default=os.path.join(REPO, "galaxyctl"), help="the galaxyctl script to run")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    quickstart = _quickstart()
    runs = []
    for number in range(args.runs):
        runs.append(one_run(args, quickstart))
        print(f"run {number + 1}: {json.dumps(runs[-1], sort_keys=True)}", flush=True)
    ok = [r for r in runs if r.get("start_ok")]
    summary = {"db": args.db, "runs": len(runs), "start_ok": len(ok)}
    for key in ("first_200_s", "start_exit_s", "all_running_s", "db_check_s", "db_check_again_s"):
        values = [r[key] for r in ok if key in r]
        if values:
            summary[f"median_{key}"] = statistics.median(values)
    print("summary:", json.dumps(summary, sort_keys=True))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"summary": summary, "runs": runs}, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
