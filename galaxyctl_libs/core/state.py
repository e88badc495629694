"""The state dir and ``configstate.yaml``: which config files are registered, and their attribs.

The file format is gravity 0.x's, so a state dir written by gravity 0.x loads as
is.  Reads and writes happen under an exclusive lock; writes are atomic; a corrupt file is reported
and never overwritten, so a bad moment never costs an admin the registrations.
"""

import contextlib
import copy
from dataclasses import dataclass, field

from galaxyctl_libs import fsutil
from galaxyctl_libs.core.given import (  # noqa: F401 - this run's configs (core/given.py), part of the state API
    FROM_AUTO_LOAD,
    FROM_GALAXY_ENV,
    FROM_GRAVITY_ENV,
    FROM_OPTION,
    RunConfigs,
    run_configs,
    use_run_configs,
)
from galaxyctl_libs.errors import GalaxyctlError
from galaxyctl_libs.fsutil import default_state_dir  # noqa: F401 - part of the state API
from galaxyctl_libs.paths import STATE_FILE, StatePaths  # noqa: F401 - STATE_FILE: part of the state API

# Bounds for a state file with aliases (PyYAML writes &id001/*id001 for a list two settings share):
# what gravity attribs can hold (config.MAX_YAML_NODES each) times a few configs; the depth is a
# config's plus the levels configstate.yaml adds above the attribs.
MAX_STATE_NODES = 1_000_000
MAX_STATE_DEPTH = 72


@dataclass
class ServiceRecord:
    config_type: str
    service_type: str
    service_name: str

    def as_dict(self):
        return {"config_type": self.config_type, "service_type": self.service_type, "service_name": self.service_name}


LISTED_NAMES = ","  # joins the instance names of a file holding a gravity: list (names have no comma)


@dataclass
class ConfigRecord:
    """One entry of ``config_files:``; unknown keys of newer/older gravity versions are kept."""

    path: str
    config_type: str = "galaxy"
    instance_name: str = "_default_"
    attribs: dict = field(default_factory=dict)
    services: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    def as_dict(self):
        data = {"config_type": self.config_type, "instance_name": self.instance_name, "attribs": self.attribs}
        data["services"] = [s.as_dict() for s in self.services]
        data.update(self.extra)
        return data


@dataclass
class State:
    state_dir: str
    config_files: dict = field(default_factory=dict)  # path -> ConfigRecord
    extra: dict = field(default_factory=dict)
    transient: bool = False  # built from this run's config files (RunConfigs): never written

    @property
    def path(self):
        return StatePaths.of(self.state_dir).configstate

    def as_dict(self):
        data = {"config_files": {p: r.as_dict() for p, r in self.config_files.items()}}
        data.update(self.extra)
        return data

    def render(self):
        import yaml

        return yaml.dump(self.as_dict(), Dumper=_dumper(yaml), default_flow_style=False, sort_keys=False)

    def instance_names(self):
        return sorted({name for r in self.config_files.values() for name in r.instance_name.split(LISTED_NAMES)})

    def record_for_instance(self, name):
        for record in self.config_files.values():
            if name in record.instance_name.split(LISTED_NAMES):
                return record
        return None


def _loader(yaml):
    """libyaml's C loader when PyYAML has it (6x faster on a state with hundreds of handlers), with
    config's constructor fixes (odd scalars are YAML errors, huge integers refused)."""
    global _state_loader
    if _state_loader is None:
        from galaxyctl_libs.core.yamlload import ConstructorFixes

        class StateLoader(ConstructorFixes, getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
            pass

        StateLoader.add_constructor("tag:yaml.org,2002:int", StateLoader.construct_yaml_int)
        _state_loader = StateLoader
    return _state_loader


_state_loader = None


def _dumper(yaml):
    return getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def _corrupt(path, why):
    return GalaxyctlError(f"{path}: corrupt state file ({why}); fix or move it away, it was left untouched")


def parse_state(state_dir, text, path):
    """Parse configstate.yaml text into a State; any deviation from the format is a clear error."""
    data = _load_yaml(text, path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise _corrupt(path, "expected a mapping at the top level")
    files = data.get("config_files") or {}
    if not isinstance(files, dict):
        raise _corrupt(path, "config_files is not a mapping")
    state = State(state_dir=state_dir, extra={k: v for k, v in data.items() if k != "config_files"})
    for config_path, entry in files.items():
        state.config_files[config_path] = _config_record(path, config_path, entry)
    return state


def _load_yaml(text, path):
    """configstate.yaml's text as data, bounded (nodes, depth); a YAML error is a clear error."""
    import yaml

    from galaxyctl_libs.core import yamlload as config

    try:
        if not text:
            return {}
        if "*" in text:  # aliases: the bounded pure-Python loader counts what they expand to
            return config.parse_yaml(text, path, MAX_STATE_NODES, MAX_STATE_DEPTH)
        data = yaml.load(text, Loader=_loader(yaml))  # no alias, no expansion: the file's size bounds it
        _check_depth(data, path)  # only nesting is left to check
        return data
    except yaml.reader.ReaderError as exc:
        raise _corrupt(path, f"YAML error: {config.reader_problem(exc)}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise _corrupt(path, f"YAML error{where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise _corrupt(path, f"YAML error: {exc}") from None


def _config_record(path, config_path, entry):
    """One ``config_files`` entry of configstate.yaml (at ``path``) as a ConfigRecord."""
    if not isinstance(config_path, str) or not isinstance(entry, dict):
        raise _corrupt(path, f"config_files entry {config_path!r} is not a mapping")
    attribs = entry.get("attribs") or {}
    services = entry.get("services") or []
    if not isinstance(attribs, dict) or not isinstance(services, list):
        raise _corrupt(path, f"{config_path}: attribs must be a mapping and services a list")
    records = []
    for service in services:
        if not isinstance(service, dict) or "service_name" not in service:
            raise _corrupt(path, f"{config_path}: a service entry lacks service_name")
        records.append(
            ServiceRecord(
                config_type=str(service.get("config_type", "galaxy")),
                service_type=str(service.get("service_type", service["service_name"])),
                service_name=str(service["service_name"]),
            )
        )
    known = ("config_type", "instance_name", "attribs", "services")
    return ConfigRecord(
        path=config_path,
        config_type=str(entry.get("config_type", "galaxy")),
        instance_name=str(entry.get("instance_name") or "_default_"),
        attribs=attribs,
        services=records,
        extra={k: v for k, v in entry.items() if k not in known},
    )


def _check_depth(data, path):
    """Refuse nesting deeper than MAX_STATE_DEPTH (deepcopy and == of the state recurse)."""
    stack = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children = value.values()
        elif isinstance(value, (list, tuple)):  # !!omap and !!pairs give tuples
            children = value
        else:
            continue
        if depth >= MAX_STATE_DEPTH:
            raise _corrupt(path, f"nested deeper than {MAX_STATE_DEPTH} levels")
        stack.extend((child, depth + 1) for child in children)


def load_registered(state_dir):
    """Read configstate.yaml (an empty State when the dir or file does not exist yet).

    At most fsutil.MAX_STATE_FILE_BYTES of a regular file are read; text that is not UTF-8 is a
    corrupt state, reported and left as it is.
    """
    path = StatePaths.of(state_dir).configstate
    data = fsutil.read_bytes(path, fsutil.MAX_STATE_FILE_BYTES)
    try:
        text = None if data is None else data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _corrupt(path, f"not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    return parse_state(state_dir, text, path)


def load_state(state_dir):
    """The configs this run acts on: the registered ones, or this run's (see use_run_configs)."""
    return _apply_run_configs(load_registered(state_dir))


def save_state(state):
    """Write configstate.yaml atomically, only if its content changed."""
    fsutil.ensure_private_dir(state.state_dir)
    return fsutil.write_if_changed(state.path, state.render())


def operation_lock(state_dir):
    """Serialise galaxyctl runs on one state dir (cron + an admin): one lock for state and the process
    manager, held across a whole command.  Its twin, the state lock (``locked_state``), is held only
    around a read and write of configstate.yaml, and is taken after this one, never before.

    A read-only state dir is taken as it is (stop and shutdown must work there; writers fail later,
    on their first write)."""
    paths = StatePaths.of(state_dir)  # first: as root, refuses a state dir another user can change
    if not fsutil.read_only_dir(paths.state_dir):
        fsutil.ensure_private_dir(paths.state_dir)
    return fsutil.exclusive_lock(paths.operation_lock)


@contextlib.contextmanager
def locked_state(state_dir, write=True, registered=False):
    """Hold the state lock, yield the State, save it on a clean exit (when ``write``).

    ``registered``: the registrations themselves, whatever configs this run names (for register,
    deregister, rename)."""
    fsutil.ensure_private_dir(state_dir)
    with fsutil.exclusive_lock(StatePaths.of(state_dir).state_lock):
        state = load_registered(state_dir) if registered else load_state(state_dir)
        before = copy.deepcopy(state.as_dict())
        yield state
        if write and not state.transient and state.as_dict() != before:
            save_state(state)


# ---------------------------------------------------------------- gravity 1.x's stateless use


def _apply_run_configs(state):
    given = run_configs()
    if given is None:
        return state
    if state.config_files:
        if given.source != FROM_OPTION or sorted(state.config_files) == sorted(set(given.paths)):
            return state
        raise GalaxyctlError(
            f"{state.state_dir} has other config files registered ({', '.join(sorted(state.config_files))}); "
            "-c would drop them from its supervisord: name them with -c as well, or use another --state-dir"
        )
    from galaxyctl_libs.core import config as configmod

    transient = State(state_dir=state.state_dir, transient=True)
    for path in given.paths:
        configs = configmod.load_configs(path)
        name = LISTED_NAMES.join(configmod.parse_gravity(c.gravity_raw, path).instance_name for c in configs)
        transient.config_files.setdefault(path, ConfigRecord(path=path, instance_name=name))
    return transient
