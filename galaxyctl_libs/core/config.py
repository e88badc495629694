"""Galaxy's configuration file and its ``gravity:`` section, as typed, validated settings.

The keys and defaults are gravity's (current schema, see galaxy.yml.sample, plus the older 0.x keys)
so existing Galaxy configs load unchanged.  Every value is checked against its field's kind; an
error names the file and the key path (``gravity.gunicorn.workers: expected an integer, got 'abc'``),
an unknown key is a warning, never a crash.

The file may be hostile (galaxyctl runs as root, galaxy.yml may be writable by the Galaxy user):
it is read only if it is a regular file of bounded size, its aliases are bounded, messages quote
only a short prefix of what it holds, and ``!include`` reads only files under the config's
directory or under one named in ``$GALAXYCTL_INCLUDE_DIRS`` (colon-separated absolute directories).
"""

import os
import shlex
from dataclasses import dataclass, field, fields

import yaml

from galaxyctl_libs import fsutil
from galaxyctl_libs.errors import GalaxyctlError
from galaxyctl_libs.rootpolicy import check_root_controlled

DEFAULT_INSTANCE_NAME = "_default_"
APP_SERVERS = ("gunicorn", "unicornherder", "uwsgi")
PROCESS_MANAGERS = ("supervisor", "systemd", "multiprocessing")


def _opt(default, kind, choices=None):
    """A settings field: ``kind`` says how raw YAML is checked and converted (see ``_convert``)."""
    if isinstance(default, dict):
        return field(default_factory=dict, metadata={"kind": kind, "choices": choices})
    return field(default=default, metadata={"kind": kind, "choices": choices})


@dataclass(frozen=True)
class ServiceCommon:
    """Keys every service section has."""

    enable: bool = _opt(True, "bool")
    umask: str = _opt(None, "umask")
    start_timeout: int = _opt(10, "int")
    stop_timeout: int = _opt(10, "int")
    memory_limit: float = _opt(None, "number")
    memory_high: float = _opt(None, "number")
    environment: dict = _opt({}, "environment")


@dataclass(frozen=True)
class GunicornSettings(ServiceCommon):
    bind: str = _opt("localhost:8080", "str")
    workers: int = _opt(1, "int")
    timeout: float = _opt(300, "number")
    extra_args: str = _opt("", "args")
    preload: bool = _opt(None, "bool")  # None: true unless the app server is unicornherder
    start_timeout: int = _opt(15, "int")
    stop_timeout: int = _opt(65, "int")
    restart_timeout: int = _opt(300, "int")


@dataclass(frozen=True)
class CelerySettings(ServiceCommon):
    enable_beat: bool = _opt(True, "bool")
    concurrency: int = _opt(2, "int")
    loglevel: str = _opt("DEBUG", "choice", ("DEBUG", "INFO", "WARNING", "ERROR"))
    queues: str = _opt("celery,galaxy.internal,galaxy.external", "str")
    pool: str = _opt("threads", "choice", ("prefork", "eventlet", "gevent", "solo", "processes", "threads"))
    extra_args: str = _opt("", "args")


@dataclass(frozen=True)
class GxItProxySettings(ServiceCommon):
    enable: bool = _opt(False, "bool")
    version: str = _opt(">=0.0.6", "str")
    ip: str = _opt("localhost", "str")
    port: int = _opt(4002, "port")
    sessions: str = _opt("database/interactivetools_map.sqlite", "str")
    verbose: bool = _opt(True, "bool")
    forward_ip: str = _opt(None, "str")
    forward_port: int = _opt(None, "port")
    reverse_proxy: bool = _opt(False, "bool")


@dataclass(frozen=True)
class TusdSettings(ServiceCommon):
    enable: bool = _opt(False, "bool")
    tusd_path: str = _opt("tusd", "str")
    host: str = _opt("localhost", "str")
    port: int = _opt(1080, "port")
    upload_dir: str = _opt(None, "str")
    hooks_http: str = _opt("/api/upload/hooks", "str")
    hooks_enabled_events: str = _opt("pre-create", "str")
    extra_args: str = _opt("", "args")


@dataclass(frozen=True)
class ReportsSettings(ServiceCommon):
    enable: bool = _opt(False, "bool")
    config_file: str = _opt("reports.yml", "str")
    bind: str = _opt("localhost:9001", "str")
    workers: int = _opt(1, "int")
    timeout: float = _opt(300, "number")
    url_prefix: str = _opt(None, "str")
    extra_args: str = _opt("", "args")


@dataclass(frozen=True)
class GravitySettings:
    """The whole ``gravity:`` section; service sections that may repeat are tuples."""

    process_manager: str = _opt(None, "choice", PROCESS_MANAGERS)
    service_command_style: str = _opt("gravity", "choice", ("gravity", "direct", "exec"))
    use_service_instances: bool = _opt(True, "bool")
    umask: str = _opt("022", "umask")
    memory_limit: float = _opt(None, "number")
    memory_high: float = _opt(None, "number")
    galaxy_config_file: str = _opt(None, "str")
    galaxy_root: str = _opt(None, "str")
    galaxy_user: str = _opt(None, "str")
    galaxy_group: str = _opt(None, "str")
    log_dir: str = _opt(None, "str")
    log_namespace: str = _opt(None, "str")
    virtualenv: str = _opt(None, "str")
    app_server: str = _opt("gunicorn", "choice", APP_SERVERS)
    instance_name: str = _opt(DEFAULT_INSTANCE_NAME, "name")
    gunicorn: tuple = _opt((GunicornSettings(),), ("sections", GunicornSettings))
    celery: CelerySettings = _opt(CelerySettings(), ("section", CelerySettings))
    gx_it_proxy: GxItProxySettings = _opt(GxItProxySettings(), ("section", GxItProxySettings))
    tusd: tuple = _opt((TusdSettings(),), ("sections", TusdSettings))
    reports: ReportsSettings = _opt(ReportsSettings(), ("section", ReportsSettings))
    handlers: dict = _opt({}, "handlers")
    # galaxyctl's own keys (Laniakea's storage management); contents are checked by storage.py
    luks: dict = _opt({}, "mapping")
    onedata: dict = _opt({}, "mapping")
    storage: dict = _opt({}, "mapping")


# Keys of gravity 0.x state (attribs) that moved; read so an old state dir loads as is.
LEGACY_KEYS = ("bind", "bind_address", "bind_port")
# Keys that never persist: they revert to their default when unset (gravity 0.x, "Configuration Precedence").
NON_PERSISTENT_KEYS = ("app_server", "handlers")


@dataclass(frozen=True)
class GalaxyConfig:
    """One registered config file, loaded: where it is, what it says, what we warned about."""

    path: str  # the registered file (galaxy.yml, or a gravity-only file)
    galaxy_config_file: str  # the Galaxy config the services are given (GALAXY_CONFIG_FILE)
    gravity_raw: dict  # the gravity values set explicitly in the file (for configstate attribs)
    galaxy: dict  # the ``galaxy:`` section, unvalidated (Galaxy validates its own)
    warnings: tuple = ()


# ---------------------------------------------------------------- YAML with !include and clear errors

# Bounds on what a config file can make us read and build (galaxy.yml may be writable by the
# Galaxy user, and galaxyctl runs as root).  1 MiB is several times the largest real galaxy.yml or
# job_conf (galaxy.yml.sample, every option with its comment, is about 200 KB).  250,000 nodes is
# about what a 1 MiB file holds written out ("- 1" per line): aliases may share structure but
# never make a document bigger than a file of the size limit could be.  64 levels is far deeper than
# any Galaxy config (about 8) and far from Python's recursion limit, whoever walks the data later.
MAX_CONFIG_BYTES = 1 << 20
MAX_YAML_NODES = 250_000
MAX_YAML_DEPTH = 64
MAX_YAML_INT_BITS = 64  # a bigger integer is no setting; past 4300 digits str() of it even raises
INCLUDE_DIRS_ENV = "GALAXYCTL_INCLUDE_DIRS"
SHOWN_CHARS = 40  # of a bad value or an unknown key, in messages
MAX_UNKNOWN_KEY_WARNINGS = 10  # per file; the rest are counted
UNKNOWN_KEY = ": unknown key, ignored"


class YAMLLimitError(yaml.MarkedYAMLError):
    """A document past one of the bounds above (an alias bomb, a recursive alias, absurd nesting)."""


class ConstructorFixes:
    """Constructor fixes shared by the pure-Python and libyaml loaders: PyYAML's scalar constructors
    raise ValueError/AttributeError on some odd input (``2020-13-45``, ``!!timestamp x``, an integer
    of 5000 digits); those become YAML errors with a position, and huge integers are refused."""

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep)
        except (ValueError, AttributeError, OverflowError) as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read this {node.tag.rsplit(':', 1)[-1]} value ({type(exc).__name__})",
                node.start_mark) from None

    def construct_yaml_int(self, node):
        value = super().construct_yaml_int(node)
        if abs(value).bit_length() > MAX_YAML_INT_BITS:
            raise YAMLLimitError(None, None, f"an integer of more than {MAX_YAML_INT_BITS} bits", node.start_mark)
        return value


class _BoundedLoader(ConstructorFixes, yaml.SafeLoader):
    """SafeLoader that counts, while composing, how many nodes the document stands for once its
    aliases are expanded, and how deep it nests; past ``max_nodes`` / ``max_depth`` it stops.

    Counting at composition costs one pass over the file: a "billion laughs" document is refused
    after reading its few lines, before anything could expand it (repr, comparison, a merge key).
    An alias to a node that contains it (a recursive structure) is refused too.
    """

    max_nodes = MAX_YAML_NODES
    max_depth = MAX_YAML_DEPTH
    start_depth = 0  # an included file starts at the depth of its !include
    document_nodes = 0  # the last document's size, aliases expanded

    def compose_document(self):
        self._sizes = {}  # id(node) -> nodes it stands for, aliases expanded
        self._depth = self.start_depth
        try:
            node = super().compose_document()
            self.document_nodes = self._sizes[id(node)]
            return node
        finally:
            self._sizes = {}

    def compose_node(self, parent, index):
        alias = self.check_event(yaml.AliasEvent)
        mark = self.peek_event().start_mark
        if self._depth >= self.max_depth:
            raise YAMLLimitError(None, None, f"nested deeper than {self.max_depth} levels", mark)
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        size = self._sizes.get(id(node))
        if size is None:
            if alias:
                raise YAMLLimitError(None, None, "an alias to a node that contains it (a recursive structure)", mark)
            size = self._size_of(node)
            if size > self.max_nodes:
                raise YAMLLimitError(None, None, f"aliases expand this document past {self.max_nodes} nodes "
                                     "(a YAML alias bomb?)", mark)
            self._sizes[id(node)] = size
        return node

    def _size_of(self, node):
        if isinstance(node, yaml.MappingNode):
            return 1 + sum(self._sizes[id(k)] + self._sizes[id(v)] for k, v in node.value)
        if isinstance(node, yaml.SequenceNode):
            return 1 + sum(self._sizes[id(item)] for item in node.value)
        return 1


_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _BoundedLoader.construct_yaml_int)


def parse_yaml(text, name, max_nodes=MAX_YAML_NODES, max_depth=MAX_YAML_DEPTH):
    """``yaml.safe_load`` of ``text`` within the bounds above; raises yaml.YAMLError (the caller words it)."""
    loader = _BoundedLoader(text)
    loader.name = name
    loader.max_nodes, loader.max_depth = max_nodes, max_depth
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


class _IncludeLoader(_BoundedLoader):
    """The bounded loader plus ``!include FILE`` (relative to the including file).

    An include is read while composing, so what it holds counts toward this document's node and
    depth bounds (an alias repeating an include repeats its nodes), and where it may come from is
    checked: see ``_include_target``.
    """

    include_chain = ()
    root_dir = None

    def compose_node(self, parent, index):
        node = super().compose_node(parent, index)
        if isinstance(node, yaml.ScalarNode) and node.tag == "!include" and id(node) not in self._included:
            data, size = _load_include(self, node)
            self._included[id(node)] = data
            self._sizes[id(node)] = size
        return node

    def compose_document(self):
        self._included = {}  # id(node) -> the included data; kept until construction
        return super().compose_document()


MAX_INCLUDE_DEPTH = 10


def _load_include(loader, node):
    value = loader.construct_scalar(node)
    if not isinstance(value, str) or not value:
        raise GalaxyctlError(f"{loader.name}: !include needs a file name")
    base = os.path.dirname(loader.name)
    target = os.path.abspath(os.path.join(base, value))
    chain = loader.include_chain + (os.path.abspath(loader.name),)
    if target in chain or len(chain) > MAX_INCLUDE_DEPTH:
        raise GalaxyctlError(f"{loader.name}: !include {clip_repr(value)} includes itself (through {' -> '.join(chain)})")
    real = _include_target(loader, value, target)
    return _load_yaml_file(real, chain, loader.root_dir, loader._depth, shown_path=target, follow_symlinks=False)


def _construct_include(loader, node):
    if not isinstance(node, yaml.ScalarNode):
        loader.construct_scalar(node)  # raises "expected a scalar node", with the position
    return loader._included[id(node)]


_IncludeLoader.add_constructor("!include", _construct_include)


def include_dirs(environ=None):
    """The extra directories ``$GALAXYCTL_INCLUDE_DIRS`` allows includes from (resolved)."""
    environ = os.environ if environ is None else environ
    allowed = []
    for entry in environ.get(INCLUDE_DIRS_ENV, "").split(":"):
        if not entry:
            continue
        if not os.path.isabs(entry):
            raise GalaxyctlError(f"{INCLUDE_DIRS_ENV}: {clip_repr(entry)} is not an absolute directory")
        allowed.append(os.path.realpath(entry))
    return allowed


def _inside(path, directory):
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def _include_target(loader, value, target):
    """Where ``!include value`` may be read from: a file under the registered config's directory
    (after resolving symlinks and ``..``), or under a directory named in $GALAXYCTL_INCLUDE_DIRS.

    galaxyctl runs as root while galaxy.yml may be writable by the Galaxy user: without this,
    ``!include /etc/shadow`` would have root read any file into a config.
    """
    real = os.path.realpath(target)
    if _inside(real, loader.root_dir) or any(_inside(real, d) for d in include_dirs()):
        return real
    resolved = f" (it resolves to {real})" if real != target else ""
    raise GalaxyctlError(
        f"{loader.name}: !include {clip_repr(value)}: {target}{resolved} is outside {loader.root_dir}, the config's "
        f"directory; move the file there, or allow its directory with {INCLUDE_DIRS_ENV}={os.path.dirname(real)}"
    )


def load_yaml_file(path, include_chain=()):
    """Parse a YAML config file; every failure becomes one line naming the file (and line, column).

    The file must be a regular file of at most MAX_CONFIG_BYTES, its aliases stay within
    MAX_YAML_NODES and MAX_YAML_DEPTH, and its ``!include`` files lie under its directory or one
    named in ``$GALAXYCTL_INCLUDE_DIRS`` (colon-separated absolute directories).
    """
    root_dir = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    return _load_yaml_file(path, include_chain, root_dir, 0)[0]


def _load_yaml_file(path, include_chain, root_dir, depth, shown_path=None, follow_symlinks=True):
    """(data, node count) of one file, ``depth`` levels down in the including document."""
    shown = shown_path or path
    check_root_controlled(path, "config file")  # as root, what steers root must be root's (rootpolicy)
    data = fsutil.read_bytes(path, MAX_CONFIG_BYTES, follow_symlinks)
    if data is None:
        raise GalaxyctlError(f"config file not found: {shown}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise GalaxyctlError(f"{shown}: not valid UTF-8 text ({exc.reason} at byte {exc.start})") from None
    loader = None
    try:
        loader = _IncludeLoader(text)  # checks for unprintable characters already
        loader.name = shown
        loader.include_chain = include_chain
        loader.root_dir = root_dir
        loader.start_depth = depth
        return loader.get_single_data(), loader.document_nodes
    except YAMLLimitError as exc:
        raise GalaxyctlError(f"{_where(shown, exc)}: refused: {exc.problem}") from None
    except yaml.MarkedYAMLError as exc:
        problem = " ".join(str(part) for part in (exc.context, exc.problem) if part)
        raise GalaxyctlError(f"{_where(shown, exc)}: YAML syntax error: {clip(problem, 160)}") from None
    except yaml.reader.ReaderError as exc:
        raise GalaxyctlError(f"{shown}: YAML error: {reader_problem(exc)}") from None
    except yaml.YAMLError as exc:
        raise GalaxyctlError(f"{shown}: YAML error: {clip(str(exc), 160)}") from None
    finally:
        if loader is not None:
            loader.dispose()


def reader_problem(exc):
    """A ReaderError without its ``in "<unicode string>"`` (the text was read before parsing)."""
    character = f"#x{exc.character:04x}" if isinstance(exc.character, int) else "a character"
    return f"{character} at position {exc.position}: {exc.reason}"


def _where(path, exc):
    mark = exc.problem_mark or exc.context_mark
    return f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path


# ---------------------------------------------------------------- validation


def clip(text, limit=SHOWN_CHARS):
    """``text`` cut to ``limit`` characters (the rest counted): messages quote input, never all of it."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def clip_repr(value):
    """repr of a string, cut to SHOWN_CHARS (the rest counted)."""
    return repr(value) if len(value) <= SHOWN_CHARS else f"{value[:SHOWN_CHARS]!r}… ({len(value)} characters)"


def _describe(value):
    """A bad value as an error shows it: a short prefix of text, a number, or only the type of a
    list or mapping, never the whole of it (it may be a whole file read by mistake, or an alias
    bomb whose repr never ends)."""
    if isinstance(value, str):
        return clip_repr(value)
    if isinstance(value, dict):
        return f"a mapping ({_count(len(value), 'key')})"
    if isinstance(value, (list, tuple, set)):
        return f"a list ({_count(len(value), 'item')})"
    return f"{clip(repr(value))} ({type(value).__name__})"


def _count(number, noun):
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def kind_only(value):
    """Only what type a value is, for a whole file that is not a mapping: its text is not shown."""
    if isinstance(value, str):
        return f"text ({len(value)} characters)"
    if isinstance(value, list):
        return f"a list ({_count(len(value), 'item')})"
    return f"a {type(value).__name__}"


def _key_text(key):
    """An unknown key as a warning shows it: a setting-like name, cut to SHOWN_CHARS; from other text
    (a line of /etc/shadow read as a key) only the leading name part, never what follows."""
    text = str(key)
    shown = ""
    for char in text[:SHOWN_CHARS]:
        if not (char.isalnum() or char in "_-. "):
            break
        shown += char
    return text if shown == text else f"{shown}… ({len(text)} characters)"


def _convert(value, kind, choices, where):
    """Check one raw value against its kind; return the converted value or raise naming ``where``."""
    if value is None:
        return None
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise GalaxyctlError(f"{where}: expected true or false, got {_describe(value)}")
    if kind in ("int", "port"):
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise GalaxyctlError(f"{where}: expected an integer, got {_describe(value)}")
        if value < 0 or (kind == "port" and not 0 < value < 65536):
            raise GalaxyctlError(f"{where}: {value} is out of range")
        return value
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise GalaxyctlError(f"{where}: expected a number, got {_describe(value)}")
        return value
    if kind in ("str", "name"):
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise GalaxyctlError(f"{where}: expected a string, got {_describe(value)}")
        value = str(value)
        if "\n" in value or "\r" in value or "\0" in value:
            raise GalaxyctlError(f"{where}: must not contain a newline or NUL character")
        if kind == "name" and (not value or not all(c.isalnum() or c in "_-." for c in value)):
            raise GalaxyctlError(f"{where}: {value!r} may only contain letters, digits, '_', '-' and '.'")
        return value
    if kind == "choice":
        if value not in choices:
            raise GalaxyctlError(f"{where}: expected one of {', '.join(choices)}, got {_describe(value)}")
        return value
    if kind == "umask":
        if isinstance(value, int) and not isinstance(value, bool):
            value = format(value, "03o")  # YAML 1.1 reads an unquoted 022 as octal 18
        if not isinstance(value, str) or not value or any(c not in "01234567" for c in value) or len(value) > 4:
            raise GalaxyctlError(f"{where}: expected an octal umask such as '022', got {_describe(value)}")
        return value
    if kind == "args":
        if isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
            return shlex.join(str(v) for v in value)
        value = _convert(value, "str", None, where)
        try:
            shlex.split(value)
        except ValueError as exc:
            raise GalaxyctlError(f"{where}: cannot split into arguments: {exc}") from None
        return value
    if kind == "environment":
        if not isinstance(value, dict):
            raise GalaxyctlError(f"{where}: expected a mapping of variable names to values, got {_describe(value)}")
        env = {}
        for name, item in value.items():
            if not isinstance(name, str) or not name or not (name[0].isalpha() or name[0] == "_") or not all(
                c.isalnum() or c == "_" for c in name
            ):
                raise GalaxyctlError(f"{where}: {_describe(name)} is not a valid environment variable name")
            if isinstance(item, bool):
                item = "true" if item else "false"
            env[name] = _convert("" if item is None else item, "str", None, f"{where}.{name}")
        return env
    if kind == "mapping":
        if not isinstance(value, dict):
            raise GalaxyctlError(f"{where}: expected a mapping, got {_describe(value)}")
        return dict(value)
    if kind == "handlers":
        if not isinstance(value, dict) or not all(isinstance(v, (dict, type(None))) for v in value.values()):
            raise GalaxyctlError(f"{where}: expected a mapping of handler names to settings, got {_describe(value)}")
        return {str(k): dict(v or {}) for k, v in value.items()}
    raise AssertionError(f"unknown field kind {kind!r}")


def _build(cls, raw, where, warnings):
    """Build settings class ``cls`` from mapping ``raw``; unknown keys become warnings."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise GalaxyctlError(f"{where}: expected a mapping, got {_describe(raw)}")
    known = {f.name: f for f in fields(cls)}
    values = {}
    for key, value in raw.items():
        spec = known.get(key)
        if spec is None:
            if key not in LEGACY_KEYS:
                warnings.append(f"{where}.{_key_text(key)}{UNKNOWN_KEY}")
            continue
        path = f"{where}.{key}"
        kind, choices = spec.metadata["kind"], spec.metadata["choices"]
        if isinstance(kind, tuple):
            container, sub = kind
            if container == "sections" and isinstance(value, list):
                if not value:
                    raise GalaxyctlError(f"{path}: an empty list; give at least one section or leave it out")
                values[key] = tuple(_build(sub, item, f"{path}[{i}]", warnings) for i, item in enumerate(value))
            else:
                built = _build(sub, value, path, warnings)
                values[key] = (built,) if container == "sections" else built
            continue
        converted = _convert(value, kind, choices, path)
        if converted is not None or spec.default is None:
            values[key] = converted
    return cls(**values)


def parse_gravity(raw, source, warnings=None):
    """Validate a raw ``gravity:`` mapping; errors name ``source`` (a file) and the key path."""
    collected = []
    try:
        settings = _build(GravitySettings, _with_legacy_bind(raw), "gravity", collected)
    except GalaxyctlError as exc:
        raise GalaxyctlError(f"{source}: {exc.message}") from None
    if warnings is not None:
        kept, unknown = [], 0
        for warning in collected:  # a file that is no gravity config at all must not flood stderr
            unknown += warning.endswith(UNKNOWN_KEY)
            if unknown <= MAX_UNKNOWN_KEY_WARNINGS or not warning.endswith(UNKNOWN_KEY):
                kept.append(warning)
        if unknown > MAX_UNKNOWN_KEY_WARNINGS:
            kept.append(f"... and {unknown - MAX_UNKNOWN_KEY_WARNINGS} more unknown keys")
        warnings.extend(f"{source}: {w}" for w in kept)
    return settings


def _with_legacy_bind(raw):
    """gravity 0.x kept ``bind`` (or bind_address/bind_port) flat; map them onto gunicorn.bind."""
    if not isinstance(raw, dict) or not any(key in raw for key in LEGACY_KEYS):
        return raw
    raw = dict(raw)
    if "bind" in raw:
        legacy = raw["bind"]
    elif "bind_address" in raw:
        legacy = f"{raw.get('bind_address', 'localhost')}:{raw.get('bind_port', 8080)}"
    else:
        return raw
    gunicorn = raw.get("gunicorn")
    if gunicorn is None:
        raw["gunicorn"] = {"bind": legacy}
    elif isinstance(gunicorn, dict) and "bind" not in gunicorn:
        raw["gunicorn"] = dict(gunicorn, bind=legacy)
    return raw


def effective_preload(settings, gunicorn):
    """gravity's rule: preload defaults to true, except under unicornherder."""
    if gunicorn.preload is not None:
        return gunicorn.preload
    return settings.app_server != "unicornherder"


# ---------------------------------------------------------------- loading a registered file


def load_config(path):
    """Read a galaxy.yml (or a gravity-only file naming ``galaxy_config_file``) without validating gravity."""
    path = os.path.abspath(path)
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes from the command line; the state file is UTF-8
        raise GalaxyctlError(f"config file name {os.fsencode(path)!r} is not valid UTF-8; rename the file") from None
    if path.endswith(".ini"):
        return _load_ini(path)
    data = load_yaml_file(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise GalaxyctlError(f"{path}: expected a mapping at the top level, got {kind_only(data)}")
    if "gravity" in data or "galaxy" in data or "uwsgi" in data:
        gravity_raw = data.get("gravity") or {}
        galaxy = data.get("galaxy") or {}
        galaxy_config_file = path
    else:
        # a gravity-only file: the whole file is the gravity section
        gravity_raw = data
        named = data.get("galaxy_config_file")
        if named is not None and not isinstance(named, str):
            raise GalaxyctlError(f"{path}: gravity.galaxy_config_file: expected a string, got {_describe(named)}")
        galaxy_config_file = os.path.join(os.path.dirname(path), named) if named else path
        galaxy = {}
        if named:
            main = load_yaml_file(galaxy_config_file)
            galaxy = (main or {}).get("galaxy") or {} if isinstance(main, dict) else {}
    if not isinstance(gravity_raw, dict):
        raise GalaxyctlError(f"{path}: gravity: expected a mapping, got {_describe(gravity_raw)}")
    if not isinstance(galaxy, dict):
        raise GalaxyctlError(f"{path}: galaxy: expected a mapping, got {_describe(galaxy)}")
    named = gravity_raw.get("galaxy_config_file")
    if named and galaxy_config_file == path and isinstance(named, str):
        galaxy_config_file = os.path.join(os.path.dirname(path), named)
    warnings = []
    parse_gravity(gravity_raw, path, warnings)  # validate now: bad input fails before any state changes
    return GalaxyConfig(
        path=path,
        galaxy_config_file=os.path.abspath(galaxy_config_file),
        gravity_raw=_without_nulls(gravity_raw),
        galaxy=galaxy,
        warnings=tuple(warnings),
    )


def _load_ini(path):
    """A legacy galaxy.ini: ``[app:main]`` is Galaxy's config, ``[uwsgi]`` is run by uWSGI."""
    import configparser

    from galaxyctl_libs.probes.uwsgi import read_uwsgi_config

    check_root_controlled(path, "config file")
    data = fsutil.read_bytes(path, MAX_CONFIG_BYTES)  # a regular file of sane size, before uwsgi opens it
    if data is None:
        raise GalaxyctlError(f"config file not found: {path}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise GalaxyctlError(f"{path}: not valid UTF-8 text ({exc.reason} at byte {exc.start})") from None
    read_uwsgi_config(path)  # a broken [uwsgi] section fails here, naming the file
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(text, source=path)
    except configparser.Error as exc:
        raise GalaxyctlError(f"{path}: {str(exc).splitlines()[0]}") from None
    galaxy = dict(parser["app:main"]) if parser.has_section("app:main") else {}
    return GalaxyConfig(path=path, galaxy_config_file=path, gravity_raw={"app_server": "uwsgi"}, galaxy=galaxy)


def _without_nulls(raw):
    """Drop keys left empty (``gunicorn:`` with only comments under it): they are not set."""
    return {k: _without_nulls(v) if isinstance(v, dict) and k != "environment" else v
            for k, v in raw.items() if v is not None}


def merge_attribs(persisted, explicit):
    """gravity 0.x's precedence (its README, "Configuration Precedence"): set values win, unset ones fall back to persisted state, except
    app_server and handlers, which revert to defaults when unset."""
    merged = {k: v for k, v in (persisted or {}).items() if k not in NON_PERSISTENT_KEYS}
    for key, value in explicit.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def find_galaxy_root(config_path, settings):
    """galaxy_root if set; else the source tree around the config file; else None (package install)."""
    if settings.galaxy_root:
        return os.path.abspath(os.path.join(os.path.dirname(config_path), settings.galaxy_root))
    here = os.path.dirname(os.path.abspath(config_path))
    for candidate in (here, os.path.dirname(here)):
        if os.path.isdir(os.path.join(candidate, "lib", "galaxy")):
            return candidate
    return None
