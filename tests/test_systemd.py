"""galaxyctl with process_manager: systemd, against a real systemd booted in systemd-nspawn.

A session fixture builds a Debian bookworm rootfs once (debootstrap; cached under the system temp
dir between local runs), boots a throw-away copy of it (``--ephemeral``), installs this checkout's
galaxyctl and gunicorn into a venv inside from wheels made on the host, and powers it off at the
end whatever happened.  Commands run inside through ``nsenter``.  Needs root and the
systemd-container and debootstrap packages (installed with apt-get when missing): else skipped.
"""

import os
import re
import time

import nspawn
import pytest
import yaml
from conftest import REPO, free_port, http_get, wait_for

from galaxyctl_libs.demo import make_demo_galaxy

pytestmark = pytest.mark.systemd

GALAXYCTL = "/opt/venv/bin/galaxyctl"


@pytest.fixture(scope="session")
def machine(tmp_path_factory):
    wheel_dir = str(tmp_path_factory.mktemp("sdwheels") / "wheels")
    os.mkdir(wheel_dir)
    name = f"gxsd{os.getpid()}"
    log = tmp_path_factory.mktemp("sdlog") / "nspawn.log"
    try:
        nspawn.tools()
        nspawn.rootfs()
    except nspawn.Unavailable as exc:
        pytest.skip(str(exc))
    nspawn.wheels(wheel_dir, REPO)
    with nspawn.booted(name, log, venv_packages=("galaxyctl", "gunicorn"), wheel_dir=wheel_dir) as box:
        box.run("useradd", "--system", "--user-group", "--home-dir", "/nonexistent", "galaxy")
        yield box


def _galaxy(machine, port, **gravity):
    settings = {"process_manager": "systemd", "galaxy_user": "galaxy", **gravity}
    config = make_demo_galaxy(machine.path("/opt/galaxy"), port=port, gravity=settings)
    return config[len(machine.path("")) :]


def _galaxyctl(machine, config, *args, check=True, timeout=180):
    result = machine.run(GALAXYCTL, "-c", config, *args, check=check, timeout=timeout)
    print(f"$ galaxyctl -c {config} {' '.join(args)} → {result.returncode}\n{result.stdout}{result.stderr}")
    return result


def _uid_of(machine, pid):
    status = machine.run("cat", f"/proc/{pid}/status").stdout
    return int(re.search(r"^Uid:\s+(\d+)", status, re.M).group(1))


def test_update_start_status_stop_and_stale_units(machine):
    port = free_port()
    config = _galaxy(machine, port, handlers={"handler": {"processes": 2}})
    unit_dir = machine.path("/etc/systemd/system")
    try:
        _galaxyctl(machine, config, "update")
        units = sorted(n for n in os.listdir(unit_dir) if n.startswith("galaxy"))
        assert units == ["galaxy-gunicorn.service", "galaxy-handler@.service", "galaxy.target"], units
        machine.run("systemd-analyze", "verify", *(f"/etc/systemd/system/{u}" for u in units if "@." not in u))

        _galaxyctl(machine, config, "start")
        assert wait_for(lambda: _answers(port), timeout=60), machine.run("journalctl", "--no-pager", "-n", "50").stdout
        main_pid = machine.run("systemctl", "show", "-P", "MainPID", "galaxy-gunicorn.service").stdout.strip()
        galaxy_uid = int(machine.run("id", "-u", "galaxy").stdout)
        assert _uid_of(machine, int(main_pid)) == galaxy_uid
        status = _galaxyctl(machine, config, "status", check=False)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "galaxy-handler@1.service" in status.stdout
        assert _galaxyctl(machine, config, "pm", "is-active", "galaxy-gunicorn.service").stdout.strip() == "active"

        # graceful: HUP to gunicorn's master through systemctl kill; the master stays, Galaxy keeps answering
        graceful = _galaxyctl(machine, config, "graceful", check=False)
        assert graceful.returncode == 0, graceful.stdout + graceful.stderr
        assert machine.run("systemctl", "show", "-P", "MainPID", "galaxy-gunicorn.service").stdout.strip() == main_pid
        assert wait_for(lambda: _answers(port), timeout=60)
        log = machine.path("/opt/galaxy/database/gravity/log/gunicorn.log")
        assert wait_for(lambda: "Handling signal: hup" in open(log).read(), timeout=10), open(log).read()[-2000:]

        started = time.monotonic()
        stopped = _galaxyctl(machine, config, "stop")
        assert "All processes stopped" in stopped.stdout and "supervisord" not in stopped.stdout
        assert not _answers(port), f"still serving {time.monotonic() - started:.1f}s after stop"
        status = _galaxyctl(machine, config, "status", check=False)
        assert status.returncode == 3, status.stdout + status.stderr

        # no handlers any more, while they run: their template goes and they stop, gunicorn runs on;
        # only files with our marker are touched
        _galaxyctl(machine, config, "start")
        foreign = os.path.join(unit_dir, "galaxy-foreign.service")
        with open(foreign, "w") as handle:
            handle.write("[Service]\nExecStart=/bin/true\n")
        with open(machine.path(config)) as handle:
            data = yaml.safe_load(handle)
        data["gravity"].pop("handlers")
        with open(machine.path(config), "w") as handle:
            yaml.safe_dump(data, handle)
        _galaxyctl(machine, config, "update")
        units = sorted(n for n in os.listdir(unit_dir) if n.startswith("galaxy"))
        assert units == ["galaxy-foreign.service", "galaxy-gunicorn.service", "galaxy.target"], units
        target = open(os.path.join(unit_dir, "galaxy.target")).read()
        assert "handler" not in target
        for instance in ("galaxy-handler@0.service", "galaxy-handler@1.service"):
            state = machine.run("systemctl", "is-active", instance, check=False).stdout.strip()
            assert state == "inactive", (instance, state)
        assert _answers(port)
        assert _galaxyctl(machine, config, "status", check=False).returncode == 0
    finally:
        _galaxyctl(machine, config, "shutdown", check=False)
        machine.run("sh", "-c", "rm -f /etc/systemd/system/galaxy*; systemctl daemon-reload", check=False)


def _answers(port):
    try:
        return http_get(f"http://127.0.0.1:{port}/api/version", timeout=2)[0] == 200
    except (OSError, ValueError):
        return False
