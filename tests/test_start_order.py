"""Ordered start and planned vs unplanned restarts, on the stand-in Galaxy under a real supervisord.

The stand-in writes ``database/events.log``: when its web app first answered and when each handler
started (galaxyctl_libs.demo).  supervisord's own log says in which order it spawned the services.
"""

import json
import os
import re
import signal

from conftest import wait_for


def _events(root):
    with open(os.path.join(root, "database", "events.log")) as handle:
        return [line.split(" ", 1) for line in handle.read().splitlines()]


def _spawn_order(gctl):
    with open(os.path.join(gctl.state_dir, "supervisor", "supervisord.log")) as handle:
        return re.findall(r"spawned: '([^']+)'", handle.read())


def _rows(gctl):
    report = json.loads(gctl("status", "--json", check=False).stdout)
    return {row["service"]: row for row in report["services"]}


def test_web_first_then_handlers_and_celery_and_check_knows_planned_from_crashes(gctl, demo_galaxy):
    config, port = demo_galaxy(
        gravity={
            # the web app takes a while to load, as Galaxy's does: the handlers must wait for it
            "gunicorn": {"environment": {"DEMO_GALAXY_LOAD_SECONDS": "2"}},
            "celery": {"enable": True, "enable_beat": False, "start_timeout": 2},
            "handlers": {"handler": {"processes": 2, "start_stagger": 1, "start_timeout": 2}},
        }
    )
    root = os.path.dirname(os.path.dirname(config))
    gctl("register", config)
    started = gctl("start", "--timeout", "60")
    assert "ready on" in started.stdout

    # order: the web answered before any handler started; handlers 1 s apart; then celery
    events = wait_for(
        lambda: [e for e in _events(root) if e[1].startswith("handler started")][1:] and _events(root), 30
    )
    answered = [float(t) for t, what in events if what.startswith("web answered")]
    handlers = [float(t) for t, what in events if what.startswith("handler started")]
    assert answered and len(handlers) == 2, events
    assert answered[0] < min(handlers), events
    assert handlers[1] - handlers[0] >= 0.9, events  # start_stagger: 1
    assert _spawn_order(gctl) == ["gunicorn", "handler_0", "handler_1", "celery"]

    # right after a planned start: OK, and --quiet says nothing (cron mails nothing after a deploy)
    check = gctl("check", check=False)
    assert check.returncode == 0, check.stdout
    assert gctl("check", "--quiet", check=False).stdout == ""
    assert wait_for(lambda: all(r["state"] == "RUNNING" for r in _rows(gctl).values()), timeout=30)
    assert all(r["planned"] == "start" for r in _rows(gctl).values()), _rows(gctl)

    # a crash supervisord repairs: WARNING naming the service and how many times
    victim = _rows(gctl)["handler_1"]["pid"]
    os.kill(victim, signal.SIGKILL)
    assert wait_for(lambda: _rows(gctl)["handler_1"]["pid"] not in (None, victim), timeout=30)
    check = gctl("check", check=False)
    assert check.returncode == 1, check.stdout
    assert "handler_1 restarted once in the last 5 min, not by galaxyctl" in check.stdout, check.stdout
    assert _rows(gctl)["handler_1"]["planned"] == ""
    prometheus = os.path.join(root, "galaxy.prom")
    gctl("check", "--prometheus", prometheus, check=False)
    with open(prometheus) as handle:
        assert "galaxy_unplanned_restarts 1" in handle.read()

    # graceful is planned: afterwards check is OK again
    gctl("graceful", "--timeout", "60")
    check = gctl("check", check=False)
    assert check.returncode == 0, check.stdout


def test_a_database_that_needs_a_migration_is_one_line_naming_the_command(gctl, demo_galaxy):
    config, _ = demo_galaxy(gravity={"handlers": {"handler": {"processes": 1}}})
    root = os.path.dirname(os.path.dirname(config))
    with open(os.path.join(root, "database", "needs-migration"), "w") as handle:
        handle.write("the stand-in refuses to load\n")
    gctl("register", config)
    result = gctl("start", "--timeout", "60", check=False)
    assert result.returncode == 1, result.stdout
    # the config's warnings come first (a failed start still shows them), then the error: one line
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("galaxyctl: warning: ")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("galaxyctl: error: gunicorn did not start: Galaxy's database needs a migration"), lines
    assert "it is at version demo1, this Galaxy expects demo2" in lines[0]
    assert f"run 'galaxy-manage-db --galaxy-config {config} upgrade heads', then start again" in lines[0]
    # the handler was never started on that database
    rows = _rows(gctl)
    assert [r["state"] for name, r in rows.items() if name.startswith("handler")] == ["STOPPED"], rows
    assert rows["gunicorn"]["state"] == "STOPPED", rows  # not left retrying a Galaxy that cannot load
    assert not os.path.exists(os.path.join(root, "database", "events.log"))


def test_a_web_server_still_loading_after_a_planned_start_is_starting_not_a_problem(gctl, demo_galaxy):
    config, port = demo_galaxy(
        gravity={"gunicorn": {"start_timeout": 1, "environment": {"DEMO_GALAXY_LOAD_SECONDS": "8"}}}
    )
    gctl("register", config)
    gctl("start", "--no-wait", "--timeout", "60")

    def loading():  # the port is bound, the app is not loaded yet: the probe times out
        result = gctl("status", "--json", "--timeout", "1", check=False)
        row = json.loads(result.stdout)["services"][0]
        return row if row["web"].startswith("starting") else None

    row = wait_for(loading, timeout=30, interval=0.2)
    assert row and row["state"] == "STARTING" and row["web"].startswith("starting ("), row
    assert row["in_grace"] and row["planned"] == "start"
    check = gctl("check", "--timeout", "1", check=False)
    assert check.returncode == 0 and "1/1 services running (1 starting)" in check.stdout, check.stdout
    assert wait_for(lambda: _rows(gctl)["gunicorn"]["web"].startswith("ok"), timeout=60, interval=0.5)
    assert _rows(gctl)["gunicorn"]["state"] == "RUNNING"
