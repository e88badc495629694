"""Job handlers' and workflow schedulers' heartbeat, read from Galaxy's database.

Every Galaxy process that is not a web worker (galaxy-main) updates its row of the ``worker_process``
table every 60 s (galaxy.model.database_heartbeat: ``server_name``, ``hostname``, ``pid``,
``update_time`` in UTC), writes it first once the job handler has started, and deletes it when it
shuts down.  A handler whose row is missing or old is alive to supervisord but does no work.

SQLite is read with the standard library (read-only); any other database with Galaxy's own
interpreter and its SQLAlchemy (and driver, e.g. psycopg2), so galaxyctl needs no driver: the URL,
which may hold a password, goes through stdin, never the command line.
"""

import os
import time

from galaxyctl_libs.errors import GalaxyctlError
from galaxyctl_libs.records import Record

INTERVAL = 60  # seconds between two heartbeats of a Galaxy process (fixed in Galaxy 26.1)
STALE_AFTER = 3 * INTERVAL  # a heartbeat older than this: the process no longer works
SQLITE_PREFIX = "sqlite:///"
TABLE = "worker_process"

HEARTBEAT_SQL = f"SELECT server_name, hostname, pid, update_time FROM {TABLE} WHERE hostname = :host"
# SQLite turns update_time (naive UTC) into Unix seconds itself (Unix epoch = Julian day 2440587.5),
# so no row's text is parsed in Python.  Only a date and time as Galaxy writes it: julianday() alone
# would also read 'now' or a bare number.
SQLITE_HEARTBEAT_SQL = (
    "SELECT server_name, hostname, pid, CASE WHEN typeof(update_time) = 'text' AND update_time GLOB "
    "'[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9][ T][0-9][0-9]:[0-9][0-9]*' "
    f"THEN (julianday(update_time) - 2440587.5) * 86400.0 END FROM {TABLE} WHERE hostname = :host"
)
# jobs in Galaxy's local runner (queued in it, or running): its jobs run as the handler's children
# and die with it (galaxy#6246).  job_runner_name is the runner's id in the job config ("local", as
# Galaxy's samples and the quickstart name it; old jobs carry a "local:///" URL)
RUNNING_JOBS_SQL = (
    "SELECT handler, COUNT(*) FROM job WHERE state IN ('queued', 'running') "
    "AND (job_runner_name = 'local' OR job_runner_name LIKE 'local:%') GROUP BY handler"
)

# run by Galaxy's interpreter for databases other than SQLite: {"url", "sql", "params"} in, rows out (JSON)
_FOREIGN = """\
import json, sys
from sqlalchemy import create_engine, text
args = json.load(sys.stdin)
engine = create_engine(args["url"])
try:
    with engine.connect() as conn:
        rows = conn.execute(text(args["sql"]), args["params"]).fetchall()
finally:
    engine.dispose()
def plain(value):
    return value.isoformat(sep=" ") if hasattr(value, "isoformat") else value
json.dump([[plain(v) for v in row] for row in rows], sys.stdout)
"""


class Beat(Record):
    server_name: str
    pid: int
    age_seconds: float  # since the last heartbeat (None when its time is unreadable)


def hostname():
    """The name Galaxy records (``socket.gethostname()``; uname's nodename, without importing socket)."""
    return os.uname().nodename


def sqlite_path(url):
    """The file of a ``sqlite:///PATH[?query]`` URL with an absolute PATH, else None."""
    if not url or not url.startswith(SQLITE_PREFIX):
        return None
    path = url[len(SQLITE_PREFIX) :].partition("?")[0]
    return path if path.startswith("/") else None


def interpreter(argv):
    """Galaxy's Python for a galaxy-main command line (``python ./scripts/galaxy-main`` or ``VENV/bin/galaxy-main``)."""
    first = argv[0]
    if os.path.basename(first).startswith("python"):
        return first
    return os.path.join(os.path.dirname(first), "python")


def read(url, python=None, credentials=None, timeout=10.0, host=None):
    """{server_name: Beat} of the rows this host's processes wrote.  A database without the table
    (not created yet) has none; one that cannot be read is a GalaxyctlError saying why.

    ``credentials``: subprocess keywords for the interpreter of a non-SQLite database (as root:
    the Galaxy user's; the caller runs SQLite reads inside rootpolicy.as_user)."""
    sql, age_of = (SQLITE_HEARTBEAT_SQL, _age_of_seconds) if sqlite_path(url) else (HEARTBEAT_SQL, _age_of_datetime)
    return _beats(query(url, sql, {"host": host or hostname()}, python, credentials, timeout), age_of)


def running_jobs(url, python=None, credentials=None, timeout=10.0):
    """{handler: its jobs in the local runner (``queued`` there or ``running``)} from Galaxy's ``job`` table."""
    rows = query(url, RUNNING_JOBS_SQL, {}, python, credentials, timeout)
    return {str(handler): int(count) for handler, count in rows if handler}


def query(url, sql, params, python=None, credentials=None, timeout=10.0):
    """Rows of ``sql`` (named ``:params``) in Galaxy's database; a missing table gives none."""
    path = sqlite_path(url)
    if path:
        return _read_sqlite(path, sql, params, timeout)
    return _read_foreign(url, sql, params, python, credentials, timeout)


MAX_ROWS = 100_000  # a heartbeat row per handler process; far more is a damaged or hostile table
PROGRESS_STEPS = 10_000  # SQLite virtual-machine steps between two looks at the deadline

_URI_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/-._~")


def sqlite_uri(path):
    """A read-only ``file:`` URI for SQLite, every byte but unreserved ones percent-encoded (so a
    ``?``, ``#`` or ``%`` in the path stays part of it; urllib.parse would cost ``status`` 3 ms)."""
    encoded = "".join(
        char if char in _URI_SAFE else "".join(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogateescape"))
        for char in path
    )
    return f"file:{encoded}?mode=ro"


def _read_sqlite(path, sql, params, timeout):
    import sqlite3  # only for a SQLite database: it imports datetime for its adapters

    if not os.path.exists(path):
        raise GalaxyctlError(f"Galaxy's database {path} does not exist")
    try:
        conn = sqlite3.connect(sqlite_uri(path), uri=True, timeout=timeout)
    except sqlite3.Error as exc:
        raise GalaxyctlError(f"cannot open Galaxy's database {path}: {exc}") from None
    # The file is the Galaxy user's: its schema may hide an endless query behind a view or a trigger.
    # So the query is bounded in time (SQLite checks the handler every few thousand steps) and rows,
    # and SQL functions in its schema are not trusted.
    deadline = time.monotonic() + timeout
    conn.set_progress_handler(lambda: time.monotonic() > deadline, PROGRESS_STEPS)
    try:
        conn.execute("PRAGMA trusted_schema = OFF")
        rows = conn.execute(sql, params).fetchmany(MAX_ROWS + 1)
        if len(rows) > MAX_ROWS:
            raise GalaxyctlError(f"Galaxy's database {path}: more than {MAX_ROWS} rows for one probe; refusing")
        return rows
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        if "interrupted" in str(exc):
            raise GalaxyctlError(f"Galaxy's database {path} did not answer within {timeout:g}s") from None
        raise GalaxyctlError(f"cannot read Galaxy's database {path}: {exc}") from None
    except sqlite3.Error as exc:
        raise GalaxyctlError(f"cannot read Galaxy's database {path}: {exc}") from None
    finally:
        conn.close()


def _read_foreign(url, sql, params, python, credentials, timeout):
    import json
    import subprocess

    scheme = url.partition(":")[0]
    if not python or not os.access(python, os.X_OK):
        raise GalaxyctlError(f"cannot read Galaxy's {scheme} database: no Galaxy interpreter ({python})")
    env = {"PATH": os.environ.get("PATH", os.defpath), "LANG": "C.UTF-8"}
    try:
        done = subprocess.run(
            [python, "-c", _FOREIGN],
            input=json.dumps({"url": url, "sql": sql, "params": params}),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd="/",
            env=env,
            **(credentials or {}),
        )
    except subprocess.TimeoutExpired:
        raise GalaxyctlError(f"no answer from Galaxy's {scheme} database within {timeout:.0f}s") from None
    except OSError as exc:
        raise GalaxyctlError(f"cannot run {python}: {exc.strerror}") from None
    if done.returncode != 0:
        reason = _error_line(done.stderr)
        if _missing_table(reason):
            return []
        raise GalaxyctlError(f"cannot read Galaxy's {scheme} database: {reason[:200]}")
    try:
        return [tuple(row) for row in json.loads(done.stdout)]
    except ValueError:
        raise GalaxyctlError(f"cannot read Galaxy's {scheme} database: bad answer") from None


def _error_line(stderr):
    """Why a read through Galaxy's interpreter failed: the exception's line of its traceback (``module.
    Error: message``), not what SQLAlchemy and the driver print after it (``(Background on this error
    at: URL)``, ``[SQL: ...]``, a hint); else the last line."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        name, colon, _ = line.partition(": ")
        if colon and name.replace(".", "").replace("_", "").isalnum():
            return line.strip()
    return lines[-1].strip() if lines else "no output"


def _missing_table(reason):
    """Whether the error says the table is not there yet (before Galaxy created its tables), not
    that the database, a role or the server is missing."""
    lower = reason.lower()
    return (
        "no such table" in lower  # SQLite
        or "undefinedtable" in lower
        or ("relation " in lower and "does not exist" in lower)  # PostgreSQL
        or ("table " in lower and "doesn't exist" in lower)  # MySQL
    )


def _beats(rows, age_of):
    """{server_name: Beat}, the newest row of each; ``age_of(update_time, now)`` reads a row's time."""
    now = time.time()
    beats = {}
    for server_name, _host, pid, update_time in rows:
        age = age_of(update_time, now)
        beat = Beat(str(server_name), pid if isinstance(pid, int) else None, age)
        known = beats.get(beat.server_name)
        if known is None or (age is not None and (known.age_seconds is None or age < known.age_seconds)):
            beats[beat.server_name] = beat
    return beats


def _age_of_seconds(update_time, now):
    """SQLite's rows: ``update_time`` in Unix seconds (a float), None when SQLite could not read it."""
    if type(update_time) not in (int, float) or not -1e11 < update_time < 1e11:  # also NaN, inf
        return None
    return max(0.0, now - update_time)


def _age_of_datetime(update_time, now):
    """Other databases' rows: a datetime, or ISO text through Galaxy's interpreter; naive is UTC."""
    from datetime import datetime, timezone

    try:
        if isinstance(update_time, datetime):
            when = update_time
        elif isinstance(update_time, str):
            when = datetime.fromisoformat(update_time)
        else:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        return max(0.0, now - when.timestamp())
    except (TypeError, ValueError, OverflowError):
        return None
