"""systemd unit files for Galaxy's services, rendered as ``{path: content}`` (pure: nothing is written).

Layout (gravity's): one ``.service`` per service in the unit dir (``/etc/systemd/system`` as root,
``~/.config/systemd/user`` in user mode), named ``galaxy-SERVICE`` (``galaxy-INSTANCE-SERVICE`` when
the instance is not ``_default_`` or there are several), a template ``galaxy-NAME@.service`` for the
processes of one of gravity's services (a gunicorn or tusd list, a gravity.handlers entry: instances
``@0``, ``@1``; where they differ in more than their number, each instance's drop-in holds its own
settings), and one ``.target`` per instance that ``Wants=`` every unit, each of which is ``PartOf=`` it.

Logs: the journal, always, as under gravity 1.x (``gravity.log_dir`` is not used; resolving a
config says so).  systemd opens an ``append:``/``file:`` output path as root, following links, before it switches to
``User=``: in a directory the Galaxy user can write, a link there would have root append Galaxy's
output to any file (/etc/passwd).

How systemd reads what we write (systemd.syntax, systemd.service, systemd.exec): every value we
write goes through specifier expansion (``%%`` is a literal ``%``); ``ExecStart=`` and
``Environment=`` are split into words with C-style escapes inside double quotes; ``ExecStart=``
then has ``$VAR``/``${VAR}`` replaced at run time (``$$`` is a literal ``$``); other values are
taken raw to the end of the line, stripped of whitespace at both ends, and a line ending in ``\\``
continues on the next.  Each value is escaped for that, or refused in one line.
"""

import os
import re

from galaxyctl_libs.backends.base import checked_text, herded_argv, instances_grouped
from galaxyctl_libs.backends.base import shown as _shown
from galaxyctl_libs.core.kinds import kind_of
from galaxyctl_libs.core.targets import GRACEFUL_HERDER, GRACEFUL_HUP
from galaxyctl_libs.errors import GalaxyctlError
from galaxyctl_libs.paths import RUNTIME_ROOT, StatePaths
from galaxyctl_libs.records import Record

HEADER = "# Maintained by galaxyctl - CHANGES WILL BE OVERWRITTEN\n"
OWNER_KEY = "# galaxyctl-state="  # + the state id: which state dir's update wrote the unit (stale-unit cleanup)
SYSTEM_UNIT_DIR = "/etc/systemd/system"
USER_UNIT_DIR = "~/.config/systemd/user"
# systemd's PATH for the services it starts; Environment= cannot refer to the inherited one
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# HUP to the main process only (the herder, or gunicorn's master), and wait for kill to return
EXEC_RELOAD = "/bin/kill -s HUP $MAINPID"
_UNIT_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:_.-")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
DROP_IN = "galaxyctl.conf"  # a template instance's own settings: UNIT@N.service.d/galaxyctl.conf
_MARK = "\ue000"  # stands for the process number while a template is rendered
_ESCAPES = {"\\": "\\\\", '"': '\\"', "%": "%%", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def default_unit_dir(user_mode):
    return os.path.expanduser(USER_UNIT_DIR) if user_mode else SYSTEM_UNIT_DIR


class Paths(Record):
    """Where the units go (``unit_dir``) and galaxyctl's own directory for this state dir (``root``:
    ``STATE/systemd``); ``run_dir``, as root with a Galaxy user, is that user's runtime dir, where
    the herder (running as that user) writes its pid file."""

    state_dir: str
    unit_dir: str
    user_mode: bool = False
    run_dir: str = None

    @property
    def root(self):
        return StatePaths.of(self.state_dir).backend_dir("systemd")

    @property
    def pid_dir(self):
        return self.run_dir or self.root

    @property
    def state_id(self):
        return StatePaths.of(self.state_dir).state_id


# ---------------------------------------------------------------- values


def _checked(value, what):
    return checked_text(value, what, "unit files")


def _raw(value, what):
    """A value systemd takes to the end of the line: only ``%`` is escaped; what the line cannot
    hold (a line break, whitespace at the ends, a final backslash) is refused."""
    value = _checked(value, what)
    if any(char in value for char in "\n\r\x0b\x0c"):
        raise GalaxyctlError(f"{what} {_shown(value)}: this unit file setting cannot carry a line break")
    if value != value.strip(" \t") or value.endswith("\\"):
        raise GalaxyctlError(f"{what} {_shown(value)}: a unit file setting cannot begin or end with whitespace or '\\'")
    return value.replace("%", "%%")


def _path(value, what):
    value = str(value)
    if not os.path.isabs(value) or ".." in value.split("/") or (len(value) > 1 and value.endswith("/")):
        raise GalaxyctlError(f"{what} {_shown(value)}: systemd wants an absolute path without '..' or a final '/'")
    return _raw(value, what)


def _quoted(value, what, dollars=False):
    """One word in double quotes: ``\\`` and ``"`` C-escaped, control characters as ``\\n``,
    ``\\xNN``..., ``%`` → ``%%``; in a command line (``dollars``) also ``$`` → ``$$``."""
    out = []
    for char in _checked(value, what):
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif char == "$" and dollars:
            out.append("$$")
        elif char < " " or char == "\x7f":
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def command_line(argv, what):
    """``ExecStart=``: every argument quoted; the executable (not expanded for ``$`` by systemd, and
    read for its ``-@:+!`` prefixes even when quoted) must be a plain name or a normalised absolute path."""
    if not argv:
        raise GalaxyctlError(f"{what}: empty command line")
    exe = str(argv[0])
    if not exe or exe[0] in "-@:+!" or "$" in exe or (("/" in exe) and not os.path.isabs(exe)):
        raise GalaxyctlError(
            f"{what} {_shown(exe)}: systemd runs an absolute path or a bare program name, "
            "not beginning with '-@:+!' nor containing '$'"
        )
    if "/" in exe:
        _path(exe, what)
    return " ".join(_quoted(arg, what, dollars=True) for arg in argv)


def environment_lines(service, what):
    """``Environment=`` lines, one quoted assignment each (``$`` is not expanded there)."""
    entries = []
    if service.path_prepend:
        for directory in service.path_prepend:
            if ":" in str(directory):
                raise GalaxyctlError(f"{what}: PATH directory {_shown(directory)}: PATH cannot carry a ':'")
        entries.append(("PATH", ":".join(tuple(service.path_prepend) + (DEFAULT_PATH,))))
    entries.extend(service.environment)
    lines = []
    for name, value in entries:
        if not _ENV_NAME.match(str(name)):
            raise GalaxyctlError(f"{what}: {_shown(str(name))} is not a valid environment variable name")
        lines.append("Environment=" + _quoted(f"{name}={value}", f"{what}: environment {name}"))
    return lines


def memory_size(gigabytes, what):
    """``MemoryMax=``/``MemoryHigh=`` from a size in GB (gravity's unit); None/0 for none."""
    if not gigabytes:
        return None
    if isinstance(gigabytes, bool) or not isinstance(gigabytes, (int, float)) or gigabytes < 0:
        raise GalaxyctlError(f"{what} {gigabytes!r}: a memory size is a positive number of GB")
    if float(gigabytes).is_integer():
        return f"{int(gigabytes)}G"
    text = repr(float(gigabytes))
    return f"{text}G" if "e" not in text else str(round(gigabytes * 2**30))  # bytes, for the tiny or huge


# ---------------------------------------------------------------- names


def _unit_name_part(name, what):
    name = str(name)
    if not name or not set(name) <= _UNIT_NAME_CHARS:
        raise GalaxyctlError(
            f"{what} {_shown(name)} cannot name a systemd unit (use letters, digits, ':', '_', '.' and '-')"
        )
    return name


def unit_prefix(instance_name, grouped):
    """``galaxy`` for the only, ``_default_`` instance; ``galaxy-INSTANCE`` otherwise (gravity's names)."""
    if not grouped and instance_name == "_default_":
        return "galaxy"
    return "galaxy-" + _unit_name_part(instance_name, "instance name")


def target_unit(instance_name, grouped):
    return unit_prefix(instance_name, grouped) + ".target"


def template_of(service):
    """(name, number) when ``service`` runs as an instance of a template unit, as gravity's do: it is
    one of the processes of gravity's service (a gunicorn or tusd list, a gravity.handlers entry)
    with ``use_service_instances`` (core.services sets ``gravity_service`` only then)."""
    if service.gravity_service and service.process_count > 1 and service.process_number is not None:
        return _unit_name_part(service.gravity_service, f"{service.instance_name}: service name"), str(
            service.process_number
        )
    return None


def unit_name(service, grouped):
    """The unit systemd knows ``service`` by, gravity's: ``galaxy-gunicorn@0.service`` for a
    template's instance, ``galaxy-handler.service`` for a one-process handler entry."""
    prefix = unit_prefix(service.instance_name, grouped)
    name = _unit_name_part(service.gravity_name, f"{service.instance_name}: service name")
    template = template_of(service)
    unit = f"{prefix}-{template[0]}@{template[1]}.service" if template else f"{prefix}-{name}.service"
    if len(unit) > 255:
        raise GalaxyctlError(f"{service.instance_name}: systemd unit name {_shown(unit)} is longer than 255 characters")
    return unit


# ---------------------------------------------------------------- units


def render_service(service, grouped, pid_dir, target, user_mode=False, owner=""):
    """One service unit; each value escaped for how systemd reads it (see the module doc).  No
    ``StandardOutput=``: the journal keeps the output, as under gravity 1.x (see the module doc)."""
    what = f"{service.instance_name}/{service.service_name}"
    label = service.service_name if not grouped and service.instance_name == "_default_" else what
    unit = [HEADER + owner, "[Unit]", f"Description=Galaxy {_raw(label, what + ': name')}"]
    unit += ["After=network.target time-sync.target", f"PartOf={target}", "", "[Service]", "Type=simple"]
    if not user_mode:  # a user manager cannot change users
        unit += [
            f"{key}={_raw(value, f'{what}: {key}')}"
            for key, value in (("User", service.user), ("Group", service.group))
            if value
        ]
    unit.append(f"WorkingDirectory={_path(service.cwd, f'{what}: working directory')}")
    unit.append(f"UMask={_umask(service.umask, what)}")
    unit += environment_lines(service, what)
    unit.append("ExecStart=" + command_line(herded_argv(service, pid_dir), f"{what}: command line argument"))
    unit += _runtime_directory(service, pid_dir, user_mode)
    if service.graceful in (GRACEFUL_HUP, GRACEFUL_HERDER):
        unit.append(f"ExecReload={EXEC_RELOAD}")
    kill_mode = kind_of(service.service_type).kill_mode  # gunicorn: mixed, TERM to the herder/master only
    if kill_mode:
        unit.append(f"KillMode={kill_mode}")
    unit += [f"TimeoutStartSec={int(service.start_timeout)}", f"TimeoutStopSec={int(service.stop_timeout)}"]
    unit.append("Restart=always")
    for key, field in (("MemoryMax", "memory_limit"), ("MemoryHigh", "memory_high")):
        size = memory_size(getattr(service, field, None), f"{what}: {field}")
        if size:
            unit.append(f"{key}={size}")
    if service.log_namespace:  # gravity's log_namespace: journalctl --namespace=NAME
        unit.append(f"LogNamespace={_unit_name_part(service.log_namespace, f'{what}: log_namespace')}")
    return "\n".join(unit) + "\n"


def _runtime_directory(service, pid_dir, user_mode):
    """The herder's pid file is in the Galaxy user's runtime dir under /run (a tmpfs): at boot systemd
    starts the target before any galaxyctl run, so it makes that dir itself, the user's, and keeps it."""
    if service.graceful != GRACEFUL_HERDER or user_mode or not pid_dir.startswith(RUNTIME_ROOT + "/"):
        return []
    return [
        f"RuntimeDirectory={os.path.relpath(pid_dir, '/run')}",
        "RuntimeDirectoryMode=0700",
        "RuntimeDirectoryPreserve=yes",
    ]


def _umask(value, what):
    value = str(value)
    if not re.fullmatch(r"[0-7]{1,4}", value):
        raise GalaxyctlError(f"{what}: umask {_shown(value)} is not an octal mode")
    return value.zfill(4)


def render_target(instance_name, grouped, units, user_mode=False, owner=""):
    label = "" if not grouped and instance_name == "_default_" else " " + instance_name
    lines = [HEADER + owner, "[Unit]", f"Description=Galaxy{label}", "After=network.target time-sync.target"]
    lines += [f"Wants={unit}" for unit in units]
    lines += ["", "[Install]", "WantedBy=" + ("default.target" if user_mode else "multi-user.target")]
    return "\n".join(lines) + "\n"


def expand_specifiers(text, instance=""):
    """``text`` as systemd's specifier expansion leaves it: ``%%`` → ``%``, ``%i`` → ``instance``."""
    return re.sub(r"%([%i])", lambda m: "%" if m.group(1) == "%" else instance, text)


def _template(members, render_one, unit_dir, template_name):
    """``{path: text}`` for the numbered ``members`` (each a (number, service)) of one template.

    When they differ only in their number (handlers), the ``@.service`` holds everything, ``%i``
    where the number goes, checked: for every member, systemd's expansion of the template gives
    exactly that member's own unit.  When they differ in more (a gunicorn list: its binds), the
    template holds what they share ([Unit], Type=, Restart=) and each instance's drop-in
    (``UNIT@N.service.d/galaxyctl.conf``, our marker on top) the rest of its own [Service] section."""
    from galaxyctl_libs.records import replace

    number, first = members[0]
    name = first.service_name
    marked = name[: -len(number)] + _MARK if name.endswith(number) else name

    def mark(text):
        return str(text).replace(name, marked)

    environment = tuple((key, mark(value)) for key, value in first.environment)
    text = render_one(replace(first, service_name=marked, argv=tuple(map(mark, first.argv)), environment=environment))
    text = text.replace(_MARK, "%i")
    files = {os.path.join(unit_dir, template_name): text}
    if all(expand_specifiers(text, n) == expand_specifiers(render_one(service)) for n, service in members):
        return files
    head = text.partition("\n[Service]\n")[0]
    files[os.path.join(unit_dir, template_name)] = f"{head}\n[Service]\n{_SHARED}\n"
    top = text.split("\n", 2)[:2]  # the header and our marker line
    for number, service in members:
        own = render_one(service).partition("\n[Service]\n")[2].splitlines()
        lines = [line for line in own if line not in _SHARED.splitlines()]
        drop_in = os.path.join(unit_dir, template_name.replace("@.", f"@{number}.") + ".d", DROP_IN)
        files[drop_in] = "\n".join(top + ["[Service]"] + lines) + "\n"
    return files


_SHARED = "Type=simple\nRestart=always"  # what every service unit says: a template's own, under drop-ins


def render_units(paths, instances_services, unit_dir=None, user_mode=None):
    """All unit files for ``{instance_name: services}``: returns ``{path: content}``."""
    unit_dir = unit_dir or paths.unit_dir
    user_mode = paths.user_mode if user_mode is None else user_mode
    grouped = instances_grouped(instances_services)
    owner = f"{OWNER_KEY}{paths.state_id}\n"
    files, seen = {}, {}
    for instance_name, services in instances_services.items():
        target = target_unit(instance_name, grouped)

        def render_one(service):
            return render_service(service, grouped, paths.pid_dir, target, user_mode, owner)

        wants, templates = [], {}
        for service in services:
            unit = unit_name(service, grouped)
            if unit in seen:
                raise GalaxyctlError(f"{seen[unit]} and {instance_name}/{service.service_name} would both be {unit}")
            seen[unit] = f"{instance_name}/{service.service_name}"
            wants.append(unit)
            template = template_of(service)
            if template:
                templates.setdefault(unit.split("@")[0] + "@.service", []).append((template[1], service))
            else:
                files[os.path.join(unit_dir, unit)] = render_one(service)
        for template_name, members in templates.items():
            files.update(_template(members, render_one, unit_dir, template_name))
        if services:
            files[os.path.join(unit_dir, target)] = render_target(instance_name, grouped, wants, user_mode, owner)
    return files
