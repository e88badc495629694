"""Issue 27, item 3: every command says the same about the same situation.

Real supervisord and the demo Galaxy (gunicorn, the stand-in tusd); systemd mode without a
reachable systemd (an empty runtime dir, no session bus), so its units are written, never loaded.
Everything started is stopped by PID (the ``gctl`` fixture, or the test's own ``finally``).
"""

import os
import subprocess

from conftest import kill_pids

from galaxyctl_libs.errors import NOTHING_CONFIGURED


def test_nothing_configured_is_one_message_and_a_failure_everywhere(gctl, short_tmp):
    commands = [
        ["exec", "-n"],
        ["exec", "gunicorn"],
        ["update"],
        ["status"],
        ["check"],
        ["start"],
        ["restart"],
        ["graceful"],
        ["stop"],
        ["shutdown"],
        ["show"],
        ["follow"],
        ["workers"],
        ["pm", "status"],
    ]
    for command in commands:
        result = gctl(*command, check=False, cwd=short_tmp)  # not a Galaxy root: nothing to register
        assert result.returncode != 0, (command, result.stdout, result.stderr)
        assert NOTHING_CONFIGURED in result.stdout + result.stderr, (command, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
    assert not os.path.exists(os.path.join(gctl.state_dir, "supervisor", "supervisord.conf"))  # update wrote none


def test_unknown_keys_inside_handler_entries_are_warned_by_every_command(gctl, demo_galaxy):
    gravity = {"handlers": {"handler": {"procesess": 2, "pools": ["job-handlers"]}}, "gunicron": {"workers": 2}}
    config, _ = demo_galaxy(gravity=gravity)
    typo = "gravity.handlers.handler.procesess: unknown key, ignored"
    for command in (["register", config], ["update"], ["exec", "-n"], ["exec", "-n", "handler_0"]):
        result = gctl(*command)
        assert typo in result.stderr and "gravity.gunicron: unknown key" in result.stderr, (command, result.stderr)
    started = gctl("start", "--no-wait")
    assert typo in started.stderr
    gctl("shutdown")


def test_stop_says_what_was_already_stopped(gctl, demo_galaxy):
    config, _ = demo_galaxy()
    gctl("register", config)
    gctl("update")
    assert gctl("stop").stdout.strip() == "supervisord was not running: nothing to stop"
    gctl("start", "--timeout", "60")
    assert gctl("stop", "gunicorn").stdout.strip().splitlines()[0] == "gunicorn: stopped"
    assert gctl("stop").stdout.strip() == "supervisord was not running: nothing to stop"  # it exited with the last


def test_exec_refuses_a_service_its_manager_runs_and_force_runs_a_second_copy(gctl, demo_galaxy, short_tmp):
    tusd = os.path.join(short_tmp, "galaxy", "scripts", "tusd")  # the demo's stand-in: runs until stopped
    config, _ = demo_galaxy(gravity={"tusd": {"enable": True, "tusd_path": tusd, "upload_dir": short_tmp}})
    gctl("register", config)
    gctl("start", "--timeout", "60")
    refused = gctl("exec", "tusd", check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.startswith("galaxyctl: error: tusd is already running: supervisord runs it (RUNNING, pid ")
    assert "'exec --force' runs a second copy" in refused.stderr

    argv = [*gctl.command, "--state-dir", gctl.state_dir, "exec", "--force", "tusd"]
    second = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=gctl.env, stdin=subprocess.DEVNULL
    )
    try:
        assert second.stdout.readline().startswith("demo tusd -host=")  # exec replaced galaxyctl with tusd
    finally:
        kill_pids([second.pid])
        second.communicate(timeout=10)
    gctl("shutdown")


def test_systemd_mode_without_systemd_names_systemd_and_says_units_are_not_loaded(gctl, demo_galaxy, short_tmp):
    config, _ = demo_galaxy(gravity={"process_manager": "systemd"})
    home, runtime = os.path.join(short_tmp, "home"), os.path.join(short_tmp, "run")
    os.makedirs(runtime, mode=0o700)
    env = dict(gctl.env, HOME=home, XDG_RUNTIME_DIR=runtime)  # no user manager answers there
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    gctl("register", config, env=env)

    before = gctl("--user", "check", check=False, env=env)  # before any update: the config's manager
    assert before.returncode == 2 and "systemd is not running" in before.stdout, before.stdout
    assert "supervisord" not in before.stdout

    for _ in range(2):  # written, then unchanged: both times, not loaded
        update = gctl("--user", "update", env=env)
        assert "are written but not loaded: systemd cannot be reached" in update.stderr, update.stderr
    units = os.listdir(os.path.join(home, ".config", "systemd", "user"))
    assert any(name.endswith(".service") for name in units), units

    after = gctl("--user", "check", check=False, env=env)
    assert after.returncode == 2 and "systemd is not running" in after.stdout and "supervisord" not in after.stdout
    status = gctl("--user", "status", check=False, env=env)
    assert status.returncode == 3 and "systemd is not running" in status.stdout
