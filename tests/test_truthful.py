"""Issue 27, item 2: start, restart and graceful claim success only for services that are up.

Real supervisord, the demo Galaxy's gunicorn and a tusd whose command is a script: one that fails
at once (a crash loop supervisord gives up on: FATAL), or the demo's own tusd stand-in, which runs.
The ``gctl`` fixture stops supervisord and everything under it by PID.
"""

import json
import os

from conftest import http_get

FAILING_TUSD = """#!/bin/sh
echo "tusd: listen tcp 127.0.0.1:1080: bind: address already in use (stand-in failure)"
exit 1
"""


def _failing_tusd(directory):
    path = os.path.join(directory, "failing-tusd")
    with open(path, "w") as handle:
        handle.write(FAILING_TUSD)
    os.chmod(path, 0o755)
    return path


def _tusd(path, upload_dir):
    # start_timeout 2: supervisord's startsecs, so its retries end in FATAL within seconds
    return {"tusd": {"enable": True, "tusd_path": path, "upload_dir": upload_dir, "start_timeout": 2}}


def _rows(gctl):
    return {row["service"]: row for row in json.loads(gctl("status", "--json", check=False).stdout)["services"]}


def _fails_naming_tusd(result):
    """The command failed with one line naming tusd and supervisord's reason, then its log's end."""
    assert result.returncode == 1, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if not line.startswith("galaxyctl: warning: ")]
    assert lines[0].startswith("galaxyctl: error: tusd did not start: FATAL (Exited too quickly"), result.stderr
    assert any(line.startswith("last lines of ") and line.endswith("tusd.log:") for line in lines[1:])
    assert "stand-in failure" in result.stderr
    assert "Traceback" not in result.stderr
    assert "tusd: " not in result.stdout  # no "tusd: started" / "reloaded" / "restarted"


def test_a_crash_looping_service_fails_start_restart_and_graceful(gctl, demo_galaxy, short_tmp):
    config, port = demo_galaxy(gravity={**_tusd(_failing_tusd(short_tmp), short_tmp), "tusd_pth": "/x"})
    gctl("register", config)

    failed = gctl("start", "--timeout", "60", check=False)
    _fails_naming_tusd(failed)
    assert "gravity.tusd_pth: unknown key" in failed.stderr  # a failed start still shows the config's warnings
    assert http_get(f"http://127.0.0.1:{port}/api/version")[0] == 200  # the rest did start

    # status names the reason on the row, and --json carries it too
    status = gctl("status", check=False)
    assert status.returncode == 3
    tusd_line = next(line for line in status.stdout.splitlines() if line.startswith("tusd "))
    assert "FATAL" in tusd_line and "Exited too quickly (process log may have details)" in tusd_line
    assert _rows(gctl)["tusd"]["description"].startswith("Exited too quickly")

    _fails_naming_tusd(gctl("graceful", "--timeout", "60", check=False))
    _fails_naming_tusd(gctl("restart", "--timeout", "60", check=False))
    _fails_naming_tusd(gctl("restart", "tusd", "--timeout", "60", check=False))
    assert gctl("restart", "gunicorn", "--timeout", "60").returncode == 0  # the others still may

    # --no-wait says that it did not wait: it claims nothing
    launched = gctl("start", "tusd", "--no-wait")
    assert "tusd: started, not waited for" in launched.stdout


def test_start_reports_what_status_then_shows(gctl, demo_galaxy, short_tmp):
    tusd = os.path.join(short_tmp, "galaxy", "scripts", "tusd")  # the demo's stand-in: runs until stopped
    config, _ = demo_galaxy(gravity=_tusd(tusd, short_tmp))
    gctl("register", config)
    started = gctl("start", "--timeout", "60")
    assert "tusd: started" in started.stdout and "gunicorn: ready on" in started.stdout
    # right after start said so, status agrees: gunicorn answers (RUNNING, though it is still inside
    # supervisord's startsecs of 15 s), tusd is past its start timeout
    rows = _rows(gctl)
    assert rows["gunicorn"]["state"] == "RUNNING" and rows["gunicorn"]["web"].startswith("ok")
    assert rows["tusd"]["state"] == "RUNNING"
    status = gctl("status")
    assert "STARTING" not in status.stdout and " MiB" in status.stdout and " MB" not in status.stdout
