"""status/check exit codes under real failures, Prometheus textfile, and startup retries."""

import os
import re
import signal

import yaml
from conftest import alive, kill_pids, wait_for


def master_pid(gctl):
    rows = yaml.safe_load(gctl("status", "--json", check=False).stdout)["services"]
    return rows[0]["pid"]


def parse_exposition(text):
    """A small parser of the Prometheus text format: every sample line is NAME VALUE, with HELP/TYPE first."""
    samples, typed = {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
        elif line.startswith("#") or not line:
            continue
        else:
            name, value = line.split(" ")
            assert re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", name) and name in typed
            samples[name] = float(value)
    return samples


def test_check_follows_a_killed_master_and_writes_prometheus(gctl, demo_galaxy, short_tmp):
    config, _ = demo_galaxy()
    gctl("register", config)
    gctl("start", "--timeout", "60")
    prom = os.path.join(short_tmp, "galaxy.prom")
    ok = gctl("check", "--restart-window", "0", "--prometheus", prom)
    assert ok.returncode == 0
    assert re.match(
        r"GALAXY OK - 1/1 services running, web \d+ ms \| services_running=1;;;0;1 web_ms=\d+ms workers_busy=0;;;0;1$",
        ok.stdout.strip(),
    ), ok.stdout
    samples = parse_exposition(open(prom).read())
    assert (
        samples["galaxy_check_status"] == 0
        and samples["galaxy_services_running"] == 1
        and samples["galaxy_web_up"] == 1
    )
    assert gctl("check", "--restart-window", "0", "--quiet").stdout == ""
    assert gctl("check", check=False).returncode == 0  # just started, by galaxyctl: planned, no WARNING

    inode = os.stat(prom).st_ino
    master = master_pid(gctl)
    os.kill(master, signal.SIGKILL)
    assert wait_for(lambda: not alive(master), timeout=10)
    critical = gctl("check", "--restart-window", "0", "--timeout", "2", "--prometheus", prom, check=False)
    assert critical.returncode == 2 and critical.stdout.startswith("GALAXY CRITICAL - "), critical.stdout
    assert parse_exposition(open(prom).read())["galaxy_check_status"] == 2
    assert os.stat(prom).st_ino != inode  # replaced, not rewritten in place
    # supervisord brings it back
    assert wait_for(lambda: gctl("check", "--restart-window", "0", check=False).returncode == 0, timeout=60)
    assert gctl("status", check=False).returncode == 0
    # ... which galaxyctl did not do: a WARNING while it is within the restart window
    warning = gctl("check", check=False)
    assert warning.returncode == 1 and "gunicorn restarted once in the last 5 min, not by galaxyctl" in warning.stdout


def test_killed_supervisord_is_reported_and_start_recovers(gctl, demo_galaxy):
    config, port = demo_galaxy()
    gctl("register", config)
    gctl("start", "--timeout", "60")
    supervisord = gctl.supervisord_pid()
    master = master_pid(gctl)
    kill_pids([supervisord])
    kill_pids([master])
    status = gctl("status", check=False)
    assert status.returncode == 3
    assert status.stdout.splitlines()[0].startswith("supervisord is not running")
    assert gctl("check", check=False).returncode == 2
    gctl("start", "--timeout", "60")  # stale pid and socket files are no obstacle
    assert gctl("status").returncode == 0


def test_startup_retries_a_stuck_start_then_fails_clearly(gctl, demo_galaxy):
    # stop_timeout: the hung server ignores SIGTERM; the teardown need not wait the default for it
    config, _ = demo_galaxy(gravity={"gunicorn": {"environment": {"DEMO_GALAXY_HANG": "1"}, "stop_timeout": 3}})
    gctl("register", config)
    result = gctl("startup", "--retries", "2", "--timeout", "3", check=False, timeout=180)
    assert result.returncode == 1
    first = result.stderr.splitlines()[0]
    assert first.startswith("galaxyctl: error: Galaxy did not start after 3 tries: gunicorn did not become ready"), (
        result.stderr
    )
    log = open(os.path.join(gctl.state_dir, "supervisor", "supervisord.log")).read()
    assert log.count("spawned: 'gunicorn'") == 3
