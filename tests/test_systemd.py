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
from test_graceful import bump_version, graceful_under_load

from galaxyctl_libs.demo import make_demo_galaxy

pytestmark = [pytest.mark.systemd, pytest.mark.xdist_group("systemd")]  # one worker boots the one container

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
        nspawn.skip_or_fail(exc)
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
        # the target is enabled (Galaxy comes back at boot), as gravity enables it
        assert machine.run("systemctl", "is-enabled", "galaxy.target").stdout.strip() == "enabled"

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

        # no log_dir: gunicorn logs to the journal, as under gravity
        def journal():
            return machine.run("journalctl", "-u", "galaxy-gunicorn.service", "--no-pager", "-q").stdout

        assert wait_for(lambda: "Handling signal: hup" in journal(), timeout=10), journal()[-2000:]
        assert not os.path.exists(machine.path("/opt/galaxy/database/gravity/log/gunicorn.log"))

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


GRAVITY_UNIT = (
    ";\n; This file is maintained by Gravity - CHANGES WILL BE OVERWRITTEN\n;\n[Unit]\nDescription=Galaxy {}\n"
)


def test_gravitys_names_a_gunicorn_list_as_one_template_and_gravitys_old_units_replaced(machine):
    """A site moving over from gravity: gravity's target and its units (gravity's header) are there;
    a gunicorn list becomes gravity's galaxy-gunicorn@.service with instances @0 and @1, each with its
    own bind through its drop-in, both serving; gravity's units we do not write go; restart gunicorn
    restarts both; renamed while running (use_service_instances: false), update stops the old units
    and starts the new ones; one gunicorn again: its template and drop-ins go, galaxy-gunicorn.service
    serves."""
    ports = [free_port(), free_port()]
    config = _galaxy(machine, ports[0], gunicorn=[{"bind": f"127.0.0.1:{p}", "preload": False} for p in ports])
    unit_dir = machine.path("/etc/systemd/system")
    gravity = {"galaxy-gunicorn0.service": "gunicorn0", "galaxy-gunicorn1.service": "gunicorn1"}
    with open(os.path.join(unit_dir, "galaxy.target"), "w") as handle:
        handle.write(GRAVITY_UNIT.format("") + f"Wants={' '.join(gravity)}\n")
    for name, label in gravity.items():
        with open(os.path.join(unit_dir, name), "w") as handle:
            handle.write(GRAVITY_UNIT.format(label) + "[Service]\nExecStart=/bin/sleep infinity\n")
    try:
        _galaxyctl(machine, config, "update")
        units = sorted(n for n in os.listdir(unit_dir) if n.startswith("galaxy"))
        assert units == [
            "galaxy-gunicorn@.service",
            "galaxy-gunicorn@0.service.d",
            "galaxy-gunicorn@1.service.d",
            "galaxy.target",
        ], units
        _galaxyctl(machine, config, "start")
        assert wait_for(lambda: all(_answers(p) for p in ports), timeout=90), machine.run(
            "journalctl", "--no-pager", "-n", "50"
        ).stdout
        pids = [_main_pid(machine, f"galaxy-gunicorn@{n}.service") for n in (0, 1)]
        assert all(pids)
        _galaxyctl(machine, config, "restart", "gunicorn")
        assert wait_for(lambda: all(_answers(p) for p in ports), timeout=90)
        assert all(_main_pid(machine, f"galaxy-gunicorn@{n}.service") not in (0, old) for n, old in enumerate(pids))
        status = _galaxyctl(machine, config, "status", "gunicorn", check=False)
        assert status.returncode == 0 and "galaxy-gunicorn@0.service" in status.stdout, status.stdout
        assert "galaxy-gunicorn@1.service" in status.stdout

        # renamed while running (use_service_instances: false, as a rename after an upgrade): update
        # stops the units of the old names and starts those of the new ones, as supervisord's update does
        with open(machine.path(config)) as handle:
            data = yaml.safe_load(handle)
        data["gravity"]["use_service_instances"] = False
        with open(machine.path(config), "w") as handle:
            yaml.safe_dump(data, handle)
        _galaxyctl(machine, config, "update")
        for unit in ("galaxy-gunicorn0.service", "galaxy-gunicorn1.service"):
            assert machine.run("systemctl", "is-active", unit, check=False).stdout.strip() in ("active", "activating")
        assert (
            machine.run("systemctl", "is-active", "galaxy-gunicorn@0.service", check=False).stdout.strip() == "inactive"
        )
        assert wait_for(lambda: all(_answers(p) for p in ports), timeout=90)

        data["gravity"]["use_service_instances"] = True
        data["gravity"]["gunicorn"] = data["gravity"]["gunicorn"][:1]
        with open(machine.path(config), "w") as handle:
            yaml.safe_dump(data, handle)
        _galaxyctl(machine, config, "update")
        units = sorted(n for n in os.listdir(unit_dir) if n.startswith("galaxy"))
        assert units == ["galaxy-gunicorn.service", "galaxy.target"], units
        state = machine.run("systemctl", "is-active", "galaxy-gunicorn@1.service", check=False).stdout.strip()
        assert state == "inactive", state
        _galaxyctl(machine, config, "start")
        assert wait_for(lambda: _answers(ports[0]), timeout=90)
    finally:
        _galaxyctl(machine, config, "shutdown", check=False)
        machine.run("sh", "-c", "rm -rf /etc/systemd/system/galaxy*; systemctl daemon-reload", check=False)


def _answers(port):
    try:
        return http_get(_url(port), timeout=2)[0] == 200
    except (OSError, ValueError):
        return False


def _main_pid(machine, unit, user=None):
    argv = ["systemctl"] + (["--user"] if user else []) + ["show", "-P", "MainPID", unit]
    return int(_as(machine, user, *argv).stdout.strip() or 0)


def _as(machine, user, *argv, check=True, timeout=180):
    """``argv`` inside, as ``user`` with its runtime dir (for systemctl --user) when given."""
    if user:
        uid = machine.run("id", "-u", user).stdout.strip()
        argv = ("runuser", "-u", user, "--", "env", f"XDG_RUNTIME_DIR=/run/user/{uid}", *argv)
    return machine.run(*argv, check=check, timeout=timeout)


@pytest.mark.parametrize("preload", [False, True])
def test_graceful_under_load_restart_crash_and_follow(machine, preload):
    """graceful loses no request (HUP to gunicorn's master, or with preload our herder as MainPID);
    restart and a kill -9 that systemd repairs leave status right; follow reads the journal, also
    with log_dir set (without preload here): systemd would open a log file as root, so it is not used."""
    port = free_port()
    logs = {} if preload else {"log_dir": "/opt/galaxy/database/logs"}
    config = _galaxy(machine, port, gunicorn={"preload": preload, "workers": 2}, **logs)
    try:
        started = _galaxyctl(machine, config, "start")
        assert started.stderr.count("log_dir is not used under systemd") == (0 if preload else 1), started.stderr
        assert wait_for(lambda: _answers(port), timeout=60)
        main_pid = _main_pid(machine, "galaxy-gunicorn.service")
        bump_version(machine.path(config), 2)
        failures, served = graceful_under_load(lambda *args: _galaxyctl(machine, config, *args), [_url(port)])
        assert failures == [] and len(served) >= 300, (failures[:5], len(served))
        assert wait_for(lambda: http_get(_url(port))[1]["version_minor"] == "2", timeout=30)
        # the unit's main process stayed: gunicorn's master (HUP), or our herder, which re-exec'd gunicorn
        assert _main_pid(machine, "galaxy-gunicorn.service") == main_pid

        out = _galaxyctl(machine, config, "restart").stdout
        assert "ready" in out, out
        restarted = _main_pid(machine, "galaxy-gunicorn.service")
        assert restarted not in (0, main_pid) and _answers(port)

        machine.run("kill", "-9", str(restarted))  # a crash: Restart=always brings it back
        assert wait_for(lambda: _main_pid(machine, "galaxy-gunicorn.service") not in (0, restarted), timeout=30)
        assert wait_for(lambda: _answers(port), timeout=60)
        assert wait_for(lambda: _galaxyctl(machine, config, "status", check=False).returncode == 0, timeout=30)
        check = _galaxyctl(machine, config, "check", check=False)
        assert check.returncode in (0, 1) and "CRITICAL" not in check.stdout, check.stdout  # 1: just restarted
        workers = _galaxyctl(machine, config, "workers")
        assert workers.stdout.count("idle") + workers.stdout.count("busy") >= 2, workers.stdout

        if preload:  # a reboot empties /run: systemd alone starts the target, and makes the herder's pid dir
            machine.run("systemctl", "stop", "galaxy.target")
            machine.run("rm", "-rf", "/run/galaxyctl")
            machine.run("systemctl", "start", "galaxy.target")
            assert wait_for(lambda: _answers(port), timeout=90), machine.run(
                "journalctl", "-u", "galaxy-gunicorn", "-n", "30", "--no-pager", check=False
            ).stdout

        # follow, until interrupted: the journal, whether log_dir is set or not
        followed = machine.run("timeout", "-s", "INT", "3", GALAXYCTL, "-c", config, "follow", check=False)
        assert "Booting worker" in followed.stdout, followed.stdout[-2000:] + followed.stderr
        assert "StandardOutput=" not in open(machine.path("/etc/systemd/system/galaxy-gunicorn.service")).read()
        assert not os.path.exists(machine.path("/opt/galaxy/database/logs/gunicorn.log"))
    finally:
        _galaxyctl(machine, config, "shutdown", check=False)
        machine.run("sh", "-c", "rm -f /etc/systemd/system/galaxy*; systemctl daemon-reload", check=False)


def test_a_unit_that_keeps_failing_fails_start_naming_it_and_why(machine):
    """Issue 27: start says "started" only for units that came up.  A tusd whose program exits at once
    (Restart=always, until systemd's start limit) fails the start with one line naming its unit and
    systemd's reason, then its journal's end; status shows the reason on its row."""
    script = "/opt/failing-tusd"
    with open(machine.path(script), "w") as handle:
        handle.write("#!/bin/sh\necho 'tusd: stand-in failure'\nexit 1\n")
    os.chmod(machine.path(script), 0o755)
    tusd = {"enable": True, "tusd_path": script, "upload_dir": "/tmp", "start_timeout": 2}
    config = _galaxy(machine, free_port(), tusd=tusd)
    try:
        started = _galaxyctl(machine, config, "start", "--timeout", "60", check=False)
        assert started.returncode == 1, started.stdout + started.stderr
        error = next(line for line in started.stderr.splitlines() if line.startswith("galaxyctl: error: "))
        assert "tusd" in error and " did not start: " in error and "exit status 1" in error, error
        assert "last lines of its journal" in started.stderr and "tusd: stand-in failure" in started.stderr
        assert "tusd" not in started.stdout  # never "started"
        status = _galaxyctl(machine, config, "status", check=False)
        row = next(line for line in status.stdout.splitlines() if "tusd" in line)
        assert ("FATAL" in row or "BACKOFF" in row) and "exit status 1" in row, status.stdout
    finally:
        _galaxyctl(machine, config, "shutdown", check=False)
        machine.run("sh", "-c", "rm -f /etc/systemd/system/galaxy*; systemctl daemon-reload", check=False)
        machine.run("systemctl", "reset-failed", check=False)


def test_user_mode_as_an_unprivileged_user(machine):
    """--user: units in the user's ~/.config/systemd/user, driven through its user manager (lingering,
    as a Galaxy host without a login session needs), with no XDG_RUNTIME_DIR given."""
    user = "gxuser"
    machine.run("useradd", "--create-home", "--user-group", user)
    machine.run("loginctl", "enable-linger", user)
    uid = int(machine.run("id", "-u", user).stdout)
    assert wait_for(lambda: os.path.exists(machine.path(f"/run/user/{uid}/systemd/private")), timeout=60)
    port = free_port()
    config = make_demo_galaxy(machine.path(f"/home/{user}/galaxy"), port=port, gravity={"process_manager": "systemd"})
    config = config[len(machine.path("")) :]
    machine.run("chown", "-R", f"{user}:{user}", f"/home/{user}/galaxy")
    unit_dir = machine.path(f"/home/{user}/.config/systemd/user")

    def gx(*args, check=True):
        result = _as(machine, user, GALAXYCTL, "--user", "-c", config, *args, check=check)
        print(f"$ {user}: galaxyctl {' '.join(args)} → {result.returncode}\n{result.stdout}{result.stderr}")
        return result

    try:
        gx("update")
        assert sorted(n for n in os.listdir(unit_dir) if n.startswith("galaxy")) == [
            "galaxy-gunicorn.service",
            "galaxy.target",
        ]
        unit = open(os.path.join(unit_dir, "galaxy-gunicorn.service")).read()
        assert "User=" not in unit  # a user manager cannot switch users
        gx("start")
        assert wait_for(lambda: _answers(port), timeout=60)
        pid = _main_pid(machine, "galaxy-gunicorn.service", user=user)
        assert _uid_of(machine, pid) == uid
        assert gx("status", check=False).returncode == 0
        assert gx("pm", "is-enabled", "galaxy.target").stdout.strip() == "enabled"
        assert "All processes stopped" in gx("stop").stdout
        assert not _answers(port)
        assert gx("status", check=False).returncode == 3
    finally:
        gx("shutdown", check=False)
        machine.run("loginctl", "disable-linger", user, check=False)


def _url(port):
    return f"http://127.0.0.1:{port}/api/version"
