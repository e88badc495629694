"""Health of every service and the rolling graceful, on the stand-in Galaxy.

The stand-in handlers heartbeat into database/universe.sqlite as Galaxy's do (galaxyctl_libs.demo);
the celery worker is a real one on kombu's filesystem transport.
"""

import json
import os
import signal
import sqlite3
import threading
import time

import yaml
from conftest import alive, wait_for
from test_health import parse_exposition

HANDLERS = {"handler": {"processes": 2}}


def heartbeats(root):
    """{server_name: pid} of the rows in the stand-in's database whose process is alive."""
    try:
        with sqlite3.connect(os.path.join(root, "database", "universe.sqlite"), timeout=5) as conn:
            rows = conn.execute("SELECT server_name, pid FROM worker_process").fetchall()
    except sqlite3.Error:
        return {}
    return {name: pid for name, pid in rows if alive(pid)}


def check_until(gctl, code, *args, timeout=30):
    """The first ``galaxyctl check ARGS`` that exits ``code`` (bounded), else None."""

    def run():
        result = gctl("check", "--restart-window", "0", *args, check=False)
        return result if result.returncode == code else None

    return wait_for(run, timeout=timeout, interval=0.5)


def rows_of(gctl, *args):
    report = yaml.safe_load(gctl("status", "--json", *args, check=False).stdout)
    return {row["service"]: row for row in report["services"]}


def test_handler_that_stops_heartbeating_is_critical_and_graceful_starts_what_is_stopped(gctl, demo_galaxy, short_tmp):
    root = os.path.join(short_tmp, "galaxy")
    tusd = {"enable": True, "tusd_path": os.path.join(root, "scripts", "tusd"), "upload_dir": short_tmp}
    config, _ = demo_galaxy(gravity={"handlers": HANDLERS, "tusd": tusd})
    gctl("register", config)
    gctl("start", "--timeout", "60")
    assert wait_for(lambda: len(heartbeats(root)) == 2, timeout=30)
    rows = rows_of(gctl)
    for name in ("handler_0", "handler_1"):
        assert rows[name]["health"]["probe"] == "heartbeat", rows[name]
        assert rows[name]["health"]["state"] == "ok" and rows[name]["health"]["pid"] == rows[name]["pid"], rows[name]
    assert rows["gunicorn"]["health"] is None and rows["tusd"]["health"] is None
    assert "heartbeat 0s ago" in gctl("status").stdout or "heartbeat 1s ago" in gctl("status").stdout

    prom = os.path.join(short_tmp, "galaxy.prom")
    ok = gctl("check", "--restart-window", "0", "--heartbeat-age", "5", "--prometheus", prom)
    assert ok.stdout.startswith("GALAXY OK - 4/4 services running") and "handlers_heartbeat=2;;;0;2" in ok.stdout
    text = open(prom).read()
    assert 'galaxy_service_healthy{instance="_default_",service="handler_0",probe="heartbeat"} 1' in text

    # handler_0 lives on but stops heartbeating: CRITICAL, naming it, once its last beat is old
    open(os.path.join(root, "database", "handler_0.noheartbeat"), "w").close()
    critical = check_until(gctl, 2, "--heartbeat-age", "3", "--prometheus", prom)
    assert critical, "check never went CRITICAL"
    assert "handler_0 last heartbeat" in critical.stdout and "handler_1" not in critical.stdout.split("|")[0]
    assert "handlers_heartbeat=1;;;0;2" in critical.stdout
    samples = open(prom).read()
    assert 'galaxy_service_healthy{instance="_default_",service="handler_0",probe="heartbeat"} 0' in samples
    assert (
        parse_exposition("\n".join(line for line in samples.splitlines() if "{" not in line))["galaxy_web_up"] == 1
    )  # the web still answers: only the handler is unhealthy
    assert rows_of(gctl, "--heartbeat-age", "3")["handler_0"]["health"]["state"] == "critical"
    os.remove(os.path.join(root, "database", "handler_0.noheartbeat"))

    # graceful on a partly stopped Galaxy starts what is stopped, tusd included
    gctl("stop", "tusd", "handler_1")
    assert {n: r["state"] for n, r in rows_of(gctl).items()}["tusd"] == "STOPPED"
    out = gctl("graceful", "--timeout", "60").stdout
    assert "tusd: reloaded" in out and "handler_1: reloaded" in out
    rows = rows_of(gctl)
    assert all(r["state"] in ("RUNNING", "STARTING") for r in rows.values()), rows
    assert wait_for(lambda: set(heartbeats(root)) == {"handler_0", "handler_1"}, timeout=30)
    again = gctl("graceful", "--timeout", "60")  # safe to repeat
    assert again.returncode == 0
    gctl("stop")


def _started_with_handlers(gctl, demo_galaxy, short_tmp, processes, start_delay):
    """Register and start a stand-in with ``processes`` handlers, each ``start_delay`` s slow to come
    up; wait until all heartbeat.  Returns the Galaxy root."""
    root = os.path.join(short_tmp, "galaxy")
    env = {"DEMO_HANDLER_START_DELAY": str(start_delay)}
    config, _ = demo_galaxy(gravity={"handlers": {"handler": {"processes": processes, "environment": env}}})
    gctl("register", config)
    gctl("start", "--timeout", "60")
    assert wait_for(lambda: len(heartbeats(root)) == processes, timeout=30)
    return root


def test_rolling_graceful_keeps_a_handler_ready_at_every_moment(gctl, demo_galaxy, short_tmp):
    root = _started_with_handlers(gctl, demo_galaxy, short_tmp, 2, start_delay=2)
    before = heartbeats(root)

    samples, stop = [], threading.Event()

    def watch():
        while not stop.is_set():
            samples.append((time.monotonic(), heartbeats(root)))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = gctl("graceful", "--timeout", "60", "--delay", "0.5")
    finally:
        stop.set()
        watcher.join(timeout=30)
    assert "handler_0: reloaded" in result.stdout and "handler_1: reloaded" in result.stdout
    after = heartbeats(root)
    assert set(after) == {"handler_0", "handler_1"}
    assert all(after[name] != before[name] for name in after)  # both restarted...
    assert min(len(beats) for _, beats in samples) >= 1, samples  # ...with one ready at every moment
    # one by one: handler_1 went down only after handler_0 heartbeated from its new process
    first_new = next(t for t, beats in samples if beats.get("handler_0") == after["handler_0"])
    second_down = next(t for t, beats in samples if "handler_1" not in beats)
    assert first_new < second_down
    gctl("stop")


def test_celery_worker_that_does_not_answer_is_critical(gctl, demo_galaxy, short_tmp):
    config, _ = demo_galaxy(gravity={"celery": {"enable": True, "enable_beat": False}})
    gctl("register", config)
    gctl("start", "--timeout", "60")
    assert wait_for(lambda: rows_of(gctl)["celery"]["state"] == "RUNNING", timeout=60)
    ok = check_until(gctl, 0, "--timeout", "5", timeout=60)
    assert ok and "celery_answering=1;;;0;1" in ok.stdout, ok
    status = json.loads(gctl("status", "--json", "--ping").stdout)
    celery = next(r for r in status["services"] if r["service"] == "celery")
    assert celery["health"]["probe"] == "ping" and celery["health"]["state"] == "ok", celery
    assert "health" in status["services"][0] and rows_of(gctl)["celery"]["health"] is None  # no ping unless asked

    pid = celery["pid"]
    os.kill(pid, signal.SIGSTOP)  # alive, but answers nothing
    try:
        critical = gctl("check", "--restart-window", "0", "--timeout", "2", check=False)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert critical.returncode == 2, critical.stdout + critical.stderr
    assert critical.stdout.startswith("GALAXY CRITICAL - ") and "celery no reply to ping" in critical.stdout
    assert "celery_answering=0;;;0;1" in critical.stdout
    assert gctl("check", "--restart-window", "0", "--no-ping").returncode == 0
    gctl("stop")


def test_rolling_graceful_in_batches(gctl, demo_galaxy, short_tmp):
    root = _started_with_handlers(gctl, demo_galaxy, short_tmp, 3, start_delay=1)
    refused = gctl("graceful", "--batch", "0", check=False)
    assert refused.returncode == 1 and "--batch must be at least 1" in refused.stderr
    before = heartbeats(root)
    samples, stop = [], threading.Event()

    def watch():
        while not stop.is_set():
            samples.append(heartbeats(root))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        gctl("graceful", "--timeout", "60", "--batch", "2")
    finally:
        stop.set()
        watcher.join(timeout=30)
    after = heartbeats(root)
    assert set(after) == {"handler_0", "handler_1", "handler_2"} and all(after[n] != before[n] for n in after)
    # the first batch (handler_0, handler_1) was down together while handler_2 carried on, then the other way round
    assert any(set(beats) == {"handler_2"} for beats in samples), samples
    assert min(len(beats) for beats in samples) >= 1
    first_done = next(i for i, beats in enumerate(samples) if beats.get("handler_1") == after["handler_1"])
    assert all(beats.get("handler_2") == before["handler_2"] for beats in samples[:first_done])
    gctl("stop")
