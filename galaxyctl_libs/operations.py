"""The verbs: register, update, start, stop, graceful, status… composed from the layers below.

Each takes the state dir (and, where it controls processes, builds a SupervisorClient from it) and
returns data; the CLI renders it.  Long waits report through a ``progress`` callback.
"""

import os
import pwd
import shlex
import time
from dataclasses import dataclass

from galaxyctl_libs import config as configmod
from galaxyctl_libs import fsutil, health, jobconf
from galaxyctl_libs import state as statemod
from galaxyctl_libs import supervisor as sup
from galaxyctl_libs.errors import GalaxyctlError, NotReadyError
from galaxyctl_libs import targets as targets_mod
from galaxyctl_libs.targets import Target
from galaxyctl_libs.services import GRACEFUL_HERDER, GRACEFUL_HUP, GRACEFUL_NONE, Instance, build_services, pid_dir

DEFAULT_READY_TIMEOUT = 120
LOG_TAIL_LINES = 15
# Taken before the state lock (statemod.LOCK_FILE), never after it: one order, no deadlock.
OPERATION_LOCK_FILE = ".galaxyctl.lock"


# ---------------------------------------------------------------- resolving registered configs


def operation_lock(state_dir):
    """Serialise galaxyctl runs on one state dir (cron + an admin): one lock for state and supervisor."""
    fsutil.ensure_private_dir(state_dir)
    return fsutil.exclusive_lock(os.path.join(state_dir, OPERATION_LOCK_FILE))


ALLOW_ROOT_ENV = "GALAXYCTL_ALLOW_ROOT"  # "1": the admin explicitly accepts running Galaxy as root


def run_as(settings, config_path, environ=None):
    """Who Galaxy's processes run as: never root by accident.  (None, None) means "as galaxyctl".

    As root: ``galaxy_user`` if set, else the config file's owner if not root, else refuse, unless
    the admin set ``GALAXYCTL_ALLOW_ROOT=1`` (``galaxyctl --allow-root``).
    """
    environ = os.environ if environ is None else environ
    if os.geteuid() != 0:
        return None, None
    if settings.galaxy_user:
        try:
            entry = pwd.getpwnam(settings.galaxy_user)
        except KeyError:
            raise GalaxyctlError(f"{config_path}: gravity.galaxy_user: no such user {settings.galaxy_user!r}") from None
        if entry.pw_uid == 0:
            raise GalaxyctlError(f"{config_path}: gravity.galaxy_user: refusing to run Galaxy as root")
        return settings.galaxy_user, settings.galaxy_group
    owner = os.stat(config_path).st_uid
    if owner != 0:
        return pwd.getpwuid(owner).pw_name, settings.galaxy_group
    if environ.get(ALLOW_ROOT_ENV) == "1":
        return None, None
    raise GalaxyctlError(
        f"refusing to run Galaxy as root: set gravity.galaxy_user in {config_path}, "
        "or run galaxyctl as the Galaxy user (--allow-root overrides)"
    )


def resolve(record, state_dir, enforce_user=True):
    """Config file + persisted attribs → (Instance, attribs to persist, warnings).

    ``enforce_user=False`` is for commands that only look or stop: they never refuse over users.
    """
    loaded = configmod.load_config(record.path)
    attribs = configmod.merge_attribs(record.attribs, loaded.gravity_raw)
    settings = configmod.parse_gravity(attribs, record.path)
    if settings.process_manager not in (None, "supervisor"):
        warning = f"{record.path}: gravity.process_manager: {settings.process_manager} is not supported, using supervisor"
        loaded = configmod.GalaxyConfig(**{**loaded.__dict__, "warnings": loaded.warnings + (warning,)})
    name = settings.instance_name if "instance_name" in loaded.gravity_raw else record.instance_name
    galaxy_root = configmod.find_galaxy_root(record.path, settings)
    job_config = jobconf.load_job_handlers(
        loaded.galaxy, loaded.galaxy_config_file, settings.handlers, galaxy_root=galaxy_root,
        gravity_config_file=record.path, instance_name=name,
    )
    warning = jobconf.assignment_warning(job_config)
    if warning:
        loaded = configmod.GalaxyConfig(**{**loaded.__dict__, "warnings": loaded.warnings + (warning,)})
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


def _update_locked(state_dir, client=None):
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
        os.makedirs(instance.log_dir, mode=0o755, exist_ok=True)
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
        return _update_locked(state_dir)


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


# ---------------------------------------------------------------- lifecycle


@dataclass(frozen=True)
class ReadyResult:
    program: str
    bind: str
    ok: bool
    seconds: float
    detail: str = ""


def tail(path, lines=LOG_TAIL_LINES):
    """The last lines of a log file (empty when there is none)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            data = handle.read().decode("utf-8", "replace")
    except OSError:
        return []
    return data.splitlines()[-lines:]


def _port_holder(endpoint):
    """'PID N (command)' of whoever listens on the endpoint's TCP port, or ''."""
    if endpoint is None or endpoint.unix_path:
        return ""
    from galaxyctl_libs import listeners

    try:
        pid = listeners.listening_master_pid(endpoint.port)
    except GalaxyctlError:
        return ""
    if pid is None:
        return ""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            command = handle.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        command = "?"
    return f"PID {pid} ({command[:80]})"


def check_ports_free(client, targets):
    """Before starting web services that are down: a port someone else holds is a clear error now."""
    for target in targets:
        if not target.service.bind:
            continue
        try:
            state = client.process_info(target.program)["statename"] if client.is_running() else sup.STOPPED
        except (GalaxyctlError, sup.rpc.Fault):
            state = sup.STOPPED
        if state in sup.UP_STATES:
            continue
        holder = _port_holder(health.parse_bind(target.service.bind))
        if holder:
            raise GalaxyctlError(
                f"cannot start {target.program}: {target.service.bind} is already in use by {holder}"
            )


def wait_ready(client, targets, timeout, progress=None):
    """Wait until every web service among ``targets`` answers HTTP; raise with the log tail if not."""
    results = []
    deadline = time.monotonic() + timeout
    for target in targets:
        if target.service.uwsgi_config:
            results.append(_wait_uwsgi(target, max(0.0, deadline - time.monotonic()), progress))
            continue
        endpoint = target.service.bind and health.parse_bind(target.service.bind)
        if not endpoint:
            continue
        started = time.monotonic()

        def still_starting(target=target, endpoint=endpoint):
            state = client.process_info(target.program)["statename"]
            if state in (sup.FATAL, sup.EXITED, sup.STOPPED):
                return f"{target.program} is {state}"
            if state == sup.BACKOFF:
                holder = _port_holder(endpoint)
                return f"{target.service.bind} is already in use by {holder}" if holder else ""
            return ""

        def report(elapsed, result, target=target):
            if progress:
                progress(f"waiting for {target.program} on {target.service.bind}: {elapsed:.0f}s ({result.error or result.status})")

        result = health.wait_ready(
            endpoint, max(0.0, deadline - time.monotonic()), path=target.service.url_prefix + health.READY_PATH,
            progress=report, still_starting=still_starting,
        )
        seconds = time.monotonic() - started
        if not result.ok:
            reason = result.error or f"HTTP {result.status}"
            raise NotReadyError(
                f"{target.program} did not become ready after {seconds:.0f}s: {reason}",
                details=[f"last lines of {target.log_file}:"] + ["  " + line for line in tail(target.log_file)],
            )
        results.append(ReadyResult(target.program, target.service.bind, True, seconds))
    return results


def _wait_uwsgi(target, timeout, progress):
    """uWSGI is ready when its stats server shows a worker accepting requests."""
    from galaxyctl_libs.uwsgi import UwsgiStatsServer

    started = time.monotonic()
    stats = UwsgiStatsServer(timeout=timeout, fname=target.service.uwsgi_config)

    def report(seconds_left):
        if progress:
            progress(f"waiting for {target.program} (stats server {stats.address}): {time.monotonic() - started:.0f}s")

    try:
        stats.wait_until_accepting(progress=report)
    except GalaxyctlError as exc:
        raise NotReadyError(
            f"{target.program} did not become ready: {exc.message}",
            details=[f"last lines of {target.log_file}:"] + ["  " + line for line in tail(target.log_file)],
        ) from None
    return ReadyResult(target.program, str(stats.address), True, time.monotonic() - started)


@dataclass(frozen=True)
class LifecycleResult:
    action: str
    programs: tuple
    ready: tuple = ()
    supervisord_started: bool = False
    supervisord_stopped: bool = False
    warnings: tuple = ()
    log_dirs: tuple = ()


def _prepare(state_dir, names, auto_cwd=None):
    if auto_cwd is not None:
        auto_register(state_dir, auto_cwd)
    result = _update_locked(state_dir)
    if not result.instances:
        raise GalaxyctlError("no Galaxy config is registered: run 'galaxyctl register /path/to/galaxy.yml'")
    return result, select_targets(result, names)


def start(state_dir, names=(), wait=True, timeout=DEFAULT_READY_TIMEOUT, progress=None, auto_cwd=None):
    """Update, start supervisord if needed (it starts every service), start what is stopped, wait.

    Refuses while storage the config marks as required is not mounted: Galaxy would write its
    datasets to the empty mount point on the root disk."""
    from galaxyctl_libs import storage

    with operation_lock(state_dir):
        result, targets = _prepare(state_dir, names, auto_cwd)
        for instance in {t.instance_name for t in targets}:
            storage.check_required(instance_storage(next(i for i in result.instances if i.name == instance)))
        client = sup.SupervisorClient(sup.Paths(state_dir))
        check_ports_free(client, targets)
        started_supervisord = client.start_supervisord()
        for target in targets:
            client.start(target.program)
    ready = wait_ready(client, targets, timeout, progress) if wait else ()
    return LifecycleResult(
        "start", tuple(t.program for t in targets), tuple(ready), started_supervisord,
        warnings=result.warnings, log_dirs=tuple(sorted({i.log_dir for i in result.instances})),
    )


def stop(state_dir, names=()):
    """Stop services; when nothing is left running, supervisord exits too."""
    with operation_lock(state_dir):
        try:
            programs = [t.program for t in targets_mod.select(applied_targets(state_dir), names)]
        except GalaxyctlError:
            if names:
                raise
            programs = None  # a broken config must not keep Galaxy from stopping: stop everything
        client = sup.running_client(state_dir)
        if client is None:
            return LifecycleResult("stop", ())
        if programs is None:
            programs = sorted(client.all_processes())
        for program in programs:
            client.stop(program)
        still_up = [p for p in client.all_processes().values() if p["statename"] in sup.UP_STATES + (sup.STOPPING,)]
        stopped = False
        if not still_up:
            stopped = client.shutdown()
    return LifecycleResult("stop", tuple(programs), supervisord_stopped=stopped)


def restart(state_dir, names=(), wait=True, timeout=DEFAULT_READY_TIMEOUT, progress=None):
    """Stop and start services (supervisord is started first if it was down)."""
    with operation_lock(state_dir):
        result, targets = _prepare(state_dir, names)
        client = sup.SupervisorClient(sup.Paths(state_dir))
        started_supervisord = client.start_supervisord()
        if not started_supervisord:
            for target in targets:
                client.stop(target.program)
            check_ports_free(client, targets)
            for target in targets:
                client.start(target.program)
    ready = wait_ready(client, targets, timeout, progress) if wait else ()
    return LifecycleResult("restart", tuple(t.program for t in targets), tuple(ready), started_supervisord, warnings=result.warnings)


def graceful(state_dir, names=(), wait=True, timeout=DEFAULT_READY_TIMEOUT, progress=None):
    """Reload with the least interruption each service allows (HUP, else restart; tusd left alone)."""
    with operation_lock(state_dir):
        result, targets = _prepare(state_dir, names)
        client = sup.SupervisorClient(sup.Paths(state_dir))
        started_supervisord = client.start_supervisord()
        acted = []
        for target in targets:
            method = target.service.graceful
            if started_supervisord or method == GRACEFUL_NONE:
                continue
            if method in (GRACEFUL_HUP, GRACEFUL_HERDER) and client.process_info(target.program)["statename"] in sup.UP_STATES[:2]:
                client.signal(target.program, "HUP")
                if method == GRACEFUL_HERDER:
                    _wait_for_reload(client, target, timeout, progress)
            else:
                client.stop(target.program)
                client.start(target.program)
            acted.append(target)
    ready = wait_ready(client, targets, timeout, progress) if wait else ()
    return LifecycleResult("graceful", tuple(t.program for t in acted), tuple(ready), started_supervisord, warnings=result.warnings)


def startup(state_dir, names=(), wait=True, timeout=DEFAULT_READY_TIMEOUT, progress=None, auto_cwd=None, retries=2):
    """The seed's first start: start and wait; a start that gets stuck is restarted, ``retries`` times.
    (It always waits: judging a start is the point; ``wait`` is accepted for a uniform signature.)"""
    try:
        return start(state_dir, names, True, timeout, progress, auto_cwd)
    except NotReadyError as first:
        failure = first
    for attempt in range(2, retries + 2):
        if progress:
            progress(f"try {attempt - 1} failed ({failure.message}); restarting (try {attempt} of {retries + 1})")
        with operation_lock(state_dir):
            client = sup.SupervisorClient(sup.Paths(state_dir))
            for target in targets_mod.select(applied_targets(state_dir), names):
                if target.service.bind or target.service.uwsgi_config:
                    client.kill_group(target.program)
        try:
            return restart(state_dir, names, True, timeout, progress)
        except NotReadyError as exc:
            failure = exc
    raise NotReadyError(f"Galaxy did not start after {retries + 1} tries: {failure.message}", details=failure.details)


def _wait_for_reload(client, target, timeout, progress):
    """After HUP, the herder starts a new master and retires the old one once the new one serves:
    wait (bounded) until the master under the herder has changed, so a rolling list goes one by one."""
    from galaxyctl_libs import workers as workersmod

    herder = client.process_info(target.program)["pid"]
    before = workersmod.gunicorn_master(herder)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = workersmod.gunicorn_master(herder)
        if current and current != before and len(workersmod.children(herder)) == 1:
            return
        if client.process_info(target.program)["pid"] != herder:
            return  # the herder itself was restarted by supervisord: wait_ready judges the result
        if progress:
            progress(f"reloading {target.program}: {deadline - time.monotonic():.0f}s left")
        time.sleep(0.2)
    raise NotReadyError(f"{target.program} did not finish its reload within {timeout:.0f}s",
                        details=[f"last lines of {target.log_file}:"] + ["  " + line for line in tail(target.log_file)])


def shutdown(state_dir):
    """Stop everything and end supervisord."""
    with operation_lock(state_dir):
        client = sup.running_client(state_dir)
        stopped = client.shutdown() if client is not None else False
    return LifecycleResult("shutdown", (), supervisord_stopped=stopped)


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
