"""A real systemd booted in systemd-nspawn, for tests and the bench (shared/notes/systemd-testing.md).

``booted(...)`` builds a Debian bookworm rootfs once (debootstrap; cached under the system temp dir
between local runs), boots a throw-away copy of it (``--ephemeral``) and yields a ``Machine``:
``run`` a command inside through ``nsenter``, ``path`` of a file inside as seen from the host.  It
powers the container off at the end whatever happened.  Needs root and the systemd-container and
debootstrap packages (installed with apt-get when missing); ``Unavailable`` says why not.
Standard library only, so bench/ can import it too.
"""

import contextlib
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


class Unavailable(Exception):
    """No container here (not root, no nspawn, no debootstrap): the caller skips (``skip_or_fail``)."""


# .ci/run sets it: CI installs what the machines need, so a machine that cannot be made there is a
# failure, not a skip that would let the systemd and two-host tests pass unrun
NEEDED_ENV = "GALAXYCTL_TESTS_NEED_MACHINES"


def skip_or_fail(exc):
    """Skip the test (saying why) for want of a machine, or fail it where the run says they are needed."""
    import pytest

    if os.environ.get(NEEDED_ENV) == "1":
        pytest.fail(f"{NEEDED_ENV}=1 but no machine can be made here: {exc}")
    pytest.skip(str(exc))


SUITE = "bookworm"
# procps: /bin/kill, which the units' ExecReload= runs (a Galaxy host has it; minbase does not)
PACKAGES = "systemd,systemd-sysv,dbus,python3,python3-venv,procps,libpam-systemd,dbus-user-session"
ROOTFS = os.path.join(tempfile.gettempdir(), f"galaxyctl-systemd-rootfs-{SUITE}-{zlib.crc32(PACKAGES.encode()):08x}")
CLEAN_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
GALAXYCTL = "/opt/venv/bin/galaxyctl"


def tools():
    """systemd-nspawn and debootstrap, installed with apt-get when missing; else skip (with why)."""
    if os.geteuid() != 0:
        raise Unavailable("systemd tests need root (systemd-nspawn)")
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
            raise Unavailable(f"systemd-nspawn/debootstrap missing and apt-get could not install them: {exc}")
    if not (shutil.which("systemd-nspawn") and shutil.which("debootstrap")):
        raise Unavailable("systemd-nspawn/debootstrap not found after apt-get install")


def mirror():
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


def rootfs():
    """The cached rootfs, built (under a lock, into a temporary name) when absent."""
    with open(ROOTFS + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.isfile(os.path.join(ROOTFS, "usr/lib/systemd/systemd")):
            return ROOTFS
        part = ROOTFS + ".part"
        shutil.rmtree(part, ignore_errors=True)
        argv = ["debootstrap", "--variant=minbase", f"--include={PACKAGES}", SUITE, part, mirror()]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=1200, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            shutil.rmtree(part, ignore_errors=True)
            raise Unavailable(f"debootstrap failed: {(result.stderr or result.stdout)[-500:]}")
        shutil.rmtree(ROOTFS, ignore_errors=True)
        os.rename(part, ROOTFS)
        return ROOTFS


def wheels(directory, repo, extra=()):
    """Wheels of the checkout ``repo`` (built from a copy) and of what runs inside (``extra`` too):
    no index needed there."""
    pip = [sys.executable, "-m", "pip"]
    subprocess.run(
        pip
        + ["download", "-q", "-d", directory, "gunicorn", "supervisor", "pyyaml", "packaging", "setuptools", *extra],
        check=True,
        timeout=600,
    )
    src = os.path.join(directory, "..", "src")
    shutil.copytree(repo, src, ignore=shutil.ignore_patterns(".venv*", ".git", "*.egg-info", "build"))
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

    def venv(self, path, packages):
        """A venv at ``path`` inside with ``packages`` installed from /opt/wheels (``booted``'s
        ``wheel_dir``), no index."""
        self.run("python3", "-m", "venv", path, timeout=300)
        pip = [f"{path}/bin/pip", "install", "-q", "--no-index", "--find-links", "/opt/wheels"]
        self.run(*pip, *packages, timeout=600)


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


def wait_until(predicate, timeout):
    """Poll ``predicate`` every 50 ms until it is true or ``timeout`` seconds passed; → its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    return predicate()


@contextlib.contextmanager
def booted(name, log_path, binds=(), venv_packages=(), wheel_dir=None, rw_binds=(), hostname=None):
    """Boot a container called ``name`` (nspawn's output to ``log_path``), ``binds`` read-only and
    ``rw_binds`` writable as (host, inside) pairs; with ``venv_packages`` make /opt/venv inside and
    install them from ``wheel_dir`` (bound at /opt/wheels) with no index; ``hostname``: the
    container's host name (else the rootfs's /etc/hostname, the host's at debootstrap time).
    Yields the Machine."""
    tools()
    root = rootfs()
    dirs = _cgroup_dirs(f"galaxyctl-test-{name}")
    nspawn = box = None
    with open(log_path, "w") as log:
        try:
            for directory in dirs:
                os.makedirs(directory, exist_ok=True)
            argv = ["systemd-nspawn", "-q", "-D", root, "-x", "-b", "-M", name, "--register=no", "--keep-unit"]
            argv += ["--console=passive"] + [f"--bind-ro={host}:{inside}" for host, inside in binds]
            argv += [f"--bind={host}:{inside}" for host, inside in rw_binds]
            if wheel_dir:
                argv.append(f"--bind-ro={wheel_dir}:/opt/wheels")
            nspawn = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, preexec_fn=_join_cgroups(dirs)
            )
            leader = wait_until(lambda: _find_leader(nspawn.pid), 60)
            if not leader:
                raise AssertionError(f"no systemd in the container (see {log_path})")
            box = Machine(name, nspawn, leader)
            if not wait_until(lambda: os.path.exists(box.path("/run/systemd/private")), 60):
                raise AssertionError(f"systemd in the container never opened its socket (see {log_path})")
            state = box.run("systemctl", "is-system-running", "--wait", check=False, timeout=120).stdout.strip()
            if state not in ("running", "degraded"):
                raise AssertionError(f"container systemd is {state!r} (see {log_path})")
            if hostname:  # the UTS namespace is the container's own: the host keeps its name
                box.run("hostname", hostname)
                with open(box.path("/etc/hostname"), "w") as handle:
                    handle.write(hostname + "\n")
            if venv_packages:
                box.venv("/opt/venv", venv_packages)
            yield box
        finally:
            _teardown(box, nspawn, name, dirs)
