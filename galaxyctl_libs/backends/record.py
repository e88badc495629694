"""What a backend applied, as data light enough for ``status`` to load without YAML or config code.

A ``Target`` is a service with the name the backend knows it by (a supervisord program) and its
log file.  ``update`` records the targets it applied in the backend's own directory
(``STATE/supervisor/services.json``); status, stop, workers and check read that record, which is
also the truth about what the process manager was told to run.
"""

import os

from galaxyctl_libs import fsutil, smalljson
from galaxyctl_libs.core.targets import Service
from galaxyctl_libs.paths import StatePaths
from galaxyctl_libs.records import Record, asdict

APPLIED_NAME = "services.json"  # in the supervisor backend's directory (STATE/supervisor)


def applied_path(state_dir):
    return os.path.join(StatePaths.of(state_dir).backend_dir("supervisor"), APPLIED_NAME)


class Target(Record):
    service: Service
    program: str  # the name the backend knows it by (supervisord's group:name for XML-RPC)
    log_file: str

    @property
    def instance_name(self):
        return self.service.instance_name


class Applied(Record):
    """What the last update gave supervisord, and the mount points Galaxy needs (for status/check)."""

    targets: list
    required_storage: tuple = ()
    supervisor_dir: str = None  # where supervisord's files are when not STATE/supervisor
    run_as: tuple = (None, None)  # (user, group) supervisord runs as, when galaxyctl is root
    process_manager: str = "supervisor"  # the backend that applied it (gravity's process_manager)
    unit_dir: str = None  # systemd: where the units are
    user_mode: bool = False  # systemd: systemctl --user
    supervisor_log_dir: str = None  # where supervisord's own log is, when not beside its files


def write_applied(
    state_dir, targets, required_storage=(), supervisor_dir=None, run_as=(None, None), backend=None, log_dir=None
):
    """Record what supervisord was given (only rewritten when it changed).  It lives in the state
    dir, which only galaxyctl's own user can change, so root can trust it (rootpolicy)."""
    import json  # here: status only reads (smalljson)

    # One target per line: readable, and json's C encoder (an ``indent`` would select the pure-Python
    # one, ~90 ms for 500 handlers on every update).
    lines = [
        json.dumps({"program": t.program, "log_file": t.log_file, "service": asdict(t.service)}, sort_keys=True)
        for t in targets
    ]
    text = (
        f'{{"required_storage": {json.dumps(list(required_storage))},\n'
        f' "supervisor_dir": {json.dumps(supervisor_dir)}, "run_as": {json.dumps(list(run_as))},\n'
        + (f' "supervisor_log_dir": {json.dumps(log_dir)},\n' if log_dir else "")
        + (f" {_backend_fields(backend)},\n" if backend else "")
        + ' "targets": [\n  '
        + ",\n  ".join(lines)
        + "\n]}\n"
    )
    path = applied_path(state_dir)
    fsutil.ensure_private_dir(os.path.dirname(path))
    fsutil.write_if_changed(path, text)  # compared as bytes: a damaged (binary) record is just replaced


def load_applied(state_dir):
    """The record of the last update, or None when there is no usable one (then resolve configs).

    Damaged content (not UTF-8, not our JSON) counts as no record; what must not be read at all
    (not a regular file, past fsutil.MAX_STATE_FILE_BYTES) is an error, as for configstate.yaml.
    """
    data = fsutil.read_bytes(applied_path(state_dir), fsutil.MAX_STATE_FILE_BYTES)
    if data is None:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:  # binary garbage is as damaged as bad JSON
        return None
    try:
        data = smalljson.loads(text)
        targets = [
            Target(
                Service(**{k: tuple(map(_tuple, v)) if isinstance(v, list) else v for k, v in item["service"].items()}),
                item["program"],
                item["log_file"],
            )
            for item in data["targets"]
        ]
        run_as = tuple(data.get("run_as") or (None, None))
        manager = data.get("process_manager") or "supervisor"
        return Applied(
            targets,
            tuple(data.get("required_storage", ())),
            data.get("supervisor_dir"),
            run_as,
            str(manager),
            data.get("unit_dir"),
            bool(data.get("user_mode")),
            data.get("supervisor_log_dir"),
        )
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        return None  # an old or damaged record: the caller falls back to the configs


def unapplied(targets, backend=None):
    """An Applied for ``targets`` no update has applied yet, under ``backend`` ((name, paths) from
    Backend.recorded; None: supervisord in its usual place)."""
    if backend is None:
        return Applied(targets)
    name, paths = backend
    return Applied(targets, process_manager=name, unit_dir=paths.unit_dir, user_mode=paths.user_mode)


def _backend_fields(backend):
    """``"process_manager": ...`` and, for systemd, where its units are (``backend``: (name, paths))."""
    import json

    name, paths = backend
    fields = {"process_manager": name}
    if name == "systemd":
        fields.update(unit_dir=paths.unit_dir, user_mode=paths.user_mode)
    return json.dumps(fields, sort_keys=True)[1:-1]


def _tuple(value):
    return tuple(value) if isinstance(value, list) else value
