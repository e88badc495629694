"""One Galaxy over two hosts (issue 25): two systemd-nspawn machines on this one, each with its own
host name, its own systemd and its own galaxyctl, one shared Galaxy tree.

The harness (``cluster``): PostgreSQL and RabbitMQ (and Redis for celery's results) are the
session's throwaway servers (tests/servers.py) on 127.0.0.1; the machines share the host's network
(no network namespace of their own: the servers listen on loopback only, and a port opened inside is
a port of this machine), so both reach them at 127.0.0.1.  Each machine gets, bound at the same
paths as here: Galaxy's venv read-only (the one tests/test_e2e_galaxy.py builds, with the production
drivers tests/test_e2e_production.py adds; and its base interpreter when that lives outside /usr),
and the Galaxy root (config, data) writable: NFS's stand-in, one galaxy.yml for both.  galaxyctl
runs inside each machine from this checkout's wheel (/opt/venv), as root with ``galaxy_user``, under
the machine's systemd; its state dir is the machine's own.  The Galaxy user has the same uid on both.

Marked ``e2e`` and ``systemd``; in the xdist group of the other real-Galaxy tests (one Galaxy at a
time on 2 cores).  Every machine is powered off at the end, whatever happened (tests/nspawn.py).
"""

import contextlib
import os
import secrets
import shutil
import tempfile
import uuid

import nspawn
import pytest
from conftest import REPO
from test_e2e_galaxy import galaxy_venv  # noqa: F401 - the shared session fixture (the Galaxy venv)
from test_e2e_production import production_venv  # noqa: F401 - that venv with psycopg2 and redis

pytestmark = [pytest.mark.e2e, pytest.mark.systemd, pytest.mark.servers, pytest.mark.xdist_group("galaxy")]

GALAXYCTL = nspawn.GALAXYCTL
STATE_DIR = "/var/lib/galaxyctl"  # each machine's own
GALAXY_UID = 4242  # the Galaxy user on both machines (free in the rootfs: its system users are < 1000)
HOSTS = ("gxhost-a", "gxhost-b")


def _base_prefix(venv):
    """The prefix of the interpreter ``venv`` was made from, when it is not the system's (a pyenv
    Python): the machines need it at the same path, else the venv's python links point nowhere."""
    with open(os.path.join(venv, "pyvenv.cfg")) as handle:
        config = {k.strip(): v.strip() for k, _, v in (line.partition("=") for line in handle) if v}
    home = os.path.realpath(config["home"])
    prefix = os.path.dirname(home)
    return None if prefix in ("/usr", "/") else prefix


class Host:
    """One machine of the cluster: its name (its host name too) and galaxyctl inside it."""

    def __init__(self, machine, hostname, config):
        self.machine, self.hostname, self.config = machine, hostname, config

    def galaxyctl(self, *args, check=True, timeout=300):
        result = self.machine.run(
            GALAXYCTL, "--state-dir", STATE_DIR, "-c", self.config, *args, check=check, timeout=timeout
        )
        print(f"[{self.hostname}] $ galaxyctl {' '.join(args)} → {result.returncode}\n{result.stdout}{result.stderr}")
        return result

    def as_galaxy(self, *argv, check=True, timeout=120):
        return self.machine.run("runuser", "-u", "galaxy", "--", *argv, check=check, timeout=timeout)

    def journal(self, unit, lines=60):
        return self.machine.run("journalctl", "-u", unit, "-n", str(lines), "--no-pager", check=False).stdout


class Cluster:
    """The servers' URLs, the shared Galaxy root and its config path, the Galaxy venv, the hosts."""

    def __init__(self, root, venv, servers, name):
        self.root, self.venv, self.servers, self.name = root, venv, servers, name
        self.config = os.path.join(root, "config", "galaxy.yml")
        self.hosts = {}


@contextlib.contextmanager
def _machines(tmp, venv, root):
    """Both machines booted, each with the Galaxy user; powered off at the end (nspawn.booted)."""
    wheel_dir = os.path.join(tmp, "wheels")
    os.mkdir(wheel_dir)
    nspawn.wheels(wheel_dir, REPO)
    binds = [(venv, venv)]
    prefix = _base_prefix(venv)
    if prefix:
        binds.append((prefix, prefix))
    suffix = uuid.uuid4().hex[:6]
    with contextlib.ExitStack() as stack:
        machines = []
        for hostname in HOSTS:
            machine = stack.enter_context(
                nspawn.booted(
                    f"{hostname}-{suffix}",
                    os.path.join(tmp, f"{hostname}.log"),
                    binds=binds,
                    rw_binds=[(root, root)],
                    venv_packages=("galaxyctl",),
                    wheel_dir=wheel_dir,
                    hostname=hostname,
                )
            )
            machine.run("groupadd", "--system", "--gid", str(GALAXY_UID), "galaxy")
            machine.run(
                "useradd",
                "--system",
                "--uid",
                str(GALAXY_UID),
                "--gid",
                "galaxy",
                "--home-dir",
                "/nonexistent",
                "galaxy",
            )
            machines.append(machine)
        yield machines


@pytest.fixture(scope="module")
def cluster(production_venv, postgres_server, rabbitmq_server, redis_server):  # noqa: F811
    try:
        nspawn.tools()
        nspawn.rootfs()
    except nspawn.Unavailable as exc:
        pytest.skip(str(exc))
    tmp = tempfile.mkdtemp(prefix="gx2hw")
    root = tempfile.mkdtemp(prefix="gx2h")  # the shared Galaxy tree: config root's, data the Galaxy user's
    os.chmod(root, 0o755)
    for sub in ("config", "data"):
        os.makedirs(os.path.join(root, sub))
    os.chown(os.path.join(root, "data"), GALAXY_UID, GALAXY_UID)
    name = "galaxy_" + uuid.uuid4().hex[:8]
    servers = {
        "database": postgres_server.create_database(name, name, secrets.token_hex(12)),
        "amqp": rabbitmq_server.url(name),
        "redis": redis_server.url(1),
    }
    rabbitmq_server.add_vhost(name)
    cluster = Cluster(root, production_venv, servers, name)
    try:
        with _machines(tmp, production_venv, root) as machines:
            for hostname, machine in zip(HOSTS, machines):
                cluster.hosts[hostname] = Host(machine, hostname, cluster.config)
            yield cluster
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- the harness


REACH = (
    "import socket, sys, kombu, psycopg2\n"
    "conn = psycopg2.connect(sys.argv[1]); cur = conn.cursor(); cur.execute('SELECT 1'); assert cur.fetchone() == (1,)\n"
    "with kombu.Connection(sys.argv[2].replace('pyamqp://', 'amqp://'), connect_timeout=10) as amqp: amqp.connect()\n"
    "print(socket.gethostname())\n"
)


def test_two_machines_share_one_galaxy_tree_and_the_servers(cluster):
    """Each machine has its own host name (not this machine's), runs the bound Galaxy venv as the
    Galaxy user, writes into the shared tree what the other reads, reaches PostgreSQL and RabbitMQ
    on 127.0.0.1, and runs this checkout's galaxyctl."""
    python = os.path.join(cluster.venv, "bin", "python")
    names = set()
    for hostname, host in cluster.hosts.items():
        reached = host.as_galaxy(python, "-c", REACH, cluster.servers["database"], cluster.servers["amqp"])
        assert reached.stdout.strip() == hostname, reached.stdout + reached.stderr
        names.add(host.machine.run("hostname").stdout.strip())
        host.as_galaxy("sh", "-c", f"echo {hostname} > {cluster.root}/data/written-by-{hostname}")
        version = host.machine.run(GALAXYCTL, "--version").stdout
        assert version.strip(), version
    assert names == set(HOSTS) and os.uname().nodename not in names, names
    for hostname, host in cluster.hosts.items():
        for other in HOSTS:
            seen = host.machine.run("cat", f"{cluster.root}/data/written-by-{other}").stdout.strip()
            assert seen == other, (hostname, other, seen)
        assert os.stat(f"{cluster.root}/data/written-by-{hostname}").st_uid == GALAXY_UID
