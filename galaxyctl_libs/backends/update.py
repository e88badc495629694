"""update: registered configs → a process manager's files → the running manager picks them up.

config (core) → services (plain data) → render (the backend: supervisor/render.py) → reconcile
(backends/base.py: write what changed, remove what is stale) → apply (the manager's controller).
Also the targets: each service with the name the backend knows it by, and its log file.
"""

import os
import time
from dataclasses import dataclass

from galaxyctl_libs import fsutil, gate
from galaxyctl_libs.backends import planned
from galaxyctl_libs.backends import record as backend_record
from galaxyctl_libs.backends.base import Changes, instances_grouped
from galaxyctl_libs.backends.record import Target
from galaxyctl_libs.backends.supervisor.backend import SUPERVISOR
from galaxyctl_libs.core import scaledown
from galaxyctl_libs.core import state as statemod
from galaxyctl_libs.core import targets as targets_mod
from galaxyctl_libs.core.registration import resolve_all
from galaxyctl_libs.core.services import build_services
from galaxyctl_libs.core.state import operation_lock
from galaxyctl_libs.errors import GalaxyctlError, NothingConfigured
from galaxyctl_libs.paths import StatePaths
from galaxyctl_libs.storage.config import instance_storage

# ---------------------------------------------------------------- update: state → the manager's files


@dataclass(frozen=True)
class UpdateResult:
    instances: tuple  # Instance
    services: dict  # instance name -> tuple of Service
    changes: object  # backends.base.Changes
    applied: tuple = ((), (), ())  # (added, changed, removed) groups in the running supervisord
    warnings: tuple = ()
    client: object = None  # supervisor.SupervisorClient for this state dir's supervisord (or SystemdController)
    backend: object = None  # backends.base.Backend that applied it (None: supervisor)
    log_dirs: dict = None  # instance name -> where its logs go (None: the manager's, e.g. the journal)


def update_locked(state_dir, client=None, ignore_jobs=False):
    with statemod.locked_state(state_dir) as state:
        instances, services, warnings = _services_of(state)
        if not instances and backend_record.load_applied(state_dir) is None:
            raise NothingConfigured()  # no empty supervisord.conf: there is nothing to clean up either
        # Whatever can refuse the new config happens before the state is saved (on leaving this
        # block): a value the format cannot carry or a log_dir that cannot be made changes nothing.
        run_as = _one_galaxy_user(instances)
        if not ignore_jobs:  # a handler that goes away must hold no unfinished job (core/scaledown.py)
            warnings += scaledown.refuse_stranded_jobs(instances, services, _previous_services(state_dir), run_as)
        backend = backend_of(instances)  # gravity.process_manager: supervisor (unset) or systemd
        paths = backend.paths(state_dir, StatePaths.of(state_dir).runtime_dir if run_as[0] else None)
        log_dirs = {instance.name: backend.log_dir(instance) for instance in instances}
        paths = backend.persistent_paths(paths, log_dirs)
        files = backend.render(paths, services, log_dirs)
        if run_as[0]:
            _make_runtime_dir(paths.run_dir, *run_as)  # supervisor's root, or systemd's herder pid dir
        for log_dir in filter(None, log_dirs.values()):  # rootpolicy rule 3: made as the Galaxy user
            gate.make_dirs(log_dir, run_as, what="log_dir")
    changes = backend.write(paths, files, run_as)
    result_targets = all_targets(UpdateResult(tuple(instances), services, changes, backend=backend))
    required = sorted({path for i in instances for path in instance_storage(i).required})
    recorded = backend.recorded(paths)
    log_dir = getattr(paths, "log_dir", None)  # supervisord's own log (supervisor paths only)
    backend_record.write_applied(state_dir, result_targets, required, paths.run_dir, run_as, recorded, log_dir)
    applied, started = ((), (), ()), []
    client = client or backend.controller(paths, run_as=run_as)
    if client.is_running():
        applied = tuple(tuple(groups) for groups in client.apply_changes(changes, started))
        programs = [t for t in result_targets if t.program.split(":")[0] in started]
        now = time.time()  # after the starts: a process started before it is explained by it
        entries = [(t.program, now, t.service.start_timeout, client.process_info(t.program)["pid"]) for t in programs]
        planned.record(state_dir, entries, "update")
    elif backend.unloaded(paths):
        warnings.append(backend.unloaded(paths))
    return UpdateResult(tuple(instances), services, changes, applied, tuple(warnings), client, backend, log_dirs)


def backend_of(instances):
    """The backend gravity.process_manager names (all instances of a state dir share one)."""
    managers = {instance.settings.process_manager or "supervisor" for instance in instances}
    managers.discard("multiprocessing")  # gravity's foreground mode: run under supervisor here
    if len(managers) > 1:
        raise GalaxyctlError(
            f"the instances of one state dir must share one process_manager ({', '.join(sorted(managers))})"
        )
    if managers != {"systemd"}:
        return SUPERVISOR
    from galaxyctl_libs.backends.systemd.backend import SystemdBackend

    return SystemdBackend(user_mode=systemd_user_mode())


USER_MODE_ENV = "GALAXYCTL_SYSTEMD_USER"  # "1"/"0": --user/--no-user of this run (the CLI sets it)


def systemd_user_mode(environ=None):
    """gravity's rule: ``--user``/``--no-user`` when given, else user mode unless run as root."""
    value = (os.environ if environ is None else environ).get(USER_MODE_ENV)
    if value in ("0", "1"):
        return value == "1"
    return os.geteuid() != 0


def _services_of(state):
    """Every registered config resolved and its services built; the state's records updated to match
    (saved by the caller's ``locked_state``).  Returns (instances, {name: services}, warnings)."""
    services, warnings, instances = {}, [], []
    seen = set()  # a file holding a gravity: list is one record for several instances
    for record, instance, attribs, config_warnings in resolve_all(state):
        built = build_services(instance)
        entries = [statemod.ServiceRecord(s.config_type, s.service_type, s.service_name) for s in built]
        if id(record) in seen:
            record.instance_name += statemod.LISTED_NAMES + instance.name
            record.services += entries
        else:
            seen.add(id(record))
            record.attribs, record.instance_name, record.services = dict(attribs), instance.name, entries
        services[instance.name] = built
        instances.append(instance)
        warnings.extend(config_warnings)
    return instances, services, warnings


def _one_galaxy_user(instances):
    """The (user, group) every instance runs as: one supervisord per state dir runs as one user."""
    users = {instance.run_as for instance in instances}
    if len(users) > 1:
        listed = ", ".join(f"{i.name}: {i.run_as[0] or 'root'}" for i in instances)
        raise GalaxyctlError(f"the instances of one state dir must run as one user ({listed}); use a state dir each")
    return users.pop() if users else (None, None)


def _make_runtime_dir(path, user, group):
    """As root: /run/galaxyctl (root's) and in it the Galaxy user's runtime dir, which root creates
    and hands over (gate.hand_over_dir)."""
    from galaxyctl_libs.rootpolicy import check_root_controlled

    parent = os.path.dirname(path)
    fsutil.make_dirs(parent, mode=0o755, what="runtime directory")
    check_root_controlled(parent, "runtime directory")
    gate.hand_over_dir(path, user, group)


def update(state_dir, ignore_jobs=False):
    with operation_lock(state_dir):
        return update_locked(state_dir, ignore_jobs=ignore_jobs)


def _previous_services(state_dir):
    """The services of the last update (none before the first)."""
    applied = backend_record.load_applied(state_dir)
    return [t.service for t in applied.targets] if applied is not None else []


# ---------------------------------------------------------------- choosing what to act on


def all_targets(result):
    """Every service of an update result, with its supervisord name and log file."""
    grouped = instances_grouped(result.services)
    backend = result.backend or SUPERVISOR
    everything = []
    for instance in result.instances:
        for service in result.services[instance.name]:
            name = backend.target_name(service, grouped)
            everything.append(Target(service, name, backend.log_file(service, backend.log_dir(instance), grouped)))
    return everything


def select_targets(result, names=()):
    """Services of ``result`` named by ``names`` (instance and/or service names); all when empty."""
    return targets_mod.select(all_targets(result), names)


# ---------------------------------------------------------------- read-only views


def resolved_targets(state_dir, enforce_user=False, warnings=None):
    """Targets from the configs as they are now, without writing anything (for ``exec``); the
    configs' warnings are appended to ``warnings`` (a list) when given."""
    return _resolved(state_dir, enforce_user, warnings)[0]


def _resolved(state_dir, enforce_user=False, warnings=None):
    state = statemod.load_state(state_dir)
    resolved = resolve_all(state, enforce_user=enforce_user)
    if warnings is not None:
        warnings.extend(warning for *_, found in resolved for warning in found)
    services = {instance.name: build_services(instance) for _, instance, _, _ in resolved}
    instances = tuple(i for _, i, _, _ in resolved)
    backend = backend_of(instances)
    return all_targets(UpdateResult(instances, services, Changes((), ()), backend=backend)), backend


def unapplied_record(state_dir):
    """What status and check read before the first update: the configs' targets, under the manager
    the configs name (in systemd mode they speak of systemd, not of supervisord)."""
    targets, backend = _resolved(state_dir)
    return backend_record.unapplied(targets, backend.recorded(backend.paths(state_dir)))


def applied_targets(state_dir):
    """What the last update gave supervisord (status, stop, follow); the configs when never updated."""
    applied = backend_record.load_applied(state_dir)
    return applied.targets if applied is not None else resolved_targets(state_dir)
