"""Shared fixtures: a demo Galaxy tree, a state dir, a galaxyctl runner, and Galaxy's sample configs.

Every process a test starts through galaxyctl lives under the state dir's supervisord; the
``galaxy`` fixture stops that supervisord and every descendant *by PID* at the end, even on failure.
"""

import glob
import hashlib
import importlib.metadata
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
import zipfile

import pytest

from galaxyctl_libs.fsutil import exclusive_lock, read_bytes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GALAXYCTL = os.path.join(REPO, "galaxyctl")
# Galaxy's sample configs (galaxy.yml.sample, job_conf.sample.yml, ...) as Galaxy ships them: the
# galaxy-config package of the release the e2e test runs (setup.py's test extra installs it).
GALAXY_CONFIG = "galaxy-config"
GALAXY_CONFIG_VERSION = "26.1.2"
SAMPLE_DIR = "galaxy/config/sample"
SAMPLE_DOWNLOAD_TIMEOUT = 300

sys.path.insert(0, REPO)

from galaxyctl_libs.probes import procfs  # noqa: E402 - after the path set-up above

# process helpers the tests share: the library's own /proc readers
alive = procfs.alive
children_of = procfs.children
descendants_of = procfs.descendants


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def kill_pids(pids, timeout=10):
    """SIGTERM, wait (bounded), then SIGKILL whatever is left; by PID only."""
    pids = [p for p in pids if p and alive(p)]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    for pid in pids:
        if alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def wait_for(predicate, timeout=30, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, json.loads(response.read().decode())


class Galaxyctl:
    """Runs the galaxyctl script against one state dir; records supervisord PIDs for cleanup."""

    def __init__(self, state_dir):
        self.state_dir = state_dir
        self.env = dict(os.environ, GALAXYCTL_ALLOW_ROOT="1")
        for name in ("GRAVITY_STATE_DIR", "GRAVITY_CONFIG_FILE", "GALAXY_CONFIG_FILE"):  # they pick configs
            self.env.pop(name, None)
        self.seen_pids = set()

    @property
    def supervisord_pidfile(self):
        return os.path.join(self.state_dir, "supervisor", "supervisord.pid")

    def supervisord_pid(self):
        try:
            with open(self.supervisord_pidfile) as handle:
                pid = int(handle.read().strip())
        except (OSError, ValueError):
            return None
        return pid if alive(pid) else None

    def remember(self):
        pid = self.supervisord_pid()
        if pid:
            self.seen_pids.add(pid)
            self.seen_pids.update(descendants_of(pid))

    command = (sys.executable, GALAXYCTL)  # how galaxyctl is run
    default_cwd = None

    def credentials(self, user):
        """subprocess keywords that run galaxyctl as ``user`` (a pwd entry), or as ourselves."""
        return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []} if user else {}

    def __call__(self, *args, check=True, timeout=120, cwd=None, env=None, user=None):
        argv = [*self.command, "--state-dir", self.state_dir, *args]
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd or self.default_cwd,
            env=env or self.env,
            stdin=subprocess.DEVNULL,
            **self.credentials(user),
        )
        self.remember()
        if check and result.returncode != 0:
            raise AssertionError(
                f"galaxyctl {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
            )
        return result

    def cleanup(self):
        self.remember()
        pid = self.supervisord_pid()
        pids = sorted(self.seen_pids)
        if pid:
            kill_pids([pid], timeout=30)  # supervisord stops its children on TERM
        kill_pids(pids)
        import hashlib

        run_dir = os.path.join("/run", "galaxyctl", hashlib.sha1(self.state_dir.encode()).hexdigest()[:12])
        shutil.rmtree(run_dir, ignore_errors=True)  # pid files of services that ran as a Galaxy user


@pytest.fixture
def short_tmp():
    """A short temp dir (unix socket paths are limited to ~100 bytes), removed at the end."""
    path = tempfile.mkdtemp(prefix="gx")
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def gctl(short_tmp):
    runner = Galaxyctl(os.path.join(short_tmp, "state"))
    try:
        yield runner
    finally:
        runner.cleanup()


@pytest.fixture
def demo_galaxy(short_tmp):
    """Factory: make_demo(name, **gravity) → (config path, port).  The stand-in's handlers, celery,
    tusd, gx-it-proxy and reports get a start timeout of STAND_IN_START_TIMEOUT unless the test
    gives one (see quick_starts)."""
    from galaxyctl_libs.demo import make_demo_galaxy

    def make(name="galaxy", gravity=None, galaxy=None, port=None):
        port = port or free_port()
        config = make_demo_galaxy(os.path.join(short_tmp, name), port, gravity=quick_starts(gravity), galaxy=galaxy)
        return config, port

    return make


# A start reports a service without HTTP as started once it is past its start timeout (gravity's
# default: 10 s); the stand-in's programs are up at once, so the tests' starts wait 2 s instead.
# The web server keeps its own (it is judged by its answer); a test that sets one keeps it.
STAND_IN_START_TIMEOUT = 2
QUICK_SECTIONS = ("celery", "tusd", "gx_it_proxy", "reports")


def quick_starts(gravity):
    """``gravity`` with STAND_IN_START_TIMEOUT where a section or handler entry sets no start_timeout."""
    if gravity is None:
        gravity = {}
    if not isinstance(gravity, dict):
        return gravity
    quick = dict(gravity)
    for section in QUICK_SECTIONS:
        if section in quick or section == "celery":  # the demo's own celery section is merged with it
            quick[section] = _with_quick_start(quick.get(section, {}))
    if isinstance(quick.get("handlers"), dict):
        quick["handlers"] = {name: _with_quick_start(entry) for name, entry in quick["handlers"].items()}
    return quick


def _with_quick_start(settings):
    return {"start_timeout": STAND_IN_START_TIMEOUT, **settings} if isinstance(settings, dict) else settings


def _installed_samples():
    """galaxy/config/sample of the installed galaxy-config, if it is the pinned release."""
    try:
        dist = importlib.metadata.distribution(GALAXY_CONFIG)
    except importlib.metadata.PackageNotFoundError:
        return None
    directory = str(dist.locate_file(SAMPLE_DIR))
    if dist.version != GALAXY_CONFIG_VERSION or not os.path.isfile(os.path.join(directory, "galaxy.yml.sample")):
        return None
    return directory


def _downloaded_samples(cache_dir):
    """The samples out of the pinned galaxy-config wheel from PyPI, downloaded once into cache_dir.

    For interpreters the test extra does not install it on (galaxy-config needs Python >= 3.10;
    its samples are plain files) or venvs made without the extra.
    """
    target = os.path.join(cache_dir, "sample")
    if os.path.isfile(os.path.join(target, "galaxy.yml.sample")):
        return target
    staging = tempfile.mkdtemp(dir=cache_dir, prefix="download-")
    try:
        argv = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--ignore-requires-python",
            "--only-binary=:all:",
            "--dest",
            staging,
            f"{GALAXY_CONFIG}=={GALAXY_CONFIG_VERSION}",
        ]
        try:
            result = subprocess.run(
                argv, capture_output=True, text=True, timeout=SAMPLE_DOWNLOAD_TIMEOUT, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"{' '.join(argv)}: no answer in {SAMPLE_DOWNLOAD_TIMEOUT}s")
        wheels = glob.glob(os.path.join(staging, "*.whl"))
        if result.returncode != 0 or len(wheels) != 1:
            pytest.fail(f"{' '.join(argv)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
        extracted = os.path.join(staging, "sample")
        os.mkdir(extracted)
        with zipfile.ZipFile(wheels[0]) as wheel:
            for name in wheel.namelist():
                if os.path.dirname(name) == SAMPLE_DIR:
                    with open(os.path.join(extracted, os.path.basename(name)), "wb") as handle:
                        handle.write(wheel.read(name))
        try:
            os.rename(extracted, target)  # atomic; a concurrent run may have got there first
        except OSError:
            if not os.path.isfile(os.path.join(target, "galaxy.yml.sample")):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


@pytest.fixture(scope="session")
def galaxy_samples(request, tmp_path_factory):
    """The directory holding Galaxy's sample configs (galaxy.yml.sample, job_conf.sample.yml, ...)."""
    directory = _installed_samples()
    if directory is None:
        cache = getattr(request.config, "cache", None)  # .pytest_cache, unless -p no:cacheprovider
        name = f"galaxy-config-{GALAXY_CONFIG_VERSION}"
        cache_dir = cache.mkdir(name) if cache else tmp_path_factory.mktemp(name)
        directory = _downloaded_samples(str(cache_dir))
    return directory


# ---------------------------------------------------------------- root and a Galaxy user

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CI is root)")
SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.fixture(scope="session")
def user_venv():
    """A venv from the system Python (the test's own interpreter may live where another user cannot
    enter, e.g. /root/.pyenv) with gunicorn, celery, supervisor and this checkout's galaxyctl installed:
    as root with a Galaxy user, supervisord and the herder run with galaxyctl's Python as that user.
    One venv per user and checkout, reused between runs; galaxyctl is reinstalled when the
    checkout's code changed (its stamp is the code's digest), so never under a pytest-xdist worker
    of the same run, which may be running it."""
    name = f"galaxyctl-test-user-venv-{os.getuid()}-{hashlib.sha256(REPO.encode()).hexdigest()[:8]}"
    path = own_tmp_path(name)
    pip = os.path.join(path, "bin", "pip")
    stamp = os.path.join(path, ".galaxyctl-checkout")
    digest = checkout_digest()
    with exclusive_lock(path + ".lock"):  # one builder at a time (pytest-xdist workers, parallel runs)
        if not os.access(pip, os.X_OK):
            shutil.rmtree(path, ignore_errors=True)
            subprocess.run([SYSTEM_PYTHON, "-m", "venv", path], check=True, timeout=300)
            own_tmp_path(name)  # and the venv made is ours alone
        if read_bytes(stamp, 1024) != digest.encode():
            subprocess.run(
                [pip, "install", "-q", "gunicorn", "supervisor", "pyyaml", "celery"], check=True, timeout=600
            )
            install_checkout(path)
            with open(stamp, "w") as handle:
                handle.write(digest)
        os.chmod(path, 0o755)
    return path


_LIST_MODULES = (
    "import sys\n"
    "before = set(sys.modules)\n"
    "code = sys.argv.pop(1)\n"
    "try:\n"
    "    exec(code)\n"
    "finally:\n"  # --help leaves through SystemExit
    "    sys.stderr.write('\\nMODULES ' + ' '.join(sorted(set(sys.modules) - before)) + '\\n')\n"
)


def run_listing_modules(code, *argv, env=None, site=True):
    """Run ``code`` in a fresh interpreter, this checkout first on its path and ``argv`` as its
    ``sys.argv[1:]``: (the CompletedProcess, the modules it loaded beyond the interpreter's start).
    ``site=False`` (-S): none of a venv's .pth files run (an editable install's finder imports re)."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = REPO
    result = subprocess.run(
        [sys.executable, *([] if site else ["-S"]), "-c", _LIST_MODULES, code, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    return result, set(result.stderr.rsplit("MODULES ", 1)[1].split())


def own_tmp_path(name):
    """``TMPDIR/name`` for a cache of this user's: anyone may create names in /tmp, so one that
    exists must be a directory this user owns and alone can write to (else the test fails)."""
    path = os.path.join(tempfile.gettempdir(), name)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return path
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        pytest.fail(f"{path} is not a directory that only this user can write to; remove it")
    return path


def checkout_digest():
    """SHA-256 of what install_checkout installs and how: galaxyctl_libs, the galaxyctl script, setup.py
    and pyproject.toml."""
    files = glob.glob(os.path.join(REPO, "galaxyctl_libs", "**", "*.py"), recursive=True)
    digest = hashlib.sha256()
    for path in sorted(files) + [os.path.join(REPO, name) for name in ("setup.py", "pyproject.toml", "galaxyctl")]:
        digest.update(os.path.relpath(path, REPO).encode() + b"\0")
        with open(path, "rb") as handle:
            digest.update(handle.read() + b"\0")
    return digest.hexdigest()


def install_checkout(venv):
    """Install this checkout's galaxyctl and its two dependencies (not editable: files any user can
    read) into ``venv``, from a copy, since pip writes build files beside the sources."""
    python = os.path.join(venv, "bin", "python")
    subprocess.run([python, "-m", "pip", "install", "-q", "supervisor", "pyyaml"], check=True, timeout=600)
    build = tempfile.mkdtemp(prefix="gxbuild")
    try:
        shutil.copytree(
            REPO, os.path.join(build, "src"), ignore=shutil.ignore_patterns(".venv*", ".git", "*.egg-info", "build")
        )
        subprocess.run(
            [
                os.path.join(venv, "bin", "python"),
                "-m",
                "pip",
                "install",
                "-q",
                "--no-deps",
                "--force-reinstall",
                os.path.join(build, "src"),
            ],
            check=True,
            timeout=600,
        )
    finally:
        shutil.rmtree(build, ignore_errors=True)


@pytest.fixture
def test_user():
    """A throw-away system user (the Galaxy user of a test), removed at the end."""
    import pwd

    name = "gxt" + uuid.uuid4().hex[:8]
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True, timeout=60
    )
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], timeout=60)


def uids(pid):
    """The real, effective, saved and filesystem uids of ``pid`` (as a set)."""
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("Uid:"):
                return set(int(x) for x in line.split()[1:])
    return set()


class UserGalaxyctl(Galaxyctl):
    """galaxyctl from ``user_venv`` (so a Galaxy user can run its Python), as root without
    --allow-root, or as ``as_user`` (a pwd entry) when given."""

    def __init__(self, state_dir, venv, as_user=None):
        super().__init__(state_dir)
        self.exe = os.path.join(venv, "bin", "galaxyctl")
        self.command = (self.exe,)
        self.default_cwd = "/"  # a directory every user may enter
        self.env.pop("GALAXYCTL_ALLOW_ROOT", None)
        self.as_user = as_user

    def credentials(self, user):
        return super().credentials(user or self.as_user)

    def supervisord_pid(self):
        """Also where a Galaxy user's supervisord keeps its pid file (/run/galaxyctl/ID)."""
        import hashlib

        run_dir = os.path.join("/run", "galaxyctl", hashlib.sha1(self.state_dir.encode()).hexdigest()[:12])
        for pidfile in (self.supervisord_pidfile, os.path.join(run_dir, "supervisord.pid")):
            try:
                with open(pidfile) as handle:
                    pid = int(handle.read().strip())
            except (OSError, ValueError):
                continue
            if alive(pid):
                return pid
        return None


@pytest.fixture
def root_gctl(short_tmp, user_venv):
    """galaxyctl as root without --allow-root, from the user venv; stops what it started by PID."""
    runner = UserGalaxyctl(os.path.join(short_tmp, "state"), user_venv)
    try:
        yield runner
    finally:
        runner.cleanup()


# ---------------------------------------------------------------- PostgreSQL, RabbitMQ, Redis (issue 23)
# Throwaway servers from the distribution's packages (tests/servers.py: attributes and methods),
# one of each per session (per pytest-xdist worker), each process ended by PID at the end.  A test
# that stops one starts it again (in a finally).


def _running_server(kind):
    import servers  # tests/servers.py

    with getattr(servers, kind)() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server():
    """PostgreSQL 15 on 127.0.0.1: ``url(dbname, user, password)``, ``create_database(name, owner, password)``."""
    yield from _running_server("PostgresServer")


@pytest.fixture(scope="session")
def rabbitmq_server():
    """RabbitMQ 3.10 on 127.0.0.1: ``url(vhost)`` (pyamqp://), ``amqp_url``, ``add_vhost(name)``."""
    yield from _running_server("RabbitMQServer")


@pytest.fixture(scope="session")
def redis_server():
    """Redis 7 on 127.0.0.1: ``url(db=0)``."""
    yield from _running_server("RedisServer")


# ---------------------------------------------------------------- gravity 1.2.4 beside us

GRAVITY_VERSION = "1.2.4"
GRAVITY_INSTALL_TIMEOUT = 600


def _pypi_unreachable(output):
    words = ("connection", "network is unreachable", "name resolution", "timed out", "no matching distribution")
    return any(word in output.lower() for word in words)


@pytest.fixture(scope="session")
def gravity_galaxyctl():
    """gravity's galaxyctl, from a venv reused between runs (rebuilt if it is not 1.2.4)."""
    name = f"galaxyctl-gravity-{GRAVITY_VERSION}-{os.getuid()}"
    venv = own_tmp_path(name)
    with exclusive_lock(venv + ".lock"):  # one builder at a time (pytest-xdist workers, parallel runs)
        exe = _gravity_venv(venv)
        own_tmp_path(name)  # and the venv made is ours alone
        return exe


def _gravity_venv(venv):
    exe = os.path.join(venv, "bin", "galaxyctl")
    python = os.path.join(venv, "bin", "python")
    check = [python, "-c", f"import importlib.metadata as m; assert m.version('gravity') == '{GRAVITY_VERSION}'"]
    if os.path.exists(exe) and subprocess.run(check, capture_output=True, stdin=subprocess.DEVNULL).returncode == 0:
        return exe
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, stdin=subprocess.DEVNULL, timeout=120)
    try:
        install = subprocess.run(
            [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", f"gravity=={GRAVITY_VERSION}"],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=GRAVITY_INSTALL_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        shutil.rmtree(venv, ignore_errors=True)
        pytest.skip(f"PyPI unreachable: installing gravity=={GRAVITY_VERSION} took over {GRAVITY_INSTALL_TIMEOUT} s")
    if install.returncode != 0:
        shutil.rmtree(venv, ignore_errors=True)
        if _pypi_unreachable(install.stdout + install.stderr):
            pytest.skip(f"PyPI unreachable: cannot install gravity=={GRAVITY_VERSION}: {install.stderr.strip()[-300:]}")
        pytest.fail(f"pip install gravity=={GRAVITY_VERSION} failed:\n{install.stdout}\n{install.stderr}")
    return exe
