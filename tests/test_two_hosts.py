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
the machine's systemd; its state dir is root's default there, each machine's own.  The Galaxy user
has the same uid on both.

One Galaxy start serves every step of ``test_one_galaxy_over_two_hosts`` (a start costs a minute):
host A runs the web server and a handler, host B a handler, celery and the beat (gravity.hosts);
jobs from A's API run on both handlers; a config giving both hosts one server name is refused;
``check --cluster`` is OK, then CRITICAL naming B's handler once it is SIGSTOPped, and a roll
stops at A's gate; then examples/ansible/rolling-graceful.yml rolls both hosts while jobs come in.
Ansible reaches the machines through tests/ansible_plugins (nsenter), not SSH.

Marked ``e2e``, ``systemd`` and ``servers``; an xdist group of its own ("twohost"), so the other
worker runs it beside the real-Galaxy group.  Every machine is powered off at the end, whatever
happened (tests/nspawn.py), after galaxyctl shutdown on each.
"""

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

import galaxy_api
import nspawn
import pytest
import yaml
from conftest import REPO, free_port, wait_for
from test_e2e_galaxy import (  # noqa: F401 - galaxy_venv: the shared session fixture (the Galaxy venv)
    JOB_TIMEOUT,
    SETTLE_TIMEOUT,
    START_TIMEOUT,
    galaxy_venv,
    quickstart,
)
from test_e2e_production import postgres_reader, production_venv  # noqa: F401 - that venv with psycopg2, redis

# a group of its own: the other worker runs it beside the real-Galaxy group (README: the test command)
pytestmark = [pytest.mark.e2e, pytest.mark.systemd, pytest.mark.servers, pytest.mark.xdist_group("twohost")]

GALAXYCTL = nspawn.GALAXYCTL
GALAXY_UID = 4242  # the Galaxy user on both machines (free in the rootfs: its system users are < 1000)
HOSTS = ("gxhost-a", "gxhost-b")
PLAYBOOK = os.path.join(REPO, "examples", "ansible", "rolling-graceful.yml")
SILENT_AFTER = 90  # check --cluster --heartbeat-age in the SIGSTOP step (Galaxy beats every 60 s)
JOB_EVERY = 40  # seconds between two jobs during the roll (each is seconds of CPU on 2 shared cores)
ROLL_TIMEOUT = 1500  # the whole playbook, bounded
MAX_UNREAD = 10  # seconds: the longest the roll may go without a read of the heartbeats (a read takes ~0.1 s)


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

    def __init__(self, machine, hostname, cluster):
        self.machine, self.hostname, self.cluster = machine, hostname, cluster
        self.config = cluster.config

    def galaxyctl(self, *args, check=True, timeout=300):
        result = self.machine.run(GALAXYCTL, "-c", self.config, *args, check=check, timeout=timeout)
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
            if prefix:  # the Galaxy user must reach that interpreter (e.g. through /root)
                ancestors = [os.path.dirname(prefix)]
                while ancestors[-1] != "/":
                    ancestors.append(os.path.dirname(ancestors[-1]))
                machine.run("chmod", "o+x", *ancestors[:-1])
            machines.append(machine)
        yield machines


@pytest.fixture(scope="module")
def rootfs():
    """The machines' rootfs, or a skip saying why there can be none (before Galaxy's venv is built)."""
    try:
        nspawn.tools()
        return nspawn.rootfs()
    except nspawn.Unavailable as exc:
        nspawn.skip_or_fail(exc)


@pytest.fixture(scope="module")
def cluster(rootfs, production_venv, postgres_server, rabbitmq_server, redis_server):  # noqa: F811
    tmp = tempfile.mkdtemp(prefix="gx2hw")
    root = tempfile.mkdtemp(prefix="gx2h")  # the shared Galaxy tree: config root's, data the Galaxy user's
    os.chmod(root, 0o755)
    for sub in ("config", "data"):
        os.makedirs(os.path.join(root, sub))
    os.chown(os.path.join(root, "data"), GALAXY_UID, GALAXY_UID)
    name, servers = galaxy_api.site_servers(postgres_server, rabbitmq_server, redis_server)
    cluster = Cluster(root, production_venv, servers, name)
    cluster.tmp = tmp
    try:
        with _machines(tmp, production_venv, root) as machines:
            for hostname, machine in zip(HOSTS, machines):
                cluster.hosts[hostname] = Host(machine, hostname, cluster)
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


# ---------------------------------------------------------------- one Galaxy over both


def _write_config(cluster, port):
    """The quickstart's production galaxy.yml under systemd, shared by both hosts: A runs the web
    server and one handler, B one handler, celery and the beat; the handler entry both run gets a
    name per host ({name}_{hostname}_{process})."""
    text = galaxy_api.render_config(quickstart, cluster.root, port, "galaxy", cluster.venv, servers=cluster.servers)
    data = yaml.safe_load(text)
    gravity = data["gravity"]
    gravity.pop("log_dir", None)  # systemd: the journal
    gravity["process_manager"] = "systemd"
    # address: how the cluster check reaches a host's web server (the machines share this one's network)
    gravity["hosts"] = {
        HOSTS[0]: {"services": ["gunicorn"], "handlers": {"handler": 1}, "address": "127.0.0.1"},
        HOSTS[1]: {"services": ["celery"], "handlers": {"handler": 1}, "address": "127.0.0.1"},
    }
    gravity["beat_host"] = HOSTS[1]
    with open(cluster.config, "w") as handle:
        yaml.safe_dump(data, handle, sort_keys=False)
    return data


def _handler(hostname):
    return f"handler_{hostname}_0"


def _ready(cluster, database):
    """{server_name: hostname} of the handlers whose heartbeat row is there and whose process lives in
    its machine (the row's pid is the machine's); None when the database cannot be read."""
    rows = galaxy_api.query(database, "SELECT server_name, hostname, pid FROM worker_process", timeout=5)
    if rows is None:
        return None
    found = {}
    for server_name, hostname, pid in rows:
        host = cluster.hosts.get(hostname)
        if host and server_name == _handler(hostname) and pid and os.path.exists(host.machine.path(f"/proc/{pid}")):
            found[server_name] = hostname
    return found


def _units(host):
    listed = host.machine.run("systemctl", "list-units", "--plain", "--no-legend", "galaxy*").stdout
    return sorted(line.split()[0] for line in listed.splitlines() if line.strip())


def _jobs_on_both_hosts(jobs, database, rounds=4, burst=3):
    """Bursts of jobs until each host's handler has taken one (db-skip-locked: whichever polls first
    takes a job); every job ends ok.  → {handler: jobs taken}."""
    taken = {}
    for _ in range(rounds):
        for _ in range(burst):
            jobs.submit()
            time.sleep(1.5)
        assert jobs.errors == [], jobs.errors
        assert wait_for(jobs.all_finished, timeout=JOB_TIMEOUT, interval=2), jobs.states()
        rows = galaxy_api.job_rows(database)
        assert [row for row in rows if row[1] != "ok"] == [], rows
        taken = {name: sum(1 for row in rows if row[2] == name) for name in map(_handler, HOSTS)}
        if all(taken.values()):
            return taken
    raise AssertionError(f"the jobs went to one host only: {taken}")


def _same_server_name_refused(cluster, host):
    with open(cluster.config) as handle:
        data = yaml.safe_load(handle)
    data["gravity"]["handlers"]["handler"]["name_template"] = "{name}_{process}"
    clash = os.path.join(cluster.root, "config", "clash.yml")
    with open(clash, "w") as handle:
        yaml.safe_dump(data, handle, sort_keys=False)
    unit_dir = host.machine.path("/etc/systemd/system")
    units = sorted(os.listdir(unit_dir))
    refused = host.machine.run(GALAXYCTL, "--state-dir", "/var/lib/galaxyctl-clash", "-c", clash, "update", check=False)
    lines = (refused.stdout + refused.stderr).strip().splitlines()
    assert refused.returncode != 0 and len(lines) == 1, (refused.returncode, lines)
    assert "'handler_0'" in lines[0] and all(h in lines[0] for h in HOSTS), lines
    assert sorted(os.listdir(unit_dir)) == units


def _check_cluster(host, *args, timeout=180):
    """(rc, output) of ``check --cluster`` run on ``host``."""
    result = host.galaxyctl("check", "--cluster", "--timeout", "30", *args, check=False, timeout=timeout)
    return result.returncode, (result.stdout + result.stderr).strip()


def _cluster_ok(host):
    rc, out = _check_cluster(host)
    healthy = rc == 0 and "handlers_heartbeat=2;;;0;2" in out and "web_up=1;;;0;1" in out
    return out if healthy and "celery_beats=1" in out else None


def _main_pid(host, unit):
    return int(host.machine.run("systemctl", "show", "-P", "MainPID", unit).stdout.strip() or 0)


def _failed_gate_stops_the_roll(cluster, b, figures):
    """With B's handler silent, the playbook restarts A, its gate fails (one try) and the roll stops:
    B is never touched (its services keep their processes)."""
    units = ("galaxy-handler.service", "galaxy-celery.service", "galaxy-celery-beat.service")
    before = {unit: _main_pid(b, unit) for unit in units}
    result = _playbook(cluster, cluster.tmp, "-e", f"gate_retries=0 gate_heartbeat_age={SILENT_AFTER}")
    assert result.returncode != 0, result.stdout[-3000:]
    recap = result.stdout.rsplit("PLAY RECAP", 1)[1]
    assert re.search(rf"{HOSTS[0]}\s*:\s*ok=1\s+changed=1\s+unreachable=0\s+failed=1\s", recap), recap
    assert not re.search(rf"{HOSTS[1]}\s*:\s*ok=[1-9]", recap), recap
    assert f"handler {_handler(HOSTS[1])}: silent" in result.stdout, result.stdout[-3000:]
    assert {unit: _main_pid(b, unit) for unit in units} == before
    figures["failed_gate_recap"] = " ".join(recap.split())


def _silent_handler_is_critical(a, b, figures):
    """B's handler SIGSTOPped: once its heartbeat is older than the age given, ``check --cluster`` (on
    A, and on B) is CRITICAL naming B's handler, not A's, and a roll stops at its first gate; OK again
    once the handler is continued."""
    pid = _main_pid(b, "galaxy-handler.service")
    b.machine.run("kill", "-STOP", str(pid))
    stopped_at = time.monotonic()
    try:
        age = ("--heartbeat-age", str(SILENT_AFTER))

        def critical():
            rc, out = _check_cluster(a, *age)
            return out if rc == 2 and f"handler {_handler(HOSTS[1])}: silent" in out else None

        out = wait_for(critical, timeout=SILENT_AFTER + 60 + 60, interval=5)
        assert out, _check_cluster(a, *age)
        figures["silent_after_sigstop_s"] = round(time.monotonic() - stopped_at, 1)
        figures["check_cluster_silent"] = out
        assert f"handler {_handler(HOSTS[0])}: silent" not in out, out
        rc, seen_from_b = _check_cluster(b, *age)
        assert rc == 2 and f"handler {_handler(HOSTS[1])}: silent" in seen_from_b, seen_from_b
        _failed_gate_stops_the_roll(a.cluster, b, figures)
    finally:
        b.machine.run("kill", "-CONT", str(pid), check=False)
    assert wait_for(lambda: _cluster_ok(a), timeout=SETTLE_TIMEOUT, interval=3), _check_cluster(a)


class ClusterTraffic(galaxy_api.JobTraffic):
    """JobTraffic whose ready handlers are read per machine (a heartbeat row's pid is its machine's)."""

    def __init__(self, jobs, database, every, cluster):
        self.cluster = cluster
        super().__init__(jobs, database, every)

    def _ready(self):
        return _ready(self.cluster, self.database)


def _playbook(cluster, tmp, *extra):
    """Run examples/ansible/rolling-graceful.yml on both machines (connection: tests/ansible_plugins)."""
    inventory = os.path.join(tmp, "inventory.ini")
    with open(inventory, "w") as handle:
        handle.write("[galaxy]\n")
        for hostname, host in cluster.hosts.items():
            handle.write(
                f"{hostname} ansible_connection=nspawn_machine ansible_nspawn_leader={host.machine.leader}"
                " ansible_python_interpreter=/usr/bin/python3\n"
            )
    config = os.path.join(tmp, "ansible.cfg")  # none of the machine's or the user's
    with open(config, "w") as handle:
        handle.write("[defaults]\n")
    env = dict(
        os.environ,
        ANSIBLE_CONNECTION_PLUGINS=os.path.join(REPO, "tests", "ansible_plugins", "connection"),
        ANSIBLE_LOCAL_TEMP=os.path.join(tmp, "ansible-local"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        ANSIBLE_CONFIG=config,
    )
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", inventory, PLAYBOOK]
    argv += ["-e", f"galaxyctl={GALAXYCTL} galaxy_config={cluster.config} gate_delay=5 gate_retries=24", *extra]
    result = subprocess.run(
        argv, capture_output=True, text=True, env=env, timeout=ROLL_TIMEOUT, stdin=subprocess.DEVNULL
    )
    print(f"$ ansible-playbook ... → {result.returncode}\n{result.stdout}{result.stderr}")
    return result


def _rolling_under_jobs(cluster, database, jobs, tmp, figures):
    """The playbook rolls both hosts (graceful, then check --cluster as the gate) while a job is
    submitted every JOB_EVERY s: no job fails, a handler is ready at every moment, each host's handler
    was replaced, and the jobs went to both hosts' handlers."""
    a, b = (cluster.hosts[h] for h in HOSTS)
    before = {h: _main_pid(cluster.hosts[h], "galaxy-handler.service") for h in HOSTS}
    first_job = len(jobs.ids)
    jobs.submit()  # a job under way before the roll
    with ClusterTraffic(jobs, database, JOB_EVERY, cluster) as traffic:
        time.sleep(10)
        started = time.monotonic()
        result = _playbook(cluster, tmp)
        figures["roll_s"] = round(time.monotonic() - started, 1)
    jobs.submit()  # and one after it
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    recap = result.stdout.rsplit("PLAY RECAP", 1)[1]
    for hostname in HOSTS:
        assert re.search(rf"{hostname}\s*:\s*ok=3\s+changed=1\s+unreachable=0\s+failed=0\s", recap), recap
    after = {h: _main_pid(cluster.hosts[h], "galaxy-handler.service") for h in HOSTS}
    assert all(after[h] not in (0, before[h]) for h in HOSTS), (before, after)
    figures.update(traffic.figures())
    assert traffic.samples and figures["fewest_ready_handlers"] >= 1, [s for s in traffic.samples if not s[1]][:5]
    assert figures["longest_unread_s"] <= MAX_UNREAD, figures  # every moment, to within MAX_UNREAD seconds
    assert jobs.errors == [] and len(jobs.ids) - first_job >= 4, (jobs.errors, jobs.ids)
    figures["roll_jobs"] = len(jobs.ids) - first_job
    assert wait_for(jobs.all_finished, timeout=JOB_TIMEOUT, interval=2), jobs.states()
    outcome = galaxy_api.job_outcome(database)
    figures["jobs_ok"] = outcome["jobs_ok"]
    assert outcome["failed"] == [], outcome["failed"]
    rows = galaxy_api.job_rows(database)[first_job:]
    figures["roll_jobs_taken_by"] = {n: sum(1 for r in rows if r[2] == n) for n in map(_handler, HOSTS)}
    assert all(figures["roll_jobs_taken_by"].values()), figures["roll_jobs_taken_by"]
    assert _cluster_ok(a) and _cluster_ok(b), (_check_cluster(a), _check_cluster(b))


def test_one_galaxy_over_two_hosts(cluster, postgres_server):
    a, b = (cluster.hosts[h] for h in HOSTS)
    port = free_port()
    _write_config(cluster, port)
    database = postgres_reader(postgres_server, cluster.name)
    base = f"http://127.0.0.1:{port}"
    figures = {}
    try:
        # each host writes and starts its own share; A first (its web server creates the database)
        for host in (a, b):
            host.galaxyctl("update")
        assert "galaxy-gunicorn.service" in os.listdir(a.machine.path("/etc/systemd/system"))
        assert "galaxy-gunicorn.service" not in os.listdir(b.machine.path("/etc/systemd/system"))
        started = a.galaxyctl("start", "--timeout", str(START_TIMEOUT), timeout=START_TIMEOUT + 60)
        assert galaxy_api.version(base)[0] == 200, started.stdout + a.journal("galaxy-gunicorn.service")
        b.galaxyctl("start", "--timeout", str(START_TIMEOUT), timeout=START_TIMEOUT + 60)
        print("units:", {h.hostname: _units(h) for h in (a, b)})

        # both handlers heartbeat into PostgreSQL, each under its own host's name
        expected = {_handler(h): h for h in HOSTS}
        assert wait_for(lambda: _ready(cluster, database) == expected, timeout=SETTLE_TIMEOUT, interval=1), (
            galaxy_api.query(database, "SELECT server_name, hostname, pid FROM worker_process"),
            a.journal(f"galaxy-handler_{HOSTS[0]}@0.service"),
        )

        # jobs submitted through A's API are taken by the handlers of both hosts
        jobs = galaxy_api.Jobs(base)
        figures["jobs_taken_by"] = _jobs_on_both_hosts(jobs, database)

        # a config that gives both hosts one server name is refused at update, in one line (a state
        # dir of its own: nothing of the running Galaxy is touched either way)
        _same_server_name_refused(cluster, b)

        # the whole Galaxy at a glance, from either host: OK; then B's handler silent: CRITICAL, named
        for host in (a, b):
            out = wait_for(lambda: _cluster_ok(host), timeout=SETTLE_TIMEOUT, interval=3)
            assert out, _check_cluster(host)
        figures["check_cluster_ok"] = out
        times = []
        for _ in range(3):
            began = time.monotonic()
            assert _check_cluster(a)[0] == 0
            times.append(time.monotonic() - began)
        figures["check_cluster_s"] = round(sorted(times)[1], 2)  # the median of 3, run inside host A
        _silent_handler_is_critical(a, b, figures)

        # the playbook rolls both hosts while jobs come in
        _rolling_under_jobs(cluster, database, jobs, cluster.tmp, figures)
    finally:
        print("\ntwo-host figures:", figures)
        for host in (a, b):
            host.galaxyctl("shutdown", check=False)
