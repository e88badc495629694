"""A Galaxy database is the Galaxy user's file: a heartbeat read as root must end in bounded time and
memory whatever its schema hides (a view over an endless recursive query), with one line saying why."""

import sqlite3
import time

import pytest

from galaxyctl_libs.errors import GalaxyctlError
from galaxyctl_libs.probes import heartbeat

ENDLESS = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c)"


def database(tmp_path, where):
    path = str(tmp_path / "universe.sqlite")
    with sqlite3.connect(path) as conn:
        conn.execute(
            f"CREATE VIEW worker_process AS {ENDLESS} SELECT 'handler' AS server_name, 'h' AS hostname, "
            f"x AS pid, '2026-01-01 00:00:00' AS update_time FROM c WHERE {where}"
        )
    conn.close()
    return f"sqlite:///{path}"


def test_a_view_that_never_yields_a_row_is_cut_at_the_timeout(tmp_path):
    url = database(tmp_path, "x < 0")
    started = time.monotonic()
    with pytest.raises(GalaxyctlError, match="did not answer within 1s"):
        heartbeat.read(url, timeout=1.0, host="h")
    assert time.monotonic() - started < 5


def test_a_view_of_endless_rows_is_cut_at_the_row_bound(tmp_path):
    url = database(tmp_path, "1")
    started = time.monotonic()
    with pytest.raises(GalaxyctlError, match="rows for one probe"):
        heartbeat.read(url, timeout=30.0, host="h")
    assert time.monotonic() - started < 15
