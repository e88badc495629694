"""Root trust, round 2 (README "Running as root"): the cases a hostile Galaxy user found, on real
processes as root.  Each test plays the Galaxy user (a throw-away system user) against galaxyctl
run as root without --allow-root; what that user writes -- a pid file, a log, its venv, its state
dir -- must never make root signal, print, follow or hang on something else.
"""

import hashlib
import os
import subprocess
import sys
import time

import pytest
import yaml
from conftest import ROOT_ONLY, alive, kill_pids, wait_for

from galaxyctl_libs.errors import GalaxyctlError

pytestmark = ROOT_ONLY
SECRET = "ROOT-ONLY-SECRET-0815"


def as_galaxy_user(user, *argv):
    """Run ``argv`` as the Galaxy user (what that user can do on its own)."""
    subprocess.run(list(argv), check=True, user=user.pw_uid, group=user.pw_gid, extra_groups=[], timeout=30, cwd="/")


def user_dir(path, user):
    os.makedirs(path, mode=0o755)
    os.chown(path, user.pw_uid, user.pw_gid)
    return path


def secret_file(directory):
    path = os.path.join(directory, "shadow-like")
    with open(path, "w") as handle:
        handle.write("".join(f"line{i}:{SECRET}\n" for i in range(40)))
    os.chmod(path, 0o600)
    return path


def run_dir_of(gctl):
    return os.path.join("/run/galaxyctl", hashlib.sha1(gctl.state_dir.encode()).hexdigest()[:12])


def rows(gctl):
    report = yaml.safe_load(gctl("status", "--json", check=False).stdout)
    return {row["service"]: row for row in report["services"]}


# ---------------------------------------------------------------- 1. the pid file names a root process


def test_a_pid_file_naming_a_root_process_is_not_believed(root_gctl, demo_galaxy, user_venv, test_user, short_tmp):
    """The user kills its supervisord and writes the PID of a root process that looks like a
    supervisord of this state dir (argv[0] /usr/bin/supervisord, the conf path in its argv):
    status says ORPHANED, and shutdown --force ends the orphans but never signals the root process."""
    config, _ = demo_galaxy(gravity={"galaxy_user": test_user.pw_name, "virtualenv": user_venv})
    root_gctl("register", config)
    root_gctl("start", "--timeout", "60")
    run_dir = run_dir_of(root_gctl)
    conf = os.path.join(run_dir, "supervisord.conf")
    decoy = subprocess.Popen(
        ["bash", "-c", f'exec -a /usr/bin/supervisord {sys.executable} -c "import time; time.sleep(600)" -c {conf}'],
        stdin=subprocess.DEVNULL,
    )
    gunicorn = rows(root_gctl)["gunicorn"]["pid"]
    try:
        assert wait_for(lambda: conf in open(f"/proc/{decoy.pid}/cmdline").read().split("\0"), timeout=10)
        supervisord = root_gctl.supervisord_pid()
        as_galaxy_user(test_user, "kill", "-KILL", str(supervisord))
        assert wait_for(lambda: not alive(supervisord), timeout=10)
        as_galaxy_user(test_user, "sh", "-c", f"echo {decoy.pid} > {run_dir}/supervisord.pid")
        status = root_gctl("status", check=False)
        assert "not answering" not in status.stdout + status.stderr, status.stdout
        assert "ORPHANED" in status.stdout, status.stdout
        check = root_gctl("check", "--no-ping", check=False)
        assert check.returncode == 2 and "not answering" not in check.stdout, check.stdout
        root_gctl("shutdown", "--force", check=False)
        assert wait_for(lambda: not alive(gunicorn), timeout=30), "the orphaned gunicorn was not ended"
        assert decoy.poll() is None, "a root process was signalled through the Galaxy user's pid file"
    finally:
        kill_pids([decoy.pid, gunicorn])
        decoy.wait(timeout=10)


# ---------------------------------------------------------------- 2. a failed start's log, swapped


@pytest.mark.parametrize("swap", ["link", "fifo"])
def test_a_failed_start_never_prints_a_root_file_nor_hangs_on_a_fifo(
    root_gctl, demo_galaxy, user_venv, test_user, short_tmp, swap
):
    """gunicorn fails after 3 s; meanwhile the user replaces gunicorn.log with a link to a root-only
    file (or a FIFO).  start fails in bounded time and prints nothing of the root file."""
    logs = user_dir(os.path.join(short_tmp, "logs"), test_user)
    secret = secret_file(short_tmp)
    gunicorn = {"environment": {"DEMO_GALAXY_LOAD_SECONDS": "3", "DEMO_GALAXY_FAIL": "1"}, "start_timeout": 1}
    config, _ = demo_galaxy(
        gravity={"galaxy_user": test_user.pw_name, "virtualenv": user_venv, "log_dir": logs, "gunicorn": gunicorn}
    )
    root_gctl("register", config)
    log = os.path.join(logs, "gunicorn.log")
    argv = [root_gctl.exe, "--state-dir", root_gctl.state_dir, "start", "--timeout", "20"]
    start = subprocess.Popen(
        argv,
        env=root_gctl.env,
        cwd="/",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_for(lambda: os.path.isfile(log) and os.path.getsize(log) > 0, timeout=60)
        trap = f"ln -s {secret} {log}" if swap == "link" else f"mkfifo {log}"
        as_galaxy_user(test_user, "sh", "-c", f"rm -f {log} && {trap}")
        began = time.monotonic()
        out, err = start.communicate(timeout=120)
    finally:
        if start.poll() is None:
            start.kill()
            start.communicate()
    assert start.returncode == 1, err
    assert SECRET not in out + err
    assert time.monotonic() - began < 90
    # supervisord itself waits in open() for a reader of the FIFO (it runs as the user, whose trap
    # it is); a reader lets it go on, so that shutdown ends it rather than SIGKILL 30 s later
    reader = os.open(log, os.O_RDONLY | os.O_NONBLOCK) if swap == "fifo" else None
    try:
        root_gctl("shutdown", check=False)
    finally:
        if reader is not None:
            os.close(reader)


# ---------------------------------------------------------------- 3. the venv's celery, a FIFO


def test_check_never_hangs_on_a_fifo_in_the_galaxy_users_venv(root_gctl, demo_galaxy, user_venv, test_user, short_tmp):
    """The user's venv: the worker runs from it; then the user removes its python and puts a FIFO
    where celery was.  check and status --ping end in bounded time with a verdict."""
    venv_bin = user_dir(os.path.join(short_tmp, "uvenv", "bin"), test_user)
    os.chown(os.path.dirname(venv_bin), test_user.pw_uid, test_user.pw_gid)
    for tool in ("python", "python3", "gunicorn", "celery"):
        os.symlink(os.path.join(user_venv, "bin", tool), os.path.join(venv_bin, tool))
        os.lchown(os.path.join(venv_bin, tool), test_user.pw_uid, test_user.pw_gid)
    config, _ = demo_galaxy(
        gravity={
            "galaxy_user": test_user.pw_name,
            "virtualenv": os.path.dirname(venv_bin),
            "celery": {"enable": True, "enable_beat": False},
        }
    )
    root_gctl("register", config)
    root_gctl("start", "--timeout", "60")
    running = wait_for(lambda: rows(root_gctl)["celery"]["state"] == "RUNNING", timeout=60)
    assert running, root_gctl("status", check=False).stdout
    celery = os.path.join(venv_bin, "celery")
    as_galaxy_user(test_user, "sh", "-c", f"rm -f {venv_bin}/python {venv_bin}/python3 {celery} && mkfifo {celery}")
    for args in (("check", "--timeout", "3"), ("status", "--ping", "--timeout", "3")):
        began = time.monotonic()
        result = root_gctl(*args, check=False, timeout=60)
        assert time.monotonic() - began < 45, args
        assert result.returncode in (0, 1, 2, 3), result
        assert "Traceback" not in result.stderr, result.stderr
    root_gctl("shutdown", check=False)


# ---------------------------------------------------------------- 4. the library on a user's state dir


def test_the_library_as_root_refuses_a_state_dir_the_galaxy_user_owns(demo_galaxy, test_user, short_tmp):
    """register + update through galaxyctl_libs as root on a state dir the user owns, with a link
    to a root directory inside: refused before anything is touched (rule 1, as the CLI)."""
    import galaxyctl_libs

    config, _ = demo_galaxy(gravity={"galaxy_user": test_user.pw_name})
    state = user_dir(os.path.join(short_tmp, "userstate"), test_user)
    precious = os.path.join(short_tmp, "rootdir")
    os.mkdir(precious, 0o755)
    os.symlink(precious, os.path.join(state, "supervisor"))
    for call in (
        lambda: galaxyctl_libs.register(state, [config]),
        lambda: galaxyctl_libs.update(state),
        lambda: galaxyctl_libs.shutdown(state),
    ):
        with pytest.raises(GalaxyctlError, match=f"belongs to {test_user.pw_name}"):
            call()
    report = galaxyctl_libs.status(state)  # status reports what stops it, as data (LSB 4: unknown)
    assert report.exit_code == 4 and f"belongs to {test_user.pw_name}" in report.message
    assert os.listdir(precious) == [] and os.stat(precious).st_mode & 0o777 == 0o755
    assert sorted(os.listdir(state)) == ["supervisor"]  # no lock file made through anything


def test_a_state_dir_made_by_someone_else_meanwhile_is_refused(test_user, short_tmp):
    """Root judged a place free, then the user made the directory first (the /tmp race)."""
    from galaxyctl_libs import fsutil

    raced = user_dir(os.path.join(short_tmp, "raced"), test_user)
    with pytest.raises(GalaxyctlError, match="made by someone else"):
        fsutil.ensure_private_dir(raced)
    os.rmdir(raced)
    os.symlink(short_tmp, raced)
    with pytest.raises(GalaxyctlError, match="symbolic link"):
        fsutil.ensure_private_dir(raced)


def test_the_library_acts_as_the_owner_after_enter_state_dir(demo_galaxy, user_venv, test_user, short_tmp):
    """enter_state_dir does what the CLI does: in a child process (it cannot be undone), register
    as root on the user's state dir ends with every file the user's."""
    config, _ = demo_galaxy(gravity={"virtualenv": user_venv})
    os.chown(config, test_user.pw_uid, test_user.pw_gid)
    state = user_dir(os.path.join(short_tmp, "userstate"), test_user)
    code = (
        "import sys, galaxyctl_libs\n"
        "print(galaxyctl_libs.enter_state_dir(sys.argv[1]))\n"
        "galaxyctl_libs.register(sys.argv[1], [sys.argv[2]])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "GALAXYCTL_ALLOW_ROOT"}
    python = os.path.join(user_venv, "bin", "python")
    result = subprocess.run(
        [python, "-c", code, state, config], capture_output=True, text=True, timeout=60, cwd="/", env=env
    )
    assert result.returncode == 0 and result.stdout.strip() == test_user.pw_name, result.stderr
    for name in os.listdir(state):
        assert os.lstat(os.path.join(state, name)).st_uid == test_user.pw_uid, name


def test_a_link_in_a_galaxy_user_dir_cannot_pick_the_included_file(root_gctl, test_user, short_tmp):
    """Under a root config dir, a subdir the user owns holds ``inc.yml``, a link to a root-only
    file beside the config: ``!include sub/inc.yml`` is refused, naming that subdir."""
    config_dir = os.path.join(short_tmp, "config")
    os.makedirs(config_dir)
    sub = user_dir(os.path.join(config_dir, "sub"), test_user)
    chosen = os.path.join(config_dir, "root-only.yml")
    with open(chosen, "w") as handle:
        handle.write(f"LEAK: {SECRET}\n")
    os.chmod(chosen, 0o600)
    os.symlink(chosen, os.path.join(sub, "inc.yml"))
    config = os.path.join(config_dir, "galaxy.yml")
    with open(config, "w") as handle:
        handle.write(
            f"gravity:\n  galaxy_user: {test_user.pw_name}\n  gunicorn:\n    environment: !include sub/inc.yml\n"
        )
    refused = root_gctl("register", config, check=False)
    assert refused.returncode == 1 and len(refused.stderr.splitlines()) == 1, refused.stderr
    assert f"directory {sub} is owned by {test_user.pw_name}" in refused.stderr
    assert SECRET not in refused.stdout + refused.stderr


DRIVER = """
import os, pty, sys
pid, fd = pty.fork()
if pid == 0:
    if sys.argv[1] == "member":  # galaxyctl as a shell's job: in the terminal's session, not its leader
        inner = os.fork()
        if inner:
            os.waitpid(inner, 0)
            os._exit(0)
    os.execv(sys.argv[2], sys.argv[2:])
sys.stdout.write(str(pid) + "\\n")
sys.stdout.flush()
while True:  # drain the terminal until it closes
    try:
        if not os.read(fd, 4096):
            break
    except OSError:
        break
"""


@pytest.mark.parametrize("role", ["member", "leader"])
def test_exec_on_roots_terminal_gives_the_terminal_up(root_gctl, demo_galaxy, user_venv, test_user, role):
    """``galaxyctl exec`` as root on a terminal: the service runs as the Galaxy user with no
    controlling terminal (no TIOCSTI into root's shell), and is not hung up by giving it up."""
    from galaxyctl_libs.probes import procfs

    config, _ = demo_galaxy(gravity={"galaxy_user": test_user.pw_name, "virtualenv": user_venv})
    root_gctl("register", config)
    argv = [sys.executable, "-c", DRIVER, role, root_gctl.exe, "--state-dir", root_gctl.state_dir, "exec", "gunicorn"]
    driver = subprocess.Popen(argv, env=root_gctl.env, stdout=subprocess.PIPE, text=True, cwd="/")
    found = []
    try:
        first = int(driver.stdout.readline())

        def master():
            for pid in [first] + procfs.descendants(first):
                if "fast_factory" in " ".join(procfs.cmdline(pid)) and procfs.uids(pid) == {test_user.pw_uid}:
                    return pid
            return None

        pid = wait_for(master, timeout=60)
        assert pid, "the service did not start"
        found = [pid] + procfs.descendants(pid)
        time.sleep(1)  # a hang-up would have ended it by now
        assert alive(pid)
        assert procfs.stat_fields(pid)[4] == "0", "the service still has root's terminal as its controlling terminal"
    finally:
        kill_pids(found + [driver.pid])
        driver.wait(timeout=30)
