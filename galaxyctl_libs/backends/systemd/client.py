"""Control of Galaxy's systemd units over ``systemctl`` (argv lists, no shell; ``--user`` in user mode).

``SystemdController`` answers the calls of backends.base.Controller, as supervisor.client.SupervisorClient
does, so the actions drive either.  systemd itself is always there when it answers: the manager of a
survey is MANAGER_RUNNING then, and starting or shutting "it" down means the units, never systemd.  Our units are the
ones the last update recorded, and the files in the unit dir that carry this state dir's
``# galaxyctl-state=`` line (render.OWNER_KEY): only those are ever stopped for being stale or removed.
"""

import os
import subprocess
import time

from galaxyctl_libs import fsutil
from galaxyctl_libs.backends.base import (
    BACKOFF,
    FATAL,
    MANAGER_DOWN,
    MANAGER_NOT_ANSWERING,
    MANAGER_RUNNING,
    RUNNING,
    STARTING,
    STOPPED,
    STOPPING,
    UNKNOWN,
    Changes,
    Controller,
    Survey,
)
from galaxyctl_libs.backends.systemd import listing
from galaxyctl_libs.backends.systemd.render import DROP_IN, HEADER, OWNER_KEY
from galaxyctl_libs.errors import GalaxyctlError
from galaxyctl_libs.probes.poll import wait_until

PROPERTIES = (
    "Id,LoadState,ActiveState,SubState,MainPID,ExecMainStartTimestampMonotonic,NeedDaemonReload,UnitFileState,"
    "Result,ExecMainStatus"
)
UNIT_SUFFIXES = (".service", ".target")
MAX_UNIT_FILE_BYTES = 1 << 20


def state_of(active, sub):
    """Our process state for systemd's ActiveState/SubState."""
    if sub == "auto-restart":
        return BACKOFF
    return {
        "active": RUNNING,
        "reloading": RUNNING,
        "activating": STARTING,
        "deactivating": STOPPING,
        "failed": FATAL,
        "inactive": STOPPED,
    }.get(active, UNKNOWN)


def marked_units(unit_dir, state_id):
    """{unit file name: path} of the regular files directly in ``unit_dir`` that carry our marker."""
    try:
        names = os.listdir(unit_dir)
    except OSError:
        return {}
    paths = {name: os.path.join(unit_dir, name) for name in names if name.endswith(UNIT_SUFFIXES)}
    return {name: path for name, path in paths.items() if _marked(path, state_id)}


def marked_drop_ins(unit_dir, state_id):
    """Paths of our drop-ins (``UNIT@N.service.d/galaxyctl.conf``, render.DROP_IN) that carry our marker."""
    try:
        names = os.listdir(unit_dir)
    except OSError:
        return []
    dirs = [os.path.join(unit_dir, name) for name in names if name.endswith(".service.d") and "@" in name]
    paths = [os.path.join(d, DROP_IN) for d in dirs if not os.path.islink(d) and os.path.isdir(d)]
    return sorted(path for path in paths if _marked(path, state_id))


def _marked(path, state_id):
    """A regular file (not a link) with this state dir's marker in its first lines."""
    if os.path.islink(path) or not os.path.isfile(path):
        return False
    try:
        data = fsutil.read_bytes(path, MAX_UNIT_FILE_BYTES)
    except (OSError, GalaxyctlError):
        return False
    return data is not None and f"{OWNER_KEY}{state_id}".encode() in data.split(b"\n", 3)[:3]


GRAVITY_HEADER = b"; This file is maintained by Gravity"  # gravity 1.x's units and targets begin so


def written_by(path):
    """Who wrote the unit file at ``path``: "galaxyctl", "gravity", "other" (an admin, a package), or
    None when there is none."""
    if os.path.islink(path) or not os.path.isfile(path):
        return "other" if os.path.lexists(path) else None
    try:
        head = (fsutil.read_bytes(path, MAX_UNIT_FILE_BYTES) or b"").split(b"\n", 3)[:3]
    except (OSError, GalaxyctlError):
        return "other"
    if any(line.startswith(OWNER_KEY.encode()) or line == HEADER.strip().encode() for line in head):
        return "galaxyctl"
    return "gravity" if any(line.startswith(GRAVITY_HEADER) for line in head) else "other"


def gravity_leftovers(unit_dir, files):
    """gravity's own unit files that a gravity target we replace wanted and that we do not write (a
    site moving over from gravity's other names, e.g. ``galaxy-handler_0.service``): its Wants= say which."""
    leftovers = set()
    for path in files:
        if not path.endswith(".target") or written_by(path) != "gravity":
            continue
        text = (fsutil.read_bytes(path, MAX_UNIT_FILE_BYTES) or b"").decode("utf-8", "replace")
        wanted = [word for line in text.splitlines() if line.startswith("Wants=") for word in line[6:].split()]
        for unit in wanted:
            name = unit[: unit.index("@") + 1] + unit[unit.rindex(".") :] if "@" in unit else unit
            candidate = os.path.join(unit_dir, os.path.basename(name))
            if candidate not in files and written_by(candidate) == "gravity":
                leftovers.add(candidate)
    return sorted(leftovers)


def _refuse_others(files):
    """Never overwrite a unit file that neither galaxyctl nor gravity wrote."""
    for path in sorted(files):
        if written_by(path) == "other":
            raise GalaxyctlError(
                f"{path} exists and was written neither by galaxyctl nor by gravity: it is left alone; move it "
                "away, or set gravity.instance_name so that galaxyctl's units get other names"
            )


def write_units(paths, files, controller=None):
    """Write the unit files that changed; remove stale units of this state dir (marked files only)
    and gravity's own units that a gravity target we replace named (a site moving over), a stale
    target disabled first (while its file still says what to undo); refuse to overwrite a file that
    neither wrote.  Returns backends.base.Changes (paths)."""
    fsutil.ensure_private_dir(paths.root)
    _refuse_others(files)
    leftovers = gravity_leftovers(paths.unit_dir, files)  # read before our target replaces gravity's
    for directory in sorted({os.path.dirname(path) for path in files} | {paths.unit_dir}):
        fsutil.make_dirs(directory, mode=0o755)  # the unit dir, and a template instance's drop-in dir
    added = tuple(sorted(path for path in files if not os.path.lexists(path)))
    written = fsutil.write_many_if_changed(files, mode=0o644)
    ours = sorted(marked_units(paths.unit_dir, paths.state_id).values())
    ours += marked_drop_ins(paths.unit_dir, paths.state_id)
    stale = [path for path in ours if path not in files] + leftovers
    targets = [os.path.basename(path) for path in stale if path.endswith(".target")]
    if targets and controller is not None:
        controller.systemctl("disable", "--no-reload", "--", *targets, check=False)
    for path in stale:
        fsutil.remove_file(path)
        if path.endswith(DROP_IN):
            fsutil.remove_empty_dir(os.path.dirname(path))  # ours alone made it
    return Changes(tuple(written), tuple(stale), added)


def manager_env(user_mode, environ=None):
    """The environment for systemctl/journalctl: in user mode, the user's runtime dir when the caller
    has none (cron, sudo -u), so ``--user`` finds the user's manager as gravity's users expect."""
    environ = dict(os.environ if environ is None else environ)
    if user_mode and not environ.get("XDG_RUNTIME_DIR") and not environ.get("DBUS_SESSION_BUS_ADDRESS"):
        runtime = f"/run/user/{os.getuid()}"
        if os.path.isdir(runtime):
            environ["XDG_RUNTIME_DIR"] = runtime
    return environ


def manager_argv(tool, user_mode, *args):
    """``systemctl``/``journalctl`` argv, with ``--user`` in user mode."""
    return [tool] + (["--user"] if user_mode else []) + list(args)


def _unit_pattern_of_added(unit, added):
    """Whether ``unit`` is new by one of the ``added`` files: its own file, its template's (new
    template: every instance is new) or its instance's drop-in."""
    template = unit[: unit.index("@") + 1] + unit[unit.rindex(".") :] if "@" in unit else None
    names = {os.path.basename(path) for path in added if os.path.basename(path) != DROP_IN}
    names |= {_unit_pattern(path) for path in added if os.path.basename(path) == DROP_IN}
    return unit in names or (template is not None and template in names)


def _unit_pattern(path):
    """The units a file stands for: a template's instances by a glob (``galaxy-handler@*.service``),
    a drop-in its instance (``galaxy-gunicorn@0.service.d/galaxyctl.conf``: ``galaxy-gunicorn@0.service``)."""
    if os.path.basename(path) == DROP_IN:
        return os.path.basename(os.path.dirname(path))[: -len(".d")]
    name = os.path.basename(path)
    return name.replace("@.", "@*.") if "@." in name else name


class SystemdController(Controller):
    """Start, stop, signal and ask systemd about the units of one state dir (backends.base.Controller)."""

    manager = "systemd"  # what the messages name

    def __init__(self, paths, run_as=(None, None), timeout=30, slow_timeout=600, programs=None):
        self.paths = paths
        self.run_as = tuple(run_as)  # the units' User=; systemctl itself runs as galaxyctl's user
        self.timeout = timeout
        self.slow_timeout = slow_timeout  # a stop waits for the unit's TimeoutStopSec
        self._programs = programs  # the units the last update recorded (None: read the record)

    # ------------------------------------------------------------ systemctl

    def _run(self, tool, args, timeout):
        """``tool`` (systemctl, journalctl) for this manager: output captured, bounded, no stdin."""
        return subprocess.run(
            manager_argv(tool, self.paths.user_mode, *args),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            errors="replace",
            env=manager_env(self.paths.user_mode),
        )

    def systemctl(self, *args, slow=False, check=True):
        timeout = self.slow_timeout if slow else self.timeout
        try:
            result = self._run("systemctl", args, timeout)
        except subprocess.TimeoutExpired:
            raise GalaxyctlError(f"systemctl {' '.join(args[:2])} did not finish within {timeout}s") from None
        except OSError as exc:
            raise GalaxyctlError(f"cannot run systemctl: {exc}") from None
        if check and result.returncode != 0:
            lines = (result.stderr or result.stdout).strip().splitlines()
            raise GalaxyctlError(
                f"systemctl {' '.join(args)}: {lines[-1] if lines else 'exit ' + str(result.returncode)}"
            )
        return result

    def units(self):
        """Every unit of ours: the recorded services, and our marked files (targets, plain services)."""
        programs = self._programs
        if programs is None:
            from galaxyctl_libs.backends.record import load_applied

            applied = load_applied(self.paths.state_dir)
            programs = [t.program for t in applied.targets] if applied is not None else []
        files = [n for n in marked_units(self.paths.unit_dir, self.paths.state_id) if "@." not in n]
        return sorted(set(programs) | set(files))

    def targets(self):
        return sorted(n for n in marked_units(self.paths.unit_dir, self.paths.state_id) if n.endswith(".target"))

    def show(self, units, properties=PROPERTIES):
        """``systemctl show`` once for ``units``: {unit: {property: value}}.  A round trip to systemd
        per unit: for many, listing.states costs less."""
        if not units:
            return {}
        out = self.systemctl("show", f"--property={properties}", "--", *units).stdout
        # one block per unit, in the order asked (keyed by the name asked: Id may be an alias's)
        blocks = [block for block in out.split("\n\n") if block.strip()]
        shown = {}
        for unit, block in zip(units, blocks):
            shown[unit] = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        return shown

    # ------------------------------------------------------------ the calls actions make

    def pid(self):
        return None  # systemd (PID 1 of its machine) is not ours to signal

    def is_running(self):
        try:
            return self.systemctl("show", "--property=Version", check=True).returncode == 0
        except GalaxyctlError:
            return False

    def survey(self):
        try:
            shown = listing.states(self, self.units())
        except GalaxyctlError as exc:
            state = MANAGER_NOT_ANSWERING if "did not finish" in exc.message else MANAGER_DOWN
            return Survey(state, None)
        now = listing.since_boot()
        return Survey(MANAGER_RUNNING, None, {unit: _info(unit, props, now) for unit, props in shown.items()})

    def all_processes(self):
        return self.survey().processes or {}

    def process_info(self, name):
        props = self.show([name]).get(name)
        if props is None:
            raise GalaxyctlError(f"systemd does not know {name}")
        return _info(name, props, time.monotonic())

    def ensure_manager_running(self, timeout=30):
        """systemd runs already: load changed unit files if it has not.  Never 'started' (False)."""
        shown = self.show(self.units())
        if any(props.get("NeedDaemonReload") == "yes" for props in shown.values()):
            self.systemctl("daemon-reload", slow=True)
        return False

    def apply_changes(self, changes=None, started=None):
        """After write_units: stop the units whose files were removed, daemon-reload when files
        changed, and enable the targets that are not (so Galaxy starts at boot, as under gravity).
        While Galaxy runs (a unit of ours was active), the units new in this update are started, as
        supervisord's update starts new programs: a renamed service (gravity's names after an
        upgrade) runs on under its new name; their names go into ``started``.  Returns no process
        groups: update's own lines say which unit files changed."""
        changes = changes or Changes((), ())
        current = set(self.units())  # a drop-in may go while its unit stays (a list now alike)
        removed = [unit for unit in dict.fromkeys(map(_unit_pattern, changes.removed)) if unit not in current]
        running = changes.added and self._active(removed + sorted(current))
        if removed:
            self.systemctl("stop", "--", *removed, slow=True, check=False)
        if changes:
            self.systemctl("daemon-reload", slow=True)
            if removed:
                self.systemctl("reset-failed", "--", *removed, check=False)
        new = [unit for unit in sorted(current) if _unit_pattern_of_added(unit, changes.added)] if running else []
        new = [unit for unit in new if unit.endswith(".service")]
        if new:
            self.systemctl("start", "--", *new, slow=True)
            if started is not None:
                started.extend(new)
        targets = self.targets()
        shown = self.show(targets) if targets else {}
        disabled = [name for name in targets if shown.get(name, {}).get("UnitFileState") != "enabled"]
        if disabled:
            self.systemctl("enable", "--", *disabled)
        return (), (), ()

    def _active(self, patterns):
        """Whether any unit of ``patterns`` (globs allowed) is active or on its way up or down."""
        if not patterns:
            return False
        states = "--state=active,activating,reloading,deactivating"
        listed = self.systemctl("list-units", "--plain", "--no-legend", states, "--", *patterns, check=False)
        return bool(listed.stdout.strip())

    def start(self, name):
        if self.process_info(name)["statename"] in (RUNNING, STARTING):
            return False
        self.systemctl("start", "--", name, slow=True)
        return True

    def start_many(self, names):
        """One look at ``names`` (listing.states), one ``systemctl start`` of those down, one look
        for their PIDs, whatever their number.  When the joint start fails, each is started alone,
        so that the error names the unit that failed."""
        shown = listing.states(self, names)
        down = [n for n in names if _info(n, shown.get(n, {}), 0)["statename"] not in (RUNNING, STARTING)]
        if not down:
            return {}, {}
        try:
            self.systemctl("start", "--", *down, slow=True)
        except GalaxyctlError:
            return Controller.start_many(self, down)
        return {name: int(props.get("MainPID") or 0) for name, props in listing.states(self, down).items()}, {}

    def stop(self, name):
        self.systemctl("stop", "--", name, slow=True)

    def signal(self, name, signame):
        self.systemctl("kill", f"--signal={signame}", "--kill-who=main", "--", name)
        return True

    def kill_group(self, name):
        self.systemctl("kill", "--signal=KILL", "--kill-who=all", "--", name, check=False)

    def journal_tail(self, unit, lines):
        """The last ``lines`` journal lines of ``unit`` (empty when journalctl cannot tell)."""
        try:
            result = self._run("journalctl", ("-u", unit, "-n", str(lines), "--no-pager", "-q"), self.timeout)
        except (OSError, subprocess.TimeoutExpired):
            return []
        return result.stdout.splitlines()[-lines:]

    def shutdown(self, timeout=60):
        """Stop the targets and every unit of ours; wait (bounded) until none is active any more."""
        units = self.targets() + self.units()
        if not units:
            return False
        self.systemctl("stop", "--", *dict.fromkeys(units), slow=True)

        def all_down():
            return all(p.get("ActiveState") in ("inactive", "failed") for p in self.show(units).values())

        if not wait_until(all_down, timeout):
            raise GalaxyctlError(f"units still active {timeout}s after systemctl stop: {', '.join(units)}")
        return True


def controller_for(state_dir, applied, **kwargs):
    """The controller of the units the last update (``applied``, a record.Applied) wrote
    (backends.base.client_for)."""
    from galaxyctl_libs.backends.systemd.render import Paths as UnitPaths

    paths = UnitPaths(state_dir, applied.unit_dir, applied.user_mode, applied.supervisor_dir)
    programs = [target.program for target in applied.targets]
    return SystemdController(paths, run_as=applied.run_as, programs=programs, **kwargs)


def _info(unit, props, now):
    """A unit as supervisor's getProcessInfo describes a process (what the actions read)."""
    state = state_of(props.get("ActiveState"), props.get("SubState"))
    if props.get("LoadState") in ("not-found", "bad-setting", "error"):
        state = UNKNOWN if props.get("ActiveState") == "inactive" else state
    pid = int(props.get("MainPID") or 0)
    started = int(props.get("ExecMainStartTimestampMonotonic") or 0) / 1e6
    description = f"{props.get('ActiveState', '?')}/{props.get('SubState', '?')}" + (f", pid {pid}" if pid else "")
    if props.get("LoadState") not in (None, "loaded"):
        description += f" ({props.get('LoadState')})"
    return {
        "group": unit,
        "name": unit,
        "statename": state,
        "pid": pid,
        "start": started,
        "now": now,
        "description": description,
        "spawnerr": _failure(props) if state in (FATAL, BACKOFF) else "",  # why, as supervisord's spawnerr says
    }


def _failure(props):
    """Why a unit failed or is being restarted, in systemd's words: ``exit-code, exit status 1``,
    ``start-limit-hit, exit status 1`` (it restarted too often), ``signal``..."""
    result, status = props.get("Result") or "", props.get("ExecMainStatus") or ""
    found = [result] if result and result != "success" else []
    found += [f"exit status {status}"] if status not in ("", "0") else []
    return ", ".join(found)
