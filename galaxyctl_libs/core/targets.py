"""What runs, as data light enough for ``status`` to load without YAML or config code.

``Service`` is one process's command line and settings, whatever runs it; ``select`` picks
services (or a backend's targets) by instance and service names.
"""

import os

from galaxyctl_libs.errors import GalaxyctlError
from galaxyctl_libs.records import Record

# How a service is restarted by ``graceful``.
GRACEFUL_HUP = "hup"  # gunicorn without preload re-reads the app on SIGHUP, master stays
GRACEFUL_RESTART = "restart"  # stop + start
GRACEFUL_NONE = "none"  # left running (tusd: uploads must not be cut)
GRACEFUL_HERDER = "herder"  # SIGHUP to our herder: new gunicorn master (new code), then the old one retires


class Service(Record):
    instance_name: str
    service_type: str
    service_name: str
    argv: tuple
    environment: tuple  # ((name, value), ...) in order; values are literal
    cwd: str
    path_prepend: tuple = ()  # dirs put in front of the inherited PATH (the virtualenv's bin)
    umask: str = "022"
    start_timeout: int = 10
    stop_timeout: int = 10
    graceful: str = GRACEFUL_RESTART
    bind: str = None  # where a web service answers HTTP (readiness), else None
    ready_timeout: int = None  # seconds a reload may take to answer (gunicorn's restart_timeout)
    url_prefix: str = ""
    uwsgi_config: str = None  # for uWSGI: the file whose stats server tells readiness
    user: str = None
    group: str = None
    config_type: str = "galaxy"
    memory_limit: float = None  # GB: systemd's MemoryMax=; under supervisord, backends/memwatch.py
    memory_high: float = None  # GB: systemd's MemoryHigh=; likewise
    log_namespace: str = None  # systemd's LogNamespace= (gravity's log_namespace; not used by supervisord)
    ignored: tuple = ()  # settings accepted but without effect here (shown, not compared)
    start_stagger: float = 0  # seconds to wait before starting it after another of its kind (core.order)
    heartbeat_db: str = None  # handlers, workflow schedulers: Galaxy's database URL, where they heartbeat
    broker_url: str = None  # celery workers: the broker Galaxy's config gives celery (core.broker), for the ping
    broker_from: str = None  # where broker_url came from ("celery_conf.broker_url", "amqp_internal_connection"...)
    broker_options: dict = None  # celery_conf's other broker_* settings (transport options, SSL), for the ping
    role: str = None  # what it is within its kind (core.kinds.ROLE_*: a job handler, a workflow scheduler)
    # gravity's name of the service this is one process of (a gunicorn or tusd list, a gravity.handlers
    # entry, with use_service_instances), its number there and how many there are; None: its own service
    gravity_service: str = None
    process_number: int = None
    process_count: int = 1

    _not_compared = ("ignored", "heartbeat_db", "broker_url", "broker_from", "broker_options")

    @property
    def gravity_name(self):
        """The name gravity 1.x gives the service this process belongs to (``handler`` for ``handler_1``)."""
        return self.gravity_service or self.service_name

    @property
    def command_line(self):
        import shlex  # here: status never needs it, and shlex compiles a regex on import

        return shlex.join(self.argv)

    def full_environment(self, base_environ):
        """The environment the service gets, given the environment it inherits."""
        env = dict(base_environ)
        if self.path_prepend:
            env["PATH"] = os.pathsep.join(self.path_prepend + (env.get("PATH", os.defpath),))
        env.update(self.environment)
        return env


def select(targets, names=()):
    """Targets named by ``names`` (instance names and/or service names); all when empty.

    A service name is ours (``handler_1``) or gravity's (``handler``: every process of that entry,
    as gravity's ``restart handler`` restarts them all)."""
    if not names:
        return list(targets)
    instance_names = {t.instance_name for t in targets}
    wanted_instances = [n for n in names if n in instance_names]
    wanted_services = [n for n in names if n not in instance_names]
    pool = [t for t in targets if not wanted_instances or t.instance_name in wanted_instances]
    if not wanted_services:
        return pool
    known = {t.service.service_name for t in pool} | {t.service.gravity_name for t in pool}
    unknown = [n for n in wanted_services if n not in known]
    if unknown:
        raise GalaxyctlError(
            f"no instance or service named {', '.join(unknown)} (known: {', '.join(sorted(instance_names | known)) or 'none'})"
        )
    return [t for t in pool if t.service.service_name in wanted_services or t.service.gravity_name in wanted_services]
