"""What status, check and start cost does not grow per service (issue 26): counted, not timed.

The stand-in Galaxy runs under a real supervisord with a dynamic handler of N processes (each
execs ``sleep``, as in bench/scale.py) and heartbeat rows for all of them in its SQLite database.
``status``, ``check`` and ``start`` run in this process with the library's own functions wrapped
to count: XML-RPC calls to supervisord (``rpc.call``), passes over /proc (``os.listdir('/proc')``),
heartbeat queries (``heartbeat.read``) and replies read by rpc's fast path.  N = 5 and N = 40 must
give the same counts: a scan or a round trip per service would make them differ.
"""

import os

import yaml
from conftest import STAND_IN_START_TIMEOUT

from galaxyctl_libs.actions import checks, lifecycle, monitoring
from galaxyctl_libs.backends.supervisor import rpc
from galaxyctl_libs.demo import write_heartbeats, write_sleeping_handlers
from galaxyctl_libs.probes import heartbeat, procfs


class Counts:
    """Calls counted while ``counting`` is on: {what: number}."""

    def __init__(self, monkeypatch):
        self.seen = {}
        real_call, real_listdir, real_read, real_fast = rpc.call, os.listdir, heartbeat.read, rpc._array_of_structs

        def call(socket_path, method, params=(), timeout=30.0):
            self._count(f"rpc {method}")
            return real_call(socket_path, method, params, timeout)

        def listdir(path="."):
            if os.fspath(path) == procfs.PROC:
                self._count("/proc passes")
            return real_listdir(path)

        def read(*args, **kwargs):
            self._count("heartbeat queries")
            return real_read(*args, **kwargs)

        def fast(body):
            rows = real_fast(body)
            if rows is not None:
                self._count("replies read by the fast path")
            return rows

        monkeypatch.setattr(rpc, "_array_of_structs", fast)
        monkeypatch.setattr(rpc, "call", call)
        monkeypatch.setattr(os, "listdir", listdir)
        monkeypatch.setattr(heartbeat, "read", read)

    def _count(self, what):
        self.seen[what] = self.seen.get(what, 0) + 1

    def of(self, action):
        self.seen = {}
        result = action()
        return result, dict(self.seen)


def _handlers(root, config, count):
    """The config with a handler of ``count`` sleeping processes, each with a fresh heartbeat."""
    with open(config) as handle:
        settings = yaml.safe_load(handle)
    settings["gravity"]["handlers"] = {"handler": {"processes": count, "start_timeout": STAND_IN_START_TIMEOUT}}
    with open(config, "w") as handle:
        yaml.safe_dump(settings, handle)
    write_sleeping_handlers(root)
    write_heartbeats(root, count)


def _measure(gctl, monkeypatch):
    """{command: counts} for start (from stopped), status and check (the fixture's calls uncounted)."""
    with monkeypatch.context() as patched:
        counts = Counts(patched)
        try:
            started, start_counts = counts.of(lambda: lifecycle.start(gctl.state_dir, timeout=120))
        finally:
            gctl.remember()
    assert started.programs, started
    with monkeypatch.context() as patched:
        counts = Counts(patched)
        report, status_counts = counts.of(lambda: monitoring.status(gctl.state_dir))
        result, check_counts = counts.of(lambda: checks.check(gctl.state_dir, ping=False))
    return report, result, {"start": start_counts, "status": status_counts, "check": check_counts}


def test_status_check_and_start_cost_the_same_calls_for_5_and_40_handlers(gctl, demo_galaxy, monkeypatch):
    monkeypatch.setenv("GALAXYCTL_ALLOW_ROOT", "1")  # in this process, as the gctl fixture's runs
    config, _ = demo_galaxy()
    root = os.path.dirname(os.path.dirname(config))
    gctl("register", config)
    measured = {}
    for count in (5, 40):
        _handlers(root, config, count)
        report, result, measured[count] = _measure(gctl, monkeypatch)
        running = [row for row in report.services if row.state in ("RUNNING", "STARTING")]
        assert len(running) == count + 1, report  # the handlers and gunicorn
        assert all(row.rss_bytes for row in running), report
        assert sum(1 for row in report.services if row.health and row.health.state == "ok") == count, report
        assert result.services_total == count + 1 and result.code == 0, result.line()
        gctl("stop")
    for counted in measured.values():  # wait_ready polls the web server's state until it answers, and
        # wait_up every state (one getAllProcessInfo a look) until the handlers pass startsecs: time, not N
        start = counted["start"]
        start.pop("rpc supervisor.getProcessInfo", None)
        looks = start.pop("rpc supervisor.getAllProcessInfo", 0)
        start["replies read by the fast path"] -= looks  # each look's reply is read by it too
    assert measured[5] == measured[40], measured
    status, check, start = measured[40]["status"], measured[40]["check"], measured[40]["start"]
    assert status == {"rpc supervisor.getAllProcessInfo": 1, "heartbeat queries": 1, "replies read by the fast path": 1}
    assert check.get("/proc passes", 0) <= 1 and check["heartbeat queries"] == 1, check
    assert check["rpc supervisor.getAllProcessInfo"] == 1, check
    assert start["rpc system.multicall"] == 2, start  # gunicorn first, then the handlers together
