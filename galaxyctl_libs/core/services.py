"""What runs: each of Galaxy's services as plain data (argv, environment, cwd, timeouts).

The command lines and environments are gravity 1.2.4's for the same config (``galaxyctl exec -n``
prints the same argv and environment; tests/test_gravity_parity.py runs both and compares), so a
deployment moves over unchanged.  A process manager backend (backends/) turns these into its
files; ``galaxyctl exec`` runs one as is.

What differs from gravity, on purpose, and why: README.rst, "Command lines: what differs from
gravity 1.x and why" (executables as absolute paths, the herder around a preloaded gunicorn,
galaxyctl's marker variables, literal environment values, ...).  Names are gravity's: a gunicorn or
tusd list and a gravity.handlers entry are one service per process here, each knowing gravity's
service it belongs to (``list_names``, ``Service.gravity_service``).
"""

import os
import shlex
from dataclasses import dataclass

from galaxyctl_libs.core import hosts
from galaxyctl_libs.core.broker import worker_broker
from galaxyctl_libs.core.config import effective_preload
from galaxyctl_libs.core.database import database_url
from galaxyctl_libs.core.executables import find_executable, gunicorn_version, venv_bin
from galaxyctl_libs.core.kinds import KINDS, kind_of, role_of_pools
from galaxyctl_libs.core.targets import (  # noqa: F401 - the service data lives with the targets
    GRACEFUL_HERDER,
    GRACEFUL_HUP,
    GRACEFUL_NONE,
    Service,
)
from galaxyctl_libs.errors import GalaxyctlError
from galaxyctl_libs.probes import procfs

GUNICORN_APP = "galaxy.webapps.galaxy.fast_factory:factory()"
GUNICORN_WORKER = "galaxy.webapps.galaxy.workers.Worker"
GUNICORN_CONFIG = "python:galaxy.web_stack.gunicorn_config"
REPORTS_APP = "galaxy.webapps.reports.fast_factory:factory()"
REPORTS_WORKER = "uvicorn.workers.UvicornWorker"
CELERY_BEAT_SCHEDULE = "celerybeat-schedule"
GX_IT_PROXY_PACKAGE = "@galaxyproject/gx-it-proxy"
NO_CONTROL_SOCKET_SINCE = (25, 1)  # gunicorn opens ~/.gunicorn control sockets from 25.1 on


@dataclass(frozen=True)
class Instance:
    """A registered config, resolved: everything the services of one Galaxy need."""

    name: str
    config_path: str  # the registered file
    galaxy_config_file: str  # GALAXY_CONFIG_FILE for the services
    settings: object  # config.GravitySettings
    galaxy: dict  # the galaxy: section
    galaxy_root: str  # None for a Galaxy installed as a package (no source tree)
    state_dir: str
    log_dir: str
    run_as: tuple = (None, None)  # (user, group) when galaxyctl runs as root
    handlers: tuple = ()  # jobconf.Handler: static (job_conf) and dynamic (gravity.handlers)
    host: object = None  # hosts.OnHost: the host of gravity.hosts it is resolved for (core/hosts.py), else None


def galaxy_data_dir(galaxy, galaxy_config_file, galaxy_root):
    """Galaxy's data_dir, else its default (``database`` in the Galaxy root); None when neither is
    known (a packaged Galaxy): a persistent place of the Galaxy user's, for what galaxyctl keeps as root."""
    data_dir = galaxy.get("data_dir")
    if isinstance(data_dir, str) and data_dir:
        return os.path.join(os.path.dirname(galaxy_config_file), data_dir)
    return os.path.join(galaxy_root, "database") if galaxy_root else None


def beat_dir(instance):
    """Where celery-beat keeps its schedule: the state dir (gravity's place), or, when Galaxy runs as
    another user who cannot enter the root-only state dir, Galaxy's data dir (else its log dir):
    never the runtime dir, a tmpfs, where the schedule would be lost at every reboot."""
    if not instance.run_as[0]:
        return instance.state_dir
    return galaxy_data_dir(instance.galaxy, instance.galaxy_config_file, instance.galaxy_root) or instance.log_dir


def galaxy_environment(instance):
    """What gravity gives the services that load Galaxy (gunicorn, celery, celery-beat; uWSGI here
    too): ``lib`` on the Python path (relative: they run in galaxy_root) and the config file."""
    return [("PYTHONPATH", "lib"), ("GALAXY_CONFIG_FILE", instance.galaxy_config_file)]


def _common(instance, section, service_type, service_name, argv, base_env=(), **kwargs):
    """One Service with the settings every service shares (env, umask, timeouts, user).

    The environment is gravity's: the service type's own variables (``base_env``), VIRTUAL_ENV, the
    section's ``environment``, and the virtualenv's bin in front of PATH -- of the section's PATH
    when it sets one, else of the inherited one.
    """
    settings = instance.settings
    environment = list(base_env)
    if settings.virtualenv:
        environment.append(("VIRTUAL_ENV", settings.virtualenv))
    path_prepend = (venv_bin(instance),) if settings.virtualenv else ()
    for name, value in section.environment.items():
        if name == "PATH" and path_prepend:
            value, path_prepend = os.pathsep.join(path_prepend + (value,)), ()
        environment.append((name, value))
    # last, so a config cannot override them: they find this state dir's processes without supervisord
    environment.append((procfs.STATE_ID_ENV, procfs.state_id(instance.state_dir)))
    environment.append((procfs.SERVICE_ENV, procfs.service_key(instance.name, service_name)))
    kwargs.setdefault("graceful", kind_of(service_type).reload)
    return Service(
        instance_name=instance.name,
        service_type=service_type,
        service_name=service_name,
        argv=tuple(argv),
        environment=tuple(environment),
        cwd=instance.galaxy_root or os.path.dirname(instance.galaxy_config_file),
        path_prepend=path_prepend,
        umask=section.umask or settings.umask,
        start_timeout=section.start_timeout,
        stop_timeout=section.stop_timeout,
        user=instance.run_as[0],
        group=instance.run_as[1],
        memory_limit=section.memory_limit or settings.memory_limit,  # the service's own, else the global one
        memory_high=section.memory_high or settings.memory_high,
        log_namespace=settings.log_namespace,
        start_stagger=_stagger(section.start_stagger, settings.start_stagger),
        **kwargs,
    )


def _stagger(own, default):
    """``start_stagger``: the section's own, else the gravity section's, else none (0)."""
    value = own if own is not None else default
    return max(0.0, float(value)) if value else 0


def _number(value):
    """A number as gravity prints it: ``300``, not ``300.0`` (nor ``1e+06``)."""
    return str(int(value)) if float(value).is_integer() else str(value)


def list_names(instance, base, sections):
    """gravity's names for the enabled sections of a gunicorn or tusd list: [(section, service name,
    the Service fields placing it in gravity's service)].  One section is ``gunicorn``; with
    use_service_instances (gravity's default) several are the processes of gravity's service
    ``gunicorn``: ``gunicorn_0``, ``gunicorn_1`` (supervisord's ``gunicorn:gunicorn_0``, systemd's
    ``galaxy-gunicorn@0``); without, services of their own: ``gunicorn0``, ``gunicorn1``."""
    enabled = [(index, section) for index, section in enumerate(sections) if section.enable]
    if len(sections) == 1 or (instance.settings.use_service_instances and len(enabled) == 1):
        return [(section, base, {}) for _, section in enabled]
    if not instance.settings.use_service_instances:
        return [(section, f"{base}{index}", {}) for index, section in enabled]
    return [(section, f"{base}_{n}", _member(base, n, len(enabled))) for n, (_, section) in enumerate(enabled)]


def _member(gravity_service, number, count):
    return {"gravity_service": gravity_service, "process_number": number, "process_count": count}


def uwsgi_services(instance):
    """``app_server: uwsgi``: uWSGI runs the ``[uwsgi]`` section of galaxy.ini or ``uwsgi:`` of galaxy.yml."""
    if instance.settings.app_server != "uwsgi":
        return []
    path = instance.config_path
    option = "--ini" if path.endswith(".ini") else "--yaml"
    # --die-on-term: uWSGI 2.0 reloads on SIGTERM otherwise, and supervisord stops with SIGTERM
    argv = [find_executable(instance, "uwsgi"), option, path, "--die-on-term"]
    gunicorn = instance.settings.gunicorn[0]
    env = galaxy_environment(instance)
    return [_common(instance, gunicorn, "uwsgi", "uwsgi", argv, env, uwsgi_config=path)]


def gunicorn_services(instance):
    settings = instance.settings
    if settings.app_server == "uwsgi":
        return []
    prefix = str(instance.galaxy.get("galaxy_url_prefix") or "").rstrip("/")
    services = []
    for gunicorn, name, member in list_names(instance, "gunicorn", settings.gunicorn):
        exe = find_executable(instance, "gunicorn")
        preload = effective_preload(settings, gunicorn)
        argv = [exe, GUNICORN_APP, "--timeout", _number(gunicorn.timeout), "--pythonpath", "lib"]
        argv += ["-k", GUNICORN_WORKER, "-b", gunicorn.bind, f"--workers={gunicorn.workers}"]
        argv += ["--config", GUNICORN_CONFIG]
        if preload:
            argv.append("--preload")
        argv += shlex.split(gunicorn.extra_args)
        version = gunicorn_version(exe, *instance.run_as)
        if version and version >= NO_CONTROL_SOCKET_SINCE:
            argv.append("--no-control-socket")  # last, like gravity's
        # HUP cannot reload preloaded code: then a backend runs gunicorn under our herder, which re-execs
        # it with zero downtime (backends.base.herded_argv); the service itself is gravity's command line.
        herded = preload or settings.app_server == "unicornherder"
        services.append(
            _common(
                instance,
                gunicorn,
                "gunicorn",
                name,
                argv,
                galaxy_environment(instance),
                graceful=GRACEFUL_HERDER if herded else GRACEFUL_HUP,
                bind=gunicorn.bind,
                url_prefix=prefix,
                ready_timeout=gunicorn.restart_timeout,
                **member,
            )
        )
    return services


def beat_schedule(instance):
    """celery-beat's ``--schedule`` file: gravity's name in beat_dir, prefixed by the instance name
    unless it is ``_default_`` (every registered instance shares the state dir)."""
    name = CELERY_BEAT_SCHEDULE if instance.name == "_default_" else f"{instance.name}-{CELERY_BEAT_SCHEDULE}"
    return os.path.join(beat_dir(instance), name)


def celery_services(instance):
    celery = instance.settings.celery
    exe = find_executable(instance, "celery") if celery.enable or celery.enable_beat else None
    env = galaxy_environment(instance)
    services = []
    if celery.enable:
        argv = [exe, "--app", "galaxy.celery", "worker", "--concurrency", str(celery.concurrency)]
        argv += ["--loglevel", celery.loglevel, "--pool", celery.pool, "--queues", celery.queues]
        argv += shlex.split(celery.extra_args)
        broker = worker_broker(instance, celery.environment)  # for the ping: status reads no galaxy.yml
        services.append(_common(instance, celery, "celery", "celery", argv, env, **broker))
    if celery.enable_beat:
        argv = [exe, "--app", "galaxy.celery", "beat", "--loglevel", celery.loglevel]
        argv += ["--schedule", beat_schedule(instance)]
        services.append(_common(instance, celery, "celery-beat", "celery-beat", argv, env))
    return services


def proxy_path_prefix(galaxy):
    """gx-it-proxy's ``--proxyPathPrefix``, as gravity builds it from Galaxy's settings: the base path
    (``/`` by default) with exactly one slash either side, then ``interactivetools_prefix``
    (``interactivetool`` by default, taken as written), then ``/ep``."""
    base = galaxy.get("interactivetools_base_path")
    base = "/" if base is None else str(base)
    base = "/" + f"/{base.strip('/')}/".lstrip("/")
    prefix = galaxy.get("interactivetools_prefix")
    return f"{base}{'interactivetool' if prefix is None else prefix}/ep"


def gx_it_proxy_services(instance):
    proxy = instance.settings.gx_it_proxy
    if not proxy.enable:
        return []
    galaxy = instance.galaxy
    sessions = galaxy.get("interactivetoolsproxy_map") or galaxy.get("interactivetools_map") or proxy.sessions
    # npx asks before it installs a package unless npm_config_yes (below) says yes
    argv = [find_executable(instance, "npx", python_tool=False), f"{GX_IT_PROXY_PACKAGE}@{proxy.version}"]
    argv += ["--ip", proxy.ip, "--port", str(proxy.port), "--sessions", str(sessions)]
    if proxy.verbose:
        argv.append("--verbose")
    if proxy.forward_ip:
        argv += ["--forwardIP", proxy.forward_ip]
    if proxy.forward_port:
        argv += ["--forwardPort", str(proxy.forward_port)]
    if proxy.reverse_proxy:
        argv.append("--reverseProxy")
    argv += ["--proxyPathPrefix", proxy_path_prefix(galaxy)]
    return [_common(instance, proxy, "gx-it-proxy", "gx-it-proxy", argv, [("npm_config_yes", "true")])]


def tusd_services(instance):
    settings = instance.settings
    services = []
    for tusd, name, member in list_names(instance, "tusd", settings.tusd):
        upload_dir = tusd.upload_dir or instance.galaxy.get("tus_upload_store") or "database/tmp/tus_upload_store"
        hooks_http = tusd.hooks_http
        if hooks_http.startswith("/"):  # a path on Galaxy (gravity refuses it without galaxy_infrastructure_url)
            infrastructure = str(instance.galaxy.get("galaxy_infrastructure_url") or "http://localhost:8080")
            hooks_http = infrastructure.rstrip("/") + hooks_http
        argv = [tusd.tusd_path, f"-host={tusd.host}", f"-port={tusd.port}", f"-upload-dir={upload_dir}"]
        argv += [f"-hooks-http={hooks_http}", "-hooks-http-forward-headers=X-Api-Key,Cookie"]
        argv += shlex.split(tusd.extra_args)
        argv += ["-hooks-enabled-events", tusd.hooks_enabled_events]
        services.append(_common(instance, tusd, "tusd", name, argv, **member))  # graceful: its kind's (none)
    return services


def reports_services(instance):
    """Galaxy's reports app: the FastAPI factory under uvicorn workers, served at ``url_prefix``."""
    reports = instance.settings.reports
    if not reports.enable:
        return []
    config_file = os.path.join(os.path.dirname(instance.galaxy_config_file), reports.config_file)
    argv = [find_executable(instance, "gunicorn"), REPORTS_APP, "--timeout", _number(reports.timeout)]
    argv += ["--pythonpath", "lib", "-k", REPORTS_WORKER, "-b", reports.bind, f"--workers={reports.workers}"]
    argv += ["--config", GUNICORN_CONFIG]
    if reports.url_prefix:
        argv += ["--env", f"SCRIPT_NAME={reports.url_prefix}"]
    argv += shlex.split(reports.extra_args)
    env = [("PYTHONPATH", "lib"), ("GALAXY_REPORTS_CONFIG", config_file)]
    prefix = (reports.url_prefix or "").rstrip("/")
    return [_common(instance, reports, "reports", "reports", argv, env, bind=reports.bind, url_prefix=prefix)]


def galaxy_main_argv(instance):
    """A source tree's ``scripts/galaxy-main`` run by Python (the virtualenv's; relative, like
    gravity's: the service runs in galaxy_root), else a packaged Galaxy's ``galaxy-main``."""
    if instance.galaxy_root and os.path.exists(os.path.join(instance.galaxy_root, "scripts", "galaxy-main")):
        return [find_executable(instance, "python"), "./scripts/galaxy-main"]
    return [find_executable(instance, "galaxy-main")]


def handler_services(instance):
    """One service per job handler process: ``galaxy-main -c CONFIG --server-name=NAME [--attach-to-pool=P]``.

    Like gravity, a handler gets no GALAXY_CONFIG_FILE nor PYTHONPATH: ``-c`` names the config and
    galaxy-main finds its own lib.
    """
    services = []
    for handler in instance.handlers:
        argv = galaxy_main_argv(instance) + ["-c", instance.galaxy_config_file, f"--server-name={handler.server_name}"]
        argv += list(handler.attach_to_pool_args())
        section = _HandlerSection(handler.env, **_handler_settings(instance, handler))
        cwd = instance.galaxy_root or os.path.dirname(instance.galaxy_config_file)
        db = database_url(instance.galaxy, instance.galaxy_root, instance.galaxy_config_file, cwd)
        role = role_of_pools(handler.pools)
        # with use_service_instances, an entry's processes are one gravity service named by the entry
        grouped = handler.entry and instance.settings.use_service_instances
        member = _member(handler.entry, handler.number, handler.count) if grouped else {}
        services.append(
            _common(instance, section, "standalone", handler.server_name, argv, heartbeat_db=db, role=role, **member)
        )
    return services


_HANDLER_SETTINGS = (  # (key, types, what a valid value is)
    ("start_timeout", int, "a number of seconds"),
    ("stop_timeout", int, "a number of seconds"),
    ("start_stagger", (int, float), "a number of seconds"),
    ("memory_limit", (int, float), "a number of GB"),
    ("memory_high", (int, float), "a number of GB"),
    ("umask", str, "an octal umask"),
)


def _handler_settings(instance, handler):
    """The service settings a handler entry may carry, as gravity reads them from it (timeouts, umask,
    memory limits, start_stagger); a value of the wrong type is refused, not silently dropped."""
    options, found = dict(handler.options), {}
    for key, kinds, expected in _HANDLER_SETTINGS:
        value = options.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, kinds) or (kinds is not str and value < 0):
            raise GalaxyctlError(
                f"{instance.config_path}: gravity.handlers: {handler.server_name}: {key}: expected {expected}, "
                f"got {value!r}"
            )
        found[key] = value
    return found


@dataclass(frozen=True)
class _HandlerSection:
    """The per-service settings a handler has (its environment); the rest are the global defaults."""

    environment: dict
    umask: str = None
    start_timeout: int = 20
    stop_timeout: int = 65
    memory_limit: float = None
    memory_high: float = None
    start_stagger: float = None


def builders():
    """Each kind's builder (core/kinds.py), once, in the order of the kinds."""
    return tuple(globals()[name] for name in dict.fromkeys(kind.builder for kind in KINDS.values()))


def build_services(instance, extra_builders=()):
    """Every service the instance's settings ask for, in a stable order."""
    services = []
    for builder in builders() + tuple(extra_builders):
        services.extend(builder(instance))
    if instance.host:  # one host of several: celery-beat holds a lock in the shared data dir while it runs
        data_dir = galaxy_data_dir(instance.galaxy, instance.galaxy_config_file, instance.galaxy_root)
        return hosts.lock_beat(services, data_dir or instance.log_dir, instance.host.name)
    return tuple(services)
