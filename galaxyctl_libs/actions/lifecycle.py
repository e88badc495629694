"""Starting, stopping and reloading Galaxy's services (actions over a backend's controller).

Each verb takes the state dir, updates the process manager's files first (backends.update),
drives supervisord and returns data; waits report through a ``progress`` callback (readiness.py).
"""

import time
from dataclasses import dataclass, replace

from galaxyctl_libs import gate
from galaxyctl_libs.actions.readiness import (  # noqa: F401 - DEFAULT_READY_TIMEOUT, tail: part of this API
    DEFAULT_READY_TIMEOUT,
    LOG_TAIL_LINES,
    ReadyResult,
    check_ports_free,
    log_details,
    tail,
    wait_ready,
    wait_up,
)
from galaxyctl_libs.actions.starting import start_in_order, wait_for_the_rest
from galaxyctl_libs.backends import base
from galaxyctl_libs.backends import record as backend_record
from galaxyctl_libs.backends.base import MEMWATCH_PROGRAM
from galaxyctl_libs.backends.update import applied_targets, select_targets, update_locked
from galaxyctl_libs.core import targets as targets_mod
from galaxyctl_libs.core.registration import auto_register
from galaxyctl_libs.core.state import operation_lock
from galaxyctl_libs.errors import GalaxyctlError, NothingConfigured, NotReadyError, carrying
from galaxyctl_libs.probes import procfs
from galaxyctl_libs.rootpolicy import as_user
from galaxyctl_libs.storage.config import instance_storage

JOURNAL = "the systemd journal"  # where a start says the logs are when the manager keeps them


@dataclass(frozen=True)
class LifecycleResult:
    action: str
    programs: tuple
    ready: tuple = ()
    manager_started: bool = False  # the process manager (supervisord) was started by this action
    manager_stopped: bool = False  # ... or ended by it
    warnings: tuple = ()
    log_dirs: tuple = ()
    ended: tuple = ()  # "PID N (service)" of main processes ended without supervisord's help
    killed_supervisord: int = None  # PID of a supervisord that did not answer, killed (--force)
    manager: str = "supervisord"  # the process manager acted through (systemd: its units stop, it stays)
    already: tuple = ()  # programs that were in the wanted state before (stop: already stopped)


def prepare(state_dir, names, auto_cwd=None):
    """Update (registering ``auto_cwd``'s config first when given): the UpdateResult and its targets
    named by ``names``.  Every verb that starts something begins here."""
    if auto_cwd is not None:
        auto_register(state_dir, auto_cwd)
    result = update_locked(state_dir)
    if not result.instances:
        raise NothingConfigured()
    return result, select_targets(result, names)


def start(state_dir, names=(), wait=True, timeout=DEFAULT_READY_TIMEOUT, progress=None, auto_cwd=None):
    """Update, start supervisord if needed (it starts every service), start what is stopped, wait.

    Refuses while storage the config marks as required is not mounted: Galaxy would write its
    datasets to the empty mount point on the root disk."""
    from galaxyctl_libs.storage import config as storage

    with operation_lock(state_dir):
        result, targets = prepare(state_dir, names, auto_cwd)
        with carrying(result.warnings):
            for instance in {t.instance_name for t in targets}:
                storage.check_required(instance_storage(next(i for i in result.instances if i.name == instance)))
            client = result.client
            check_ports_free(client, targets)
            deadline = time.monotonic() + timeout
            started_supervisord = client.ensure_manager_running()
            first = start_in_order(state_dir, client, targets, timeout, progress, wait)
    with carrying(result.warnings):
        ready = _confirm(client, targets, first, deadline, progress) if wait else ()
    return LifecycleResult(
        "start",
        tuple(t.program for t in targets),
        tuple(ready),
        started_supervisord,
        warnings=result.warnings,
        log_dirs=tuple(sorted({d or JOURNAL for d in result.log_dirs.values()})),
    )


def _confirm(client, targets, first, deadline, progress):
    """After a start: the web servers answer (their ReadyResults) and every other service is past
    its start timeout; a service that died meanwhile raises NotReadyError, naming it and why."""
    ready = wait_for_the_rest(client, targets, first, _left(deadline), progress)
    wait_up(client, targets, _left(deadline), progress)
    return ready


def _pid(client, target):
    return client.process_info(target.program)["pid"]


def _left(deadline):
    return max(0.0, deadline - time.monotonic())


def stop(state_dir, names=(), force=False, timeout=base.CONTROL_TIMEOUT):
    """Stop services; when nothing is left running, supervisord exits too.

    Without supervisord, what it left running (it was killed) is ended.  A supervisord that does not
    answer within ``timeout`` is an error, unless ``force``: then it is killed and its services ended.
    """
    with operation_lock(state_dir):
        try:
            targets = targets_mod.select(applied_targets(state_dir), names)
        except GalaxyctlError:
            if names:
                raise
            targets = None  # a broken config must not keep Galaxy from stopping: stop everything
        applied = backend_record.load_applied(state_dir)
        client = base.client_for(state_dir, applied, timeout=timeout)
        survey = client.survey()
        if survey.state != base.MANAGER_RUNNING:
            result = _without_manager("stop", state_dir, client, survey, targets, names, force)
            if targets == [] and applied is None and not result.ended:
                raise NothingConfigured()
            return replace(result, manager=client.manager)
        programs = sorted(survey.processes) if targets is None else [t.program for t in targets]
        already = [p for p in programs if (survey.info(p) or {}).get("statename") in base.DEAD_STATES]
        programs = [p for p in programs if p not in already]
        for program in programs:
            client.stop(program)
        still_up = [
            p
            for p in client.all_processes().values()
            if p["statename"] in base.UP_STATES + (base.STOPPING,) and p["name"] != MEMWATCH_PROGRAM  # watches the rest
        ]
        stopped, ended = False, ()
        if not still_up:
            stopped = client.shutdown()
            ended = _end_orphans(state_dir, targets, names, client.run_as)
    manager = client.manager
    return LifecycleResult(
        "stop", tuple(programs), manager_stopped=stopped, ended=ended, manager=manager, already=tuple(already)
    )


ORPHAN_STOP_CAP = 300  # seconds: the longest wait for processes to stop on SIGTERM, whatever stop_timeout says
DEFAULT_STOP_TIMEOUT = 10  # for a process whose service is unknown (Service.stop_timeout's default)


def _without_manager(action, state_dir, client, survey, targets, names, force):
    """stop/shutdown when supervisord does not answer: end what it left running (it died), or, with
    ``force``, kill a supervisord that hangs and end its services."""
    if survey.state == base.MANAGER_SHUTTING_DOWN:  # someone else's shutdown: let it finish
        stopped = client.shutdown()
        return LifecycleResult(
            action, (), manager_stopped=stopped, ended=_end_orphans(state_dir, targets, names, client.run_as)
        )
    if survey.state == base.MANAGER_DOWN:
        return LifecycleResult(action, (), ended=_end_orphans(state_dir, targets, names, client.run_as))
    pid = survey.pid
    who = f"{client.manager} (pid {pid})" if pid else client.manager
    if not force or pid is None:  # systemd is never galaxyctl's to kill
        kill = f"; 'galaxyctl {action} --force' kills it and ends its services" if pid else ""
        raise GalaxyctlError(f"{who} is not answering{kill}")
    if names:
        raise GalaxyctlError(f"{who} is not answering: --force ends every service, name none")
    # read before the kill: afterwards its children belong to init, and only the marker finds them;
    # only the Galaxy user's own (a job's sudo below a service is not ours to end)
    with as_user(*client.run_as):
        processes = {p.pid: p for p in procfs.marked_processes(procfs.state_id(state_dir), exclude=(pid,))}
    owner = gate.owner_uid(client.run_as)
    for child in procfs.descendants(pid):
        found = procfs.snapshot(child) if procfs.uids(child) == {owner} else None
        if found is not None:
            processes.setdefault(found.pid, found)
    client.kill(pid)
    ended = _end_processes(list(processes.values()), _stop_wait(processes.values(), targets), client.run_as)
    ended += _end_orphans(state_dir, targets, names, client.run_as)  # any a service forked meanwhile
    return LifecycleResult(action, (), manager_stopped=True, ended=ended, killed_supervisord=pid)


def _end_orphans(state_dir, targets, names, run_as=(None, None)):
    """End this state dir's processes that run without supervisord (the named services' only, when
    named): found by the marker in their environment.  Returns what was ended.  As root with a
    Galaxy user, looked for and signalled with that user's ids: a marker anyone can put in their
    own environment never aims root at someone else's process (rootpolicy, rule 3)."""
    marker = procfs.state_id(state_dir)
    wanted = None
    if names and targets is not None:
        wanted = {procfs.service_key(t.instance_name, t.service.service_name) for t in targets}
    ended = ()
    with as_user(*run_as):
        for _ in range(2):  # a second look, for anything forked while the first ones stopped
            orphans = [p for p in procfs.marked_processes(marker) if wanted is None or p.service in wanted]
            if not orphans:
                break
            ended += _end_processes(orphans, _stop_wait(orphans, targets), run_as)
    return ended


def _stop_wait(processes, targets):
    """Seconds to wait after SIGTERM: the longest stop_timeout of the services involved (bounded)."""
    timeouts = {
        procfs.service_key(t.instance_name, t.service.service_name): t.service.stop_timeout for t in targets or ()
    }
    return min(ORPHAN_STOP_CAP, max([timeouts.get(p.service, DEFAULT_STOP_TIMEOUT) for p in processes] or [0]))


def _end_processes(processes, wait, run_as=(None, None)):
    """SIGTERM, wait up to ``wait`` s, SIGKILL: as supervisord stops a service, without supervisord.

    A process that leads its group (each service does, under supervisord) is signalled with its
    group; others one by one.  A PID is signalled only while it is still the process that was read,
    and with the Galaxy user's ids (``run_as``).  Returns "PID N (service)" of each main process ended.
    """
    import signal

    from galaxyctl_libs.probes.poll import wait_until

    def send(sig):
        live = [p for p in processes if procfs.same_process(p)]
        leaders = {p.pid for p in live if p.pgid == p.pid}
        for process in live:
            try:
                if process.pid in leaders or process.pgid not in leaders:
                    gate.signal(process.pid, sig, run_as, group=process.pid in leaders)
            except PermissionError:
                raise GalaxyctlError(f"not allowed to signal {process.describe()}: run galaxyctl as root") from None
        return live

    def wait_gone(seconds):
        wait_until(lambda: not any(procfs.same_process(p) for p in processes), seconds)

    if send(signal.SIGTERM):
        wait_gone(wait)
    if send(signal.SIGKILL):
        wait_gone(5)
    left = [p.describe() for p in processes if procfs.same_process(p)]
    if left:
        raise GalaxyctlError(f"still running after SIGKILL: {', '.join(left)}")
    return tuple(p.describe() for p in procfs.topmost(processes))


def restart(state_dir, names=(), wait=True, timeout=DEFAULT_READY_TIMEOUT, progress=None):
    """Stop and start services (supervisord is started first if it was down)."""
    with operation_lock(state_dir):
        result, targets = prepare(state_dir, names)
        with carrying(result.warnings):
            client = result.client
            deadline = time.monotonic() + timeout
            started_supervisord = client.ensure_manager_running()
            if not started_supervisord:
                for target in targets:
                    client.stop(target.program)
                check_ports_free(client, targets)
            first = start_in_order(state_dir, client, targets, timeout, progress, wait, action="restart")
    with carrying(result.warnings):
        ready = _confirm(client, targets, first, deadline, progress) if wait else ()
    return LifecycleResult(
        "restart", tuple(t.program for t in targets), tuple(ready), started_supervisord, warnings=result.warnings
    )


def startup(state_dir, names=(), wait=True, timeout=DEFAULT_READY_TIMEOUT, progress=None, auto_cwd=None, retries=2):
    """Laniakea's galaxyctl first start: start and wait; a start that gets stuck is restarted, ``retries`` times.

    It always waits: judging a start is the point.  ``wait`` is there for the signature start and
    restart share (the CLI's --no-wait); ``wait=False`` is said in the result's warnings, not obeyed."""
    ignored = () if wait else ("startup always waits for Galaxy to answer: --no-wait is ignored",)
    try:
        result = start(state_dir, names, True, timeout, progress, auto_cwd)
        return replace(result, warnings=tuple(result.warnings) + ignored)
    except NotReadyError as first:
        failure = first
    for attempt in range(2, retries + 2):
        if progress:
            progress(f"try {attempt - 1} failed ({failure.message}); restarting (try {attempt} of {retries + 1})")
        with operation_lock(state_dir):
            client = base.client_for(state_dir, backend_record.load_applied(state_dir))
            for target in targets_mod.select(applied_targets(state_dir), names):
                if target.service.bind or target.service.uwsgi_config:
                    client.kill_group(target.program)
        try:
            result = restart(state_dir, names, True, timeout, progress)
            return replace(result, warnings=tuple(result.warnings) + ignored)
        except NotReadyError as exc:
            failure = exc
    raise NotReadyError(f"Galaxy did not start after {retries + 1} tries: {failure.message}", details=failure.details)


def shutdown(state_dir, force=False, timeout=base.CONTROL_TIMEOUT):
    """Stop everything and end supervisord; then end anything of this state dir still running
    (left by a supervisord that died).  A supervisord that does not answer within ``timeout`` is
    an error, unless ``force``: then it is killed and its services ended.  Then, supervisord being
    gone, the Galaxy user's runtime dir goes too (as root; its logs live elsewhere, persistently)."""
    with operation_lock(state_dir):
        try:
            targets = applied_targets(state_dir)
        except GalaxyctlError:
            targets = None  # only for the stop timeouts of orphans: the defaults do
        applied = backend_record.load_applied(state_dir)
        client = base.client_for(state_dir, applied, timeout=timeout)
        survey = client.survey()
        if survey.state != base.MANAGER_RUNNING:
            result = _without_manager("shutdown", state_dir, client, survey, targets, (), force)
            if targets == [] and applied is None and not result.ended:
                raise NothingConfigured()
        else:
            stopped = client.shutdown()
            ended = _end_orphans(state_dir, targets, (), client.run_as)
            result = LifecycleResult("shutdown", (), manager_stopped=stopped, ended=ended)
        client.release_runtime_dir()  # supervisord's goes; systemd's herders keep their pid dir (units may restart)
    return replace(result, manager=client.manager)
