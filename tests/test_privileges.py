"""Root on a locked-down host: Galaxy never runs as root, and concurrent or killed runs lose no state.

The privilege tests need root (CI is root): they create a throw-away user and a venv built from the
system Python (the test's own interpreter may live where that user cannot enter, e.g. /root/.pyenv).
"""

import os
import pwd
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

import pytest
import yaml

from conftest import GALAXYCTL, children_of, kill_pids, wait_for

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="privilege drop needs root")
SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.fixture(scope="session")
def user_venv():
    """A venv with gunicorn that any user can run (reused between local runs)."""
    path = os.path.join(tempfile.gettempdir(), "galaxyctl-test-user-venv")
    gunicorn = os.path.join(path, "bin", "gunicorn")
    if not os.access(gunicorn, os.X_OK):
        shutil.rmtree(path, ignore_errors=True)
        subprocess.run([SYSTEM_PYTHON, "-m", "venv", path], check=True, timeout=300)
        subprocess.run([os.path.join(path, "bin", "pip"), "install", "-q", "gunicorn"], check=True, timeout=600)
    os.chmod(path, 0o755)
    return path


@pytest.fixture
def test_user():
    name = "gxt" + uuid.uuid4().hex[:8]
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True, timeout=60)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], timeout=60)


def run_as_root_without_override(gctl, *args, check=True):
    env = dict(gctl.env)
    env.pop("GALAXYCTL_ALLOW_ROOT", None)
    return gctl(*args, env=env, check=check)


def uids(pid):
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("Uid:"):
                return set(int(x) for x in line.split()[1:])
    return set()


def workers_of(master, count, timeout=30):
    """The master's children once there are ``count`` (bounded wait): "ready" means the first worker
    answered, and gunicorn spawns the next ones after a random pause of up to 0.1 s each."""
    wait_for(lambda: len(children_of(master)) == count, timeout=timeout)
    return children_of(master)


@ROOT_ONLY
def test_gunicorn_runs_as_galaxy_user(gctl, demo_galaxy, user_venv, test_user):
    config, port = demo_galaxy(gravity={
        "galaxy_user": test_user.pw_name, "virtualenv": user_venv, "gunicorn": {"preload": False, "workers": 2},
    })
    run_as_root_without_override(gctl, "register", config)
    out = run_as_root_without_override(gctl, "start", "--timeout", "60").stdout
    assert "gunicorn: ready" in out
    master = yaml.safe_load(gctl("status", "--json").stdout)["services"][0]["pid"]
    workers = workers_of(master, 2)
    assert len(workers) == 2
    for pid in [master] + workers:
        assert uids(pid) == {test_user.pw_uid}
    conf = open(os.path.join(gctl.state_dir, "supervisor", "supervisord.conf.d", "_default_.d",
                             "galaxy_gunicorn_gunicorn.conf")).read()
    assert f"user = {test_user.pw_name}" in conf
    log_dir = os.path.join(gctl.state_dir, "log")
    assert os.stat(log_dir).st_uid == test_user.pw_uid
    gctl("stop")


@ROOT_ONLY
def test_preloaded_gunicorn_under_the_herder_runs_as_galaxy_user(gctl, demo_galaxy, user_venv, test_user):
    """The herder (galaxyctl's own code) may run as root; the gunicorn it starts never does."""
    config, port = demo_galaxy(gravity={"galaxy_user": test_user.pw_name, "virtualenv": user_venv,
                                        "gunicorn": {"preload": True, "workers": 2}})
    run_as_root_without_override(gctl, "register", config)
    run_as_root_without_override(gctl, "start", "--timeout", "60")
    herder = yaml.safe_load(gctl("status", "--json").stdout)["services"][0]["pid"]
    [master] = children_of(herder)
    assert uids(master) == {test_user.pw_uid} and len(workers_of(master, 2)) == 2
    assert all(uids(pid) == {test_user.pw_uid} for pid in children_of(master))
    run_as_root_without_override(gctl, "graceful", "--timeout", "60")
    [new_master] = children_of(herder)
    assert new_master != master and uids(new_master) == {test_user.pw_uid}
    gctl("stop")


@ROOT_ONLY
def test_config_owner_is_the_default_user_and_root_is_refused(gctl, demo_galaxy, test_user):
    config, _ = demo_galaxy()
    run_as_root_without_override(gctl, "register", config)
    refused = run_as_root_without_override(gctl, "update", check=False)
    assert refused.returncode == 1
    assert refused.stderr.startswith("galaxyctl: error: refusing to run Galaxy as root: set gravity.galaxy_user in")
    assert len(refused.stderr.splitlines()) == 1
    os.chown(config, test_user.pw_uid, test_user.pw_gid)
    run_as_root_without_override(gctl, "update")
    conf = open(os.path.join(gctl.state_dir, "supervisor", "supervisord.conf.d", "_default_.d",
                             "galaxy_gunicorn_gunicorn.conf")).read()
    assert f"user = {test_user.pw_name}" in conf
    root_user = dict(yaml.safe_load(open(config)), gravity={"galaxy_user": "root"})
    with open(config, "w") as handle:
        yaml.safe_dump(root_user, handle)
    refused = run_as_root_without_override(gctl, "update", check=False)
    assert "gravity.galaxy_user: refusing to run Galaxy as root" in refused.stderr


# ---------------------------------------------------------------- concurrency and crashes


def spawn(state_dir, *args):
    env = dict(os.environ, GALAXYCTL_ALLOW_ROOT="1")
    return subprocess.Popen([sys.executable, GALAXYCTL, "--state-dir", state_dir, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, stdin=subprocess.DEVNULL)


def test_twenty_concurrent_registrations_and_updates_lose_nothing(short_tmp, demo_galaxy):
    state_dir = os.path.join(short_tmp, "state")
    configs = [demo_galaxy(f"g{i}", gravity={"instance_name": f"g{i}"})[0] for i in range(20)]
    procs = [spawn(state_dir, "register", config) for config in configs]
    procs += [spawn(state_dir, "update") for _ in range(5)]
    try:
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
    finally:
        kill_pids([p.pid for p in procs if p.poll() is None])
    procs = [spawn(state_dir, "update") for _ in range(20)]
    try:
        for proc in procs:
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err
    finally:
        kill_pids([p.pid for p in procs if p.poll() is None])
    data = yaml.safe_load(open(os.path.join(state_dir, "configstate.yaml")))
    assert sorted(data["config_files"]) == sorted(configs)
    assert all(entry["services"] for entry in data["config_files"].values())
    conf_dir = os.path.join(state_dir, "supervisor", "supervisord.conf.d")
    assert sorted(d for d in os.listdir(conf_dir) if d.endswith(".d")) == sorted(f"g{i}.d" for i in range(20))


def test_kill_9_during_update_leaves_a_loadable_state(short_tmp, demo_galaxy):
    state_dir = os.path.join(short_tmp, "state")
    configs = [demo_galaxy(f"k{i}", gravity={"instance_name": f"k{i}", "handlers": {"h": {"processes": 20}}})[0]
               for i in range(3)]
    register = spawn(state_dir, "register", *configs)
    register.communicate(timeout=60)
    assert register.returncode == 0
    rng = random.Random(7)
    for attempt in range(15):
        with open(configs[attempt % 3]) as handle:
            data = yaml.safe_load(handle)
        data["gravity"]["handlers"]["h"]["processes"] = rng.randint(1, 30)
        with open(configs[attempt % 3], "w") as handle:
            yaml.safe_dump(data, handle)
        proc = spawn(state_dir, "update")
        time.sleep(rng.uniform(0.05, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        with open(os.path.join(state_dir, "configstate.yaml")) as handle:
            loaded = yaml.safe_load(handle)  # the old or the new state, whole
        assert sorted(loaded["config_files"]) == sorted(configs)
        leftovers = [f for f in os.listdir(state_dir) if f.endswith(".tmp")]
        for name in leftovers:  # a killed writer may leave its temp file; never the real one half-written
            assert name.startswith(".configstate.yaml.")
    final = spawn(state_dir, "update")
    out, err = final.communicate(timeout=120)
    assert final.returncode == 0, err
