"""memory_limit/memory_high under a real supervisord: the watcher (backends/memwatch.py) restarts a
memory hog over memory_limit and recycles a gunicorn worker over memory_high while its master stays.

The stand-ins come from the demo Galaxy: a handler that keeps DEMO_HOG_MB resident once started, and
a web worker that keeps N MB more per ``/hog?mb=N``.  Waits are bounded; the ``gctl`` fixture stops
supervisord and everything under it by PID.
"""

import json
import os
import sys

import pytest
from conftest import ROOT_ONLY, alive, children_of, http_get, uids, wait_for

from galaxyctl_libs.backends.base import MEMWATCH_MODULE, MEMWATCH_PROGRAM
from galaxyctl_libs.probes import procfs

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RSS is read from /proc")

WATCH_TIMEOUT = 90  # the watcher looks every 5 s; a restart also waits for the stop and the start


def status_rows(gctl):
    report = json.loads(gctl("status", "--json", check=False).stdout)
    return {row["service"]: row for row in report["services"]}


def watcher_log(gctl, log_dir=None):
    try:
        path = os.path.join(log_dir or os.path.join(gctl.state_dir, "log"), f"{MEMWATCH_PROGRAM}.log")
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError:
        return ""


def test_a_handler_over_memory_limit_is_restarted_and_stop_still_ends_supervisord(gctl, demo_galaxy):
    hog = {"processes": 1, "environment": {"DEMO_HOG_MB": "300"}, "start_timeout": 3}  # startsecs: quick restarts
    config, _ = demo_galaxy(gravity={"memory_limit": 0.2, "handlers": {"handler": hog}})
    result = gctl("register", config)
    gctl("start", "--timeout", "60")
    assert "memory" not in result.stderr  # no longer "ignored under supervisor"
    first, program = (status_rows(gctl)["handler_0"][key] for key in ("pid", "program"))
    assert first and alive(first)
    assert program == "handler"  # the watcher names supervisord's program: gravity's name of a one-process entry

    restarted = wait_for(lambda: f"{program} restarted: pid {first} -> " in watcher_log(gctl), WATCH_TIMEOUT)
    log = watcher_log(gctl)
    assert restarted, log
    assert f"{program} (pid {first}) uses " in log and "over memory_limit 204 MiB: restarting it" in log
    rows = status_rows(gctl)
    assert rows["handler_0"]["pid"] not in (None, first)
    assert f"-> {rows['handler_0']['pid']}" in log  # the PID the log names is the one supervisord runs
    assert rows["gunicorn"]["state"] == "RUNNING" and "gunicorn (pid" not in log  # under the limit: left alone
    assert all(row["rss_bytes"] > 0 for row in rows.values() if row["pid"])

    gctl("stop")  # the watcher alone does not keep supervisord up
    assert wait_for(lambda: gctl.supervisord_pid() is None, 30)


@pytest.mark.parametrize("preload", [False, True], ids=["hup", "herder"])
def test_a_gunicorn_worker_over_memory_high_is_recycled_while_the_master_stays(gctl, demo_galaxy, preload):
    config, port = demo_galaxy(gravity={"gunicorn": {"workers": 2, "preload": preload, "memory_high": 0.25}})
    gctl("register", config)
    gctl("start", "--timeout", "60")
    supervised = status_rows(gctl)["gunicorn"]["pid"]
    master = children_of(supervised)[0] if preload else supervised  # under the herder: its one child
    assert wait_for(lambda: len(children_of(master)) == 2, 30)
    assert "over memory_high" not in watcher_log(gctl)

    status, body = http_get(f"http://127.0.0.1:{port}/hog?mb=320", timeout=30)
    hog = body["pid"]
    assert status == 200 and hog in children_of(master)

    assert wait_for(lambda: not alive(hog), WATCH_TIMEOUT), watcher_log(gctl)
    log = watcher_log(gctl)
    assert f"recycling worker {hog} uses " in log and "over memory_high 256 MiB" in log
    assert wait_for(lambda: len(children_of(master)) == 2, 30)  # gunicorn forked a new worker
    assert alive(master) and status_rows(gctl)["gunicorn"]["pid"] == supervised  # the master stayed
    assert http_get(f"http://127.0.0.1:{port}/api/version")[0] == 200
    assert "restarting" not in log
    gctl("stop")


@ROOT_ONLY
def test_as_root_the_watcher_runs_as_the_galaxy_user(root_gctl, demo_galaxy, user_venv, test_user):
    """Root starts it, but like supervisord and every service it runs with the Galaxy user's ids, and
    as that user it still reaches supervisord and recycles that user's gunicorn worker."""
    gravity = {"galaxy_user": test_user.pw_name, "virtualenv": user_venv, "gunicorn": {"workers": 2}}
    config, port = demo_galaxy(gravity={**gravity, "memory_high": 0.25})
    root_gctl("register", config)
    root_gctl("start", "--timeout", "60")
    supervisord = root_gctl.supervisord_pid()
    [watcher] = [pid for pid in children_of(supervisord) if MEMWATCH_MODULE in procfs.cmdline(pid)]
    assert uids(watcher) == uids(supervisord) == {test_user.pw_uid}
    log_dir = os.path.join(os.path.dirname(os.path.dirname(config)), "database", "gravity", "log")
    hog = http_get(f"http://127.0.0.1:{port}/hog?mb=320", timeout=30)[1]["pid"]
    assert wait_for(lambda: not alive(hog), WATCH_TIMEOUT), watcher_log(root_gctl, log_dir)
    assert f"recycling worker {hog} uses " in watcher_log(root_gctl, log_dir)
    assert os.stat(os.path.join(log_dir, f"{MEMWATCH_PROGRAM}.log")).st_uid == test_user.pw_uid
    root_gctl("stop")


def test_update_adds_and_removes_the_watcher_of_a_running_supervisord(gctl, demo_galaxy):
    import yaml

    config, _ = demo_galaxy()
    gctl("register", config)
    gctl("start", "--timeout", "60")

    def watcher_state():
        out = gctl("supervisorctl", "status", check=False).stdout
        line = next((line for line in out.splitlines() if line.startswith(MEMWATCH_PROGRAM)), "")
        return line.split()[1] if line else None

    assert watcher_state() is None  # no limit, no watcher
    with open(config) as handle:
        settings = yaml.safe_load(handle)
    settings["gravity"]["gunicorn"]["memory_high"] = 4
    with open(config, "w") as handle:
        yaml.safe_dump(settings, handle)
    gctl("update")
    assert wait_for(lambda: watcher_state() == "RUNNING", 30)
    assert status_rows(gctl)["gunicorn"]["memory"] == ""  # far under 4 GB
    settings["gravity"]["gunicorn"]["memory_high"] = 0  # none (an unset key would fall back to the saved state)
    with open(config, "w") as handle:
        yaml.safe_dump(settings, handle)
    gctl("update")
    assert watcher_state() is None
    gctl("stop")
