"""Read-only views for the commands: storage settings, exec, log files.

They resolve what they show from the configs (``exec``) or from what the last update applied.
"""

import os
import shlex

from galaxyctl_libs.backends.base import STOPPING, UP_STATES, Refusal, running_client
from galaxyctl_libs.backends.update import applied_targets, resolved_targets
from galaxyctl_libs.core import state as statemod
from galaxyctl_libs.core import targets as targets_mod
from galaxyctl_libs.core.registration import resolve_all
from galaxyctl_libs.errors import GalaxyctlError, NothingConfigured
from galaxyctl_libs.storage.config import instance_storage

# ---------------------------------------------------------------- storage (LUKS, Onedata, required mounts)


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
    """Is any service of this state dir up?  (Closing a volume under Galaxy is refused.)"""
    client = running_client(state_dir)
    if client is None:
        return False
    return any(p["statename"] in UP_STATES + (STOPPING,) for p in client.all_processes().values())


# ---------------------------------------------------------------- exec, follow, show


def find_targets(state_dir, instance_name=None, name=None, warnings=None):
    """Services to exec or print: all of an instance (or of everything), or the one named; the
    configs' warnings go to ``warnings`` (a list) when given."""
    everything = resolved_targets(state_dir, enforce_user=True, warnings=warnings)
    if not everything:
        raise NothingConfigured()
    targets = targets_mod.select(everything, [n for n in (instance_name,) if n])
    if name:
        targets = [t for t in targets if t.service.service_name == name]
    if not targets:
        raise GalaxyctlError(f"no service named {name!r}" if name else "no service is configured")
    return targets


def exec_description(target, environ=None):
    """What ``exec -n`` prints, in gravity 1.2.4's words (scripts parse them): ``Working directory:
    CWD`` and ``Executing: NAME=VALUE... COMMAND``, the variables being those the service is given
    (PATH with the virtualenv first, its environment, our markers).  ``exec`` also applies the
    service's umask, which gravity's lines do not show."""
    service = target.service
    full = service.full_environment(dict(os.environ if environ is None else environ))
    given = dict.fromkeys((["PATH"] if service.path_prepend else []) + list(dict(service.environment)))
    assignments = " ".join(f"{name}={shlex.quote(full[name])}" for name in given)
    return [f"Working directory: {service.cwd}", f"Executing: {assignments} {service.command_line}"]


def running_copy(state_dir, target):
    """How ``target`` already runs, or '': under its process manager (supervisord, systemd), or on
    its own (a supervisord killed with -9 left it, or another ``exec``), found by our marker."""
    client = running_client(state_dir)
    info = None
    if client is not None:
        try:
            info = client.process_info(target.program)
        except (GalaxyctlError, Refusal):  # not loaded there: the config changed since the update
            pass
    if info is not None and info["statename"] in UP_STATES + (STOPPING,):
        pid = f", pid {info['pid']}" if info.get("pid") else ""
        return f"{client.manager} runs it ({info['statename']}{pid})"
    from galaxyctl_libs.probes import procfs

    key = procfs.service_key(target.instance_name, target.service.service_name)
    found = [p for p in procfs.marked_processes(procfs.state_id(state_dir)) if p.service == key]
    return f"it runs without {client.manager if client else 'its manager'} ({found[0].describe()})" if found else ""


def exec_service(target):
    """Replace this process with the service (the foreground way a service manager would run it)."""
    service = target.service
    if service.user and os.geteuid() == 0:
        from galaxyctl_libs.rootpolicy import become

        become(service.user, service.group)  # exec drops privileges like every other path
        _give_up_terminal()
    os.chdir(service.cwd)
    os.umask(int(service.umask, 8))
    env = service.full_environment(os.environ)
    os.execvpe(service.argv[0], list(service.argv), env)


def _give_up_terminal():
    """After dropping from root: root's terminal stops being this process's controlling terminal
    (TIOCNOTTY), so the Galaxy user's code cannot push keystrokes into root's shell (TIOCSTI needs
    the controlling terminal).  The process stays in the terminal's foreground group: Ctrl-C still
    reaches it, and its output still shows."""
    import fcntl
    import signal
    import termios

    for fd in (0, 1, 2):
        if os.isatty(fd):
            # a session leader giving up its terminal hangs up its foreground group: itself
            previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
            try:
                fcntl.ioctl(fd, termios.TIOCNOTTY)
            except OSError:
                continue  # not our controlling terminal: nothing to give up
            finally:
                signal.signal(signal.SIGHUP, previous)
            return


def selected_targets(state_dir, names=()):
    """The applied targets ``names`` select (all without names): what follow and logs act on."""
    return targets_mod.select(applied_targets(state_dir), names)
