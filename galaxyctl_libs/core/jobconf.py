"""Job handlers: the ``galaxy-main`` handler processes galaxyctl must run, as plain data.

Galaxy expects every handler named in its job configuration (job_conf.yml, job_conf.xml or inline
``galaxy.job_config``) to run; gravity adds dynamic ones from ``gravity.handlers``.  Names follow gravity
(``expand_handlers``) so deployments keep their handler names; which job configuration is read follows Galaxy.
"""

import os
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field

import yaml

from galaxyctl_libs import fsutil
from galaxyctl_libs.core.values import describe, environment, fail, str_list
from galaxyctl_libs.core.yamlload import (
    MAX_CONFIG_BYTES,
    SHOWN_CHARS,
    kind_only,
    parse_yaml,
    reader_problem,
)
from galaxyctl_libs.errors import GalaxyctlError

DEFAULT_JOB_CONFIG_FILES = ("job_conf.yml", "job_conf.xml")  # Galaxy: the .xml fallback is deprecated
DEFAULT_NAME_TEMPLATE = "{name}_{process}"  # gravity's default for gravity.handlers
TEMPLATE_FIELDS = ("name", "process", "instance_name", "instance_number", "hostname")  # hostname: core/hosts.py
DYNAMIC_ASSIGN_METHODS = ("db-skip-locked", "db-transaction-isolation")
_HANDLER_KEYS = ("processes", "pools", "name_template", "environment")
_SERVER_NAME = re.compile(r"[A-Za-z0-9_.@+-]{1,100}\Z")  # becomes a program, file and unit name: bounded
MAX_HANDLERS = 5000  # handler processes in all: each is a supervisor program (a systemd unit); 2,000 are measured


@dataclass(frozen=True)
class Handler:
    """One handler process: ``galaxy-main --server-name=<server_name> [--attach-to-pool=...]``."""

    server_name: str
    source: str  # job_conf.yml | job_conf.xml | job_config | gravity.handlers
    pools: tuple = ()
    environment: tuple = ()  # ordered (name, value) pairs
    options: tuple = field(default=(), hash=False)  # other gravity.handlers keys, unchecked
    entry: str = None  # the gravity.handlers entry it was expanded from by a name_template (None: named as is)
    number: int = None  # its process number in that entry
    count: int = 1  # the entry's processes

    @property
    def dynamic(self) -> bool:
        return self.source == "gravity.handlers"

    @property
    def env(self) -> dict:
        return dict(self.environment)

    def attach_to_pool_args(self) -> tuple:
        """The pool options as gravity writes them."""
        return tuple(f"--attach-to-pool={pool}" for pool in self.pools)


@dataclass(frozen=True)
class JobConfig:
    """Every handler to run, plus what decides whether dynamic ones will get jobs."""

    handlers: tuple = ()
    assign_methods: tuple = ()  # lower-cased, in the order Galaxy tries them
    source: str = None  # job_conf.yml | job_conf.xml | job_config | None (no job configuration)
    source_path: str = None  # the job conf file, or galaxy.yml for inline job_config
    database_is_sqlite: bool = True
    config_dir: str = ""
    notes: tuple = ()  # things worth telling the admin, e.g. a job_config_file that does not exist

    @property
    def static_handlers(self) -> tuple:
        return tuple(h for h in self.handlers if not h.dynamic)

    @property
    def dynamic_handlers(self) -> tuple:
        return tuple(h for h in self.handlers if h.dynamic)

    @property
    def assign_setting(self) -> str:
        """Where an admin sets the assignment method, for messages."""
        if self.source == "job_conf.xml":
            return f"the assign_with attribute of <handlers> in {self.source_path}"
        if self.source == "job_config":
            return f"galaxy.job_config.handling.assign in {self.source_path}"
        if self.source == "job_conf.yml":
            return f"handling.assign in {self.source_path}"
        where = os.path.join(self.config_dir, "job_conf.yml")
        return f"handling.assign (there is no job configuration: create {where} or set galaxy.job_config)"


def _name_list(names, shown=4):
    """``a, b, c`` or, for many, ``a, b, c, … z (500 handlers)``: one warning line stays readable."""
    if len(names) <= shown + 1:
        return ", ".join(names)
    return f"{', '.join(names[: shown - 1])}, … {names[-1]} ({len(names)} handlers)"


def assignment_warning(job_config):
    """One line when dynamic handlers would get no jobs (or unsafe locking), else None.

    Galaxy tries the methods in order; only db-skip-locked and db-transaction-isolation let
    pool-attached handlers grab jobs, and a self method before them keeps jobs in the web process.
    SQLite has no SKIP LOCKED, so there only db-transaction-isolation is safe.
    """
    dynamic = job_config.dynamic_handlers
    if not dynamic:
        return None
    names, setting = _name_list([h.server_name for h in dynamic]), job_config.assign_setting
    methods, sqlite = job_config.assign_methods, job_config.database_is_sqlite
    first = next((m for m in methods if m in DYNAMIC_ASSIGN_METHODS + ("mem-self", "db-self")), None)
    if first == "db-transaction-isolation" or (first == "db-skip-locked" and not sqlite):
        return None
    current = ", ".join(methods) if methods else "not set"
    if first == "db-skip-locked":
        return (
            f"{setting} is {current}, but db-skip-locked is unavailable on a SQLite database (SQLite has "
            f"no SKIP LOCKED): use db-transaction-isolation for the dynamic job handlers ({names})"
        )
    advice = (
        "db-transaction-isolation (the database is SQLite, which has no SKIP LOCKED, so db-skip-locked is unavailable)"
        if sqlite
        else "db-skip-locked (or db-transaction-isolation)"
    )
    return f"dynamic job handlers ({names}) will not be assigned jobs: {setting} is {current}; set it to {advice}"


def load_job_handlers(
    galaxy_section,
    galaxy_config_file,
    gravity_handlers,
    *,
    galaxy_root=None,
    gravity_config_file=None,
    instance_name="_default_",
) -> JobConfig:
    """Read static and dynamic handlers; raise GalaxyctlError naming file and key on bad input.

    ``galaxy_section``: the parsed ``galaxy:`` mapping (None is fine).  ``gravity_handlers``: the
    ``gravity.handlers`` mapping.  ``gravity_config_file`` names the gravity section's file in errors
    when it came from an ``!include``; ``galaxy_root`` anchors a relative ``galaxy.config_dir``.
    """
    config_file = os.path.abspath(galaxy_config_file)
    gravity_file = os.path.abspath(gravity_config_file) if gravity_config_file else config_file
    galaxy = {} if galaxy_section is None else galaxy_section
    if not isinstance(galaxy, Mapping):
        fail(config_file, "galaxy", "a mapping", galaxy)
    config_dir = galaxy.get("config_dir") or os.path.dirname(config_file)  # Galaxy's default
    if not isinstance(config_dir, str):
        fail(config_file, "galaxy.config_dir", "a path", config_dir)
    config_dir = os.path.normpath(os.path.join(galaxy_root or os.path.dirname(config_file), config_dir))
    connection = galaxy.get("database_connection")  # unset: Galaxy's default, a SQLite file
    if connection is not None and not isinstance(connection, str):
        fail(config_file, "galaxy.database_connection", "a database URL", connection)
    sqlite = connection is None or connection.strip().lower().startswith("sqlite")
    source, path, static, assign, notes = _static_handlers(galaxy, config_file, config_dir)
    handlers = _named_once(static + dynamic_handlers(gravity_handlers, gravity_file, instance_name), path, gravity_file)
    return JobConfig(handlers, assign, source, path, sqlite, config_dir, notes)


def _static_handlers(galaxy, config_file, config_dir):
    """(source, path, handlers, assign, notes) of Galaxy's job config: inline, job_conf.xml or .yml."""
    if galaxy.get("job_config") is not None:  # Galaxy prefers inline config over job_config_file
        found = _from_dict(galaxy["job_config"], config_file, "galaxy.job_config", "job_config")
        return ("job_config", config_file, *found, ())
    path, note = _job_config_path(galaxy, config_file, config_dir)
    notes = (note,) if note else ()  # why no job config file is read, when none is
    if path is None:
        return (None, None, (), (), notes)
    if ".xml" in os.path.basename(path).lower():  # so job_conf.xml.sample_basic is XML
        return ("job_conf.xml", path, *_from_xml(_parse_xml(_read(path), path), path), notes)
    return ("job_conf.yml", path, *_from_dict(_parse_yaml(_read(path), path), path, "", "job_conf.yml"), notes)


def _named_once(handlers, path, gravity_file):
    """``handlers``, once each handler process is known to have its own name and they are not too many."""
    seen = {}
    for handler in handlers:
        origin = f"{handler.source} ({gravity_file if handler.dynamic else path})"
        if handler.server_name in seen:
            twice = f"{describe(handler.server_name)} is defined twice: in {seen[handler.server_name]} and in {origin}"
            raise GalaxyctlError(f"job handler {twice}; each handler process needs its own name")
        seen[handler.server_name] = origin
    if len(seen) > MAX_HANDLERS:  # job conf entries (bounded by its size) and gravity.handlers together
        raise GalaxyctlError(f"{path or gravity_file}: {len(seen)} job handlers; at most {MAX_HANDLERS} can run")
    return handlers


def _job_config_path(galaxy, config_file, config_dir):
    """Galaxy: job_config_file (relative to config_dir), else job_conf.yml, else job_conf.xml."""
    explicit = galaxy.get("job_config_file")
    if explicit is not None and explicit != "":
        if not isinstance(explicit, str):
            fail(config_file, "galaxy.job_config_file", "a path", explicit)
        path = os.path.normpath(os.path.join(config_dir, explicit))
        if os.path.exists(path):
            return path, None
        return None, (
            f"{config_file}: galaxy.job_config_file: {path} does not exist; Galaxy falls back to its "
            "default job configuration, so no static job handlers are run"
        )
    found = [p for p in (os.path.join(config_dir, n) for n in DEFAULT_JOB_CONFIG_FILES) if os.path.exists(p)]
    return (found[0] if found else None), None


def _read(path):
    """The job conf file's bytes: a regular file of at most config.MAX_CONFIG_BYTES (a FIFO planted
    there must not hang ``update``, nor a huge file exhaust it); as root, only one root alone can
    change (rootpolicy)."""
    from galaxyctl_libs.rootpolicy import check_root_controlled

    check_root_controlled(path, "job configuration")
    data = fsutil.read_bytes(path, MAX_CONFIG_BYTES)
    if data is None:
        raise GalaxyctlError(f"{path}: cannot read job configuration: it no longer exists")
    return data


class _EntityDeclared(Exception):
    pass


def _refuse_entity(*args):
    raise _EntityDeclared()


def _parse_xml(data, path):
    """job_conf.xml as an ElementTree root, read by expat with entity declarations refused.

    Job configurations declare no entities; refusing them closes entity expansion bombs ("billion
    laughs", quadratic blowup) whatever the expat version's own limits.
    """
    import xml.etree.ElementTree as ElementTree
    from xml.parsers import expat

    builder = ElementTree.TreeBuilder()
    parser = expat.ParserCreate()
    parser.buffer_text = True
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    parser.EntityDeclHandler = _refuse_entity
    try:
        parser.Parse(data, True)
        return builder.close()
    except _EntityDeclared:
        raise GalaxyctlError(
            f"{path}:{parser.CurrentLineNumber}:{parser.CurrentColumnNumber + 1}: "
            "refused: an XML entity declaration (job_conf.xml needs none)"
        ) from None
    except expat.ExpatError as exc:
        raise GalaxyctlError(
            f"{path}:{exc.lineno}:{exc.offset + 1}: invalid XML: {expat.ErrorString(exc.code)}"
        ) from None


def _parse_yaml(data, path):
    """job_conf.yml with config's bounds (aliases, nesting); every failure one line naming the file."""
    try:
        return parse_yaml(data.decode("utf-8"), path)
    except UnicodeDecodeError as exc:
        raise GalaxyctlError(f"{path}: not valid UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except yaml.reader.ReaderError as exc:
        raise GalaxyctlError(f"{path}: invalid YAML: {reader_problem(exc)}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        at = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else path
        raise GalaxyctlError(f"{at}: invalid YAML: {problem[:160]}") from None


def _from_dict(conf, where, prefix, source):
    """job_conf.yml schema (also inline job_config): ``handling: {assign, processes: {id: {environment}}}``."""
    if conf is None:
        return (), ()
    if not isinstance(conf, Mapping):
        if not prefix:  # a whole file that is no job conf (job_config_file: /etc/shadow): its type only
            raise GalaxyctlError(f"{where}: top level: expected a mapping, got {kind_only(conf)}")
        fail(where, prefix, "a mapping", conf)
    key = f"{prefix}.handling" if prefix else "handling"
    handling = conf.get("handling")
    if handling is None:
        return (), ()
    if not isinstance(handling, Mapping):
        fail(where, key, "a mapping", handling)
    assign = tuple(m.lower() for m in str_list(handling.get("assign"), where, f"{key}.assign"))
    processes = handling.get("processes") or {}
    if not isinstance(processes, Mapping):
        fail(where, f"{key}.processes", "a mapping of handler ids to settings", processes)
    handlers = []
    for handler_id, options in processes.items():
        _check_name(handler_id, where, f"{key}.processes")
        here = f"{key}.processes.{handler_id}"
        options = {} if options is None else options
        if not isinstance(options, Mapping):
            fail(where, here, "a mapping", options)
        handlers.append(
            Handler(handler_id, source, (), environment(options.get("environment"), where, f"{here}.environment"))
        )
    return tuple(handlers), assign


def _from_xml(root, where):
    """job_conf.xml: ``<handlers assign_with="a,b"><handler id="..."/>``; XML handlers carry no environment."""
    if root.tag != "job_conf":
        raise GalaxyctlError(f"{where}: expected a <job_conf> root element, got <{root.tag}>")
    element = root.find("handlers")
    if element is None:
        return (), ()
    assign = tuple(m.strip().lower() for m in element.get("assign_with", "").split(",") if m.strip())
    handlers = []
    for number, child in enumerate(element.findall("handler"), 1):
        handler_id = child.get("id")
        if handler_id is None:
            raise GalaxyctlError(f"{where}: <handlers>: <handler> number {number} has no id attribute")
        _check_name(handler_id, where, "<handlers>/<handler id>")
        handlers.append(Handler(handler_id, "job_conf.xml"))
    return tuple(handlers), assign


def dynamic_handlers(gravity_handlers, where, instance_name):
    """gravity.handlers, expanded exactly as gravity names them."""
    if gravity_handlers is None:
        return ()
    if not isinstance(gravity_handlers, Mapping):
        fail(where, "gravity.handlers", "a mapping of handler names to settings", gravity_handlers)
    handlers = []
    for name, settings in gravity_handlers.items():
        if not isinstance(name, str) or not name:
            fail(where, "gravity.handlers", "handler names as strings", name)
        key = f"gravity.handlers.{name}"
        settings = {} if settings is None else settings
        if not isinstance(settings, Mapping):
            fail(where, key, "a mapping", settings)
        count = 1 if settings.get("processes") is None else settings["processes"]
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            fail(where, f"{key}.processes", "a non-negative integer", count)
        _check_limits(settings, count, len(handlers), where, key)
        pools = str_list(settings.get("pools"), where, f"{key}.pools")
        env = environment(settings.get("environment"), where, f"{key}.environment")
        options = tuple((k, v) for k, v in settings.items() if k not in _HANDLER_KEYS)
        template = settings.get("name_template")
        if template is not None and not isinstance(template, str):
            fail(where, f"{key}.name_template", "a string", template)
        explicit = template is None and count == 1 and name[-1].isdigit()  # gravity: no pattern applied
        fields = {"name": name, "instance_name": instance_name}
        for i in range(count):
            expanded = _expand(
                template or DEFAULT_NAME_TEMPLATE, where, f"{key}.name_template", process=i, instance_number=i, **fields
            )
            server_name = name if explicit else expanded
            _check_name(server_name, where, key)
            numbered = {} if explicit else {"entry": name, "number": i, "count": count}
            handlers.append(Handler(server_name, "gravity.handlers", pools, env, options, **numbered))
    return tuple(handlers)


def _check_limits(settings, count, before, where, key):
    """An entry's numbers within the ranges of the settings it shares with a service section
    (schema's limits), and its processes bounded, one entry's and all entries' together."""
    from dataclasses import fields

    from galaxyctl_libs.core.config import check_limit
    from galaxyctl_libs.core.schema import HANDLER_PROCESSES, ServiceCommon

    check_limit(count, HANDLER_PROCESSES, f"{where}: {key}.processes")
    if before + count > MAX_HANDLERS:
        raise GalaxyctlError(f"{where}: {key}.processes: more than {MAX_HANDLERS} handler processes in all")
    for spec in fields(ServiceCommon):
        value = settings.get(spec.name)
        if spec.metadata["limit"] and isinstance(value, (int, float)) and not isinstance(value, bool):
            check_limit(value, spec.metadata["limit"], f"{where}: {key}.{spec.name}")  # its type: services.py


def _expand(template, where, key, **fields):
    """str.format limited to the known fields: no attribute or index lookups."""
    try:
        unknown = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None and f not in fields]
        if not unknown:
            return template.format(**fields).strip()
    except (ValueError, KeyError, IndexError) as exc:
        raise GalaxyctlError(f"{where}: {key}: cannot expand {describe(template)} ({exc})") from exc
    known = ", ".join("{%s}" % f for f in TEMPLATE_FIELDS)
    field_name = unknown[0][:SHOWN_CHARS]
    raise GalaxyctlError(f"{where}: {key}: unknown field {{{field_name}}} in {describe(template)} (known: {known})")


def _check_name(name, where, key):
    if not isinstance(name, str) or not _SERVER_NAME.match(name):
        raise GalaxyctlError(
            f"{where}: {key}: {describe(name)} cannot be a job handler name "
            "(use at most 100 letters, digits, '_', '-', '.', '@' and '+')"
        )
