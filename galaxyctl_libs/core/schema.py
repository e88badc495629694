"""The ``gravity:`` section's settings as typed, frozen dataclasses: gravity's keys and defaults.

Each field says how its raw YAML value is checked (``kind``: see config.CONVERTERS); the current
schema (galaxy.yml.sample) and gravity 0.x's older keys both load.
"""

from dataclasses import dataclass, field

DEFAULT_INSTANCE_NAME = "_default_"
APP_SERVERS = ("gunicorn", "unicornherder", "uwsgi")
PROCESS_MANAGERS = ("supervisor", "systemd", "multiprocessing")

# The ranges (inclusive) a config's numbers must be in (NaN and infinity are in none): a value past
# them is a typo or an attack, and would only fail later, half done (a file name too long, a sleep
# that never ends while ``start`` holds the operation lock).  README.rst lists them.
SECONDS = (0, 86400)  # timeouts: up to a day
STAGGER = (0, 3600)  # start_stagger: up to an hour
GIGABYTES = (0, 1024)  # memory_limit, memory_high: up to 1 TB; 0 is none
WORKERS = (1, 1000)  # gunicorn/reports workers: 0 would serve nothing
COUNT = (0, 1000)  # celery concurrency (0: celery's default, one per CPU)
HANDLER_PROCESSES = (0, 5000)  # of a gravity.handlers entry: issue 26 runs 2,000 (core.jobconf.MAX_HANDLERS in all)
NAME_LENGTH = (1, 64)  # instance_name: part of file, directory and unit names
KIND_LIMITS = {"port": (1, 65535)}  # of every field of that kind


def _opt(default, kind, choices=None, limit=None):
    """A settings field: ``kind`` says how raw YAML is checked and converted (see ``_convert``);
    ``limit``, the (lowest, highest) value it may have (a name: its length)."""
    metadata = {"kind": kind, "choices": choices, "limit": limit}
    if isinstance(default, dict):
        return field(default_factory=dict, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class ServiceCommon:
    """Keys every service section has."""

    enable: bool = _opt(True, "bool")
    umask: str = _opt(None, "umask")
    start_timeout: int = _opt(10, "int", limit=SECONDS)
    stop_timeout: int = _opt(10, "int", limit=SECONDS)
    memory_limit: float = _opt(None, "number", limit=GIGABYTES)
    memory_high: float = _opt(None, "number", limit=GIGABYTES)
    environment: dict = _opt({}, "environment")
    # galaxyctl's: seconds between starting processes of one kind
    start_stagger: float = _opt(None, "number", limit=STAGGER)


@dataclass(frozen=True)
class GunicornSettings(ServiceCommon):
    bind: str = _opt("localhost:8080", "str")
    workers: int = _opt(1, "int", limit=WORKERS)
    timeout: float = _opt(300, "number", limit=SECONDS)
    extra_args: str = _opt("", "args")
    preload: bool = _opt(None, "bool")  # None: true unless the app server is unicornherder
    start_timeout: int = _opt(15, "int", limit=SECONDS)
    stop_timeout: int = _opt(65, "int", limit=SECONDS)
    restart_timeout: int = _opt(300, "int", limit=SECONDS)


@dataclass(frozen=True)
class CelerySettings(ServiceCommon):
    enable_beat: bool = _opt(True, "bool")
    concurrency: int = _opt(2, "int", limit=COUNT)
    loglevel: str = _opt("DEBUG", "choice", ("DEBUG", "INFO", "WARNING", "ERROR"))
    queues: str = _opt("celery,galaxy.internal,galaxy.external", "str")
    pool: str = _opt("threads", "choice", ("prefork", "eventlet", "gevent", "solo", "processes", "threads"))
    extra_args: str = _opt("", "args")


@dataclass(frozen=True)
class GxItProxySettings(ServiceCommon):
    enable: bool = _opt(False, "bool")
    version: str = _opt(">=0.0.6", "str")
    ip: str = _opt("localhost", "str")
    port: int = _opt(4002, "port")
    sessions: str = _opt("database/interactivetools_map.sqlite", "str")
    verbose: bool = _opt(True, "bool")
    forward_ip: str = _opt(None, "str")
    forward_port: int = _opt(None, "port")
    reverse_proxy: bool = _opt(False, "bool")


@dataclass(frozen=True)
class TusdSettings(ServiceCommon):
    enable: bool = _opt(False, "bool")
    tusd_path: str = _opt("tusd", "str")
    host: str = _opt("localhost", "str")
    port: int = _opt(1080, "port")
    upload_dir: str = _opt(None, "str")
    hooks_http: str = _opt("/api/upload/hooks", "str")
    hooks_enabled_events: str = _opt("pre-create", "str")
    extra_args: str = _opt("", "args")


@dataclass(frozen=True)
class ReportsSettings(ServiceCommon):
    enable: bool = _opt(False, "bool")
    config_file: str = _opt("reports.yml", "str")
    bind: str = _opt("localhost:9001", "str")
    workers: int = _opt(1, "int", limit=WORKERS)
    timeout: float = _opt(300, "number", limit=SECONDS)
    url_prefix: str = _opt(None, "str")
    extra_args: str = _opt("", "args")


@dataclass(frozen=True)
class GravitySettings:
    """The whole ``gravity:`` section; service sections that may repeat are tuples."""

    process_manager: str = _opt(None, "choice", PROCESS_MANAGERS)
    service_command_style: str = _opt("gravity", "choice", ("gravity", "direct", "exec"))
    use_service_instances: bool = _opt(True, "bool")
    umask: str = _opt("022", "umask")
    memory_limit: float = _opt(None, "number", limit=GIGABYTES)
    memory_high: float = _opt(None, "number", limit=GIGABYTES)
    start_stagger: float = _opt(None, "number", limit=STAGGER)  # galaxyctl's: the default of every service section
    galaxy_config_file: str = _opt(None, "str")
    galaxy_root: str = _opt(None, "str")
    galaxy_user: str = _opt(None, "str")
    galaxy_group: str = _opt(None, "str")
    log_dir: str = _opt(None, "str")
    log_namespace: str = _opt(None, "str")
    virtualenv: str = _opt(None, "str")
    app_server: str = _opt("gunicorn", "choice", APP_SERVERS)
    instance_name: str = _opt(DEFAULT_INSTANCE_NAME, "name", limit=NAME_LENGTH)
    gunicorn: tuple = _opt((GunicornSettings(),), ("sections", GunicornSettings))
    celery: CelerySettings = _opt(CelerySettings(), ("section", CelerySettings))
    gx_it_proxy: GxItProxySettings = _opt(GxItProxySettings(), ("section", GxItProxySettings))
    tusd: tuple = _opt((TusdSettings(),), ("sections", TusdSettings))
    reports: ReportsSettings = _opt(ReportsSettings(), ("section", ReportsSettings))
    handlers: dict = _opt({}, "handlers")
    # galaxyctl's own keys (Laniakea's storage management); contents are checked by storage.py
    luks: dict = _opt({}, "mapping")
    onedata: dict = _opt({}, "mapping")
    storage: dict = _opt({}, "mapping")
    # galaxyctl's own keys for many hosts sharing this file (contents are checked by core/hosts.py)
    hosts: dict = _opt({}, "mapping")
    beat_host: str = _opt(None, "str")


# What a ``gravity.handlers`` entry may say: its processes and naming (core/jobconf.py), then the
# service settings gravity reads from it (core/services.py); any other key is warned about.
HANDLER_ENTRY_KEYS = ("processes", "pools", "name_template", "environment") + (
    "start_timeout",
    "stop_timeout",
    "start_stagger",
    "memory_limit",
    "memory_high",
    "umask",
)

# Keys of gravity 0.x state (attribs) that moved; read so an old state dir loads as is.
LEGACY_KEYS = ("bind", "bind_address", "bind_port")
# Keys that never persist: they revert to their default when unset (gravity 0.x, "Configuration Precedence");
# galaxyctl's host keys neither: a host or a share removed from the file must be gone, not merged back.
NON_PERSISTENT_KEYS = ("app_server", "handlers", "hosts", "beat_host")


@dataclass(frozen=True)
class GalaxyConfig:
    """One registered config file, loaded: where it is, what it says, what we warned about."""

    path: str  # the registered file (galaxy.yml, or a gravity-only file)
    galaxy_config_file: str  # the Galaxy config the services are given (GALAXY_CONFIG_FILE)
    gravity_raw: dict  # the gravity values set explicitly in the file (for configstate attribs)
    galaxy: dict  # the ``galaxy:`` section, unvalidated (Galaxy validates its own)
    warnings: tuple = ()
