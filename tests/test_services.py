"""Every service's command line and environment, and celery/celery-beat/tusd under a real supervisord."""

import os
import time

import yaml
from conftest import alive, wait_for

# ---------------------------------------------------------------- real celery, beat, fake tusd


FAKE_TUSD = """#!/bin/sh
# Stand-in for tusd (a Go binary no registry here ships): records its argv, then waits.
printf '%s\\n' "$@" > "$(dirname "$0")/tusd.argv"
exec sleep 600
"""


def test_celery_beat_and_fake_tusd_under_supervisord(gctl, demo_galaxy, short_tmp):
    fake = os.path.join(short_tmp, "bin", "tusd")
    os.makedirs(os.path.dirname(fake))
    with open(fake, "w") as handle:
        handle.write(FAKE_TUSD)
    os.chmod(fake, 0o755)
    config, _ = demo_galaxy(
        gravity={
            "celery": {"enable": True, "enable_beat": True, "loglevel": "INFO", "concurrency": 1},
            "tusd": {"enable": True, "tusd_path": fake, "port": 1099, "upload_dir": os.path.join(short_tmp, "tus")},
        }
    )
    gctl("register", config)
    printed = gctl("exec", "-n").stdout  # every service: cwd, umask, environment, command line
    for name in ("gunicorn", "celery", "celery-beat", "tusd"):
        assert f"# {name}\n" in printed
    assert printed.count("GALAXY_CONFIG_FILE=") == 3 and f"{fake} -host=localhost -port=1099" in printed
    gctl("start", "--timeout", "60")

    def running():
        rows = yaml.safe_load(gctl("status", "--json", check=False).stdout)["services"]
        return {r["service"]: r for r in rows if r["state"] in ("RUNNING", "STARTING")}

    assert wait_for(lambda: set(running()) == {"gunicorn", "celery", "celery-beat", "tusd"}, timeout=60)
    schedule = os.path.join(gctl.state_dir, "celerybeat-schedule")
    assert wait_for(
        lambda: any(os.path.join(gctl.state_dir, f).startswith(schedule) for f in os.listdir(gctl.state_dir)),
        timeout=60,
    )
    assert wait_for(lambda: os.path.exists(os.path.join(os.path.dirname(fake), "tusd.argv")), timeout=20)
    with open(os.path.join(os.path.dirname(fake), "tusd.argv")) as handle:
        argv = handle.read().split()
    assert "-port=1099" in argv and "-hooks-enabled-events" in argv
    log = os.path.join(gctl.state_dir, "log", "celery.log")
    assert wait_for(lambda: os.path.exists(log) and "ready" in open(log).read(), timeout=60), open(log).read()

    before = {name: row["pid"] for name, row in running().items()}
    gctl("graceful", "--timeout", "60")
    after = wait_for(
        lambda: (lambda r: r if set(r) == set(before) and all(x["pid"] for x in r.values()) else None)(running()),
        timeout=60,
    )
    assert after["tusd"]["pid"] == before["tusd"]  # uploads are not cut
    assert after["celery"]["pid"] != before["celery"] and not alive(before["celery"])
    assert after["celery-beat"]["pid"] != before["celery-beat"]
    gctl("stop")
    time.sleep(0.1)
    assert not any(alive(p) for p in list(before.values()) + [r["pid"] for r in after.values()])


def test_real_gx_it_proxy_from_npm_under_supervisord(gctl, demo_galaxy, short_tmp):
    """The real @galaxyproject/gx-it-proxy, fetched by npx from the npm registry (.ci/run warms the cache)."""
    from conftest import free_port

    from galaxyctl_libs.probes.listeners import listening_pids

    port = free_port()
    sessions = os.path.join(short_tmp, "interactivetools_map.sqlite")
    config, _ = demo_galaxy(
        gravity={"gx_it_proxy": {"enable": True, "ip": "127.0.0.1", "port": port}},
        galaxy={"interactivetools_map": sessions},
    )
    gctl("register", config)
    assert f"--sessions {sessions}" in gctl("exec", "-n", "gx-it-proxy").stdout
    gctl("start", "--timeout", "60")
    log = os.path.join(gctl.state_dir, "log", "gx-it-proxy.log")
    assert wait_for(lambda: listening_pids(port), timeout=240), open(log).read()
    assert f"Listening on 127.0.0.1:{port}" in open(log).read()
    gctl("stop")
    assert wait_for(lambda: not listening_pids(port), timeout=30)
