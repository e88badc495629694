"""Which broker Galaxy's celery workers use, worked out from galaxy.yml as Galaxy 26.1 does, without Galaxy.

``check`` pings celery workers through that broker with the venv's celery alone
(probes/celeryping.py); loading Galaxy's app to learn the URL took seconds.  Galaxy's rules:

- ``galaxy.celery.config_celery_app``: the app's conf is updated with ``celery_conf``; when it then
  has no ``broker_url`` (unset, null or empty), ``broker_url = config.amqp_internal_connection``,
  passed unchanged (kombu reads ``sqlalchemy+URL`` as its ``sqla+URL``: both name the SQLAlchemy
  transport).
- ``galaxy.config.GalaxyAppConfiguration``: ``amqp_internal_connection`` when the config sets it;
  else ``"sqlalchemy+" + database_connection`` when that is set (``postgres:`` made
  ``postgresql:`` first, ``_fix_postgresql_dburl``); else
  ``sqlalchemy+sqlite:///DATA_DIR/control.sqlite?isolation_level=IMMEDIATE``.
- ``galaxy.util.properties.load_app_properties``: ``GALAXY_CONFIG_OVERRIDE_<KEY>`` in the
  environment replaces a key of the file, ``GALAXY_CONFIG_<KEY>`` sets one the file lacks (the
  values are strings, so ``celery_conf`` cannot usefully come from there).
- celery itself (``celery.app.utils.Settings.broker_url``): ``CELERY_BROKER_URL`` in the worker's
  environment comes before any configured ``broker_url``.

The other ``broker_*`` settings of ``celery_conf`` (``broker_transport_options``, ``broker_use_ssl``,
...) are how the worker reaches the broker too: the ping is given them as well.
"""

import os

from galaxyctl_libs.core import database
from galaxyctl_libs.records import Record

CELERY_CONF = "celery_conf"
DEFAULT_CONTROL_DB = "control.sqlite"
CELERY_DEFAULT_BROKER = "amqp://"  # celery's own default: AMQP as guest on localhost
_OVERRIDE, _PREFIX = "GALAXY_CONFIG_OVERRIDE_", "GALAXY_CONFIG_"


class Broker(Record):
    url: str
    source: str  # where the URL came from, for people: "celery_conf.broker_url", "amqp_internal_connection"...
    options: dict = None  # celery_conf's other broker_* settings ({} when none)


def galaxy_properties(galaxy, environ):
    """The galaxy: section as Galaxy's ``load_app_properties`` leaves it: ``GALAXY_CONFIG_OVERRIDE_KEY``
    replaces ``key``, ``GALAXY_CONFIG_KEY`` sets it when the file does not."""
    properties = dict(galaxy or {})
    for name, value in environ.items():
        if name.startswith(_PREFIX) and not name.startswith(_OVERRIDE):
            properties.setdefault(name[len(_PREFIX) :].lower(), value)
    for name, value in environ.items():
        if name.startswith(_OVERRIDE):
            properties[name[len(_OVERRIDE) :].lower()] = value
    return properties


def _fix_postgresql(url):
    """Galaxy's ``_fix_postgresql_dburl``: ``postgres://`` and ``postgres+driver://`` are ``postgresql``."""
    for prefix in ("postgres:", "postgres+"):
        if url.startswith(prefix):
            return "postgresql" + url[len("postgres") :]
    return url


def celery_broker(galaxy, environ=None, galaxy_root=None, config_file="", cwd=""):
    """The Broker a celery worker of this Galaxy uses.  ``galaxy``: the galaxy: section as read;
    ``environ``: the worker's own environment (its config's ``environment``); ``galaxy_root``,
    ``config_file``, ``cwd`` (where the worker runs): to place the default SQLite files as Galaxy does."""
    environ = dict(environ or {})
    properties = galaxy_properties(galaxy, environ)
    conf = properties.get(CELERY_CONF)
    conf = conf if isinstance(conf, dict) else {}
    options = {k: v for k, v in conf.items() if isinstance(k, str) and k.startswith("broker_") and k != "broker_url"}
    if environ.get("CELERY_BROKER_URL"):
        return Broker(environ["CELERY_BROKER_URL"], "CELERY_BROKER_URL in the worker's environment", options)
    if conf.get("broker_url"):
        return Broker(str(conf["broker_url"]), "celery_conf.broker_url", options)
    if "amqp_internal_connection" in properties:
        url = properties["amqp_internal_connection"]
        if url:
            return Broker(str(url), "amqp_internal_connection", options)
        return Broker(CELERY_DEFAULT_BROKER, "amqp_internal_connection (empty: celery's default)", options)
    connection = properties.get("database_connection")
    if isinstance(connection, str) and connection:
        url = database.database_url({"database_connection": _fix_postgresql(connection)}, galaxy_root, config_file, cwd)
        return Broker("sqlalchemy+" + url, "database_connection", options)
    data_dir = database.data_dir(properties, galaxy_root, config_file, cwd)
    url = f"sqlalchemy+sqlite:///{os.path.join(data_dir, DEFAULT_CONTROL_DB)}?isolation_level=IMMEDIATE"
    return Broker(url, "Galaxy's default (control.sqlite in data_dir)", options)


def celery_broker_url(galaxy, environ=None, galaxy_root=None, config_file="", cwd=""):
    """(URL, where it came from): see ``celery_broker``."""
    broker = celery_broker(galaxy, environ, galaxy_root, config_file, cwd)
    return broker.url, broker.source


def worker_broker(instance, environment):
    """A celery worker Service's broker fields (core.targets.Service) for an instance of
    core.services, its worker running with ``environment`` (its config's own) where services run."""
    cwd = instance.galaxy_root or os.path.dirname(instance.galaxy_config_file)
    found = celery_broker(instance.galaxy, environment, instance.galaxy_root, instance.galaxy_config_file, cwd)
    return {"broker_url": found.url, "broker_from": found.source, "broker_options": found.options}
