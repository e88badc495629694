"""galaxyctl with process_manager: systemd, against a real systemd booted in systemd-nspawn.

A session fixture builds a Debian bookworm rootfs once (debootstrap; cached under the system temp
dir between local runs), boots a throw-away copy of it (``--ephemeral``), installs this checkout's
galaxyctl and gunicorn into a venv inside from wheels made on the host, and powers it off at the
end whatever happened.  Commands run inside through ``nsenter``.  Needs root and the
systemd-container and debootstrap packages (installed with apt-get when missing): else skipped.
"""

import fcntl
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zlib

import pytest
import yaml
from conftest import REPO, free_port, http_get, wait_for

from galaxyctl_libs.demo import make_demo_galaxy

pytestmark = pytest.mark.systemd

SUITE = "bookworm"
# procps: /bin/kill, which the units' ExecReload= runs (a Galaxy host has it; minbase does not)
PACKAGES = "systemd,systemd-sysv,dbus,python3,python3-venv,procps"
ROOTFS = os.path.join(tempfile.gettempdir(), f"galaxyctl-systemd-rootfs-{SUITE}-{zlib.crc32(PACKAGES.encode()):08x}")
CLEAN_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
GALAXYCTL = "/opt/venv/bin/galaxyctl"


def _tools():
    """systemd-nspawn and debootstrap, installed with apt-get when missing; else skip (with why)."""
    if os.geteuid() != 0:
        pytest.skip("systemd tests need root (systemd-nspawn)")
    if not (shutil.which("systemd-nspawn") and shutil.which("debootstrap")):
        try:
            subprocess.run(
                ["apt-get", "install", "-y", "-q", "systemd-container", "debootstrap"],
                check=True,
                capture_output=True,
                timeout=600,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            pytest.skip(f"systemd-nspawn/debootstrap missing and apt-get could not install them: {exc}")
    if not (shutil.which("systemd-nspawn") and shutil.which("debootstrap")):
        pytest.skip("systemd-nspawn/debootstrap not found after apt-get install")


def _mirror():
    """The Debian mirror apt uses here (not the security one)."""
    uris = []
    for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*")):
        try:
            text = open(path, encoding="utf-8", errors="replace").read()
        except OSError:
            continue
        if path.endswith((".list", "sources.list")):
            uris += re.findall(r"^\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)", text, re.M)
        elif path.endswith(".sources"):
            for line in re.findall(r"^URIs:\s*(.+)$", text, re.M):
                uris += line.split()
    for uri in uris:
        if "debian" in uri and "security" not in uri:
            return uri
    return "http://deb.debian.org/debian"


def _rootfs():
    """The cached rootfs, built (under a lock, into a temporary name) when absent."""
    with open(ROOTFS + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.isfile(os.path.join(ROOTFS, "usr/lib/systemd/systemd")):
            return ROOTFS
        part = ROOTFS + ".part"
        shutil.rmtree(part, ignore_errors=True)
        argv = ["debootstrap", "--variant=minbase", f"--include={PACKAGES}", SUITE, part, _mirror()]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=1200, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            shutil.rmtree(part, ignore_errors=True)
            pytest.skip(f"debootstrap failed: {(result.stderr or result.stdout)[-500:]}")
        shutil.rmtree(ROOTFS, ignore_errors=True)
        os.rename(part, ROOTFS)
        return ROOTFS


def _wheels(directory):
    """Wheels of this checkout (built from a copy) and of what runs inside: no index needed there."""
    pip = [sys.executable, "-m", "pip"]
    subprocess.run(
        pip + ["download", "-q", "-d", directory, "gunicorn", "supervisor", "pyyaml", "packaging", "setuptools"],
        check=True,
        timeout=600,
    )
    src = os.path.join(directory, "..", "src")
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".venv*", ".git", "*.egg-info", "build"))
    subprocess.run(pip + ["wheel", "-q", "--no-deps", "-w", directory, src], check=True, timeout=600)


class Machine:
    """A booted container: ``run`` a command inside; ``path`` of a file inside, seen from the host."""

    def __init__(self, name, nspawn, leader):
        self.name, self.nspawn, self.leader = name, nspawn, leader

    def path(self, inside):
        return f"/proc/{self.leader}/root{inside}"

    def run(self, *argv, check=True, timeout=120):
        result = subprocess.run(
            ["nsenter", "-t", str(self.leader), "-a", "--", *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=CLEAN_ENV,
            stdin=subprocess.DEVNULL,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{argv} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result


def _children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(p) for p in handle.read().split()]
    except OSError:
        return []


def _comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def _find_leader(nspawn_pid):
    """The container's init: the ``systemd`` process among nspawn's children or theirs (matched by
    name: a short-lived helper child can be there too)."""
    for child in _children(nspawn_pid):
        if _comm(child) == "systemd":
            return child
        for grandchild in _children(child):
            if _comm(grandchild) == "systemd":
                return grandchild
    return None


def _cgroup_dirs(name):
    return [f"/sys/fs/cgroup/{h}/{name}" for h in ("systemd", "unified") if os.path.isdir(f"/sys/fs/cgroup/{h}")]


def _join_cgroups(dirs):
    def join():
        for directory in dirs:
            with open(os.path.join(directory, "cgroup.procs"), "w") as handle:
                handle.write("0")

    return join


def _remove_cgroups(dirs):
    for directory in dirs:
        for _ in range(20):
            for sub, _dirs, _files in sorted(os.walk(directory, topdown=False)):
                try:
                    os.rmdir(sub)
                except OSError:
                    pass
            if not os.path.exists(directory):
                break
            time.sleep(0.25)


def _teardown(machine_or_none, nspawn, name, dirs):
    try:
        if machine_or_none is not None:
            try:
                machine_or_none.run("systemctl", "poweroff", "--no-block", check=False, timeout=20)
            except (OSError, subprocess.SubprocessError):
                pass
        if nspawn is not None:
            for sig in (None, signal.SIGTERM, signal.SIGTERM, signal.SIGKILL):
                if sig is not None and nspawn.poll() is None:
                    nspawn.send_signal(sig)
                try:
                    nspawn.wait(timeout=20)
                    break
                except subprocess.TimeoutExpired:
                    continue
    finally:
        _remove_cgroups(dirs)
        shutil.rmtree(f"/run/systemd/nspawn/propagate/{name}", ignore_errors=True)


@pytest.fixture(scope="session")
def machine(tmp_path_factory):
    _tools()
    root = _rootfs()
    wheels = tmp_path_factory.mktemp("sdwheels") / "wheels"
    wheels.mkdir()
    _wheels(str(wheels))
    name = f"gxsd{os.getpid()}"
    dirs = _cgroup_dirs(f"galaxyctl-test-{name}")
    nspawn = box = log = None
    try:
        for directory in dirs:
            os.makedirs(directory, exist_ok=True)
        log = open(tmp_path_factory.mktemp("sdlog") / "nspawn.log", "w")
        argv = ["systemd-nspawn", "-q", "-D", root, "-x", "-b", "-M", name, "--register=no", "--keep-unit"]
        argv += ["--console=passive", f"--bind-ro={wheels}:/opt/wheels"]
        nspawn = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, preexec_fn=_join_cgroups(dirs)
        )
        leader = wait_for(lambda: _find_leader(nspawn.pid), timeout=60)
        assert leader, f"no systemd in the container (see {log.name})"
        box = Machine(name, nspawn, leader)
        assert wait_for(lambda: os.path.exists(box.path("/run/systemd/private")), timeout=60)
        state = box.run("systemctl", "is-system-running", "--wait", check=False, timeout=120).stdout.strip()
        assert state in ("running", "degraded"), state
        box.run("python3", "-m", "venv", "/opt/venv", timeout=300)
        box.run("/opt/venv/bin/pip", "install", "-q", "--no-index", "--find-links", "/opt/wheels", "galaxyctl",
                "gunicorn", timeout=600)  # fmt: skip
        box.run("useradd", "--system", "--user-group", "--home-dir", "/nonexistent", "galaxy")
        yield box
    finally:
        _teardown(box, nspawn, name, dirs)
        if log is not None:
            log.close()


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
