"""What supervisord runs, as data light enough for ``status`` to load without YAML or config code.

``Service`` is one process's command line and settings; a ``Target`` is a service with the name
supervisord knows it by and its log file.  ``update`` records the targets it applied in
``STATE/supervisor/services.json``; status, stop, workers and check read that record, which is
also the truth about what supervisord was told to run.
"""

import json
import os

from galaxyctl_libs import fsutil
from galaxyctl_libs.errors import GalaxyctlError
from galaxyctl_libs.records import Record, asdict

APPLIED_FILE = os.path.join("supervisor", "services.json")

# How a service is restarted by ``graceful``.
GRACEFUL_HUP = "hup"  # gunicorn without preload re-reads the app on SIGHUP, master stays
GRACEFUL_RESTART = "restart"  # stop + start
GRACEFUL_NONE = "none"  # left running (tusd: uploads must not be cut)
GRACEFUL_HERDER = "herder"  # SIGHUP to our herder: new gunicorn master (new code), then the old one retires


class Service(Record):
    instance_name: str
    service_type: str
    service_name: str
    argv: tuple
    environment: tuple  # ((name, value), ...) in order; values are literal
    cwd: str
    path_prepend: tuple = ()  # dirs put in front of the inherited PATH (the virtualenv's bin)
    umask: str = "022"
    start_timeout: int = 10
    stop_timeout: int = 10
    graceful: str = GRACEFUL_RESTART
    bind: str = None  # where a web service answers HTTP (readiness), else None
    url_prefix: str = ""
    uwsgi_config: str = None  # for uWSGI: the file whose stats server tells readiness
    user: str = None
    group: str = None
    config_type: str = "galaxy"
    ignored: tuple = ()  # settings accepted but without effect here (shown, not compared)

    _not_compared = ("ignored",)

    @property
    def command_line(self):
        import shlex  # here: status never needs it, and shlex compiles a regex on import

        return shlex.join(self.argv)

    def full_environment(self, base_environ):
        """The environment the service gets, given the environment it inherits."""
        env = dict(base_environ)
        if self.path_prepend:
            env["PATH"] = os.pathsep.join(self.path_prepend + (env.get("PATH", os.defpath),))
        env.update(self.environment)
        return env



class Target(Record):
    service: Service
    program: str  # the name supervisord knows it by (for XML-RPC)
    log_file: str

    @property
    def instance_name(self):
        return self.service.instance_name


def select(targets, names=()):
    """Targets named by ``names`` (instance names and/or service names); all when empty."""
    if not names:
        return list(targets)
    instance_names = {t.instance_name for t in targets}
    wanted_instances = [n for n in names if n in instance_names]
    wanted_services = [n for n in names if n not in instance_names]
    pool = [t for t in targets if not wanted_instances or t.instance_name in wanted_instances]
    if not wanted_services:
        return pool
    known = {t.service.service_name for t in pool}
    unknown = [n for n in wanted_services if n not in known]
    if unknown:
        raise GalaxyctlError(
            f"no instance or service named {', '.join(unknown)} (known: {', '.join(sorted(instance_names | known)) or 'none'})"
        )
    return [t for t in pool if t.service.service_name in wanted_services]


class Applied(Record):
    """What the last update gave supervisord, and the mount points Galaxy needs (for status/check)."""

    targets: list
    required_storage: tuple = ()


def write_applied(state_dir, targets, required_storage=()):
    """Record what supervisord was given (only rewritten when it changed)."""
    # One target per line: readable, and json's C encoder (an ``indent`` would select the pure-Python
    # one, ~90 ms for 500 handlers on every update).
    lines = [json.dumps({"program": t.program, "log_file": t.log_file, "service": asdict(t.service)}, sort_keys=True)
             for t in targets]
    text = (f'{{"required_storage": {json.dumps(list(required_storage))},\n "targets": [\n  '
            + ",\n  ".join(lines) + "\n]}\n")
    fsutil.write_if_changed(os.path.join(state_dir, APPLIED_FILE), text)


def load_applied(state_dir):
    """The record of the last update, or None when there is no usable one (then resolve configs).

    Damaged content (not UTF-8, not our JSON) counts as no record; what must not be read at all
    (not a regular file, past fsutil.MAX_STATE_FILE_BYTES) is an error, as for configstate.yaml.
    """
    data = fsutil.read_bytes(os.path.join(state_dir, APPLIED_FILE), fsutil.MAX_STATE_FILE_BYTES)
    if data is None:
        return None
    try:
        data = json.loads(data.decode("utf-8"))
        targets = [
            Target(Service(**{k: tuple(map(_tuple, v)) if isinstance(v, list) else v for k, v in item["service"].items()}),
                   item["program"], item["log_file"])
            for item in data["targets"]
        ]
        return Applied(targets, tuple(data.get("required_storage", ())))
    except (ValueError, TypeError, KeyError, AttributeError):
        return None  # an old or damaged record: the caller falls back to the configs


def _tuple(value):
    return tuple(value) if isinstance(value, list) else value
