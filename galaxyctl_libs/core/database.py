"""Where Galaxy keeps its database, as Galaxy 26.1 works it out from galaxy.yml.

Job handlers and workflow schedulers write a heartbeat row into that database (the
``worker_process`` table); ``status`` and ``check`` read it (probes/heartbeat.py).  Galaxy's rules
(galaxy.config): ``database_connection`` when set; else SQLite ``universe.sqlite`` in ``data_dir``,
whose default is ``database`` under a source tree's root, else ``data`` beside the config file.  A
relative path is relative to the directory the process runs in (Galaxy makes it absolute there).
"""

import os

SQLITE_PREFIX = "sqlite:///"
DEFAULT_SQLITE = "universe.sqlite"
DEFAULT_QUERY = "?isolation_level=IMMEDIATE"


def data_dir(galaxy, galaxy_root, config_file, cwd):
    """Galaxy's ``data_dir`` for a galaxy: section, as an absolute path."""
    value = galaxy.get("data_dir")
    if isinstance(value, str) and value:
        return os.path.normpath(os.path.join(cwd, value))
    if galaxy_root:
        return os.path.join(galaxy_root, "database")
    return os.path.join(os.path.dirname(config_file), "data")


def database_url(galaxy, galaxy_root, config_file, cwd):
    """Galaxy's ``database_connection``; a SQLite path made absolute (against ``cwd``)."""
    url = galaxy.get("database_connection")
    if not isinstance(url, str) or not url:
        return (
            SQLITE_PREFIX
            + os.path.join(data_dir(galaxy, galaxy_root, config_file, cwd), DEFAULT_SQLITE)
            + DEFAULT_QUERY
        )
    if url.startswith(SQLITE_PREFIX) and not url[len(SQLITE_PREFIX) :].startswith("/"):
        return SQLITE_PREFIX + os.path.normpath(os.path.join(cwd, url[len(SQLITE_PREFIX) :]))
    return url
