"""A tiny stand-in Galaxy source tree, to try galaxyctl (and to test it) without installing Galaxy.

It has what galaxyctl's services import: ``galaxy.webapps.galaxy.fast_factory:factory()`` (a WSGI
app answering ``/api/version`` with a value read when the app loads, so a reload is visible;
``/slow?seconds=S`` takes its time, ``/hog?mb=N`` makes the worker keep N MB more),
the worker class, an empty ``galaxy.web_stack.gunicorn_config``, ``galaxy.celery`` (a celery app on
kombu's filesystem transport, no broker server needed), ``scripts/galaxy-main`` (a handler that
heartbeats into database/universe.sqlite as Galaxy's do) and ``scripts/tusd`` (a tusd stand-in).

    python -m galaxyctl_libs.demo DIR [--port 8080]
"""

import argparse
import os
import sys

import yaml

FAST_FACTORY = '''\
"""Demo Galaxy web app: /api/version answers with the code version read at load time."""
import json
import os
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", "..", ".."))
HOARD = []  # what /hog?mb=N made this worker keep
EVENTS = os.path.join(ROOT, "database", "events.log")


class OutdatedDatabaseError(Exception):
    """What Galaxy raises when its database must be migrated before it runs (the same words)."""


def note(event):
    """Append "TIME EVENT" to database/events.log: tests read in which order things happened."""
    try:
        with open(EVENTS, "a") as handle:
            handle.write(f"{time.time():.3f} {event}\\n")
    except OSError:
        pass


def _read_code_version():
    try:
        with open(os.path.join(ROOT, "VERSION")) as handle:
            return handle.read().strip()
    except OSError:
        return "0"


def factory():
    loaded = _read_code_version()
    if os.path.exists(os.path.join(ROOT, "database", "needs-migration")):
        raise OutdatedDatabaseError(
            "Your galaxy database has version demo1, but this code expects version demo2. To upgrade your "
            "database, run `manage_db.sh upgrade`. Please remember to backup your database before migrating."
        )
    time.sleep(float(os.environ.get("DEMO_GALAXY_LOAD_SECONDS") or 0))  # Galaxy takes a while to load
    if os.environ.get("DEMO_GALAXY_FAIL"):
        raise RuntimeError("demo Galaxy asked to fail at load time")
    if os.environ.get("DEMO_GALAXY_HANG"):
        time.sleep(10 ** 6)

    answered = []

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.endswith("/api/version") and not answered:
            answered.append(True)
            note(f"web answered {os.getpid()}")
        if path.endswith("/api/version"):
            body = {"version_major": "demo", "version_minor": loaded, "pid": os.getpid()}
        elif path.endswith("/hog"):  # a worker that grows: N MB more, resident (written), kept
            megabytes = int((environ.get("QUERY_STRING") or "mb=100").partition("=")[2] or 100)
            HOARD.append(bytearray(b"x") * (megabytes << 20))
            body = {"hoarded_mb": sum(len(b) for b in HOARD) >> 20, "pid": os.getpid()}
        elif path.endswith("/slow"):
            seconds = float((environ.get("QUERY_STRING") or "seconds=5").partition("=")[2] or 5)
            time.sleep(seconds)
            body = {"slept": seconds, "pid": os.getpid()}
        else:
            start_response("404 Not Found", [("Content-Type", "application/json")])
            return [b'{"err_msg": "not found"}']
        data = json.dumps(body).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]

    note(f"app loaded {os.getpid()}")  # without preload, in each worker: tests wait for all of them
    return app
'''

WORKERS = '''\
"""Demo worker class: gunicorn's threaded worker (the real one is uvicorn's)."""
from gunicorn.workers.gthread import ThreadWorker


class Worker(ThreadWorker):
    pass
'''

CELERY = '''\
"""Demo celery app on kombu's filesystem transport: no broker server needed.

Like Galaxy's (galaxy.celery.config_celery_app), it takes ``celery_conf`` from the galaxy: section of
GALAXY_CONFIG_FILE and, when that names no broker, ``amqp_internal_connection``; make_demo_galaxy
writes the filesystem broker there.  Without a config, the same broker is set here.
"""
import os

from celery import Celery

_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))  # lib/galaxy/celery -> root
_QUEUE = os.path.join(_ROOT, "database", "celery-queue")


def _galaxy_section():
    path = os.environ.get("GALAXY_CONFIG_FILE", "")
    if not path.endswith((".yml", ".yaml")):
        return {}  # none, or a galaxy.ini of the uWSGI era: no celery_conf there
    try:
        import yaml
    except ImportError:
        return {}
    try:
        with open(path) as handle:
            return (yaml.safe_load(handle) or {}).get("galaxy") or {}
    except (OSError, ValueError, AttributeError, yaml.YAMLError):
        return {}


celery_app = Celery("galaxy")
celery_app.conf.update(
    broker_url="filesystem://",
    # every folder absolute, in database/ (any user may write there; the worker's cwd may be root's)
    broker_transport_options={
        "data_folder_in": _QUEUE,
        "data_folder_out": _QUEUE,
        "control_folder": os.path.join(_QUEUE, "control"),
    },
    result_backend=None,
    beat_schedule={"demo-ping": {"task": "galaxy.celery.ping", "schedule": 30.0}},
)
_GALAXY = _galaxy_section()
if isinstance(_GALAXY.get("celery_conf"), dict):
    celery_app.conf.update(broker_url=None)
    celery_app.conf.update(_GALAXY["celery_conf"])
    if not celery_app.conf.broker_url:
        celery_app.conf.broker_url = _GALAXY.get("amqp_internal_connection") or "filesystem://"
for _key in ("data_folder_in", "data_folder_out"):
    _folder = (celery_app.conf.broker_transport_options or {}).get(_key)
    if _folder:
        os.makedirs(_folder, exist_ok=True)


@celery_app.task(name="galaxy.celery.ping")
def ping():
    return "pong"


app = celery_app
'''

# Galaxy's worker_process table as the stand-in's handlers write it (and write_heartbeats)
WORKER_PROCESS_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS worker_process (id INTEGER PRIMARY KEY, server_name VARCHAR(255), "
    "hostname VARCHAR(255), pid INTEGER, update_time DATETIME, app_type VARCHAR, UNIQUE (server_name, hostname))"
)

GALAXY_MAIN = '''\
#!/usr/bin/env python3
"""Demo job handler: parses galaxy-main's arguments, says so, and heartbeats like Galaxy does.

Its row in the ``worker_process`` table of database/universe.sqlite (Galaxy's columns) is updated
every DEMO_HEARTBEAT_INTERVAL seconds (default 1) after DEMO_HANDLER_START_DELAY seconds (default 0),
and deleted on SIGTERM.  While database/NAME.noheartbeat exists it is alive but does not heartbeat.
DEMO_HOG_MB=N: once started, it keeps N MB resident (a memory hog, for memory_limit).
"""
import argparse
import datetime
import os
import signal
import sqlite3
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATABASE = os.path.join(ROOT, "database", "universe.sqlite")
SCHEMA = @WORKER_PROCESS_SCHEMA@

parser = argparse.ArgumentParser()
parser.add_argument("-c", "--config-file")
parser.add_argument("--server-name")
parser.add_argument("--attach-to-pool", action="append", default=[])
args, _ = parser.parse_known_args()
HOST = os.uname().nodename


def database():
    conn = sqlite3.connect(DATABASE, timeout=30)
    conn.execute(SCHEMA)
    return conn


def beat():
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None).isoformat(sep=" ")
    with database() as conn:
        conn.execute(
            "INSERT INTO worker_process (server_name, hostname, pid, update_time) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (server_name, hostname) DO UPDATE SET pid = excluded.pid, update_time = excluded.update_time",
            (args.server_name, HOST, os.getpid(), now),
        )


def forget():
    with database() as conn:
        conn.execute("DELETE FROM worker_process WHERE server_name = ? AND hostname = ?", (args.server_name, HOST))


signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
try:
    with open(os.path.join(root, "database", "events.log"), "a") as events:
        events.write(f"{time.time():.3f} handler started {args.server_name} {os.getpid()}\\n")
except OSError:
    pass
print(f"demo handler {args.server_name} pools={args.attach_to_pool} config={args.config_file}", flush=True)
hoard = bytearray(b"x") * (int(os.environ.get("DEMO_HOG_MB") or 0) << 20)
paused = os.path.join(ROOT, "database", f"{args.server_name}.noheartbeat")
try:
    time.sleep(float(os.environ.get("DEMO_HANDLER_START_DELAY", "0")))
    print(f"Galaxy server instance '{args.server_name}' is running", flush=True)
    while True:
        if not os.path.exists(paused):
            beat()
        time.sleep(float(os.environ.get("DEMO_HEARTBEAT_INTERVAL", "1")))
finally:
    forget()
'''.replace("@WORKER_PROCESS_SCHEMA@", repr(WORKER_PROCESS_SCHEMA))

TUSD = '''\
#!/usr/bin/env python3
"""Demo tusd: takes tusd's arguments and waits to be stopped (the real one is a Go binary)."""
import signal
import sys
import time

signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
print("demo tusd", " ".join(sys.argv[1:]), flush=True)
while True:
    time.sleep(3600)
'''


def _write(path, content, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(content)
    os.chmod(path, mode)


def demo_celery_conf(root):
    """The stand-in's ``celery_conf``: kombu's filesystem broker, its folders in ROOT/database
    (absolute: the worker's cwd may be another user's), as Galaxy's config would carry a broker."""
    queue = os.path.join(os.path.abspath(root), "database", "celery-queue")
    return {
        "broker_url": "filesystem://",
        "broker_transport_options": {
            "data_folder_in": queue,
            "data_folder_out": queue,
            "control_folder": os.path.join(queue, "control"),
        },
    }


# A handler that costs the process manager what a real one does and the machine nothing: it execs
# sleep (the scale bench's and test's stand-in, write_sleeping_handlers)
SLEEPING_HANDLER = 'import os\nos.execvp("sleep", ["sleep", "1000000"])\n'


def write_sleeping_handlers(root):
    """Make the stand-in at ``root``'s handlers SLEEPING_HANDLER (its scripts/galaxy-main)."""
    _write(os.path.join(root, "scripts", "galaxy-main"), SLEEPING_HANDLER, mode=0o755)


def write_heartbeats(root, count):
    """A heartbeat row, written now, for each of ``count`` handlers ``handler_0``... in the stand-in at
    ``root``: what its handlers would write, for a bench or test whose handlers only sleep."""
    import datetime
    import sqlite3

    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None).isoformat(sep=" ")
    db = sqlite3.connect(os.path.join(root, "database", "universe.sqlite"))
    try:
        with db:
            db.execute(WORKER_PROCESS_SCHEMA)
            db.executemany(
                "INSERT OR REPLACE INTO worker_process (server_name, hostname, pid, update_time) VALUES (?, ?, ?, ?)",
                [(f"handler_{i}", os.uname().nodename, 0, now) for i in range(count)],
            )
    finally:
        db.close()


def make_demo_galaxy(root, port=8080, gravity=None, galaxy=None, version="1"):
    """Create the tree under ``root``; returns the path of its config/galaxy.yml.

    ``gravity`` entries override the defaults written (gunicorn on 127.0.0.1:PORT, celery off);
    ``galaxy`` entries are the galaxy: section, with ``celery_conf`` the filesystem broker unless given.
    """
    root = os.path.abspath(root)
    package = os.path.join(root, "lib", "galaxy")
    for sub in ("", "webapps", "webapps/galaxy", "web_stack"):
        _write(os.path.join(package, sub, "__init__.py"), "")
    _write(os.path.join(package, "webapps", "galaxy", "fast_factory.py"), FAST_FACTORY)
    _write(os.path.join(package, "webapps", "galaxy", "workers.py"), WORKERS)
    _write(
        os.path.join(package, "webapps", "galaxy", "uwsgi_app.py"),
        '"""Demo app for uWSGI (module = galaxy.webapps.galaxy.uwsgi_app)."""\n'
        "from galaxy.webapps.galaxy.fast_factory import factory\n\napplication = factory()\n",
    )
    _write(os.path.join(package, "web_stack", "gunicorn_config.py"), "# demo: nothing to configure\n")
    _write(os.path.join(package, "celery", "__init__.py"), CELERY)
    _write(os.path.join(root, "scripts", "galaxy-main"), GALAXY_MAIN, mode=0o755)
    _write(os.path.join(root, "scripts", "tusd"), TUSD, mode=0o755)
    _write(os.path.join(root, "VERSION"), f"{version}\n")
    os.makedirs(os.path.join(root, "database"), exist_ok=True)
    os.chmod(os.path.join(root, "database"), 0o777)
    settings = {
        "gunicorn": {"bind": f"127.0.0.1:{port}", "preload": False},
        "celery": {"enable": False, "enable_beat": False},
    }
    for key, value in (gravity or {}).items():
        if isinstance(value, dict) and isinstance(settings.get(key), dict):
            settings[key] = {**settings[key], **value}
        else:
            settings[key] = value
    galaxy = {"celery_conf": demo_celery_conf(root), **(galaxy or {})}
    config = os.path.join(root, "config", "galaxy.yml")
    _write(config, yaml.safe_dump({"gravity": settings, "galaxy": galaxy}, sort_keys=False))
    return config


def main(argv=None):
    parser = argparse.ArgumentParser(description="Create a demo Galaxy tree that galaxyctl can run.")
    parser.add_argument("directory")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    print(make_demo_galaxy(args.directory, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
