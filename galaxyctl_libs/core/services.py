"""What runs: each of Galaxy's services as plain data (argv, environment, cwd, timeouts).

The command lines are gravity's for the same config, so a deployment moves over unchanged.  A
process manager backend (backends/) turns these into its files; ``galaxyctl exec`` runs one as is.
"""

import functools
import os
import re
import shlex
import sys
from dataclasses import dataclass

from galaxyctl_libs.core.config import effective_preload
from galaxyctl_libs.core.targets import (  # noqa: F401 - the service data lives with the targets
    GRACEFUL_HERDER,
    GRACEFUL_HUP,
    GRACEFUL_NONE,
    Service,
)
from galaxyctl_libs.errors import GalaxyctlError
from galaxyctl_libs.paths import StatePaths
from galaxyctl_libs.probes import procfs

GUNICORN_APP = "galaxy.webapps.galaxy.fast_factory:factory()"
GUNICORN_WORKER = "galaxy.webapps.galaxy.workers.Worker"
GUNICORN_CONFIG = "python:galaxy.web_stack.gunicorn_config"
REPORTS_APP = "galaxy.webapps.reports.buildapp:app_factory()"
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


def _bin_dir(instance):
    if instance.settings.virtualenv:
        return os.path.join(instance.settings.virtualenv, "bin")
    return None


def find_executable(instance, name, python_tool=True):
    """The virtualenv's copy if there is one, else galaxyctl's own venv, else PATH, else the bare name.

    With ``gravity.virtualenv`` set, Galaxy's Python tools (gunicorn, celery, galaxy-main, uwsgi) come
    from that venv only: a venv without them is an error, never a silent fall-back to galaxyctl's
    own gunicorn running Galaxy with the wrong Python.  ``npx`` and ``tusd`` may come from PATH.
    """
    venv_bin = _bin_dir(instance)
    if venv_bin and python_tool:
        if not os.access(os.path.join(venv_bin, "python"), os.X_OK):
            raise GalaxyctlError(
                f"{instance.config_path}: gravity.virtualenv: {instance.settings.virtualenv} is not a virtualenv "
                "(no bin/python)"
            )
        if not os.access(os.path.join(venv_bin, name), os.X_OK):
            raise GalaxyctlError(
                f"{instance.config_path}: gravity.virtualenv: {venv_bin} has no {name}; install it there "
                "(pip install into Galaxy's virtualenv)"
            )
        return os.path.join(venv_bin, name)
    for directory in (venv_bin, os.path.dirname(sys.executable)):
        if directory and os.access(os.path.join(directory, name), os.X_OK):
            return os.path.join(directory, name)
    import shutil  # here, like the imports below: update pays only for what a config needs

    return shutil.which(name) or name


@functools.lru_cache(maxsize=None)
def gunicorn_version(gunicorn_exe, user=None, group=None):
    """The gunicorn version installed next to ``gunicorn_exe``: from its dist-info, else by asking it
    (as ``user``: as root, a program of the Galaxy user's venv never runs with root's ids)."""
    import glob

    prefix = os.path.dirname(os.path.dirname(os.path.realpath(gunicorn_exe))) if os.path.isabs(gunicorn_exe) else ""
    for info in (
        glob.glob(os.path.join(prefix, "lib", "python3*", "site-packages", "gunicorn-*.dist-info")) if prefix else ()
    ):
        found = re.match(r"gunicorn-(\d+)\.(\d+)", os.path.basename(info))
        if found:
            return int(found.group(1)), int(found.group(2))
    import subprocess

    try:
        from galaxyctl_libs.rootpolicy import subprocess_credentials

        out = subprocess.run(
            [gunicorn_exe, "--version"],
            capture_output=True,
            text=True,
            timeout=20,
            stdin=subprocess.DEVNULL,
            **subprocess_credentials(user, group),
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"(\d+)\.(\d+)", out)
    return (int(found.group(1)), int(found.group(2))) if found else None


def beat_dir(instance):
    """Where celery-beat keeps its schedule: the state dir (gravity's place), or, when Galaxy runs as
    another user who cannot enter the root-only state dir, Galaxy's data_dir (else that user's runtime dir)."""
    if not instance.run_as[0]:
        return instance.state_dir
    data_dir = instance.galaxy.get("data_dir")
    if isinstance(data_dir, str) and data_dir:
        return os.path.join(os.path.dirname(instance.galaxy_config_file), data_dir)
    return StatePaths.of(instance.state_dir).runtime_dir


def _common(instance, section, service_type, service_name, argv, extra_env=(), **kwargs):
    """One Service with the settings every service shares (env, umask, timeouts, user)."""
    settings = instance.settings
    environment = [("GALAXY_CONFIG_FILE", instance.galaxy_config_file)]
    if instance.galaxy_root and os.path.isdir(os.path.join(instance.galaxy_root, "lib", "galaxy")):
        # a source tree: gunicorn imports --config python:galaxy.… before it applies --pythonpath
        environment.append(("PYTHONPATH", os.path.join(instance.galaxy_root, "lib")))
    if settings.virtualenv:
        environment.append(("VIRTUAL_ENV", settings.virtualenv))
    environment.extend(extra_env)
    environment.extend(section.environment.items())
    # last, so a config cannot override them: they find this state dir's processes without supervisord
    environment.append((procfs.STATE_ID_ENV, procfs.state_id(instance.state_dir)))
    environment.append((procfs.SERVICE_ENV, procfs.service_key(instance.name, service_name)))
    ignored = tuple(
        f"{name}"
        for name in ("memory_limit", "memory_high")
        if getattr(section, name) is not None or getattr(settings, name) is not None
    )
    return Service(
        instance_name=instance.name,
        service_type=service_type,
        service_name=service_name,
        argv=tuple(argv),
        environment=tuple(environment),
        cwd=instance.galaxy_root or os.path.dirname(instance.galaxy_config_file),
        path_prepend=(_bin_dir(instance),) if settings.virtualenv else (),
        umask=section.umask or settings.umask,
        start_timeout=section.start_timeout,
        stop_timeout=section.stop_timeout,
        user=instance.run_as[0],
        group=instance.run_as[1],
        memory_limit=section.memory_limit or settings.memory_limit,  # the service's own, else the global one
        memory_high=section.memory_high or settings.memory_high,
        ignored=ignored,
        **kwargs,
    )


def _numbered(name, index, count):
    return name if count == 1 else f"{name}_{index}"


def uwsgi_services(instance):
    """``app_server: uwsgi``: uWSGI runs the ``[uwsgi]`` section of galaxy.ini or ``uwsgi:`` of galaxy.yml."""
    if instance.settings.app_server != "uwsgi":
        return []
    path = instance.config_path
    option = "--ini" if path.endswith(".ini") else "--yaml"
    # --die-on-term: uWSGI 2.0 reloads on SIGTERM otherwise, and supervisord stops with SIGTERM
    argv = [find_executable(instance, "uwsgi"), option, path, "--die-on-term"]
    gunicorn = instance.settings.gunicorn[0]
    return [_common(instance, gunicorn, "uwsgi", "uwsgi", argv, graceful=GRACEFUL_HUP, uwsgi_config=path)]


def gunicorn_services(instance):
    settings = instance.settings
    if settings.app_server == "uwsgi":
        return []
    prefix = str(instance.galaxy.get("galaxy_url_prefix") or "").rstrip("/")
    services = []
    for index, gunicorn in enumerate(settings.gunicorn):
        if not gunicorn.enable:
            continue
        exe = find_executable(instance, "gunicorn")
        preload = effective_preload(settings, gunicorn)
        argv = [exe, GUNICORN_APP, "--timeout", f"{gunicorn.timeout:g}", "--pythonpath", "lib"]
        argv += ["-k", GUNICORN_WORKER, "-b", gunicorn.bind, f"--workers={gunicorn.workers}"]
        argv += ["--config", GUNICORN_CONFIG]
        if preload:
            argv.append("--preload")
        version = gunicorn_version(exe, *instance.run_as)
        if version and version >= NO_CONTROL_SOCKET_SINCE:
            argv.append("--no-control-socket")
        argv += shlex.split(gunicorn.extra_args)
        name = _numbered("gunicorn", index, len(settings.gunicorn))
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
                graceful=GRACEFUL_HERDER if herded else GRACEFUL_HUP,
                bind=gunicorn.bind,
                url_prefix=prefix,
                ready_timeout=gunicorn.restart_timeout,
            )
        )
    return services


def celery_services(instance):
    celery = instance.settings.celery
    exe = find_executable(instance, "celery") if celery.enable or celery.enable_beat else None
    services = []
    if celery.enable:
        argv = [exe, "--app", "galaxy.celery", "worker", "--concurrency", str(celery.concurrency)]
        argv += ["--loglevel", celery.loglevel, "--pool", celery.pool, "--queues", celery.queues]
        argv += shlex.split(celery.extra_args)
        services.append(_common(instance, celery, "celery", "celery", argv))
    if celery.enable_beat:
        name = "celery-beat-schedule" if instance.name == "_default_" else f"{instance.name}-celery-beat-schedule"
        schedule = os.path.join(beat_dir(instance), name)
        argv = [exe, "--app", "galaxy.celery", "beat", "--loglevel", celery.loglevel, "--schedule", schedule]
        services.append(_common(instance, celery, "celery-beat", "celery-beat", argv))
    return services


def gx_it_proxy_services(instance):
    proxy = instance.settings.gx_it_proxy
    if not proxy.enable:
        return []
    sessions = instance.galaxy.get("interactivetools_map") or proxy.sessions
    argv = [find_executable(instance, "npx", python_tool=False), "--yes", f"@galaxyproject/gx-it-proxy@{proxy.version}"]
    argv += ["--ip", proxy.ip, "--port", str(proxy.port), "--sessions", sessions]
    if proxy.verbose:
        argv.append("--verbose")
    if proxy.forward_ip:
        argv += ["--forwardIP", proxy.forward_ip]
    if proxy.forward_port:
        argv += ["--forwardPort", str(proxy.forward_port)]
    if proxy.reverse_proxy:
        argv.append("--reverseProxy")
    prefix = instance.galaxy.get("interactivetools_prefix")
    if prefix:
        argv += ["--proxyPathPrefix", f"/{str(prefix).strip('/')}/ep"]
    return [_common(instance, proxy, "gx-it-proxy", "gx-it-proxy", argv)]


def tusd_services(instance):
    settings = instance.settings
    services = []
    for index, tusd in enumerate(settings.tusd):
        if not tusd.enable:
            continue
        upload_dir = tusd.upload_dir or instance.galaxy.get("tus_upload_store") or "database/tmp/tus_upload_store"
        infrastructure = str(instance.galaxy.get("galaxy_infrastructure_url") or "http://localhost:8080").rstrip("/")
        argv = [tusd.tusd_path, f"-host={tusd.host}", f"-port={tusd.port}", f"-upload-dir={upload_dir}"]
        argv += [f"-hooks-http={infrastructure}{tusd.hooks_http}", "-hooks-http-forward-headers=X-Api-Key,Cookie"]
        argv += shlex.split(tusd.extra_args)
        argv += ["-hooks-enabled-events", tusd.hooks_enabled_events]
        name = _numbered("tusd", index, len(settings.tusd))
        services.append(_common(instance, tusd, "tusd", name, argv, graceful=GRACEFUL_NONE))
    return services


def reports_services(instance):
    reports = instance.settings.reports
    if not reports.enable:
        return []
    config_file = os.path.join(os.path.dirname(instance.galaxy_config_file), reports.config_file)
    argv = [find_executable(instance, "gunicorn"), REPORTS_APP, "--config", GUNICORN_CONFIG]
    argv += ["-b", reports.bind, f"--workers={reports.workers}", "--timeout", f"{reports.timeout:g}"]
    argv += ["--pythonpath", "lib"] + shlex.split(reports.extra_args)
    env = [("GALAXY_REPORTS_CONFIG", config_file)]
    prefix = (reports.url_prefix or "").rstrip("/")
    if prefix:
        env.append(("GALAXY_REPORTS_URL_PREFIX", prefix))
    return [_common(instance, reports, "reports", "reports", argv, extra_env=env, bind=reports.bind, url_prefix=prefix)]


def galaxy_main_argv(instance):
    """``scripts/galaxy-main`` of a source tree (absolute: supervisord resolves paths itself), else
    the ``galaxy-main`` console script of a packaged Galaxy."""
    if instance.galaxy_root:
        script = os.path.join(instance.galaxy_root, "scripts", "galaxy-main")
        if os.path.exists(script):
            return [script]
    return [find_executable(instance, "galaxy-main")]


def handler_services(instance):
    """One service per job handler process: ``galaxy-main -c CONFIG --server-name=NAME [--attach-to-pool=P]``."""
    services = []
    for handler in instance.handlers:
        argv = galaxy_main_argv(instance) + ["-c", instance.galaxy_config_file, f"--server-name={handler.server_name}"]
        argv += list(handler.attach_to_pool_args())
        options = dict(handler.options)
        timeouts = {k: options[k] for k in ("start_timeout", "stop_timeout") if isinstance(options.get(k), int)}
        section = _HandlerSection(handler.env, **timeouts)
        services.append(_common(instance, section, "standalone", handler.server_name, argv))
    return services


@dataclass(frozen=True)
class _HandlerSection:
    """The per-service settings a handler has (its environment); the rest are the global defaults."""

    environment: dict
    umask: str = None
    start_timeout: int = 20
    stop_timeout: int = 65
    memory_limit: float = None
    memory_high: float = None


SERVICE_BUILDERS = (
    uwsgi_services,
    gunicorn_services,
    celery_services,
    gx_it_proxy_services,
    tusd_services,
    reports_services,
    handler_services,
)


def build_services(instance, extra_builders=()):
    """Every service the instance's settings ask for, in a stable order."""
    services = []
    for builder in SERVICE_BUILDERS + tuple(extra_builders):
        services.extend(builder(instance))
    return tuple(services)
