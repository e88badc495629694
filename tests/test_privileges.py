"""Root on a locked-down host: Galaxy never runs as root, and concurrent or killed runs lose no state.

The privilege tests need root (CI is root): they create a throw-away user (conftest ``test_user``) and
run galaxyctl from a venv of the system Python that user can run (conftest ``user_venv``).
"""

import os
import random
import signal
import subprocess
import sys
import time

import yaml
from conftest import GALAXYCTL, ROOT_ONLY, children_of, kill_pids, uids, wait_for


def workers_of(master, count, timeout=30):
    """The master's children once there are ``count`` (bounded wait): "ready" means the first worker
    answered, and gunicorn spawns the next ones after a random pause of up to 0.1 s each."""
    wait_for(lambda: len(children_of(master)) == count, timeout=timeout)
    return children_of(master)


def status_pid(runner, index=0):
    return yaml.safe_load(runner("status", "--json").stdout)["services"][index]["pid"]


@ROOT_ONLY
def test_gunicorn_and_supervisord_run_as_galaxy_user(root_gctl, demo_galaxy, user_venv, test_user):
    """As root: supervisord itself, gunicorn and its workers all run as galaxy_user; the services'
    logs go to DATA_DIR/gravity/log, created by that user."""
    config, port = demo_galaxy(
        gravity={
            "galaxy_user": test_user.pw_name,
            "virtualenv": user_venv,
            "gunicorn": {"preload": False, "workers": 2},
        }
    )
    root_gctl("register", config)
    out = root_gctl("start", "--timeout", "60").stdout
    assert "gunicorn: ready" in out
    master = status_pid(root_gctl)
    workers = workers_of(master, 2)
    assert len(workers) == 2
    supervisord = root_gctl.supervisord_pid()
    for pid in [supervisord, master] + workers:
        assert uids(pid) == {test_user.pw_uid}
    log_dir = os.path.join(os.path.dirname(os.path.dirname(config)), "database", "gravity", "log")
    assert os.stat(log_dir).st_uid == test_user.pw_uid
    assert os.stat(os.path.join(log_dir, "gunicorn.log")).st_uid == test_user.pw_uid
    root_gctl("stop")


@ROOT_ONLY
def test_preloaded_gunicorn_under_the_herder_runs_as_galaxy_user(root_gctl, demo_galaxy, user_venv, test_user):
    """The herder (galaxyctl's own code) runs as the Galaxy user too, and so does every master it starts."""
    config, port = demo_galaxy(
        gravity={"galaxy_user": test_user.pw_name, "virtualenv": user_venv, "gunicorn": {"preload": True, "workers": 2}}
    )
    root_gctl("register", config)
    root_gctl("start", "--timeout", "60")
    herder = status_pid(root_gctl)
    assert uids(herder) == {test_user.pw_uid}
    [master] = children_of(herder)
    assert uids(master) == {test_user.pw_uid} and len(workers_of(master, 2)) == 2
    assert all(uids(pid) == {test_user.pw_uid} for pid in children_of(master))
    root_gctl("graceful", "--timeout", "60")
    [new_master] = children_of(herder)
    assert new_master != master and uids(new_master) == {test_user.pw_uid}
    root_gctl("stop")


@ROOT_ONLY
def test_root_refuses_root_and_a_config_the_galaxy_user_can_change(root_gctl, demo_galaxy, test_user):
    config, _ = demo_galaxy()
    root_gctl("register", config)
    refused = root_gctl("update", check=False)
    assert refused.returncode == 1
    assert refused.stderr.startswith("galaxyctl: error: refusing to run Galaxy as root: set gravity.galaxy_user in")
    assert len(refused.stderr.splitlines()) == 1
    # the config's owner is no fallback any more: a config the Galaxy user can change is refused
    os.chown(config, test_user.pw_uid, test_user.pw_gid)
    refused = root_gctl("update", check=False)
    assert refused.returncode == 1 and len(refused.stderr.splitlines()) == 1
    assert f"config file {config}: file {config} is owned by {test_user.pw_name}" in refused.stderr
    os.chown(config, 0, 0)
    for gravity, message in (
        ({"galaxy_user": "root"}, "gravity.galaxy_user: refusing to run Galaxy as root"),
        (
            {"galaxy_user": test_user.pw_name, "galaxy_group": "root"},
            "gravity.galaxy_group: refusing to run Galaxy in the group root",
        ),
    ):
        data = dict(yaml.safe_load(open(config)), gravity=gravity)
        with open(config, "w") as handle:
            yaml.safe_dump(data, handle)
        refused = root_gctl("update", check=False)
        assert refused.returncode == 1 and message in refused.stderr, refused.stderr


# ---------------------------------------------------------------- concurrency and crashes


def spawn(state_dir, *args):
    env = dict(os.environ, GALAXYCTL_ALLOW_ROOT="1")
    return subprocess.Popen(
        [sys.executable, GALAXYCTL, "--state-dir", state_dir, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        stdin=subprocess.DEVNULL,
    )


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
    configs = [
        demo_galaxy(f"k{i}", gravity={"instance_name": f"k{i}", "handlers": {"h": {"processes": 20}}})[0]
        for i in range(3)
    ]
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
