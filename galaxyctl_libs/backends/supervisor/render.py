"""supervisord's files for Galaxy's services, rendered as ``{path: content}`` (pure: nothing is written).

Layout (gravity's): ``STATE/supervisor/supervisord.conf`` and ``supervisord.conf.d/INSTANCE.d/*.conf``,
or the Galaxy user's runtime dir as root (rootpolicy; supervisord's own log then goes with the
services' logs, see with_persistent_log).  Every value is escaped for supervisor's
format so it reaches the process exactly, or refused in one line where the format cannot carry it.
"""

import os
import sys

from galaxyctl_libs.backends import memlimits
from galaxyctl_libs.backends.base import MEMWATCH_MODULE, MEMWATCH_PROGRAM, checked_text, herded_argv, instances_grouped
from galaxyctl_libs.backends.base import shown as _shown
from galaxyctl_libs.backends.supervisor.paths import Paths  # noqa: F401 - render.Paths: what a backend renders for
from galaxyctl_libs.core.kinds import kind_of
from galaxyctl_libs.core.targets import Service
from galaxyctl_libs.errors import GalaxyctlError
from galaxyctl_libs.probes import procfs

HEADER = ";\n; Maintained by galaxyctl - CHANGES WILL BE OVERWRITTEN\n;\n"


# ---------------------------------------------------------------- rendering


# How supervisor 4 reads these files (options.py, datatypes.py): configparser with
# inline_comment_prefixes=(';', '#') ends a value at whitespace followed by ';' or '#' and strips
# whitespace at both ends; then every value we write is %-expanded (stdout_logfile twice); then
# command is split with shlex (POSIX) and environment with a non-POSIX shlex.  Before expanding,
# supervisor replaces the text '%(here)s' in every value (expand_here).

# Expands to "" in every section we write ('here' is always among the expansions); placed between
# whitespace and ';'/'#', or at either end of a value, it keeps configparser off them.
_NOTHING = "%(here).0s"
# A bare word of supervisor's environment lexer (shlex's non-POSIX wordchars plus its own)
_ENV_WORD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_/.+-():")
_QUOTES = ("'", '"')
# Program and group names: they sit in [program:NAME] headers, 'programs = a,b' lists, XML-RPC
# 'group:name' and process_name (expanded); letters, digits and these are safe in all of them.
_NAME_PUNCTUATION = frozenset("_.@+-")
_ENV_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def _checked(value, what):
    """``value`` as a string, refused in one line when no supervisor file can hold it."""
    return checked_text(value, what, "supervisord's files", "\n\r\0", "a newline or NUL character")


def _percent(text, expansions=1):
    """Escape ``%`` for supervisor's %-expansion applied ``expansions`` times, and break up any
    '%(here)s' so supervisor's textual replacement of it (done before expanding) never matches."""
    text = text.replace("%", "%" * 2**expansions)
    return text.replace("%(here)s", "%(here" + _NOTHING + ")s")


def _ini_value(text):
    """A whole value as configparser must see it: an empty expansion goes between whitespace and
    a following ';' or '#' (else a comment starts there) and before/after whitespace at the ends
    (else it is stripped).  ``text`` is already %-escaped: the expansion removes what we add."""
    out = [_NOTHING] if text[:1].isspace() else []
    for index, char in enumerate(text):
        if char in ";#" and index and text[index - 1].isspace():
            out.append(_NOTHING)
        out.append(char)
    if text[-1:].isspace():
        out.append(_NOTHING)
    return "".join(out)


def _raw_path(value, what, expansions=1):
    """A path field (directory, log and pid files, socket, user): taken as is after expansion."""
    return _ini_value(_percent(_checked(value, what), expansions))


def _command(argv, what):
    """``command=``: supervisor expands it once, then splits it with POSIX shlex, so each element is
    shell-quoted and %-escaped; whitespace inside quotes is kept off ';'/'#' by ``_ini_value``."""
    import shlex  # here: status never renders, and shlex compiles a regex on import

    return _ini_value(" ".join(_percent(shlex.quote(_checked(arg, what))) for arg in argv))


def _env_token(value, what):
    """One value as a token of supervisor's environment lexer (non-POSIX shlex, then the value is
    stripped of quote characters at both ends): quoted with whichever quote it lacks, bare if it
    has both and only word characters, else refused: there is no escape character."""
    if value.startswith(_QUOTES) or value.endswith(_QUOTES):
        raise GalaxyctlError(
            f"{what} {_shown(value)}: supervisord cannot pass an environment value that "
            "begins or ends with a quote character"
        )
    if '"' not in value:
        return f'"{value}"'
    if "'" not in value:
        return f"'{value}'"
    if all(char in _ENV_WORD_CHARS or char in _QUOTES for char in value):
        return value
    raise GalaxyctlError(
        f"{what} {_shown(value)}: supervisord cannot pass an environment value with both "
        "quote characters and characters other than letters, digits and _/.+-():"
    )


def _environment(service, what):
    """``environment=``: KEY=token pairs, expanded once before they are split."""
    entries = []
    if service.path_prepend:
        prefix = ""
        for directory in service.path_prepend:
            directory = _checked(directory, f"{what}: PATH directory")
            if os.pathsep in directory:
                raise GalaxyctlError(
                    f"{what}: PATH directory {_shown(directory)}: PATH cannot carry a ':' in a directory"
                )
            prefix += directory + os.pathsep
        token = _env_token(prefix, f"{what}: PATH directory")
        quote = token[0] if token[0] in _QUOTES else ""
        entries.append(f"PATH={quote}{_percent(prefix)}%(ENV_PATH)s{quote}")  # supervisord's own PATH follows
    for name, value in service.environment:
        if not name or name[0].isdigit() or not set(name) <= _ENV_NAME_CHARS:
            raise GalaxyctlError(f"{what}: {_shown(name)} is not a valid environment variable name")
        where = f"{what}: environment {name}"
        entries.append(f"{name}={_percent(_env_token(_checked(value, where), where))}")
    return _ini_value(",".join(entries))


def _check_name(name, what):
    """``name`` if it is safe as (part of) a program or group name, else a one-line refusal."""
    if not name or not all(c.isalnum() or c in _NAME_PUNCTUATION for c in name):
        raise GalaxyctlError(
            f"{what} {_shown(name)} cannot name a supervisord program (use letters, digits, '_', '-', '.', '@' and '+')"
        )
    return name


def program_names(service, grouped):
    """(section name in the ini file, name for XML-RPC calls) of one service: gravity 1.x's names.

    Alone (``_default_``, not ``grouped``): ``celery``; the processes of one gravity service are a
    group named after it, ``handler:handler_0``, ``handler:handler_1``.  ``grouped`` (several
    instances, or one not named ``_default_``): each instance is a group, ``main:celery``,
    ``main:handler0``, ``main:handler1``.  Sections are named after our (unique) service names."""
    instance = _check_name(service.instance_name, "instance name")
    name = _check_name(service.service_name, f"{instance}: service name")
    group = service.gravity_service if service.process_count > 1 else None
    if group is not None:
        _check_name(group, f"{instance}: service name")
    if grouped:
        section = f"{instance}_{_check_name(service.config_type, 'config type')}_{service.service_type}_{name}"
        process = f"{group}{service.process_number}" if group else _check_name(service.gravity_name, "service name")
        return _check_name(section, "program name"), f"{instance}:{process}"
    if group:
        section = f"{_check_name(service.config_type, 'config type')}_{service.service_type}_{name}"
        return _check_name(section, "program name"), f"{group}:{group}_{service.process_number}"
    name = _check_name(service.gravity_name, f"{instance}: service name")
    return name, name


# supervisord's defaults (minfds, minprocs), enough for a small site; a bigger one gets its own
SUPERVISORD_MIN_FDS, SUPERVISORD_MIN_PROCS = 1024, 200
FDS_PER_PROCESS = 4  # supervisord keeps a process's stdin and stdout pipes and its log file open, and spawns with more
SPARE_FDS, SPARE_PROCS = 128, 100  # its own socket, log and connections; what the services run beside


OPEN_FILES_LINE = "; galaxyctl: open files = "  # + a number: read by backends/supervisor/launch.py


def supervisord_limits(processes):
    """``(open files, minprocs)`` supervisord needs to run ``processes`` services: the file
    descriptors it holds for them, the processes the Galaxy user runs.

    supervisord raises its soft limits to ``minfds`` and ``minprocs`` when it starts (and refuses
    to start when the hard limits are lower).  But it also closes every descriptor below ``minfds``
    in each child before the exec, one Python call each: a ``minfds`` that grows with the site
    makes every spawn cost O(processes) (8,000 closes, ~11 ms, at 2,000), the start O(processes²).
    So the open files go in a comment line that our launcher reads (it raises the soft limit
    itself, and minfds keeps its default: supervisord's descriptors are close-on-exec anyway);
    ``minprocs`` costs nothing per spawn and is supervisord's own setting."""
    return (
        max(SUPERVISORD_MIN_FDS, FDS_PER_PROCESS * processes + SPARE_FDS),
        max(SUPERVISORD_MIN_PROCS, processes + SPARE_PROCS),
    )


def render_supervisord_conf(paths, processes=0):
    """The main file: socket, pid file and (see with_persistent_log) log, and the include of the
    program files; the open files and ``minprocs`` when ``processes`` need more than supervisord's
    defaults (see supervisord_limits)."""
    state_dir = _checked(paths.state_dir, "state dir")
    if paths.socket != os.path.normpath(os.path.abspath(paths.socket)):  # supervisord binds the normalised path
        raise GalaxyctlError(f"state dir {_shown(state_dir)}: give it as an absolute path without '.' or '..'")
    what = f"state dir {_shown(state_dir)}:"
    return HEADER + (
        "\n[unix_http_server]\n"
        f"file = {_raw_path(paths.socket, what + ' socket path')}\n"
        "chmod = 0700\n"
        "\n[supervisord]\n"
        f"logfile = {_raw_path(paths.log, what + ' log path')}\n"
        f"pidfile = {_raw_path(paths.pidfile, what + ' pid path')}\n"
        "loglevel = info\n"
        "nodaemon = false\n" + _limits_lines(processes) + "\n[rpcinterface:supervisor]\n"
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n"
        "\n[supervisorctl]\n"
        f"serverurl = {_raw_path('unix://' + paths.socket, what + ' socket path')}\n"
        "\n[include]\n"
        "files = supervisord.conf.d/*.d/*.conf supervisord.conf.d/*.conf\n"
    )


def _limits_lines(processes):
    fds, procs = supervisord_limits(processes)
    lines = f"{OPEN_FILES_LINE}{fds}\n" if fds > SUPERVISORD_MIN_FDS else ""
    return lines + (f"minprocs = {procs}\n" if procs > SUPERVISORD_MIN_PROCS else "")


def log_file(service, log_dir, grouped):
    """``SERVICE.log`` (``handler_0.log``), or the program's section name when instances are grouped."""
    name = program_names(service, grouped)[0] if grouped else _check_name(service.service_name, "service name")
    return os.path.join(log_dir, f"{name}.log")


def render_program(service, log_dir, grouped, pid_dir=None, autostart=False):
    """One ``[program:x]`` file; each field escaped for how supervisor reads it (see ``_NOTHING``)."""
    return HEADER + "\n" + program_section(service, log_dir, grouped, pid_dir, autostart)


def program_section(service, log_dir, grouped, pid_dir=None, autostart=False):
    """The ``[program:x]`` section of one service (render_program)."""
    section, _ = program_names(service, grouped)
    what = f"{service.instance_name}/{service.service_name}"
    log_dir = _checked(log_dir, f"{service.instance_name}: log dir")
    if any((char < " " and char != "\t") or char in "\ufffe\uffff" for char in log_dir):
        # getProcessInfo returns the log file's path, and XML 1.0 has no way to write these
        raise GalaxyctlError(
            f"{service.instance_name}: log dir {_shown(log_dir)}: supervisord reports log file "
            "paths over XML-RPC, which cannot carry control characters"
        )
    lines = [
        f"[program:{section}]",
        "command = " + _command(herded_argv(service, pid_dir or log_dir), f"{what}: command line argument"),
        f"directory = {_raw_path(service.cwd, f'{what}: working directory')}",
        f"umask = {service.umask}",
        # galaxyctl starts the services, in order (core.order): the web server first; its own helper
        # (the memory watcher) starts with supervisord
        f"autostart = {'true' if autostart else 'false'}",
        "autorestart = true",
        f"startsecs = {service.start_timeout}",
        f"stopwaitsecs = {service.stop_timeout}",
        # gunicorn's master stops its own workers gracefully; the rest may leave children behind
        "stopasgroup = " + ("true" if kind_of(service.service_type).stop_as_group else "false"),
        "killasgroup = true",
        f"environment = {_environment(service, what)}",
        "process_name = " + _process_name(service, grouped),
        # stdout_logfile is expanded twice (once when read, once more for the log file)
        f"stdout_logfile = {_raw_path(log_file(service, log_dir, grouped), f'{what}: log file', expansions=2)}",
        "redirect_stderr = true",
    ]
    if service.user:
        lines.append(f"user = {_raw_path(service.user, f'{what}: user')}")
    return "\n".join(lines) + "\n"


def program_file_name(service):
    """The file of a service's section: its own (``galaxy_gunicorn_gunicorn.conf``), or for the
    processes of one gravity service (a handler entry's N) one file for all (``galaxy_standalone_
    handler.conf``).  supervisord reads its include files one at a time and goes over every section
    read so far after each (configparser and its own ``%(here)s``), so a file per process cost
    2,000 handler processes 8 s of supervisord's start and of every update's reload; one file, 0.1 s."""
    name = service.gravity_service if service.process_count > 1 else service.service_name
    return f"{service.config_type}_{service.service_type}_{name}.conf"


def _process_name(service, grouped):
    """``process_name``: the part of the XML-RPC name after the group, or the program's own name."""
    group, _, process = program_names(service, grouped)[1].rpartition(":")
    return process if group else "%(program_name)s"


def render_files(paths, instances_services, log_dirs):
    """All supervisor files for ``{instance_name: services}``: returns ``{path: content}``."""
    grouped = instances_grouped(instances_services)
    processes = sum(len(services) for services in instances_services.values()) + 1  # + the memory watcher
    files = {paths.conf: render_supervisord_conf(with_persistent_log(paths, log_dirs), processes)}
    seen = {}
    for instance_name, services in instances_services.items():
        instance_dir = os.path.join(paths.conf_dir, f"{instance_name}.d")
        groups = {}  # group name -> its programs' sections
        sections = {}  # file -> the program sections in it
        for service in services:
            section, rpc_name = program_names(service, grouped)
            if rpc_name in seen:
                raise GalaxyctlError(
                    f"{seen[rpc_name]} and {instance_name}/{service.service_name} would both be supervisord's {rpc_name}"
                )
            seen[rpc_name] = f"{instance_name}/{service.service_name}"
            if ":" in rpc_name:
                groups.setdefault(rpc_name.split(":")[0], []).append(section)
            sections.setdefault(os.path.join(instance_dir, program_file_name(service)), []).append(
                program_section(service, log_dirs[instance_name], grouped, paths.root)
            )
        files.update((path, HEADER + "\n" + "\n".join(texts)) for path, texts in sections.items())
        for group, members in groups.items():
            # an instance's group beside the instance dirs (gravity's place), a service's in its instance's
            where = paths.conf_dir if grouped else instance_dir
            files[os.path.join(where, f"group_{group}.conf")] = (
                HEADER + f"\n[group:{group}]\nprograms = {','.join(members)}\n"
            )
    watcher = memwatch_service(paths, instances_services, grouped)
    if watcher is not None:
        log_dir = next(
            log_dirs[name] for name, services in instances_services.items() if watcher.user in _users(services)
        )
        files[os.path.join(paths.conf_dir, f"{MEMWATCH_PROGRAM}.conf")] = render_program(
            watcher, log_dir, False, autostart=True
        )
    return files


def with_persistent_log(paths, log_dirs):
    """``paths`` with supervisord's own log in the first instance's log dir when the rest lives in
    the Galaxy user's runtime dir (a tmpfs): the log outlives a reboot and ``shutdown``, there with
    the services' logs, which that user writes (README, "Running as root", rule 3)."""
    from galaxyctl_libs.records import replace

    first = next((log_dir for log_dir in log_dirs.values() if log_dir), None)
    if not paths.run_dir or paths.log_dir or first is None:
        return paths
    return replace(paths, log_dir=first)


def _users(services):
    return {service.user for service in services if service.memory_limit or service.memory_high}


def memwatch_service(paths, instances_services, grouped):
    """The memory watcher (backends/memwatch.py) as a service, when a service has memory_limit or
    memory_high (supervisord has no such setting); else None.  It runs as the Galaxy user, like
    every service, and carries the state dir's marker, so a supervisord that died leaves no watcher."""
    targets = [(s, program_names(s, grouped)[1]) for services in instances_services.values() for s in services]
    watches = memlimits.watches(targets)
    if not watches:
        return None
    taken = set(instances_services) | {s.service_name for s, _ in targets}
    if MEMWATCH_PROGRAM in taken:
        raise GalaxyctlError(
            f"{MEMWATCH_PROGRAM!r} names galaxyctl's memory watcher: name the instance or service otherwise"
        )
    first = next(s for s, _ in targets if s.memory_limit or s.memory_high)
    argv = (sys.executable, "-m", MEMWATCH_MODULE, "--socket", paths.socket)
    argv += tuple(word for watch in watches for word in watch.argv())
    marker = (
        (procfs.STATE_ID_ENV, procfs.state_id(paths.state_dir)),
        (procfs.SERVICE_ENV, f"galaxyctl/{MEMWATCH_PROGRAM}"),
    )
    return Service(
        instance_name=first.instance_name,
        service_type="memwatch",
        service_name=MEMWATCH_PROGRAM,
        argv=argv,
        environment=marker,
        cwd=paths.root,
        start_timeout=1,
        stop_timeout=15,
        user=first.user,
        group=first.group,
    )
