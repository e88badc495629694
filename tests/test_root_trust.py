"""The hostile review's escalations, as root, on real processes: what the Galaxy user can write never
makes galaxyctl read, write, chown or run anything with root's power (README, "Running as root").

Each test plays the Galaxy user (a throw-away system user) against galaxyctl run as root without
--allow-root, from a venv that user can run (conftest ``user_venv``, ``root_gctl``).
"""

import os
import signal
import subprocess
import time

import yaml
from conftest import ROOT_ONLY, UserGalaxyctl, kill_pids, uids, wait_for

SECRET = "ROOT-ONLY-SECRET-4711"

pytestmark = ROOT_ONLY


def write_config(config, gravity_update, galaxy=None):
    data = yaml.safe_load(open(config))
    data["gravity"].update(gravity_update)
    if galaxy:
        data["galaxy"] = galaxy
    with open(config, "w") as handle:
        yaml.safe_dump(data, handle)


def give(path, user):
    os.chown(path, user.pw_uid, user.pw_gid)


def environ_of(pid):
    with open(f"/proc/{pid}/environ", "rb") as handle:
        return handle.read()


def all_galaxy_user_environs(user):
    """The environment of every process of ``user`` (where a leaked secret would end up)."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}").st_uid == user.pw_uid:
                    found.append(environ_of(int(name)))
            except OSError:
                continue
    return found


def test_include_of_a_root_only_file_never_reaches_the_galaxy_user(root_gctl, demo_galaxy, user_venv, test_user):
    """A galaxy.yml the Galaxy user owns includes a root-only file as an environment value."""
    config, port = demo_galaxy()
    secret = os.path.join(os.path.dirname(config), "secret.txt")
    with open(secret, "w") as handle:
        handle.write(SECRET)
    os.chmod(secret, 0o600)
    with open(config, "w") as handle:
        handle.write(
            f"gravity:\n  galaxy_user: {test_user.pw_name}\n  virtualenv: {user_venv}\n"
            f"  gunicorn:\n    bind: 127.0.0.1:{port}\n    preload: false\n"
            "    environment:\n      LEAK: !include secret.txt\n"
            "  celery:\n    enable: false\n    enable_beat: false\ngalaxy: {}\n"
        )
    give(config, test_user)
    # 1. a root state dir: the config is the Galaxy user's, so root refuses to read it at all
    refused = root_gctl("register", config, check=False)
    assert refused.returncode == 1 and len(refused.stderr.splitlines()) == 1
    assert f"is owned by {test_user.pw_name}" in refused.stderr
    assert SECRET not in refused.stdout + refused.stderr
    # 2. a state dir the Galaxy user owns: galaxyctl becomes that user, who cannot read the secret
    state = os.path.join(os.path.dirname(root_gctl.state_dir), "userstate")
    os.mkdir(state, 0o700)
    give(state, test_user)
    as_root = UserGalaxyctl(state, user_venv)
    try:
        refused = as_root("register", config, check=False)
        assert refused.returncode == 1 and len(refused.stderr.splitlines()) == 1, refused.stderr
        assert "secret.txt" in refused.stderr and SECRET not in refused.stdout + refused.stderr
        assert not any(SECRET.encode() in env for env in all_galaxy_user_environs(test_user))
        assert all(os.stat(os.path.join(state, f)).st_uid == test_user.pw_uid for f in os.listdir(state))
    finally:
        as_root.cleanup()


def test_log_dir_is_never_chowned_and_a_link_there_writes_nothing_as_root(
    root_gctl, demo_galaxy, user_venv, test_user, short_tmp
):
    # a log_dir naming an existing root-owned directory: galaxyctl chowns nothing it did not create
    root_dir = os.path.join(short_tmp, "rootdir")
    os.mkdir(root_dir, 0o755)
    config, _ = demo_galaxy(gravity={"galaxy_user": test_user.pw_name, "virtualenv": user_venv, "log_dir": root_dir})
    root_gctl("register", config)
    root_gctl("update")
    assert os.stat(root_dir).st_uid == 0 and os.listdir(root_dir) == []
    # the Galaxy user's own log dir with gunicorn.log linked to a root-owned file
    user_logs = os.path.join(short_tmp, "userlogs")
    os.mkdir(user_logs, 0o755)
    give(user_logs, test_user)
    precious = os.path.join(short_tmp, "precious")
    with open(precious, "w") as handle:
        handle.write("precious\n")
    os.symlink(precious, os.path.join(user_logs, "gunicorn.log"))
    write_config(config, {"log_dir": user_logs})
    root_gctl("start", "--timeout", "15", check=False)  # supervisord (the Galaxy user) cannot open the log
    assert open(precious).read() == "precious\n" and os.stat(precious).st_uid == 0
    root_gctl("shutdown", check=False)


def test_oneclient_the_galaxy_user_can_change_never_runs_as_root(
    root_gctl, demo_galaxy, user_venv, test_user, short_tmp
):
    marker = os.path.join(short_tmp, "ran-as-root")
    script = os.path.join(short_tmp, "userbin", "oneclient")
    os.makedirs(os.path.dirname(script))
    with open(script, "w") as handle:
        handle.write(f"#!/bin/sh\nid -u > {marker}\n")
    os.chmod(script, 0o755)
    give(script, test_user)
    token = os.path.join(short_tmp, "token")
    with open(token, "w") as handle:
        handle.write("t0ken\n")
    os.chmod(token, 0o600)
    onedata = {
        "oneclient": script,
        "spaces": {
            "data": {
                "mount_point": os.path.join(short_tmp, "od"),
                "provider": "provider.example.org",
                "token_file": token,
            }
        },
    }
    config, _ = demo_galaxy(gravity={"galaxy_user": test_user.pw_name, "virtualenv": user_venv, "onedata": onedata})
    root_gctl("register", config)
    refused = root_gctl("onedata", "mount", "data", check=False)
    assert refused.returncode == 1 and len(refused.stderr.splitlines()) == 1
    assert f"program {script}: file {script} is owned by {test_user.pw_name}" in refused.stderr
    assert not os.path.exists(marker)
    # a state dir the Galaxy user owns: root actions are refused before anything runs
    state = os.path.join(short_tmp, "userstate")
    os.mkdir(state, 0o700)
    give(state, test_user)
    refused = UserGalaxyctl(state, user_venv)("onedata", "mount", "data", check=False)
    assert refused.returncode == 1 and "belongs to" in refused.stderr and not os.path.exists(marker)


def test_exec_as_root_runs_the_service_as_the_galaxy_user(root_gctl, demo_galaxy, user_venv, test_user):
    config, port = demo_galaxy(gravity={"virtualenv": user_venv})
    root_gctl("register", config)
    refused = root_gctl("exec", "gunicorn", check=False)
    assert refused.returncode == 1 and "refusing to run Galaxy as root" in refused.stderr
    write_config(config, {"galaxy_user": test_user.pw_name})
    proc = subprocess.Popen(
        [root_gctl.exe, "--state-dir", root_gctl.state_dir, "exec", "gunicorn"],
        env=root_gctl.env,
        cwd="/",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # exec replaces galaxyctl: the PID becomes gunicorn's master, with every uid the Galaxy user's
        assert wait_for(lambda: b"fast_factory" in open(f"/proc/{proc.pid}/cmdline", "rb").read(), timeout=30)
        assert uids(proc.pid) == {test_user.pw_uid}
    finally:
        from galaxyctl_libs.probes.procfs import descendants

        kill_pids([proc.pid] + descendants(proc.pid))
        proc.wait(timeout=30)


def test_root_on_a_state_dir_the_galaxy_user_owns_acts_as_that_user(demo_galaxy, user_venv, test_user, short_tmp):
    """The user's own Galaxy keeps running, every file stays the user's, and its galaxyctl keeps working."""
    config, port = demo_galaxy(gravity={"virtualenv": user_venv, "gunicorn": {"preload": False}})
    state = os.path.join(short_tmp, "userstate")
    os.mkdir(state, 0o700)
    give(state, test_user)
    mine = UserGalaxyctl(state, user_venv, as_user=test_user)
    as_root = UserGalaxyctl(state, user_venv)
    try:
        mine("register", config)
        mine("start", "--timeout", "60")
        before = yaml.safe_load(mine("status", "--json").stdout)["services"][0]["pid"]
        assert uids(before) == {test_user.pw_uid}
        as_root("update")  # nothing changed: the user's Galaxy is left alone
        assert yaml.safe_load(as_root("status", "--json").stdout)["services"][0]["pid"] == before
        write_config(config, {"gunicorn": {"preload": False, "environment": {"CHANGED": "1"}}})
        as_root("update")  # a change is applied to the user's supervisord, as the user

        def running():
            row = yaml.safe_load(as_root("status", "--json", check=False).stdout)["services"][0]
            return row["state"] == "RUNNING" and row["pid"]

        assert wait_for(running, timeout=30)
        for directory, _, files in os.walk(state):
            for name in [directory] + [os.path.join(directory, f) for f in files]:
                assert os.lstat(name).st_uid == test_user.pw_uid, name
        assert mine("status").returncode == 0  # no "Permission denied" for the user afterwards
        after = yaml.safe_load(mine("status", "--json").stdout)["services"][0]["pid"]
        assert uids(after) == {test_user.pw_uid}
        mine("stop")
    finally:
        mine.cleanup()
        as_root.cleanup()


def test_supervisord_pid_file_the_galaxy_user_writes_cannot_aim_root_signals(
    root_gctl, demo_galaxy, user_venv, test_user
):
    """supervisord's pid file lives in the Galaxy user's runtime dir: a PID of root's written there
    (here a root-owned sleeper) is never signalled by galaxyctl as root."""
    config, _ = demo_galaxy(gravity={"galaxy_user": test_user.pw_name, "virtualenv": user_venv})
    root_gctl("register", config)
    root_gctl("update")
    victim = subprocess.Popen(["sleep", "300"], stdin=subprocess.DEVNULL)
    try:
        import hashlib

        run_dir = os.path.join("/run/galaxyctl", hashlib.sha1(root_gctl.state_dir.encode()).hexdigest()[:12])
        assert os.stat(run_dir).st_uid == test_user.pw_uid
        pidfile = os.path.join(run_dir, "supervisord.pid")
        subprocess.run(
            ["sh", "-c", f"echo {victim.pid} > {pidfile}"],
            check=True,
            user=test_user.pw_uid,
            group=test_user.pw_gid,
            extra_groups=[],
            timeout=10,
        )
        root_gctl("shutdown", check=False)
        root_gctl("stop", check=False)
        time.sleep(0.5)
        assert victim.poll() is None, "a root process was signalled through the Galaxy user's pid file"
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
