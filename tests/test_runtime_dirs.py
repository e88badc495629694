"""As root with a Galaxy user: what must outlive a reboot (supervisord's log, celery-beat's schedule)
lives in that user's persistent dirs, what is runtime (socket, pid files, supervisord's config) in
/run/galaxyctl/ID, a tmpfs, which shutdown removes (README, "Running as root", rule 3).

On real processes, as root without --allow-root, from a venv the Galaxy user can run (conftest).
"""

import hashlib
import os
import shlex

import yaml
from conftest import ROOT_ONLY, http_get

pytestmark = ROOT_ONLY


def runtime_dir(state_dir):
    return os.path.join("/run/galaxyctl", hashlib.sha1(state_dir.encode()).hexdigest()[:12])


def galaxy_root(config):
    return os.path.dirname(os.path.dirname(config))


def answers(port):
    try:
        return http_get(f"http://127.0.0.1:{port}/api/version", timeout=2)[0] == 200
    except (OSError, ValueError):
        return False


def test_supervisord_log_is_persistent_and_the_runtime_dir_goes_at_shutdown(
    root_gctl, demo_galaxy, user_venv, test_user
):
    config, port = demo_galaxy(gravity={"galaxy_user": test_user.pw_name, "virtualenv": user_venv})
    log_dir = os.path.join(galaxy_root(config), "database", "gravity", "log")  # the default as root
    run_dir = runtime_dir(root_gctl.state_dir)
    root_gctl("register", config)
    for _ in range(2):  # a start after a shutdown makes the runtime dir again
        root_gctl("start", "--timeout", "60")
        assert answers(port)
        log = os.path.join(log_dir, "supervisord.log")
        assert os.stat(log).st_uid == test_user.pw_uid and "supervisord started" in open(log).read()
        assert os.stat(run_dir).st_uid == test_user.pw_uid
        assert {"supervisord.pid", "supervisor.sock", "supervisord.conf"} <= set(os.listdir(run_dir))
        assert "supervisord.log" not in os.listdir(run_dir)
        root_gctl("shutdown")
        assert not os.path.exists(run_dir) and not answers(port)
        assert "exited" in open(log).read() or "stopped" in open(log).read()
    status = root_gctl("status", check=False)
    assert status.returncode == 3, status.stdout + status.stderr


def test_shutdown_removes_links_in_the_runtime_dir_never_what_they_name(
    root_gctl, demo_galaxy, user_venv, test_user, short_tmp
):
    """The Galaxy user owns its runtime dir: links it puts there (to a root file, to a root
    directory) are removed themselves; nothing they name is touched."""
    config, _ = demo_galaxy(gravity={"galaxy_user": test_user.pw_name, "virtualenv": user_venv})
    root_dir = os.path.join(short_tmp, "rootdir")
    os.mkdir(root_dir, 0o755)
    precious = os.path.join(root_dir, "precious")
    with open(precious, "w") as handle:
        handle.write("precious\n")
    root_gctl("register", config)
    root_gctl("start", "--timeout", "60")
    run_dir = runtime_dir(root_gctl.state_dir)
    for name, target in (("to-file", precious), ("to-dir", root_dir)):
        os.symlink(target, os.path.join(run_dir, name))
        os.lchown(os.path.join(run_dir, name), test_user.pw_uid, test_user.pw_gid)
    nested = os.path.join(run_dir, "supervisord.conf.d", "extra.d")
    os.makedirs(nested)
    os.symlink(root_dir, os.path.join(nested, "link"))
    for path in (os.path.dirname(nested), nested):
        os.chown(path, test_user.pw_uid, test_user.pw_gid)
    root_gctl("shutdown")
    assert not os.path.lexists(run_dir)
    assert open(precious).read() == "precious\n" and os.listdir(root_dir) == ["precious"]


def test_beat_schedule_is_in_galaxys_data_dir_never_under_run(root_gctl, demo_galaxy, test_user):
    beat = {"enable": False, "enable_beat": True}
    config, _ = demo_galaxy(gravity={"galaxy_user": test_user.pw_name, "celery": beat})
    root_gctl("register", config)

    def schedule():
        argv = shlex.split(root_gctl("exec", "-n", "celery-beat").stdout.splitlines()[-1])
        return argv[argv.index("--schedule") + 1]

    # no data_dir: Galaxy's default one, database/ in the Galaxy root
    assert schedule() == os.path.join(galaxy_root(config), "database", "celerybeat-schedule")
    # a data_dir: there (relative to the config's directory, as the log dir's default is)
    with open(config) as handle:
        data = yaml.safe_load(handle)
    data["galaxy"] = {"data_dir": "../data"}
    with open(config, "w") as handle:
        yaml.safe_dump(data, handle)
    assert schedule() == os.path.join(galaxy_root(config), "config", "..", "data", "celerybeat-schedule")
    assert not schedule().startswith("/run/")
