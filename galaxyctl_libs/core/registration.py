"""Registered configs: register, deregister, rename, and what each resolves to (an Instance).

Knows no process manager: backends/update.py turns resolved instances into a manager's files.
Each verb takes the state dir and returns data; the CLI renders it.
"""

import os
from dataclasses import dataclass, replace

from galaxyctl_libs.core import config as configmod
from galaxyctl_libs.core import hosts, jobconf
from galaxyctl_libs.core import state as statemod
from galaxyctl_libs.core.services import Instance, galaxy_data_dir
from galaxyctl_libs.errors import GalaxyctlError, NothingConfigured
from galaxyctl_libs.paths import StatePaths
from galaxyctl_libs.rootpolicy import run_as

LOG_DIR_UNUSED_UNDER_SYSTEMD = (
    "gravity.log_dir is not used under systemd: services log to the journal (journalctl -u UNIT)"
)

# ---------------------------------------------------------------- resolving registered configs


def resolve_record(record, state_dir, enforce_user=True):
    """Every instance of a registered file: [(Instance, attribs to persist, warnings)].  The items of
    a gravity: list are named by their own instance_name and persist nothing (as under gravity 1.x)."""
    configs = configmod.load_configs(record.path)
    if len(configs) == 1:
        return [resolve(record, state_dir, enforce_user, loaded=configs[0])]
    listed = replace(record, attribs={}, instance_name=configmod.DEFAULT_INSTANCE_NAME)
    resolved = []
    for loaded in configs:
        instance, _, warnings = resolve(listed, state_dir, enforce_user, loaded=loaded)
        resolved.append((instance, {}, warnings))
    return resolved


def resolve(record, state_dir, enforce_user=True, host=None, check_cluster=True, loaded=None):
    """Config file + persisted attribs → (Instance, attribs to persist, warnings).

    ``enforce_user=False`` is for commands that only look or stop: they never refuse over users.
    ``host``: the host whose share to resolve (default: this one, core/hosts.py); ``check_cluster``:
    whether to refuse a config that gives two hosts one server name (every host is expanded).
    ``loaded``: the file as read (one instance of a gravity: list); else it is read here.
    """
    loaded = loaded or configmod.load_config(record.path)
    attribs = configmod.merge_attribs(record.attribs, loaded.gravity_raw)
    settings = configmod.parse_gravity(attribs, record.path)
    if settings.process_manager not in (None, "supervisor", "systemd"):
        warning = (
            f"{record.path}: gravity.process_manager: {settings.process_manager} is not supported, using supervisor"
        )
        loaded = replace(loaded, warnings=loaded.warnings + (warning,))
    if settings.process_manager == "systemd" and settings.log_dir:  # see backends/systemd/render.py
        warning = f"{record.path}: {LOG_DIR_UNUSED_UNDER_SYSTEMD}"
        loaded = replace(loaded, warnings=loaded.warnings + (warning,))
    name = settings.instance_name if "instance_name" in loaded.gravity_raw else record.instance_name
    galaxy_root = configmod.find_galaxy_root(record.path, settings)
    settings, handlers, more, host = host_share(record.path, loaded, settings, galaxy_root, name, host, check_cluster)
    loaded = replace(loaded, warnings=loaded.warnings + more)
    config_dir = os.path.dirname(record.path)
    user = run_as(settings, record.path) if enforce_user else (None, None)
    log_dir = settings.log_dir and os.path.join(config_dir, settings.log_dir)
    if not log_dir and user[0]:
        log_dir = _galaxy_user_log_dir(record.path, loaded, galaxy_root)
    instance = Instance(
        name=name,
        config_path=record.path,
        galaxy_config_file=loaded.galaxy_config_file,
        settings=settings,
        galaxy=loaded.galaxy,
        galaxy_root=galaxy_root,
        handlers=handlers,
        host=host,
        state_dir=state_dir,
        log_dir=log_dir or StatePaths.of(state_dir).log_dir,
        run_as=user,
    )
    return instance, attribs, loaded.warnings


def host_share(path, loaded, settings, galaxy_root, name, host=None, check_cluster=True):
    """(settings, handlers, warnings, hosts.OnHost) of the share of ``host`` (default: this host)
    under ``gravity.hosts`` (everything, and None, without it; ``{hostname}`` in a name_template is
    filled in either way); ``check_cluster``: refuse a config giving two hosts one server name."""
    cluster = hosts.parse(settings, path)
    host = host or hosts.this_host(checked=cluster is not None)  # without hosts: only {hostname} uses it
    share = hosts.share_of(cluster, host, path) if cluster else None
    job_config = jobconf.load_job_handlers(
        loaded.galaxy,
        loaded.galaxy_config_file,
        hosts.handler_entries(settings.handlers, host, cluster, share),
        galaxy_root=galaxy_root,
        gravity_config_file=path,
        instance_name=name,
    )
    warnings = tuple(filter(None, [jobconf.assignment_warning(job_config)]))
    if cluster is None:
        return settings, job_config.handlers, warnings, None
    static = job_config.static_handlers
    if check_cluster:
        hosts.check_names(cluster, settings, loaded.galaxy, path, name, static)
        idle = hosts.unassigned(cluster, settings, static)
        if idle:
            warnings += (f"{path}: gravity.hosts: no host runs the job handler(s) {', '.join(idle)}",)
    handlers = hosts.keep_handlers(job_config.handlers, share)
    on_host = hosts.OnHost(host, cluster, settings, static)
    return hosts.settings_for(settings, loaded.galaxy, share, host, cluster.beat_host), handlers, warnings, on_host


def _galaxy_user_log_dir(config_path, loaded, galaxy_root):
    """As root with a Galaxy user and no log_dir: ``DATA_DIR/gravity/log`` (gravity 1.x's place),
    which that user can write; the root-only state dir is out of its reach."""
    data_dir = galaxy_data_dir(loaded.galaxy, loaded.galaxy_config_file, galaxy_root)
    if data_dir:
        return os.path.join(data_dir, "gravity", "log")
    raise GalaxyctlError(
        f"{config_path}: set gravity.log_dir (or galaxy.data_dir): as root the services' logs go where the Galaxy "
        "user can write, by default DATA_DIR/gravity/log"
    )


def resolve_all(state, enforce_user=True):
    """Every registered instance, resolved; the first bad config stops everything (nothing changes)."""
    resolved = []
    seen = {}
    for record in state.config_files.values():
        for instance, attribs, warnings in resolve_record(record, state.state_dir, enforce_user):
            if instance.name in seen:
                raise GalaxyctlError(
                    f"instance name {instance.name!r} is used by both {seen[instance.name]} and {record.path}; "
                    "set gravity.instance_name in one of them"
                )
            seen[instance.name] = record.path
            resolved.append((record, instance, attribs, warnings))
    return resolved


# ---------------------------------------------------------------- registration


@dataclass(frozen=True)
class Registered:
    path: str
    instance_name: str
    already: bool
    warnings: tuple = ()


def register(state_dir, paths):
    """Add config files to configstate.yaml (validated first); does not update or start."""
    with statemod.operation_lock(state_dir):
        return _register_locked(state_dir, paths)


def _register_locked(state_dir, paths):
    results = []
    with statemod.locked_state(state_dir, registered=True) as state:
        for path in paths:
            path = os.path.abspath(path)
            configs = configmod.load_configs(path)
            warnings = tuple(w for loaded in configs for w in loaded.warnings)
            if path in state.config_files:
                results.append(Registered(path, state.config_files[path].instance_name, True, warnings))
                continue
            names = [configmod.parse_gravity(loaded.gravity_raw, path).instance_name for loaded in configs]
            for name in names:
                other = state.record_for_instance(name)
                if other is not None or names.count(name) > 1:
                    where = other.path if other is not None else path
                    raise GalaxyctlError(
                        f"instance name {name!r} is already used by {where}; set gravity.instance_name in {path}"
                    )
            name = statemod.LISTED_NAMES.join(names)  # a gravity: list's instances, one record
            state.config_files[path] = statemod.ConfigRecord(path=path, instance_name=name)
            results.append(Registered(path, name, False, warnings))
    return results


def registered_path(state, path):
    """The registered path matching ``path`` (absolute or as given), or a clear error."""
    for candidate in (os.path.abspath(path), path):
        if candidate in state.config_files:
            return candidate
    record = state.record_for_instance(path)
    if record is not None:
        return record.path
    raise GalaxyctlError(f"not registered: {path} (see 'galaxyctl list')")


def deregister(state_dir, paths):
    removed = []
    with statemod.operation_lock(state_dir), statemod.locked_state(state_dir, registered=True) as state:
        for path in paths:
            removed.append(state.config_files.pop(registered_path(state, path)).path)
    return removed


def rename(state_dir, old, new):
    new = os.path.abspath(new)
    with statemod.operation_lock(state_dir), statemod.locked_state(state_dir, registered=True) as state:
        old = registered_path(state, old)
        if new in state.config_files:
            raise GalaxyctlError(f"already registered: {new}")
        configmod.load_configs(new)
        record = state.config_files.pop(old)
        record.path = new
        state.config_files[new] = record
    return old, new


def auto_register(state_dir, cwd):
    """gravity 0.x's convenience: nothing registered and we stand in a Galaxy root → register its config.

    Not when this run names its configs (-c, the environment): those are used as they are; configs
    gravity 1.x's auto-load found are used only outside a Galaxy root (there registering wins)."""
    if statemod.load_registered(state_dir).config_files:
        return None
    given = statemod.run_configs()
    if given is not None and given.source != statemod.FROM_AUTO_LOAD:
        return None
    for name in ("config/galaxy.yml", "config/galaxy.yml.sample"):
        candidate = os.path.join(cwd, name)
        if os.path.exists(candidate) and os.path.isdir(os.path.join(cwd, "lib", "galaxy")):
            return _register_locked(state_dir, [candidate])[0]
    if given is not None:
        return None
    raise NothingConfigured()
