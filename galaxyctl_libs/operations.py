"""The verbs on configuration: register, update (configs → supervisor files), and what they resolve to.

Starting and stopping are in lifecycle.py, status and health in monitoring.py.
Each takes the state dir and returns data; the CLI renders it.
"""

import os
import pwd
import shlex
from dataclasses import dataclass, replace

from galaxyctl_libs import config as configmod
from galaxyctl_libs import fsutil, jobconf
from galaxyctl_libs import state as statemod
from galaxyctl_libs import supervisor as sup
from galaxyctl_libs.errors import GalaxyctlError
from galaxyctl_libs.rootpolicy import run_as
from galaxyctl_libs import targets as targets_mod
from galaxyctl_libs.targets import Target
from galaxyctl_libs.services import Instance, build_services, pid_dir

DEFAULT_READY_TIMEOUT = 120
LOG_TAIL_LINES = 15
# Taken before the state lock (statemod.LOCK_FILE), never after it: one order, no deadlock.
OPERATION_LOCK_FILE = ".galaxyctl.lock"


# ---------------------------------------------------------------- resolving registered configs


def operation_lock(state_dir):
    """Serialise galaxyctl runs on one state dir (cron + an admin): one lock for state and supervisor."""
    fsutil.ensure_private_dir(state_dir)
    return fsutil.exclusive_lock(os.path.join(state_dir, OPERATION_LOCK_FILE))


def resolve(record, state_dir, enforce_user=True):
    """Config file + persisted attribs → (Instance, attribs to persist, warnings).

    ``enforce_user=False`` is for commands that only look or stop: they never refuse over users.
    """
    loaded = configmod.load_config(record.path)
    attribs = configmod.merge_attribs(record.attribs, loaded.gravity_raw)
    settings = configmod.parse_gravity(attribs, record.path)
    if settings.process_manager not in (None, "supervisor"):
        warning = f"{record.path}: gravity.process_manager: {settings.process_manager} is not supported, using supervisor"
        loaded = replace(loaded, warnings=loaded.warnings + (warning,))
    name = settings.instance_name if "instance_name" in loaded.gravity_raw else record.instance_name
    galaxy_root = configmod.find_galaxy_root(record.path, settings)
    job_config = jobconf.load_job_handlers(
        loaded.galaxy, loaded.galaxy_config_file, settings.handlers, galaxy_root=galaxy_root,
        gravity_config_file=record.path, instance_name=name,
    )
    warning = jobconf.assignment_warning(job_config)
    if warning:
        loaded = replace(loaded, warnings=loaded.warnings + (warning,))
    config_dir = os.path.dirname(record.path)
    log_dir = settings.log_dir and os.path.join(config_dir, settings.log_dir)
    instance = Instance(
        name=name,
        config_path=record.path,
        galaxy_config_file=loaded.galaxy_config_file,
        settings=settings,
        galaxy=loaded.galaxy,
        galaxy_root=galaxy_root,
        handlers=job_config.handlers,
        state_dir=state_dir,
        log_dir=log_dir or os.path.join(state_dir, "log"),
        run_as=run_as(settings, record.path) if enforce_user else (None, None),
    )
    return instance, attribs, loaded.warnings


def resolve_all(state, enforce_user=True):
    """Every registered instance, resolved; the first bad config stops everything (nothing changes)."""
    resolved = []
    seen = {}
    for record in state.config_files.values():
        instance, attribs, warnings = resolve(record, state.state_dir, enforce_user)
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
    with operation_lock(state_dir):
        return _register_locked(state_dir, paths)


def _register_locked(state_dir, paths):
    results = []
    with statemod.locked_state(state_dir) as state:
        for path in paths:
            path = os.path.abspath(path)
            loaded = configmod.load_config(path)
            if path in state.config_files:
                results.append(Registered(path, state.config_files[path].instance_name, True, loaded.warnings))
                continue
            name = configmod.parse_gravity(loaded.gravity_raw, path).instance_name
            other = state.record_for_instance(name)
            if other is not None:
                raise GalaxyctlError(
                    f"instance name {name!r} is already used by {other.path}; set gravity.instance_name in {path}"
                )
            state.config_files[path] = statemod.ConfigRecord(path=path, instance_name=name)
            results.append(Registered(path, name, False, loaded.warnings))
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
    with operation_lock(state_dir), statemod.locked_state(state_dir) as state:
        for path in paths:
            removed.append(state.config_files.pop(registered_path(state, path)).path)
    return removed


def rename(state_dir, old, new):
    new = os.path.abspath(new)
    with operation_lock(state_dir), statemod.locked_state(state_dir) as state:
        old = registered_path(state, old)
        if new in state.config_files:
            raise GalaxyctlError(f"already registered: {new}")
        configmod.load_config(new)
        record = state.config_files.pop(old)
        record.path = new
        state.config_files[new] = record
    return old, new


def auto_register(state_dir, cwd):
    """The seed's convenience: nothing registered and we stand in a Galaxy root → register its config."""
    state = statemod.load_state(state_dir)
    if state.config_files:
        return None
    for name in ("config/galaxy.yml", "config/galaxy.yml.sample"):
        candidate = os.path.join(cwd, name)
        if os.path.exists(candidate) and os.path.isdir(os.path.join(cwd, "lib", "galaxy")):
            return _register_locked(state_dir, [candidate])[0]
    raise GalaxyctlError(
        "no Galaxy config is registered: run 'galaxyctl register /path/to/galaxy.yml' "
        "(or run this from the root of a Galaxy source tree)"
    )


# ---------------------------------------------------------------- update: state → supervisor files


@dataclass(frozen=True)
class UpdateResult:
    instances: tuple  # Instance
    services: dict  # instance name -> tuple of Service
    changes: object  # supervisor.Changes
    applied: tuple = ((), (), ())  # (added, changed, removed) groups in the running supervisord
    warnings: tuple = ()


def update_locked(state_dir, client=None):
    with statemod.locked_state(state_dir) as state:
        resolved = resolve_all(state)
        services, log_dirs, warnings, instances = {}, {}, [], []
        for record, instance, attribs, config_warnings in resolved:
            record.attribs = {k: v for k, v in attribs.items()}
            record.instance_name = instance.name
            built = build_services(instance)
            record.services = [statemod.ServiceRecord(s.config_type, s.service_type, s.service_name) for s in built]
            services[instance.name] = built
            log_dirs[instance.name] = instance.log_dir
            instances.append(instance)
            warnings.extend(config_warnings)
            for service in built:
                if service.ignored:
                    warnings.append(
                        f"{record.path}: {', '.join(service.ignored)} for {service.service_name} ignored under supervisor"
                    )
    paths = sup.Paths(state_dir)
    files = sup.render_files(paths, services, log_dirs)
    for instance in instances:
        fsutil.make_dirs(instance.log_dir, mode=0o755)
        if instance.run_as[0]:
            _chown_for(instance.log_dir, instance.run_as)
            run_dir = pid_dir(instance)  # gunicorn, as the Galaxy user, writes its pid file here
            os.makedirs(run_dir, mode=0o700, exist_ok=True)
            _chown_for(run_dir, instance.run_as)
    changes = sup.reconcile(paths, files)
    result_targets = all_targets(UpdateResult(tuple(instances), services, changes))
    required = sorted({path for i in instances for path in instance_storage(i).required})
    targets_mod.write_applied(state_dir, result_targets, required)
    applied = ((), (), ())
    client = client or sup.SupervisorClient(paths)
    if client.is_running():
        applied = tuple(tuple(groups) for groups in client.apply_changes())
    return UpdateResult(tuple(instances), services, changes, applied, tuple(warnings))


def _chown_for(path, user_group):
    user, group = user_group
    if user:
        entry = pwd.getpwnam(user)
        gid = entry.pw_gid
        if group:
            import grp

            gid = grp.getgrnam(group).gr_gid
        os.chown(path, entry.pw_uid, gid)


def update(state_dir):
    with operation_lock(state_dir):
        return update_locked(state_dir)


# ---------------------------------------------------------------- choosing what to act on


def all_targets(result):
    """Every service of an update result, with its supervisord name and log file."""
    grouped = len(result.services) > 1
    everything = []
    for instance in result.instances:
        for service in result.services[instance.name]:
            program = sup.program_names(service, grouped)[1]
            everything.append(Target(service, program, sup.log_file(service, instance.log_dir, grouped)))
    return everything


def select_targets(result, names=()):
    """Services of ``result`` named by ``names`` (instance and/or service names); all when empty."""
    return targets_mod.select(all_targets(result), names)


# ---------------------------------------------------------------- read-only views


def resolved_targets(state_dir):
    """Targets from the configs as they are now, without writing anything (for ``exec``)."""
    state = statemod.load_state(state_dir)
    resolved = resolve_all(state, enforce_user=False)
    services = {instance.name: build_services(instance) for _, instance, _, _ in resolved}
    return all_targets(UpdateResult(tuple(i for _, i, _, _ in resolved), services, sup.Changes((), ())))


def applied_targets(state_dir):
    """What the last update gave supervisord (status, stop, follow); the configs when never updated."""
    applied = targets_mod.load_applied(state_dir)
    return applied.targets if applied is not None else resolved_targets(state_dir)


# ---------------------------------------------------------------- storage (LUKS, Onedata, required mounts)


def instance_storage(instance):
    """The storage settings of one instance (``gravity.luks``, ``onedata``, ``storage``)."""
    from galaxyctl_libs import storage

    return storage.parse_storage(instance.settings, instance.config_path)


def storage_of(state_dir, instance_name=None):
    """(StorageConfig, Instance) of the named instance, or of the only one registered."""
    state = statemod.load_state(state_dir)
    resolved = [instance for _, instance, _, _ in resolve_all(state, enforce_user=False)]
    if instance_name:
        resolved = [i for i in resolved if i.name == instance_name]
    if len(resolved) != 1:
        names = ", ".join(sorted(i.name for i in resolved)) or "none registered"
        raise GalaxyctlError(f"name the instance with --instance ({names})")
    return instance_storage(resolved[0]), resolved[0]


def galaxy_running(state_dir):
    """Is any service up in this state dir's supervisord?  (Closing a volume under Galaxy is refused.)"""
    client = sup.running_client(state_dir)
    if client is None:
        return False
    return any(p["statename"] in sup.UP_STATES + (sup.STOPPING,) for p in client.all_processes().values())


# ---------------------------------------------------------------- exec, follow, show


def find_targets(state_dir, instance_name=None, name=None):
    """Services to exec or print: all of an instance (or of everything), or the one named."""
    targets = targets_mod.select(resolved_targets(state_dir), [n for n in (instance_name,) if n])
    if name:
        targets = [t for t in targets if t.service.service_name == name]
    if not targets:
        raise GalaxyctlError(f"no service named {name!r}" if name else "no service is configured")
    return targets


def exec_description(target, environ=None):
    """What ``exec -n`` prints: cwd, umask, environment (only what we set) and the command line."""
    service = target.service
    lines = [f"cd {shlex.quote(service.cwd)}", f"umask {service.umask}"]
    base = dict(os.environ if environ is None else environ)
    full = service.full_environment(base)
    for name in sorted(k for k in full if base.get(k) != full[k]):
        lines.append(f"{name}={shlex.quote(full[name])}")
    lines.append(service.command_line)
    return lines


def exec_service(target):
    """Replace this process with the service (the foreground way a service manager would run it)."""
    service = target.service
    os.chdir(service.cwd)
    os.umask(int(service.umask, 8))
    env = service.full_environment(os.environ)
    os.execvpe(service.argv[0], list(service.argv), env)


def log_files(state_dir, names=()):
    return [t.log_file for t in targets_mod.select(applied_targets(state_dir), names)]
