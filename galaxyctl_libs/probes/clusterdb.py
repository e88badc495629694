"""The whole cluster's records in Galaxy's database: every heartbeat and the jobs handlers hold.

``worker_process`` has one row per Galaxy process that is not a web worker, keyed by
(``server_name``, ``hostname``) and refreshed every 60 s (probes/heartbeat.py reads one host's
rows; here every host's).  ``job.handler`` is the server name of the handler a job is assigned to
(with ``db-skip-locked``, a pool's tag until a handler grabs it, still ``new``); a job not yet
finished (ACTIVE_STATES) assigned to a handler that does not heartbeat waits for nothing.  The
database is read as heartbeat.query reads it: SQLite with the standard library, any other with
Galaxy's interpreter.
"""

from galaxyctl_libs.probes import heartbeat
from galaxyctl_libs.records import Record

# Galaxy's Job.states a handler still has to work on: neither finished (ok, error, deleted, skipped,
# stopped, failed) nor waiting for the user (paused)
ACTIVE_STATES = ("new", "resubmitted", "upload", "waiting", "queued", "running", "stopping")
_STATES = ", ".join(f"'{state}'" for state in ACTIVE_STATES)

ALL_BEATS_SQL = f"SELECT server_name, hostname, pid, update_time FROM {heartbeat.TABLE}"
# SQLite's reading of update_time, as heartbeat's (Unix seconds, only from a time as Galaxy writes it)
SQLITE_ALL_BEATS_SQL = heartbeat.SQLITE_HEARTBEAT_SQL.rsplit(" WHERE ", 1)[0]
ACTIVE_JOBS_SQL = (
    "SELECT handler, COUNT(*), SUM(CASE WHEN state = 'new' THEN 1 ELSE 0 END), MIN(id), MAX(id) FROM job "
    f"WHERE handler IS NOT NULL AND state IN ({_STATES}) GROUP BY handler"
)
MAX_JOB_IDS = 10  # job ids a message names


def _both(beats_sql):
    """One query for both (one start of Galaxy's interpreter, not two): the heartbeats' rows and the
    jobs' rows, told apart by their first column."""
    columns = beats_sql[len("SELECT ") : beats_sql.rindex(" FROM ")]
    jobs = ACTIVE_JOBS_SQL[len("SELECT ") :]
    return (
        f"SELECT 'beat', {columns}, NULL, NULL, NULL, NULL FROM {heartbeat.TABLE} "
        f"UNION ALL SELECT 'jobs', handler, NULL, NULL, NULL, {jobs.partition(', ')[2]}"
    )


BOTH_SQL, SQLITE_BOTH_SQL = _both(ALL_BEATS_SQL), _both(SQLITE_ALL_BEATS_SQL)


class HostBeat(Record):
    server_name: str
    hostname: str
    pid: int
    age_seconds: float  # None when its time is unreadable


class HeldJobs(Record):
    handler: str
    count: int
    new: int  # of them still ``new`` (with db-skip-locked: maybe a pool's tag, not a handler's name)
    first_id: int
    last_id: int


def all_beats(url, python=None, credentials=None, timeout=10.0):
    """Every row of ``worker_process`` (every host's), as HostBeat."""
    sqlite = heartbeat.sqlite_path(url) is not None
    sql, age_of = (
        (SQLITE_ALL_BEATS_SQL, heartbeat._age_of_seconds) if sqlite else (ALL_BEATS_SQL, heartbeat._age_of_datetime)
    )
    rows = heartbeat.query(url, sql, {}, python, credentials, timeout)
    import time

    now = time.time()
    return [
        HostBeat(str(name), str(host), pid if isinstance(pid, int) else None, age_of(when, now))
        for name, host, pid, when in rows
    ]


def records(url, python=None, credentials=None, timeout=10.0):
    """(every heartbeat as HostBeat, {handler: HeldJobs}) from one read of Galaxy's database."""
    import time

    sqlite = heartbeat.sqlite_path(url) is not None
    sql, age_of = (SQLITE_BOTH_SQL, heartbeat._age_of_seconds) if sqlite else (BOTH_SQL, heartbeat._age_of_datetime)
    rows = heartbeat.query(url, sql, {}, python, credentials, timeout)
    if not rows:  # no row, or a table missing (a stand-in's database may have no job table): the heartbeats alone
        return all_beats(url, python, credentials, timeout), {}
    now, beats, held = time.time(), [], {}
    for kind, name, host, pid, when, count, new, first, last in rows:
        if kind == "beat":
            beats.append(HostBeat(str(name), str(host), pid if isinstance(pid, int) else None, age_of(when, now)))
        elif name:
            held[str(name)] = HeldJobs(str(name), int(count), int(new or 0), int(first), int(last))
    return beats, held


def job_ids(url, handlers, python=None, credentials=None, timeout=10.0, limit=MAX_JOB_IDS):
    """{handler: [ids]}: the first ``limit`` unfinished jobs assigned to each of ``handlers``."""
    handlers = sorted(handlers)
    if not handlers:
        return {}
    params = {f"h{i}": name for i, name in enumerate(handlers)}
    names = ", ".join(f":{key}" for key in params)
    sql = f"SELECT handler, id FROM job WHERE handler IN ({names}) AND state IN ({_STATES}) ORDER BY id"
    found = {}
    for handler, job_id in heartbeat.query(url, sql, params, python, credentials, timeout):
        ids = found.setdefault(str(handler), [])
        if len(ids) < limit:
            ids.append(int(job_id))
    return found


def fresh(beats, max_age):
    """{(server_name, hostname)} of the heartbeats no older than ``max_age`` seconds."""
    return {(b.server_name, b.hostname) for b in beats if b.age_seconds is not None and b.age_seconds <= max_age}
