"""Throwaway PostgreSQL, RabbitMQ and Redis servers from the distribution's packages, for the tests.

Each server runs as a child of the test process (never detached: we know and reap every PID), in
its own temp dir, listening on 127.0.0.1 only on free ports, so a system instance the packages may
have started is neither used nor disturbed.  ``close()`` stops everything the server started *by
PID* (never by name) and raises if any of those PIDs is still alive; ``stop()``/``start()`` stop
and restart the same server (same ports, same data) in the middle of a test.

Use them as context managers (``with PostgresServer() as pg: ...``) or through the session fixtures
``postgres_server``, ``rabbitmq_server`` and ``redis_server`` of tests/conftest.py.  Nothing here
skips: a missing package is an error that names the package (``.ci/run`` installs them); PostgreSQL
and RabbitMQ need root (they run as their own system users).

- PostgresServer: ``host``, ``port``, ``url(dbname, user, password)`` (the superuser's URL without
  arguments), ``create_database(name, owner, password)`` -> its URL, ``psql(sql, dbname)`` as the
  superuser over the unix socket, ``superuser``/``superuser_password``, ``data_dir``, ``log``.
- RabbitMQServer: ``host``, ``port``, ``url(vhost=None)`` -> ``pyamqp://user:pw@127.0.0.1:PORT/vhost``
  (``vhost``, "galaxy", by default), ``amqp_url``, ``user``/``password``, ``add_vhost(name)``,
  ``rabbitmqctl(*args)``, ``nodename``, ``epmd_port``, ``dist_port``, ``log``.
- RedisServer: ``host``, ``port``, ``url(db=0)``, ``ping()``, ``command(*args)``.
- All: ``stop()``, ``start()`` (same ports and data; a test that stops one starts it again in a
  finally), ``running()``, ``pids()`` (alive now), ``timings`` (seconds of the last setup, start and
  stop), ``close()``.
"""

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
import uuid

from galaxyctl_libs.probes import procfs

PG_BIN = "/usr/lib/postgresql/15/bin"
RABBITMQ_BIN = "/usr/lib/rabbitmq/bin"  # the real scripts: /usr/sbin's wrappers go through su
REDIS_SERVER = "/usr/bin/redis-server"
EPMD = "/usr/bin/epmd"
HOST = "127.0.0.1"
START_TIMEOUT = 120  # a first RabbitMQ boot on a busy 2-core machine takes a few seconds; be generous
STOP_TIMEOUT = 60
COMMAND_TIMEOUT = 120
BASE_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


class ServerError(RuntimeError):
    """A server could not be set up, started or stopped (the message says why)."""


def require(paths, package):
    missing = [path for path in paths if not os.access(path, os.X_OK)]
    if missing:
        raise ServerError(
            f"{', '.join(missing)} missing: install the Debian package {package} "
            f"(`apt-get install {package}`; .ci/run installs it): the tests need the real server"
        )


def require_root(what):
    if os.geteuid() != 0:
        raise ServerError(
            f"{what} needs root here (it runs the server as its own system user; CI runs as root): "
            "run as root, or skip these tests with -m 'not servers'"
        )


def free_port():
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def port_open(port, host=HOST, timeout=0.5):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def listening_pids(port):
    """PIDs of the processes holding a TCP socket listening on ``port`` (any address), from /proc."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as handle:
                next(handle)
                for line in handle:
                    fields = line.split()
                    if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(f"socket:[{fields[9]}]")
        except OSError:
            continue
    pids = set()
    if not inodes:
        return pids
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fd_dir = f"/proc/{entry}/fd"
        try:
            for fd in os.listdir(fd_dir):
                with contextlib.suppress(OSError):
                    if os.readlink(f"{fd_dir}/{fd}") in inodes:
                        pids.add(int(entry))
                        break
        except OSError:
            continue
    return pids


def terminate(pids, timeout=STOP_TIMEOUT, sig=signal.SIGTERM):
    """``sig`` to each PID, wait (bounded) for them to end, then SIGKILL what is left; by PID only."""
    pids = [pid for pid in pids if pid and procfs.alive(pid)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(procfs.alive(pid) for pid in pids):
        time.sleep(0.05)
    for pid in pids:
        if procfs.alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(procfs.alive(pid) for pid in pids):
        time.sleep(0.05)


def start_ticks(pid):
    """When ``pid`` started (clock ticks since boot): with the PID, one process's identity."""
    fields = procfs.stat_fields(pid)
    return fields[19] if fields else None


def tail(path, size=4000):
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, os.path.getsize(path) - size))
            return handle.read().decode(errors="replace")
    except OSError as error:
        return f"({path}: {error})"


def wait_until(predicate, timeout, what, process=None, log=None):
    """Poll ``predicate`` until true (bounded); fail early if ``process`` (a Popen) has exited."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if process is not None and process.poll() is not None:
            raise ServerError(f"{what}: the server exited with {process.returncode}\n{tail(log) if log else ''}")
        if time.monotonic() > deadline:
            raise ServerError(f"{what}: not within {timeout}s\n{tail(log) if log else ''}")
        time.sleep(0.1)


def system_user(name):
    """The pwd entry of system user ``name``, created (no home, no shell) if missing."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            pass
        result = subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0 and time.monotonic() > deadline:  # /etc/passwd locked by another useradd
            raise ServerError(f"useradd {name} exited {result.returncode}: {result.stderr.strip()}")
        if result.returncode != 0:
            time.sleep(0.5)


def remove_user(name):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            pwd.getpwnam(name)
        except KeyError:
            return
        result = subprocess.run(["userdel", name], capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            time.sleep(0.5)


class Server:
    """What the three servers share: a temp dir, the child process, the PIDs seen, timings."""

    name = "server"

    def __init__(self):
        self.base = None
        self.process = None
        self.seen = {}  # every process this server ever ran: PID -> start time (for the "all ended" check)
        self.timings = {}  # "setup", "start", "stop": seconds of the last one

    def __enter__(self):
        try:
            self.setup()
            self.start()
        except BaseException:
            self.close(check=False)
            raise
        return self

    def __exit__(self, *exc_info):
        self.close(check=exc_info[0] is None)

    def make_base(self, owner=None):
        self.base = tempfile.mkdtemp(prefix=f"gx{self.name[:2]}")
        os.chmod(self.base, 0o755)
        if owner:
            os.chown(self.base, owner.pw_uid, owner.pw_gid)

    def spawn(self, argv, log, user=None, env=None):
        credentials = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []} if user else {}
        with open(log, "ab") as handle:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                cwd=self.base,
                env=env or dict(BASE_ENV),
                start_new_session=True,
                **credentials,
            )
        self.add_pids([self.process.pid])
        return self.process

    def add_pids(self, pids):
        for pid in pids:
            ticks = start_ticks(pid)
            if ticks is not None:
                self.seen.setdefault(pid, ticks)

    @property
    def seen_pids(self):
        """Every PID this server ran, alive or not."""
        return set(self.seen)

    def remember(self):
        """Record the child's current descendants (they end with it; we check that they did)."""
        if self.process is not None and procfs.alive(self.process.pid):
            self.add_pids(procfs.descendants(self.process.pid))

    def pids(self):
        """The PIDs of this server that are alive now (the same processes: PID and start time)."""
        self.remember()
        return sorted(pid for pid, ticks in self.seen.items() if procfs.alive(pid) and start_ticks(pid) == ticks)

    def kill_child(self, timeout=STOP_TIMEOUT):
        """End whatever of ours is left (the child, its descendants) by PID, and reap the child."""
        terminate(self.pids(), timeout=timeout)
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
            self.process = None

    def ports(self):
        return []

    def running(self):
        return self.process is not None and self.process.poll() is None

    def start(self):
        started = time.monotonic()
        self._start()
        self.remember()
        self.timings["start"] = time.monotonic() - started

    def stop(self):
        started = time.monotonic()
        self._stop()
        self.timings["stop"] = time.monotonic() - started

    def setup(self):
        raise NotImplementedError

    def _start(self):
        raise NotImplementedError

    def _stop(self):
        raise NotImplementedError

    def cleanup(self):
        """What to undo beyond the processes (users, files); after the stop."""
        if self.base:
            shutil.rmtree(self.base, ignore_errors=True)

    def close(self, check=True):
        """Stop everything by PID, remove the temp dir; raise if a PID of ours outlived it."""
        try:
            self.stop()
        finally:
            left = self.pids()
            terminate(left)  # whatever stop() missed, so nothing outlives the run even when we raise
            self.cleanup()
        if check and left:
            raise ServerError(f"{self.name}: PIDs {left} were still alive after stop() (killed now)")


class PostgresServer(Server):
    """PostgreSQL 15: ``initdb`` + ``postgres`` as a throwaway system user, on 127.0.0.1:``port``.

    Local (unix socket, in the temp dir) connections are trusted, TCP ones need a password
    (scram-sha-256).  ``superuser`` (``postgres``) has ``superuser_password``."""

    name = "postgresql"

    def __init__(self):
        super().__init__()
        self.host = HOST
        self.port = None
        self.user = None  # the pwd entry of the system user the server runs as
        self.superuser = "postgres"
        self.superuser_password = secrets.token_hex(12)

    @property
    def data_dir(self):
        return os.path.join(self.base, "data")

    @property
    def socket_dir(self):
        return self.base

    @property
    def log(self):
        return os.path.join(self.base, "postgresql.log")

    def ports(self):
        return [self.port]

    def url(self, dbname="postgres", user=None, password=None):
        """``postgresql://user:password@127.0.0.1:PORT/dbname`` (the superuser's by default)."""
        if user is None:
            user, password = self.superuser, self.superuser_password
        credentials = urllib.parse.quote(user, safe="")
        if password is not None:
            credentials += ":" + urllib.parse.quote(password, safe="")
        return f"postgresql://{credentials}@{self.host}:{self.port}/{urllib.parse.quote(dbname, safe='')}"

    def run_as_user(self, argv, **kwargs):
        kwargs.setdefault("timeout", COMMAND_TIMEOUT)
        if "input" not in kwargs:
            kwargs.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.run(
            argv,
            capture_output=True,
            text=True,
            cwd="/",
            env=dict(BASE_ENV),
            user=self.user.pw_uid,
            group=self.user.pw_gid,
            extra_groups=[],
            **kwargs,
        )

    def psql(self, sql, dbname="postgres", variables=None, check=True):
        """Run ``sql`` (psql's input: ``:'name'``/``:"name"`` interpolate ``variables``) as the
        superuser over the unix socket; its stdout (unaligned, tuples only)."""
        argv = [f"{PG_BIN}/psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]
        for key, value in (variables or {}).items():
            argv += ["-v", f"{key}={value}"]
        argv += ["-h", self.socket_dir, "-p", str(self.port), "-U", self.superuser, "-d", dbname]
        result = subprocess.run(
            argv, input=sql, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, env=dict(BASE_ENV), cwd="/"
        )
        if check and result.returncode != 0:
            raise ServerError(f"psql exited {result.returncode}: {result.stderr.strip()}\n{sql}")
        return result.stdout

    def create_database(self, name, owner, password):
        """A login role ``owner`` with ``password`` (created, or its password set) owning a new
        database ``name``; returns its URL."""
        self.psql(
            "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'owner') AS role_exists \\gset\n"
            "\\if :role_exists\n"
            "ALTER ROLE :\"owner\" LOGIN PASSWORD :'password';\n"
            "\\else\n"
            "CREATE ROLE :\"owner\" LOGIN PASSWORD :'password';\n"
            "\\endif\n"
            'CREATE DATABASE :"name" OWNER :"owner";\n',
            variables={"owner": owner, "password": password, "name": name},
        )
        return self.url(name, owner, password)

    def setup(self):
        require([f"{PG_BIN}/{name}" for name in ("initdb", "postgres", "pg_ctl", "psql")], "postgresql")
        require_root("PostgresServer")
        self.user = system_user("gxpg" + uuid.uuid4().hex[:8])
        self.make_base(owner=self.user)
        self.port = free_port()
        started = time.monotonic()
        pwfile = os.path.join(self.base, "pwfile")
        with open(os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
            handle.write(self.superuser_password + "\n")
        os.chown(pwfile, self.user.pw_uid, self.user.pw_gid)
        argv = [f"{PG_BIN}/initdb", "-D", self.data_dir, "-U", self.superuser, f"--pwfile={pwfile}"]
        argv += ["--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"]
        result = self.run_as_user(argv)
        os.unlink(pwfile)
        if result.returncode != 0:
            raise ServerError(f"initdb exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        self.timings["setup"] = time.monotonic() - started

    def _start(self):
        if self.running():
            return
        argv = [f"{PG_BIN}/postgres", "-D", self.data_dir, "-c", f"listen_addresses={self.host}"]
        argv += ["-c", f"port={self.port}", "-c", f"unix_socket_directories={self.socket_dir}"]
        argv += ["-c", "fsync=off"]  # throwaway data: no waiting on the shared disk (a clean stop keeps it all)
        self.spawn(argv, self.log, user=self.user)

        def ready():
            return self.psql("SELECT 1", check=False).strip() == "1"

        wait_until(ready, START_TIMEOUT, "PostgreSQL start", self.process, self.log)

    def _stop(self):
        if self.base and self.user and os.path.isdir(self.data_dir) and self.running():
            self.remember()
            argv = [f"{PG_BIN}/pg_ctl", "stop", "-D", self.data_dir, "-m", "fast", "-w", "-t", str(STOP_TIMEOUT)]
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.run_as_user(argv, timeout=STOP_TIMEOUT + 10)
        self.kill_child()  # by PID (the postmaster is our child), whatever pg_ctl did not end

    def cleanup(self):
        super().cleanup()
        if self.user:
            remove_user(self.user.pw_name)


class RabbitMQServer(Server):
    """RabbitMQ 3.10 as node ``nodename`` (rabbit-gxctl-XXXX@localhost) with its own epmd on
    ``epmd_port``, AMQP on 127.0.0.1:``port``, data in the temp dir (kept across stop/start), the
    management plugin off.  ``user``/``password`` may use ``vhost`` (and any vhost from add_vhost)."""

    name = "rabbitmq"

    def __init__(self):
        super().__init__()
        self.host = HOST
        self.port = self.dist_port = self.epmd_port = None
        self.nodename = f"rabbit-gxctl-{uuid.uuid4().hex[:8]}@localhost"
        self.vhost = "galaxy"
        self.user = "galaxy"
        self.password = secrets.token_hex(12)
        self.epmd = None  # our epmd's Popen
        self.system_user = None  # the rabbitmq pwd entry
        self.first_start = True  # then the user and vhost are made

    def ports(self):
        return [self.port, self.dist_port, self.epmd_port]

    def url(self, vhost=None, scheme="pyamqp"):
        """``pyamqp://user:password@127.0.0.1:PORT/vhost`` (celery's/kombu's form; ``vhost`` by default)."""
        vhost = self.vhost if vhost is None else vhost
        user, password = (urllib.parse.quote(value, safe="") for value in (self.user, self.password))
        return f"{scheme}://{user}:{password}@{self.host}:{self.port}/{urllib.parse.quote(vhost, safe='')}"

    @property
    def amqp_url(self):
        """``amqp://…`` to the default vhost."""
        return self.url(scheme="amqp")

    @property
    def log(self):
        return os.path.join(self.base, "rabbitmq-server.out")

    def env(self):
        home = os.path.join(self.base, "home")
        return dict(
            BASE_ENV,
            HOME=home,  # its .erlang.cookie, shared by the node and rabbitmqctl
            ERL_EPMD_PORT=str(self.epmd_port),
            ERL_EPMD_ADDRESS=self.host,
            RABBITMQ_NODENAME=self.nodename,
            RABBITMQ_NODE_IP_ADDRESS=self.host,
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=os.path.join(self.base, "mnesia"),
            RABBITMQ_LOG_BASE=os.path.join(self.base, "log"),
            RABBITMQ_PID_FILE=os.path.join(self.base, "rabbitmq.pid"),
            RABBITMQ_CONF_ENV_FILE=os.path.join(self.base, "rabbitmq-env.conf"),  # not /etc/rabbitmq's
            RABBITMQ_CONFIG_FILE=os.path.join(self.base, "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=os.path.join(self.base, "advanced.config"),
            RABBITMQ_ENABLED_PLUGINS_FILE=os.path.join(self.base, "enabled_plugins"),
            # the node's distribution on loopback only
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )

    def rabbitmqctl(self, *args, check=True, timeout=COMMAND_TIMEOUT):
        """``rabbitmqctl -n NODE ARGS`` as the rabbitmq user, with the node's env (epmd port, cookie)."""
        env = self.env()
        cli_port = str(free_port())  # rabbitmqctl's own distribution port (by default a fixed 35672-35682)
        env.update(RABBITMQ_CTL_DIST_PORT_MIN=cli_port, RABBITMQ_CTL_DIST_PORT_MAX=cli_port)
        result = subprocess.run(
            [f"{RABBITMQ_BIN}/rabbitmqctl", "-q", "-n", self.nodename, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=self.base,
            stdin=subprocess.DEVNULL,
            user=self.system_user.pw_uid,
            group=self.system_user.pw_gid,
            extra_groups=[],
        )
        if check and result.returncode != 0:
            raise ServerError(
                f"rabbitmqctl {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
            )
        return result.stdout

    def add_vhost(self, vhost):
        """A new vhost that ``user`` may use fully."""
        self.rabbitmqctl("add_vhost", vhost)
        self.rabbitmqctl("set_permissions", "-p", vhost, self.user, ".*", ".*", ".*")

    def setup(self):
        require([f"{RABBITMQ_BIN}/rabbitmq-server", f"{RABBITMQ_BIN}/rabbitmqctl", EPMD], "rabbitmq-server")
        require_root("RabbitMQServer")
        try:
            self.system_user = pwd.getpwnam("rabbitmq")
        except KeyError:
            raise ServerError("no user rabbitmq: install the Debian package rabbitmq-server (.ci/run does)") from None
        self.make_base(owner=self.system_user)
        self.port, self.dist_port, self.epmd_port = free_port(), free_port(), free_port()
        uid, gid = self.system_user.pw_uid, self.system_user.pw_gid
        for name in ("home", "mnesia", "log"):
            os.mkdir(os.path.join(self.base, name), 0o700)
            os.chown(os.path.join(self.base, name), uid, gid)
        files = {
            "home/.erlang.cookie": ("".join(secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(20)), 0o400),
            "rabbitmq-env.conf": ("", 0o644),
            "rabbitmq.conf": ("# tests/servers.py: the environment sets the ports, dirs and node name\n", 0o644),
            "enabled_plugins": ("[].\n", 0o644),  # no management plugin (nor any other)
        }
        for name, (text, mode) in files.items():
            path = os.path.join(self.base, name)
            with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "w") as handle:
                handle.write(text)
            os.chown(path, uid, gid)

    def epmd_names(self):
        """The node names registered with our epmd (its NAMES request), or None if it does not answer."""
        try:
            with socket.create_connection((self.host, self.epmd_port), timeout=2) as sock:
                sock.sendall(b"\x00\x01n")
                data = b""
                while True:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    data += chunk
        except OSError:
            return None
        return [line.split()[1] for line in data[4:].decode(errors="replace").splitlines() if line.startswith("name ")]

    def _start(self):
        if self.running():
            return
        env = self.env()
        # our own epmd, a child like the node (the node would otherwise start a detached one)
        with open(os.path.join(self.base, "epmd.out"), "ab") as handle:
            self.epmd = subprocess.Popen(
                [EPMD, "-port", str(self.epmd_port)],
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                cwd=self.base,
                env=env,
                start_new_session=True,
                user=self.system_user.pw_uid,
                group=self.system_user.pw_gid,
                extra_groups=[],
            )
        self.add_pids([self.epmd.pid])
        wait_until(lambda: self.epmd_names() is not None, 30, "epmd start", self.epmd)
        self.spawn([f"{RABBITMQ_BIN}/rabbitmq-server"], self.log, user=self.system_user, env=env)
        short = self.nodename.split("@")[0]
        wait_until(
            lambda: short in (self.epmd_names() or ()), START_TIMEOUT, "RabbitMQ node start", self.process, self.log
        )
        self.rabbitmqctl("await_startup", "--timeout", str(START_TIMEOUT), timeout=START_TIMEOUT + 30)
        # another epmd on our port (the node's own -daemon attempt, had ours lost the race): ours to end
        self.add_pids(listening_pids(self.epmd_port))
        if self.first_start:
            self.first_start = False
            self.rabbitmqctl("add_user", self.user, self.password)
            self.add_vhost(self.vhost)

    def _stop(self):
        if self.running():
            self.remember()
            # SIGTERM to the script, which passes it to the VM (a graceful init:stop(), as `rabbitmqctl
            # stop` without starting the CLI) and waits for it: the node stops with its data kept
            terminate([self.process.pid])
        self.kill_child()  # whatever is left by PID, our epmd included
        if self.epmd is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.epmd.wait(timeout=10)
            self.epmd = None


class RedisServer(Server):
    """Redis 7 on 127.0.0.1:``port``, no persistence, data dir in the temp dir."""

    name = "redis"

    def __init__(self):
        super().__init__()
        self.host = HOST
        self.port = None

    def ports(self):
        return [self.port]

    def url(self, db=0):
        """``redis://127.0.0.1:PORT/db``."""
        return f"redis://{self.host}:{self.port}/{db}"

    @property
    def log(self):
        return os.path.join(self.base, "redis.log")

    def command(self, *args):
        """One command over RESP; the raw first reply line (``+PONG``, ``$3``, ...)."""
        payload = f"*{len(args)}\r\n" + "".join(f"${len(str(a).encode())}\r\n{a}\r\n" for a in args)
        with socket.create_connection((self.host, self.port), timeout=5) as sock:
            sock.sendall(payload.encode())
            data = b""
            while not data.endswith(b"\r\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        return data.decode(errors="replace").split("\r\n")[0]

    def ping(self):
        try:
            return self.command("PING") == "+PONG"
        except OSError:
            return False

    def setup(self):
        require([REDIS_SERVER], "redis-server")
        self.make_base()
        self.port = free_port()

    def _start(self):
        if self.running():
            return
        argv = [REDIS_SERVER, "--port", str(self.port), "--bind", self.host, "--dir", self.base]
        argv += ["--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", ""]
        self.spawn(argv, self.log)
        wait_until(self.ping, START_TIMEOUT, "Redis start", self.process, self.log)

    def _stop(self):
        self.kill_child()  # SIGTERM: redis shuts down cleanly (nothing to save)
