"""The throwaway PostgreSQL, RabbitMQ and Redis of tests/servers.py: each answers, PostgreSQL and
RabbitMQ stop and start again with their data kept, and every process a server ran (RabbitMQ's epmd
included) has ended, by PID, when it is closed.  ``-m "not servers"`` skips them."""

import os
import pwd
import subprocess

import kombu
import pytest
import servers

pytestmark = [pytest.mark.servers, pytest.mark.xdist_group("servers")]

PSQL = f"{servers.PG_BIN}/psql"


def psql_tcp(url, sql, check=True):
    """``sql`` through psql over TCP with the URL's user and password (scram-sha-256)."""
    result = subprocess.run(
        [PSQL, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(servers.BASE_ENV, PGCONNECT_TIMEOUT="10"),
        stdin=subprocess.DEVNULL,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_postgres_answers_with_a_password(postgres_server):
    url = postgres_server.create_database("gxt_answers", "gxt_answers", "pass 'word\"")
    assert url == f"postgresql://gxt_answers:pass%20%27word%22@127.0.0.1:{postgres_server.port}/gxt_answers"
    assert psql_tcp(url, "SELECT current_user, current_database()").stdout.strip() == "gxt_answers|gxt_answers"
    wrong = postgres_server.url("gxt_answers", "gxt_answers", "wrong")
    result = psql_tcp(wrong, "SELECT 1", check=False)
    assert result.returncode != 0 and "password authentication failed" in result.stderr
    assert (
        postgres_server.psql("SELECT setting FROM pg_settings WHERE name = 'listen_addresses'").strip() == "127.0.0.1"
    )


def test_postgres_stop_and_start_keep_the_data(postgres_server):
    url = postgres_server.create_database("gxt_restart", "gxt_restart", "secret")
    psql_tcp(url, "CREATE TABLE kept (value text); INSERT INTO kept VALUES ('before the stop')")
    try:
        postgres_server.stop()
        assert postgres_server.pids() == []
        assert not servers.port_open(postgres_server.port)
        assert psql_tcp(url, "SELECT 1", check=False).returncode != 0
    finally:
        postgres_server.start()
    assert psql_tcp(url, "SELECT value FROM kept").stdout.strip() == "before the stop"


def amqp_get(connection, queue, timeout=10):
    with connection.SimpleQueue(queue) as simple:
        message = simple.get(block=True, timeout=timeout)
        message.ack()
        return message.payload


def test_rabbitmq_publish_and_get(rabbitmq_server):
    assert rabbitmq_server.url() == (
        f"pyamqp://galaxy:{rabbitmq_server.password}@127.0.0.1:{rabbitmq_server.port}/galaxy"
    )
    assert rabbitmq_server.amqp_url.startswith("amqp://galaxy:")
    rabbitmq_server.add_vhost("gxt/other")
    for vhost in (None, "gxt/other"):
        with kombu.Connection(rabbitmq_server.url(vhost), connect_timeout=10) as connection:
            with connection.SimpleQueue("gxt-smoke") as simple:
                simple.put({"vhost": vhost})
            assert amqp_get(connection, "gxt-smoke") == {"vhost": vhost}
    refused = rabbitmq_server.url().replace(rabbitmq_server.password, "wrong")
    with pytest.raises(Exception, match="ACCESS_REFUSED|Login was refused"):
        with kombu.Connection(refused, connect_timeout=10) as connection:
            connection.connect()


def test_rabbitmq_stop_and_start_keep_a_durable_queue_and_close_ends_all():
    """On a server of its own (a second RabbitMQ start would cost as much): stop/start keep the
    data, and closing ends every process, our epmd included."""
    with servers.RabbitMQServer() as server:
        processes = server_processes(server)
        assert any(servers.procfs.cmdline(pid)[:1] == [servers.EPMD] for pid in processes), "our own epmd"
        queue = kombu.Queue("gxt-kept", kombu.Exchange("gxt-kept", "direct", durable=True), "gxt-kept", durable=True)
        with kombu.Connection(server.url(), connect_timeout=10) as connection:
            connection.Producer().publish(
                {"kept": True}, exchange=queue.exchange, routing_key="gxt-kept", declare=[queue], delivery_mode=2
            )
        server.stop()
        assert server.pids() == []
        assert_ended(processes)
        assert not any(servers.port_open(port) for port in server.ports())
        server.start()
        processes = server_processes(server)
        with kombu.Connection(server.url(), connect_timeout=10) as connection:
            assert amqp_get(connection, "gxt-kept") == {"kept": True}
    assert_closed(server, processes)


def test_redis_answers(redis_server):
    assert redis_server.url() == f"redis://127.0.0.1:{redis_server.port}/0"
    assert redis_server.url(db=2).endswith("/2")
    result = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(redis_server.port), "ping"],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert result.stdout.strip() == "PONG", result.stderr
    assert redis_server.command("SET", "gxt", "value") == "+OK"
    assert redis_server.command("GET", "gxt") == "$5"


def server_processes(server):
    """From /proc, beside the server's own bookkeeping: its child, the child's descendants, and
    whatever listens on its ports."""
    pids = {server.process.pid, *servers.procfs.descendants(server.process.pid)}
    for port in server.ports():
        pids |= servers.listening_pids(port)
    return {pid: servers.start_ticks(pid) for pid in pids}


def assert_ended(processes):
    left = [pid for pid, ticks in processes.items() if servers.procfs.alive(pid) and servers.start_ticks(pid) == ticks]
    assert left == [], [servers.procfs.cmdline(pid) for pid in left]


def assert_closed(server, processes):
    assert_ended(processes)
    assert not any(servers.port_open(port) for port in server.ports())
    assert not os.path.exists(server.base)


@pytest.mark.parametrize("kind", ["PostgresServer", "RedisServer"])
def test_closing_ends_every_process_by_pid(kind):
    """What the session fixtures do at the end (tests/conftest.py: ``with`` the server)."""
    with getattr(servers, kind)() as server:
        processes = server_processes(server)
    assert_closed(server, processes)
    if kind == "PostgresServer":
        with pytest.raises(KeyError):
            pwd.getpwnam(server.user.pw_name)
