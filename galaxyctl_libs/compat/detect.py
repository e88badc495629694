"""How is the Galaxy already on this host managed?  supervisord, systemd, upstart or a sysv script.

Laniakea's ``DetectGalaxyCommands`` guessed from ``platform.dist()`` (gone since Python 3.8);
we look at the files the init systems themselves read — supervisord's config (with its
``[include]`` files), systemd unit directories, ``/etc/init`` and ``/etc/init.d`` — and return
argv lists, never a shell string.  Every path and name is a constructor argument so tests and
unusual hosts can point it elsewhere.
"""

import configparser
import dataclasses
import glob
import os
from typing import List, Optional

from galaxyctl_libs import fsutil
from galaxyctl_libs.errors import GalaxyctlError

__all__ = ["GalaxyCommands", "DetectGalaxyCommands", "detect_galaxy_commands", "MANAGERS"]

SUPERVISOR_CONFIGS = ("/etc/supervisor/supervisord.conf", "/etc/supervisord.conf")
PROGRAM_NAMES = ("galaxy", "galaxy_web", "galaxy-web", "gunicorn", "uwsgi")
UNIT_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system")
UNIT_NAMES = ("galaxy.service", "galaxy-gunicorn.service", "galaxy.target")
UPSTART_DIR = "/etc/init"
INITD_DIR = "/etc/init.d"
SERVICE_NAMES = ("galaxy",)
MANAGERS = ("supervisord", "systemd", "upstart", "sysv")


@dataclasses.dataclass(frozen=True)
class GalaxyCommands:
    """The commands that drive an existing Galaxy, as argv lists.

    ``startup`` brings the manager itself up with Galaxy (for supervisord: the daemon),
    ``source`` is the file that told us, ``name`` the program, group or unit in it.
    """

    manager: str
    startup: List[str]
    start: List[str]
    stop: List[str]
    restart: List[str]
    status: List[str]
    source: str = ""
    name: str = ""


def detect_galaxy_commands(
    init_system=None,
    *,
    supervisor_configs=SUPERVISOR_CONFIGS,
    program_names=PROGRAM_NAMES,
    unit_dirs=UNIT_DIRS,
    unit_names=UNIT_NAMES,
    upstart_dir=UPSTART_DIR,
    initd_dir=INITD_DIR,
    service_names=SERVICE_NAMES,
    supervisord="supervisord",
    supervisorctl="supervisorctl",
    systemctl="systemctl",
    initctl="initctl",
):
    """Find how Galaxy is managed here; ``init_system`` limits the search.

    ``init_system``: None (try supervisord, systemd, upstart, sysv in that order), one of
    ``MANAGERS``, or Laniakea's ``'init'`` (= systemd, upstart or sysv).  Raises
    ``GalaxyctlError`` naming everything that was looked at when nothing is found.
    """
    if init_system in (None, ""):
        order = MANAGERS
    elif init_system == "init":
        order = ("systemd", "upstart", "sysv")
    elif init_system in ("supervisor", "supervisorctl"):
        order = ("supervisord",)
    elif init_system in MANAGERS:
        order = (init_system,)
    else:
        raise GalaxyctlError(f"unknown init system {init_system!r}: expected one of {', '.join(MANAGERS)} or 'init'")
    looked = []
    for manager in order:
        if manager == "supervisord":
            found = _from_supervisor(supervisor_configs, program_names, supervisord, supervisorctl, looked)
        elif manager == "systemd":
            found = _from_systemd(unit_dirs, unit_names, systemctl, looked)
        elif manager == "upstart":
            found = _from_upstart(upstart_dir, service_names, initctl, looked)
        else:
            found = _from_sysv(initd_dir, service_names, looked)
        if found is not None:
            return found
    raise GalaxyctlError(
        "cannot tell how Galaxy is managed on this host: no Galaxy program, unit or "
        "init script found (looked for " + "; ".join(looked) + ")"
    )


# -- supervisord --------------------------------------------------------------------------------


def _from_supervisor(configs, names, supervisord, supervisorctl, looked):
    looked.append("supervisord [program:]/[group:] " + "/".join(names) + " in " + ", ".join(configs))
    for conf in configs:
        if not os.path.isfile(conf):
            continue
        programs, groups = _supervisor_sections(conf)
        target = _supervisor_target(programs, groups, names)
        if target is None:
            continue
        control = [supervisorctl, "-c", conf]
        return GalaxyCommands(
            manager="supervisord",
            startup=[supervisord, "-c", conf],
            start=control + ["start", target],
            stop=control + ["stop", target],
            restart=control + ["restart", target],
            status=control + ["status", target],
            source=conf,
            name=target,
        )
    return None


SUPERVISOR_CONF_LIMIT = 1 << 20


def _supervisor_sections(conf):
    """``{program: numprocs}`` and ``{group: [programs]}`` of ``conf`` and the files it includes."""
    programs, groups = {}, {}
    pending, done = [os.path.abspath(conf)], set()
    while pending:
        path = pending.pop(0)
        if path in done:
            continue
        done.add(path)
        parser = configparser.RawConfigParser(strict=False, inline_comment_prefixes=(";", "#"))
        text = fsutil.read_text(path, SUPERVISOR_CONF_LIMIT)  # bounded; a FIFO cannot hang us
        if text is None:
            raise GalaxyctlError(f"cannot read supervisord config {path}: No such file or directory")
        try:
            parser.read_string(text, source=path)
        except configparser.Error as exc:
            first = str(exc).splitlines()[0]
            raise GalaxyctlError(f"invalid supervisord config {path}: {first}") from None
        for section in parser.sections():
            kind, _, name = section.partition(":")
            kind, name = kind.strip(), name.strip()
            if kind in ("program", "fcgi-program") and name:
                try:
                    programs[name] = int(parser.get(section, "numprocs", fallback="1"))
                except ValueError:
                    programs[name] = 1
            elif kind == "group" and name:
                members = parser.get(section, "programs", fallback="")
                groups[name] = [m.strip() for m in members.split(",") if m.strip()]
        if parser.has_option("include", "files"):
            base = os.path.dirname(path)
            for pattern in parser.get("include", "files").replace("%(here)s", base).split():
                pattern = os.path.join(base, os.path.expanduser(pattern))
                pending.extend(sorted(os.path.abspath(p) for p in glob.glob(pattern)))
    return programs, groups


def _supervisor_target(programs, groups, names):
    """The supervisorctl name for the first of ``names`` that is a group or a program."""
    for name in names:
        if name in groups:
            return f"{name}:*"
        if name in programs:
            for group, members in groups.items():
                if name in members:  # a grouped program is addressed through its group
                    return f"{group}:{name}" if programs[name] == 1 else f"{group}:*"
            return name if programs[name] == 1 else f"{name}:*"
    return None


# -- systemd, upstart, sysv ---------------------------------------------------------------------


def _from_systemd(unit_dirs, unit_names, systemctl, looked):
    looked.append("systemd units " + "/".join(unit_names) + " in " + ", ".join(unit_dirs))
    for unit in unit_names:
        for directory in unit_dirs:
            path = os.path.join(directory, unit)
            if os.path.isfile(path) or os.path.islink(path):
                return GalaxyCommands(
                    manager="systemd",
                    startup=[systemctl, "start", unit],
                    start=[systemctl, "start", unit],
                    stop=[systemctl, "stop", unit],
                    restart=[systemctl, "restart", unit],
                    status=[systemctl, "status", "--no-pager", unit],
                    source=path,
                    name=unit,
                )
    return None


def _from_upstart(upstart_dir, names, initctl, looked):
    looked.append("upstart jobs " + "/".join(f"{n}.conf" for n in names) + " in " + upstart_dir)
    for name in names:
        path = os.path.join(upstart_dir, f"{name}.conf")
        if os.path.isfile(path):
            return GalaxyCommands(
                manager="upstart",
                startup=[initctl, "start", name],
                start=[initctl, "start", name],
                stop=[initctl, "stop", name],
                restart=[initctl, "restart", name],
                status=[initctl, "status", name],
                source=path,
                name=name,
            )
    return None


def _from_sysv(initd_dir, names, looked):
    looked.append("init scripts " + "/".join(names) + " in " + initd_dir)
    for name in names:
        path = os.path.join(initd_dir, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return GalaxyCommands(
                manager="sysv",
                startup=[path, "start"],
                start=[path, "start"],
                stop=[path, "stop"],
                restart=[path, "restart"],
                status=[path, "status"],
                source=path,
                name=name,
            )
    return None


class DetectGalaxyCommands:
    """Laniakea's galaxyctl class: ``DetectGalaxyCommands('supervisord').get_start_command()`` etc.

    Detection happens in the constructor (same keyword arguments as ``detect_galaxy_commands``)
    and raises ``GalaxyctlError`` when nothing is found; the getters return argv lists.
    """

    def __init__(self, init_system=None, **options):
        self.commands: GalaxyCommands = detect_galaxy_commands(init_system, **options)
        self.init = self.commands.manager

    def get_startup_command(self):
        return list(self.commands.startup)

    def get_start_command(self):
        return list(self.commands.start)

    def get_stop_command(self):
        return list(self.commands.stop)

    def get_restart_command(self):
        return list(self.commands.restart)

    def get_status_command(self):
        return list(self.commands.status)

    def get_init(self) -> Optional[str]:
        return self.init
