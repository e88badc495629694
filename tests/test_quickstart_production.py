"""galaxy-quickstart --production: the servers part (scripts/quickstart_servers.py) on the machine's
own PostgreSQL, RabbitMQ and Redis from Debian's packages, and the config it writes.

The provisioning test acts on the system's services, as the quickstart does: it starts those that
were not running, checks what it made (a database and role, a vhost and user, passwords in a
root-only file, every port on loopback), runs again (same passwords), and at the end stops what it
started and ends by PID whatever of theirs is left (epmd outlives RabbitMQ).
"""

import os
import socket
import subprocess
import sys
import urllib.parse

import galaxy_api
import pytest
import yaml
from conftest import ROOT_ONLY, alive, kill_pids, wait_for

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))
import quickstart_servers  # noqa: E402

quickstart = galaxy_api.load_quickstart()
SERVERS = {"database": "postgresql://galaxy:pw@127.0.0.1:5432/galaxy", "amqp": "pyamqp://g:pw@127.0.0.1:5672/galaxy"}
SERVERS["redis"] = "redis://127.0.0.1:6379/0"


def test_the_production_config_names_the_servers_and_skip_locked():
    data = yaml.safe_load(quickstart.render_config("/srv/galaxy", servers=SERVERS, process_manager="systemd"))
    galaxy, gravity = data["galaxy"], data["gravity"]
    assert galaxy["database_connection"] == SERVERS["database"]
    assert galaxy["amqp_internal_connection"] == SERVERS["amqp"] == galaxy["celery_conf"]["broker_url"]
    assert galaxy["celery_conf"]["result_backend"] == SERVERS["redis"]
    assert galaxy["job_config"]["handling"]["assign"] == ["db-skip-locked"]
    assert gravity["process_manager"] == "systemd" and "log_dir" not in gravity  # the journal
    default = yaml.safe_load(quickstart.render_config("/srv/galaxy"))
    assert default["galaxy"]["job_config"]["handling"]["assign"] == ["db-transaction-isolation"]
    assert default["galaxy"]["database_connection"].startswith("sqlite:///")


def test_wide_listeners_sees_a_port_open_beyond_loopback():
    for address, wide in (("127.0.0.1", False), ("0.0.0.0", True)):
        sock = socket.socket()
        try:
            sock.bind((address, 0))
            sock.listen(1)
            port = sock.getsockname()[1]
            found = quickstart_servers.wide_listeners({port: "test"})
            assert found == ([f"test (port {port})"] if wide else []), (address, found)
        finally:
            sock.close()


@ROOT_ONLY
def test_passwords_are_kept_root_only_and_reused(tmp_path):
    said = []
    first = quickstart_servers._passwords(str(tmp_path / "servers.secret"), said.append)
    assert os.stat(tmp_path / "servers.secret").st_mode & 0o777 == 0o600
    assert quickstart_servers._passwords(str(tmp_path / "servers.secret"), said.append) == first
    assert len(said) == 1 and all(len(value) >= 24 for value in first.values())
    os.chmod(tmp_path / "servers.secret", 0o644)
    with pytest.raises(quickstart_servers.ServerError, match="only root can read"):
        quickstart_servers._passwords(str(tmp_path / "servers.secret"), said.append)


def _listening_pids(ports):
    """PIDs listening on ``ports`` (lsof), to end what the test started by PID."""
    result = subprocess.run(
        ["lsof", "-t", "-nP", *[f"-iTCP:{port}" for port in ports], "-sTCP:LISTEN"], capture_output=True, text=True
    )
    return {int(pid) for pid in result.stdout.split()}


@pytest.mark.servers
@pytest.mark.xdist_group("servers")
@ROOT_ONLY
def test_provision_sets_up_the_systems_servers_on_loopback(tmp_path):
    if not all(quickstart_servers.shutil.which(tool) for tool in quickstart_servers.PACKAGES.values()):
        pytest.fail(".ci/run installs postgresql, rabbitmq-server and redis-server: they are missing")
    pids_before = _listening_pids(quickstart_servers.PORTS)  # first: asking rabbitmqctl starts an epmd
    running_before = {name for name in quickstart_servers.SERVICES if quickstart_servers._is_running(name)}
    try:
        # as on a fresh machine, where that question (or the package's start) leaves an epmd on every
        # interface before the binding: provision must replace it (it did not, and refused to go on)
        wide_env = {key: value for key, value in os.environ.items() if key != "ERL_EPMD_ADDRESS"}
        if not _listening_pids({quickstart_servers.EPMD_PORT: "epmd"}):
            subprocess.run(["epmd", "-daemon"], check=True, timeout=30, env=wide_env)
            assert wait_for(lambda: quickstart_servers.EPMD_PORT in quickstart_servers._wide_ports(), timeout=30)
        urls = quickstart_servers.provision(str(tmp_path), lambda line: None)
        again = quickstart_servers.provision(str(tmp_path), lambda line: None)
        assert again == urls  # the same passwords, nothing made twice
        assert quickstart_servers.wide_listeners() == []
        assert os.stat(tmp_path / quickstart_servers.SECRETS_FILE).st_mode & 0o777 == 0o600
        database = urllib.parse.urlparse(urls["database"])
        who = subprocess.run(
            ["psql", "-h", "127.0.0.1", "-U", "galaxy", "-d", "galaxy", "-Atc", "SELECT current_user"],
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(os.environ, PGPASSWORD=database.password),
        )
        assert who.stdout.strip() == "galaxy", who.stderr
        from kombu import Connection

        with Connection(urls["amqp"], connect_timeout=10) as connection:
            connection.connect()
            assert connection.connected
        with socket.create_connection(("127.0.0.1", 6379), timeout=10) as redis:
            redis.sendall(b"PING\r\n")
            assert redis.recv(64).startswith(b"+PONG")
    finally:
        for name in quickstart_servers.SERVICES:
            if name not in running_before and quickstart_servers._is_running(name):
                try:
                    quickstart_servers._service(name, "stop")
                except quickstart_servers.ServerError:
                    pass
        left = _listening_pids(quickstart_servers.PORTS) - pids_before
        kill_pids(sorted(left))  # epmd, which outlives RabbitMQ, and anything a stop left behind
        assert not [pid for pid in left if alive(pid)]
