"""galaxy-quickstart --production: PostgreSQL, RabbitMQ and Redis from the distribution, for Galaxy.

As root on Debian or Ubuntu: the packages are installed with apt-get when missing and started (by
systemd when it is PID 1, else by their init scripts), each listening on loopback only; Galaxy gets a
database and role, and a RabbitMQ vhost and user, with generated passwords kept in a root-only file
beside the config.  Running it again reuses all of it (the same passwords).
"""

import os
import secrets
import shutil
import subprocess
import time

PACKAGES = {"postgresql": "pg_ctlcluster", "rabbitmq-server": "rabbitmqctl", "redis-server": "redis-server"}
SERVICES = ("postgresql", "rabbitmq-server", "redis-server")
SECRETS_FILE = "servers.secret"  # in DIR/config, root's, mode 0600
NAME = "galaxy"  # the database, its role, the vhost and its user
RABBITMQ_ENV = "/etc/rabbitmq/rabbitmq-env.conf"
RABBITMQ_MARK = "# galaxy-quickstart: RabbitMQ on loopback only"
RABBITMQ_LOOPBACK = (
    f"{RABBITMQ_MARK}\n"
    "NODENAME=rabbit@localhost\n"
    "NODE_IP_ADDRESS=127.0.0.1\n"
    "ERL_EPMD_ADDRESS=127.0.0.1\n"
    'SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"\n'
)
EPMD_PORT = 4369
EPMD_SOCKET_DROPIN = "/etc/systemd/system/epmd.socket.d/galaxy-quickstart.conf"
PORTS = {5432: "PostgreSQL", 5672: "RabbitMQ", 25672: "RabbitMQ's distribution", EPMD_PORT: "epmd", 6379: "Redis"}
READY_TIMEOUT = 120


class ServerError(Exception):
    """A server could not be set up: one line for the user."""


def provision(config_dir, say):
    """Servers ready for Galaxy; returns ``{"database": URL, "amqp": URL, "redis": URL}``."""
    if os.geteuid() != 0:
        raise ServerError("--production sets up PostgreSQL, RabbitMQ and Redis: run it as root")
    if not shutil.which("apt-get"):
        raise ServerError("--production needs Debian or Ubuntu (apt-get); set the servers up yourself otherwise")
    _install_missing(say)
    passwords = _passwords(os.path.join(config_dir, SECRETS_FILE), say)
    _rabbitmq_on_loopback(say)
    _start_services(say)
    _postgres_database(passwords["postgresql"], say)
    _rabbitmq_vhost(passwords["rabbitmq"], say)
    wide = wide_listeners()
    if wide:
        raise ServerError(f"listening beyond loopback: {', '.join(wide)}; bind it to 127.0.0.1 and run again")
    return {
        "database": f"postgresql://{NAME}:{passwords['postgresql']}@127.0.0.1:5432/{NAME}",
        "amqp": f"pyamqp://{NAME}:{passwords['rabbitmq']}@127.0.0.1:5672/{NAME}",
        "redis": "redis://127.0.0.1:6379/0",
    }


def _run(argv, what, input=None, timeout=300):
    result = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        last = (result.stderr or result.stdout).strip().splitlines()
        raise ServerError(f"{what} failed: {last[-1] if last else 'exit ' + str(result.returncode)}")
    return result.stdout


def _install_missing(say):
    missing = [package for package, tool in PACKAGES.items() if not shutil.which(tool)]
    if not missing:
        return
    say(f"installing {', '.join(missing)} from the distribution")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *missing]):
        result = subprocess.run(argv, capture_output=True, text=True, timeout=1800, env=env, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise ServerError(f"{' '.join(argv)} failed: {(result.stderr.strip().splitlines() or ['?'])[-1]}")


def _passwords(path, say):
    """The generated passwords: read back when the file exists, else made and written, root-only."""
    found = {}
    if os.path.exists(path):
        info = os.lstat(path)
        if info.st_uid != 0 or info.st_mode & 0o077 or not os.path.isfile(path) or os.path.islink(path):
            raise ServerError(f"{path} must be a file of root's that only root can read (chmod 600)")
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                key, sep, value = line.strip().partition("=")
                if sep and not key.startswith("#"):
                    found[key] = value
    if all(found.get(key) for key in ("postgresql", "rabbitmq")):
        return found
    found = {key: found.get(key) or secrets.token_urlsafe(24) for key in ("postgresql", "rabbitmq")}
    text = "# galaxy-quickstart: passwords of Galaxy's PostgreSQL role and RabbitMQ user\n" + "".join(
        f"{key}={value}\n" for key, value in found.items()
    )
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(path + ".tmp", path)
    say(f"generated passwords for PostgreSQL and RabbitMQ in {path} (root only)")
    return found


def _rabbitmq_on_loopback(say):
    """RabbitMQ listens on every interface by default: bind it (and epmd) to 127.0.0.1.

    epmd outlives RabbitMQ, and one may already listen everywhere: started by the package's own start,
    by systemd's ``epmd.socket`` (Debian's listens on every interface), or by any ``rabbitmqctl`` run
    before the binding.  It is replaced then (RabbitMQ stopped around it), or RabbitMQ would keep
    registering with it."""
    text = ""
    if os.path.exists(RABBITMQ_ENV):
        with open(RABBITMQ_ENV, encoding="utf-8") as handle:
            text = handle.read()
    newly_bound = RABBITMQ_MARK not in text
    if newly_bound:
        with open(RABBITMQ_ENV, "a", encoding="utf-8") as handle:
            handle.write(("\n" if text and not text.endswith("\n") else "") + RABBITMQ_LOOPBACK)
        say(f"RabbitMQ bound to 127.0.0.1 ({RABBITMQ_ENV})")
    epmd_wide = EPMD_PORT in _wide_ports() or (systemd_is_init() and not os.path.exists(EPMD_SOCKET_DROPIN))
    if not (newly_bound or epmd_wide):
        return
    running = _is_running("rabbitmq-server")
    if running:
        _service("rabbitmq-server", "stop")
    if epmd_wide:
        _epmd_on_loopback(say)
    if running:
        _service("rabbitmq-server", "start")


def _epmd_on_loopback(say):
    """Under systemd, a drop-in gives ``epmd.socket`` a loopback address; else the running epmd is
    asked to exit (``epmd -kill``: it refuses while a node is registered), so that the next one,
    started by RabbitMQ with ERL_EPMD_ADDRESS, listens on 127.0.0.1."""
    if systemd_is_init():
        os.makedirs(os.path.dirname(EPMD_SOCKET_DROPIN), exist_ok=True)
        with open(EPMD_SOCKET_DROPIN, "w", encoding="utf-8") as handle:
            handle.write(
                f"# galaxy-quickstart: epmd on loopback only\n[Socket]\nListenStream=\nListenStream=127.0.0.1:{EPMD_PORT}\n"
            )
        _run(["systemctl", "daemon-reload"], "systemctl daemon-reload")
        _run(["systemctl", "stop", "epmd.service", "epmd.socket"], "systemctl stop epmd")
        _run(["systemctl", "start", "epmd.socket"], "systemctl start epmd.socket")
    elif EPMD_PORT in _wide_ports():
        _run(["epmd", "-kill"], "epmd -kill")
    say(f"epmd bound to 127.0.0.1 (port {EPMD_PORT})")


def systemd_is_init():
    """Is systemd PID 1 (then Galaxy's services, and these servers, are systemd units)?"""
    try:
        with open("/proc/1/comm", encoding="utf-8") as handle:
            return handle.read().strip() == "systemd"
    except OSError:
        return False


def _service(name, action):
    if systemd_is_init():
        argv = ["systemctl", action, name] if action != "start" else ["systemctl", "enable", "--now", name]
    elif name == "postgresql":
        argv = ["pg_ctlcluster", _pg_version(), "main", action]
    else:
        argv = [f"/etc/init.d/{name}", action]
    _run(argv, f"{name} {action}", timeout=READY_TIMEOUT)


def _pg_version():
    versions = sorted(os.listdir("/etc/postgresql"), key=lambda v: [int(p) for p in v.split(".") if p.isdigit()])
    if not versions:
        raise ServerError("no PostgreSQL cluster in /etc/postgresql (pg_createcluster VERSION main)")
    return versions[-1]


def _is_running(name):
    probes = {
        "postgresql": ["runuser", "-u", "postgres", "--", "psql", "-Atqc", "SELECT 1"],
        "rabbitmq-server": ["rabbitmqctl", "-q", "status"],
        "redis-server": ["redis-cli", "-h", "127.0.0.1", "ping"],
    }
    try:
        return subprocess.run(probes[name], capture_output=True, timeout=60, cwd="/").returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _start_services(say):
    for name in SERVICES:
        if _is_running(name):
            continue
        say(f"starting {name}")
        _service(name, "start")
        deadline = time.monotonic() + READY_TIMEOUT
        while not _is_running(name):
            if time.monotonic() > deadline:
                raise ServerError(f"{name} did not answer within {READY_TIMEOUT}s after its start")
            time.sleep(1)


def _psql(sql):
    return _run(["runuser", "-u", "postgres", "--", "psql", "-Atq", "-v", "ON_ERROR_STOP=1", "-c", sql], "psql")


def _postgres_database(password, say):
    """Role and database ``galaxy`` (the password is URL- and SQL-safe: token_urlsafe)."""
    if _psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{NAME}'").strip():
        _psql(f"ALTER ROLE {NAME} WITH LOGIN PASSWORD '{password}'")
    else:
        _psql(f"CREATE ROLE {NAME} WITH LOGIN PASSWORD '{password}'")
        say(f"created the PostgreSQL role {NAME}")
    if not _psql(f"SELECT 1 FROM pg_database WHERE datname = '{NAME}'").strip():
        _psql(f"CREATE DATABASE {NAME} OWNER {NAME}")
        say(f"created the PostgreSQL database {NAME}")


def _rabbitmq_vhost(password, say):
    """Vhost and user ``galaxy`` with full rights on it; the password goes on stdin, not argv."""
    vhosts = _run(["rabbitmqctl", "-q", "list_vhosts"], "rabbitmqctl list_vhosts").split()
    if NAME not in vhosts:
        _run(["rabbitmqctl", "-q", "add_vhost", NAME], "rabbitmqctl add_vhost")
        say(f"created the RabbitMQ vhost {NAME}")
    users = [line.split()[0] for line in _run(["rabbitmqctl", "-q", "list_users"], "list_users").splitlines() if line]
    verb = "change_password" if NAME in users else "add_user"
    _run(["rabbitmqctl", "-q", verb, NAME], f"rabbitmqctl {verb}", input=password + "\n")
    _run(["rabbitmqctl", "-q", "set_permissions", "-p", NAME, NAME, ".*", ".*", ".*"], "set_permissions")


def wide_listeners(ports=PORTS):
    """The servers' ports that listen on an address other than loopback (from /proc/net/tcp*)."""
    return [f"{ports[port]} (port {port})" for port in sorted(_wide_ports(ports))]


def _wide_ports(ports=PORTS):
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as handle:
                rows = handle.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            address, _, port = fields[1].rpartition(":")
            if fields[3] != "0A" or int(port, 16) not in ports:
                continue
            ipv4 = address[-8:] if len(address) == 8 or address.startswith("0000000000000000FFFF0000") else None
            loopback = address == "00000000000000000000000001000000" or (ipv4 or "").endswith("7F")
            if not loopback:
                found.add(int(port, 16))
    return found
