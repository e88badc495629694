"""Faults galaxyctl must tell the truth about, and fix: a supervisord killed with -9 (its services
run on, orphaned), a supervisord that hangs, a read-only state dir, a damaged services.json.

Real supervisord and the demo Galaxy's gunicorn throughout.  Orphans are re-parented to init, out of
reach of the ``gctl`` fixture's clean-up (it ends supervisord's descendants): each test records the
service PIDs before the fault and ends them by PID in ``finally``.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import alive, descendants_of, kill_pids, wait_for

from galaxyctl_libs import fsutil
from galaxyctl_libs.actions import lifecycle
from galaxyctl_libs.backends import record as targets
from galaxyctl_libs.backends.supervisor.client import Paths, SupervisorClient
from galaxyctl_libs.errors import GalaxyctlError
from galaxyctl_libs.probes import procfs


def status_json(gctl):
    return json.loads(gctl("status", "--json", check=False).stdout)


def service_pids(gctl):
    """(gunicorn's master PID, it and every process under it) while supervisord answers."""
    master = next(s["pid"] for s in status_json(gctl)["services"] if s["service"] == "gunicorn")
    assert master
    return master, [master, *descendants_of(master)]


def port_free(port):
    """Nobody listens on the port (SO_REUSEADDR: connections in TIME_WAIT do not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def started(gctl, demo_galaxy):
    config, port = demo_galaxy()
    gctl("register", config)
    gctl("start", "--timeout", "60")
    return config, port


def no_traceback(result):
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
    return result


# ---------------------------------------------------------------- supervisord killed with -9


def test_killed_supervisord_orphans_are_reported_refused_and_ended(gctl, demo_galaxy):
    _, port = started(gctl, demo_galaxy)
    pids = []
    try:
        for verb in ("stop", "shutdown"):
            supervisord = gctl.supervisord_pid()
            master, group = service_pids(gctl)
            pids += [supervisord, *group]
            os.kill(supervisord, signal.SIGKILL)
            assert wait_for(lambda: not alive(supervisord), timeout=10)
            assert alive(master) and not port_free(port)  # the orphan serves on

            status = gctl("status", check=False)
            assert status.returncode == 1, status.stdout  # LSB: dead, and its pid file exists
            assert f"gunicorn                         ORPHANED   pid {master}" in status.stdout
            assert "STOPPED" not in status.stdout and "'galaxyctl stop' ends them" in status.stdout
            report = status_json(gctl)
            assert [(s["state"], s["pid"]) for s in report["services"]] == [("ORPHANED", master)]
            assert [o["pid"] for o in report["orphans"]] == [master]

            check = gctl("check", check=False)
            assert check.returncode == 2
            assert check.stdout.startswith("GALAXY CRITICAL - ")
            assert f"supervisord is not running; gunicorn ORPHANED (pid {master})" in check.stdout

            refused = no_traceback(gctl("start", "--timeout", "30", check=False))
            assert refused.returncode == 1 and len(refused.stderr.splitlines()) == 1
            assert f"left running PID {master} (gunicorn) (orphans); run 'galaxyctl stop'" in refused.stderr
            assert gctl.supervisord_pid() is None  # no second supervisord, no second gunicorn

            began = time.monotonic()
            ended = gctl(verb)
            assert f"Ended PID {master} (gunicorn)" in ended.stdout
            assert time.monotonic() - began < 10  # SIGTERM sufficed: no wait for the stop timeout
            assert not any(alive(pid) for pid in group)
            assert port_free(port)
            assert gctl("status", check=False).returncode == 3
            if verb == "stop":
                gctl("start", "--timeout", "60")  # and once more, for shutdown
    finally:
        kill_pids(pids)


def test_start_names_an_orphan_holding_the_port(gctl, demo_galaxy):
    """supervisord runs again but an orphan of the previous one holds the port: the port check says so."""
    _, port = started(gctl, demo_galaxy)
    supervisord = gctl.supervisord_pid()
    master, group = service_pids(gctl)
    try:
        os.kill(supervisord, signal.SIGKILL)
        assert wait_for(lambda: not alive(supervisord), timeout=10)
        client = SupervisorClient(Paths(gctl.state_dir))
        client.ensure_manager_running()  # as a script calling supervisord itself might: the orphan is still there
        gctl.remember()
        client.stop("gunicorn")  # its own gunicorn cannot bind; supervisord stays up
        with pytest.raises(GalaxyctlError) as refused:
            lifecycle.check_ports_free(client, targets.load_applied(gctl.state_dir).targets)
        assert f"already in use by PID {master}" in refused.value.message
        assert (
            "an orphan of this state dir" in refused.value.message and "run 'galaxyctl stop'" in refused.value.message
        )
        gctl("stop")  # supervisord exits, then the orphan is ended
        assert not any(alive(pid) for pid in group) and port_free(port)
    finally:
        kill_pids([supervisord, *group])


# ---------------------------------------------------------------- supervisord hangs


def test_hung_supervisord_is_reported_in_time_and_shutdown_force_ends_it(gctl, demo_galaxy):
    _, port = started(gctl, demo_galaxy)
    supervisord = gctl.supervisord_pid()
    master, group = service_pids(gctl)
    try:
        os.kill(supervisord, signal.SIGSTOP)
        began = time.monotonic()
        check = gctl("check", "--timeout", "2", check=False)
        assert time.monotonic() - began < 5
        assert check.returncode == 2
        assert check.stdout.startswith(f"GALAXY CRITICAL - supervisord (pid {supervisord}) is not answering")

        status = gctl("status", check=False)
        assert status.returncode == 4  # LSB: unknown
        assert f"supervisord (pid {supervisord}) is not answering" in status.stdout

        for verb in ("shutdown", "stop"):
            refused = no_traceback(gctl(verb, check=False))
            assert refused.returncode == 1
            assert refused.stderr.splitlines() == [
                f"galaxyctl: error: supervisord (pid {supervisord}) is not answering; "
                f"'galaxyctl {verb} --force' kills it and ends its services"
            ]
        assert alive(supervisord) and all(alive(pid) for pid in group)  # nothing was touched

        forced = gctl("shutdown", "--force")
        assert f"supervisord (pid {supervisord}) was not answering: killed" in forced.stdout
        assert f"Ended PID {master} (gunicorn)" in forced.stdout and "Shut down" in forced.stdout
        assert not alive(supervisord) and not any(alive(pid) for pid in group)
        assert port_free(port)
        supervisor_dir = os.path.join(gctl.state_dir, "supervisor")
        assert not {"supervisor.sock", "supervisord.pid"} & set(os.listdir(supervisor_dir))
        assert gctl("status", check=False).returncode == 3
        gctl("start", "--timeout", "60")  # and it starts again
    finally:
        try:
            os.kill(supervisord, signal.SIGCONT)
        except ProcessLookupError:
            pass
        kill_pids([supervisord, *group])


SILENT_SUPERVISORD = """\
import os, socket, sys, time
sock = socket.socket(socket.AF_UNIX)
sock.bind(sys.argv[2])
sock.listen(16)
with open(sys.argv[3], "w") as handle:
    handle.write(str(os.getpid()))
while True:  # accepts (the kernel does, into the backlog) and never answers
    time.sleep(1)
"""


def test_not_answering_is_bounded_by_the_timeout(gctl, demo_galaxy):
    """A supervisord that hangs while running (not stopped, so /proc shows nothing): the RPC timeout
    is what bounds status and check.  A silent listener on supervisord's socket stands in for it."""
    config, _ = demo_galaxy()
    gctl("register", config)
    gctl("update")
    paths = Paths(gctl.state_dir)
    silent = subprocess.Popen([sys.executable, "-c", SILENT_SUPERVISORD, paths.conf, paths.socket, paths.pidfile])
    try:
        assert wait_for(lambda: gctl.supervisord_pid() == silent.pid, timeout=10)
        began = time.monotonic()
        status = gctl("status", "--timeout", "1", check=False)
        assert status.returncode == 4 and f"supervisord (pid {silent.pid}) is not answering" in status.stdout
        assert time.monotonic() - began < 4
        began = time.monotonic()
        check = gctl("check", "--timeout", "2", check=False)
        assert check.returncode == 2 and f"supervisord (pid {silent.pid}) is not answering" in check.stdout
        assert 2 <= time.monotonic() - began < 5
    finally:
        silent.kill()
        silent.wait(timeout=10)


# ---------------------------------------------------------------- read-only state dir


def mount_read_only(directory):
    """Bind-mount ``directory`` onto itself read-only (root can write through a chmod, not this)."""
    try:
        subprocess.run(["mount", "--bind", directory, directory], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot bind-mount here: {exc}")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", directory], check=True, capture_output=True)
    except subprocess.CalledProcessError:
        subprocess.run(["umount", directory], check=True)
        raise


def unmount(directory):
    subprocess.run(["umount", directory], check=True, capture_output=True)


def test_read_only_state_dir_stop_shutdown_and_status(gctl, demo_galaxy):
    _, port = started(gctl, demo_galaxy)
    state = gctl.state_dir
    pids = []
    mounted = False
    try:
        for verb, lock_file in (("stop", True), ("shutdown", False)):
            supervisord = gctl.supervisord_pid()
            master, group = service_pids(gctl)
            pids += [supervisord, *group]
            if not lock_file:  # a read-only state dir that never had the lock: stop without it
                os.unlink(os.path.join(state, ".galaxyctl.lock"))
            mount_read_only(state)
            mounted = True
            with pytest.raises(OSError):
                open(os.path.join(state, "probe"), "w").close()

            assert no_traceback(gctl("status")).returncode == 0
            result = no_traceback(gctl(verb))
            assert ("All processes stopped, supervisord exited" if verb == "stop" else "Shut down") in result.stdout
            assert not alive(supervisord) and not any(alive(pid) for pid in group) and port_free(port)
            assert gctl("status", check=False).returncode == 3
            unmount(state)
            mounted = False
            if verb == "stop":
                gctl("start", "--timeout", "60")  # the stale socket and pid file are no obstacle
    finally:
        if mounted:
            unmount(state)
        kill_pids(pids)


def test_lock_taken_read_only_still_excludes(short_tmp):
    directory = os.path.join(short_tmp, "ro")
    os.mkdir(directory)
    lock = os.path.join(directory, "lock")
    open(lock, "w").close()
    mount_read_only(directory)
    try:
        code = (
            "import fcntl, os, sys\nfd = os.open(sys.argv[1], os.O_RDONLY)\n"
            "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept BlockingIOError:\n    sys.exit(3)\n"
        )
        with fsutil.exclusive_lock(lock):
            assert subprocess.run([sys.executable, "-c", code, lock], timeout=30).returncode == 3
        assert subprocess.run([sys.executable, "-c", code, lock], timeout=30).returncode == 0
        with fsutil.exclusive_lock(os.path.join(directory, "missing")):
            pass  # nothing can be created there, nor can anyone write: runs without a lock
    finally:
        unmount(directory)


# ---------------------------------------------------------------- damaged services.json


DAMAGE = {
    "garbage JSON": b'{"required_storage": [], "targets": [{"program": "gunicorn", "service": {"argv": [',
    "binary": b"\x89PNG\r\n\x1a\n\x00" + bytes(range(256)) * 4,
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_services_json(gctl, demo_galaxy, damage):
    config, _ = started(gctl, demo_galaxy)
    record = os.path.join(gctl.state_dir, "supervisor", "services.json")
    supervisord = gctl.supervisord_pid()
    master, group = service_pids(gctl)

    def damage_record():
        with open(record, "wb") as handle:
            handle.write(DAMAGE[damage])
        assert targets.load_applied(gctl.state_dir) is None

    try:
        damage_record()
        status = no_traceback(gctl("status", check=False))
        assert status.returncode == 0 and f"pid {master}" in status.stdout  # the configs say what runs
        assert no_traceback(gctl("check", check=False)).returncode in (0, 1)

        no_traceback(gctl("update"))
        assert targets.load_applied(gctl.state_dir).targets[0].program == "gunicorn"  # repaired
        with open(record, encoding="utf-8") as handle:
            json.load(handle)

        damage_record()
        stopped = no_traceback(gctl("stop"))
        assert "supervisord exited" in stopped.stdout
        assert not alive(supervisord) and not any(alive(pid) for pid in group)

        damage_record()
        moved = config + ".away"
        os.rename(config, moved)  # nothing to fall back on: status cannot know
        try:
            unknown = no_traceback(gctl("status", check=False))
            assert unknown.returncode == 4 and unknown.stdout.splitlines() == [f"config file not found: {config}"]
            assert no_traceback(gctl("stop", check=False)).returncode == 0  # nothing runs; stopping is no error
        finally:
            os.rename(moved, config)
        no_traceback(gctl("update"))
        assert targets.load_applied(gctl.state_dir) is not None
        assert gctl("status", check=False).returncode == 3
    finally:
        kill_pids([supervisord, *group])


# ---------------------------------------------------------------- the pieces, on real processes


def test_marked_processes_and_ending_one_that_ignores_sigterm(short_tmp):
    """The marker finds a state dir's processes (not another state dir's, not this process); one
    that ignores SIGTERM is killed once its stop timeout has passed."""
    marker = procfs.state_id(short_tmp)
    ignore_term = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\ntime.sleep(300)\n"
    ours_env = dict(os.environ, GALAXYCTL_STATE_ID=marker, GALAXYCTL_SERVICE="_default_/stubborn")
    other_env = dict(os.environ, GALAXYCTL_STATE_ID=procfs.state_id(short_tmp + "-other"))
    ours = subprocess.Popen(
        [sys.executable, "-c", ignore_term], env=ours_env, stdout=subprocess.PIPE, text=True, start_new_session=True
    )  # leads its group, as a service under supervisord does
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], env=other_env)
    try:
        assert ours.stdout.readline() == "ready\n"
        found = procfs.marked_processes(marker)
        assert [(m.pid, m.pgid, m.service) for m in found] == [(ours.pid, ours.pid, "_default_/stubborn")]
        assert found[0].describe() == f"PID {ours.pid} (stubborn)"
        began = time.monotonic()
        assert lifecycle._end_processes(found, wait=1) == (f"PID {ours.pid} (stubborn)",)
        assert 1 <= time.monotonic() - began < 10
        assert ours.wait(timeout=10) == -signal.SIGKILL
        assert alive(other.pid)
    finally:
        kill_pids([ours.pid, other.pid])
        for process in (ours, other):
            process.wait(timeout=10)
