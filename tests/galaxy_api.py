"""A real Galaxy seen from outside: its config as the quickstart writes it, its API, its jobs and handlers.

Shared by the real-Galaxy end-to-end tests and ``bench/real_galaxy.py`` (which runs gravity 1.2.4 and
galaxyctl on the same Galaxy), so what the bench measures is what the tests assert.  Standard
library only (no pytest): the bench imports it with a plain interpreter.
"""

import importlib.machinery
import importlib.util
import json
import os
import secrets
import sqlite3
import threading
import time
import urllib.error
import urllib.request
import uuid

from galaxyctl_libs.probes import procfs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
API_KEY = "galaxyctl-e2e-bootstrap-key-0123456789"
HANDLERS = ("handler_0", "handler_1")
FINISHED = ("ok", "error", "failed", "deleted")
# what Galaxy 26.1 writes in job.info when a handler's shutdown killed the job (galaxy#6246)
KILLED_BY_SHUTDOWN = ("job terminated by Galaxy shutdown", "killed when Galaxy was restarted")


def load_quickstart():
    """scripts/galaxy-quickstart as a module: the config it writes is the config we run."""
    path = os.path.join(REPO, "scripts", "galaxy-quickstart")
    loader = importlib.machinery.SourceFileLoader("galaxy_quickstart", path)
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("galaxy_quickstart", loader))
    loader.exec_module(module)
    return module


def render_config(quickstart, root, port, user, venv, handlers=1, servers=None):
    """The quickstart's galaxy.yml for ``root`` (state in ROOT/state), a bootstrap admin key, N handlers;
    ``servers``: the quickstart's production shape (PostgreSQL, RabbitMQ, Redis URLs)."""
    text = quickstart.render_config(
        root,
        "127.0.0.1",
        port,
        user=user,
        virtualenv=venv,
        state_dir=os.path.join(root, "state"),
        extra_galaxy={"bootstrap_admin_api_key": API_KEY, "admin_users": "e2e@example.org"},
        servers=servers,
    )
    assert "      processes: 1\n" in text
    return text.replace("      processes: 1\n", f"      processes: {handlers}\n")


def http(url, method="GET", data=None, key=None, timeout=10):
    """(status, decoded JSON body) of one API call; raises OSError when it fails."""
    headers = {"content-type": "application/json"}
    if key:
        headers["x-api-key"] = key
    body = json.dumps(data).encode() if data is not None else None
    request = urllib.request.Request(url, method=method, data=body, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status, json.loads(response.read() or b"null")


def version(base):
    """(status, body) of /api/version, or (None, None) while nothing answers."""
    try:
        return http(base + "/api/version")
    except (OSError, urllib.error.URLError, ValueError):
        return None, None


def poll_first_200(base, found, stop, clock=time.monotonic):
    """Append ``clock()`` when /api/version first answers 200 (polled every 0.2 s until ``stop``)."""
    while not stop.is_set():
        if version(base)[0] == 200:
            found.append(clock())
            return
        time.sleep(0.2)


class Jobs:
    """A user and a history; ``submit`` uploads pasted text (a real job for a handler)."""

    def __init__(self, base):
        self.base = base
        _, user = http(
            base + "/api/users",
            "POST",
            {"username": "e2e", "email": "e2e@example.org", "password": "e2e-password-123"},
            key=API_KEY,
        )
        self.key = http(base + f"/api/users/{user['id']}/api_key", "POST", key=API_KEY)[1]
        self.history = http(base + "/api/histories", "POST", {"name": "e2e"}, key=self.key)[1]["id"]
        self.ids, self.errors = [], []

    def submit(self):
        """Submit one job; a refused submission is kept in ``errors``, not raised."""
        body = {
            "history_id": self.history,
            "targets": [
                {
                    "destination": {"type": "hdas"},
                    "elements": [{"src": "pasted", "paste_content": f"job {len(self.ids)}\n", "ext": "txt"}],
                }
            ],
        }
        try:
            self.ids.append(
                http(self.base + "/api/tools/fetch", "POST", body, key=self.key, timeout=60)[1]["jobs"][0]["id"]
            )
        except OSError as exc:
            self.errors.append(repr(exc))

    def states(self):
        return {job: http(self.base + f"/api/jobs/{job}", key=API_KEY)[1]["state"] for job in self.ids}

    def all_finished(self):
        """The states once every submitted job has finished, else None."""
        states = self.states()
        return states if states and all(v in FINISHED for v in states.values()) else None


def query(database, sql, timeout=30):
    """Rows of ``sql`` in Galaxy's database: ``database`` is its SQLite file, or a callable ``(sql) ->
    rows`` (another database, e.g. PostgreSQL read with psql) that returns None when it cannot read."""
    if callable(database):
        return database(sql)
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=timeout) as conn:
            return conn.execute(sql).fetchall()
    except sqlite3.Error:
        return None


def ready_handlers(database, names=HANDLERS):
    """The handlers whose heartbeat row exists and whose process lives: {server_name: pid}; None if busy."""
    rows = query(database, "SELECT server_name, pid FROM worker_process", timeout=5)
    if rows is None:
        return None
    return {name: pid for name, pid in rows if name in names and pid and procfs.alive(pid)}


def job_rows(database):
    """(id, state, handler, info) of every job in Galaxy's database (``query``'s ``database``)."""
    rows = query(database, "SELECT id, state, handler, info FROM job ORDER BY id")
    if rows is None:
        raise OSError(f"cannot read the jobs in {database}")
    return rows


def longest_gap(samples):
    """The longest stretch of (moment, ready handlers) samples without a ready handler (seconds)."""
    longest, since = 0.0, None
    for moment, found in samples:
        if not found and since is None:
            since = moment
        elif found and since is not None:
            longest, since = max(longest, moment - since), None
    if since is not None and samples:
        longest = max(longest, samples[-1][0] - since)
    return longest


class WhileOpen:
    """Loops run in threads from ``with`` until its end: each loop method checks ``self._stop``."""

    join_timeout = 120  # seconds the end of ``with`` waits for each loop

    def __init__(self, *loops):
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=loop) for loop in loops]

    def __enter__(self):
        self.opened = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info):
        self.closed = time.monotonic()
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.join_timeout)


class JobTraffic(WhileOpen):
    """While open: a job submitted every ``every`` seconds, and the ready handlers sampled every 0.1 s."""

    def __init__(self, jobs, database, every):
        self.jobs, self.database, self.every = jobs, database, every
        self.samples = []
        super().__init__(self._watch, self._submit)

    def _watch(self):
        while not self._stop.is_set():
            found = self._ready()
            if found is not None:  # None: the database could not be read this time (see longest_unread_s)
                self.samples.append((time.monotonic(), found))
            time.sleep(0.1)

    def _ready(self):
        return ready_handlers(self.database)

    def _submit(self):
        while not self._stop.wait(self.every):
            self.jobs.submit()

    def figures(self):
        # from the opening to the end: a loop that stopped early (its thread died) leaves a gap too
        moments = [self.opened, *(moment for moment, _ in self.samples), self.closed]
        return {
            "samples": len(self.samples),
            "longest_without_ready_handler_s": round(longest_gap(self.samples), 2),
            "fewest_ready_handlers": min((len(found) for _, found in self.samples), default=None),
            # "a handler at every moment" holds at this resolution: the longest time between two reads
            "longest_unread_s": round(max((b - a for a, b in zip(moments, moments[1:])), default=0.0), 2),
        }


class WebWatch(WhileOpen):
    """While open: /api/version every 0.25 s; the requests that failed and the longest outage."""

    join_timeout = 60

    def __init__(self, base):
        self.base, self.samples = base, []
        super().__init__(self._watch)

    def _watch(self):
        while not self._stop.wait(0.25):
            self.samples.append((time.monotonic(), version(self.base)[0] == 200))

    def figures(self):
        return {
            "web_requests": len(self.samples),
            "web_failed": sum(1 for _, ok in self.samples if not ok),
            "longest_web_outage_s": round(longest_gap(self.samples), 2),
        }


def job_outcome(database):
    """Jobs ok, failed (rows), and those of them a handler's shutdown killed."""
    rows = job_rows(database)
    failed = [row for row in rows if row[1] != "ok"]
    killed = [row for row in failed if any(text in (row[3] or "") for text in KILLED_BY_SHUTDOWN)]
    return {"jobs_ok": len(rows) - len(failed), "failed": failed, "killed": killed}


def handed_over(stdout, handlers, log_dir, database, before):
    """After a rolling graceful: asserts each of ``handlers`` was reloaded, drained first (Galaxy's own
    log says it took the job lock) and is heartbeating again from a new process (``before``: the
    ready_handlers of before the graceful)."""
    assert all(f"{name}: reloaded" in stdout for name in handlers), stdout
    for name in handlers:
        with open(os.path.join(log_dir, f"{name}.log"), errors="replace") as handle:
            assert "Administrative Job Lock is now set to True" in handle.read(), name
    after = ready_handlers(database)
    assert set(after) == set(handlers) and all(after[n] != before[n] for n in handlers), (before, after)


def site_servers(postgres_server, rabbitmq_server, redis_server):
    """A new Galaxy's own place on the session's servers: an empty database with its role, a vhost,
    Redis db 1 for celery's results.  Returns (its name, {"database", "amqp", "redis": URL})."""
    name = "galaxy_" + uuid.uuid4().hex[:8]
    urls = {
        "database": postgres_server.create_database(name, name, secrets.token_hex(12)),
        "amqp": rabbitmq_server.url(name),
        "redis": redis_server.url(1),
    }
    rabbitmq_server.add_vhost(name)
    return name, urls
