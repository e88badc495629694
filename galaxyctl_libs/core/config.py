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
from dataclasses import fields

from galaxyctl_libs.core.schema import (  # noqa: F401 - the settings classes: part of the config API
    APP_SERVERS,
    DEFAULT_INSTANCE_NAME,
    HANDLER_ENTRY_KEYS,
    KIND_LIMITS,
    LEGACY_KEYS,
    NON_PERSISTENT_KEYS,
    PROCESS_MANAGERS,
    CelerySettings,
    GalaxyConfig,
    GravitySettings,
    GunicornSettings,
    GxItProxySettings,
    ReportsSettings,
    ServiceCommon,
    TusdSettings,
)
from galaxyctl_libs.core.yamlload import (  # noqa: F401 - load_yaml_file and the limits: part of the config API
    INCLUDE_DIRS_ENV,
    MAX_CONFIG_BYTES,
    MAX_UNKNOWN_KEY_WARNINGS,
    MAX_YAML_DEPTH,
    MAX_YAML_NODES,
    SHOWN_CHARS,
    UNKNOWN_KEY,
    ConstructorFixes,
    _count,
    clip,
    clip_repr,
    kind_only,
    load_yaml_file,
    parse_yaml,
    read_config_text,
    reader_problem,
)
from galaxyctl_libs.errors import GalaxyctlError

# ---------------------------------------------------------------- validation


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


# ---------------------------------------------------------------- converters: one per field kind


def _to_bool(value, choices, where):
    if isinstance(value, bool):
        return value
    raise GalaxyctlError(f"{where}: expected true or false, got {_describe(value)}")


def _to_int(value, choices, where):
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():  # not int('²')
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise GalaxyctlError(f"{where}: expected an integer, got {_describe(value)}")
    return value


def _to_number(value, choices, where):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise GalaxyctlError(f"{where}: expected a number, got {_describe(value)}")
    return value


def check_limit(value, limit, where):
    """``value`` if it is within ``limit`` (lowest, highest; of a name, its length), else an error
    naming ``where``.  NaN passes no comparison, so it is out of every range, as infinity is."""
    low, high = limit
    if isinstance(value, str):
        if not low <= len(value) <= high:
            raise GalaxyctlError(
                f"{where}: {clip_repr(value)} is too long: at most {high} characters (it becomes part of file names)"
            )
        return value
    if not low <= value <= high:
        raise GalaxyctlError(f"{where}: {value} is out of range ({low} to {high})")
    return value


def _to_str(value, choices, where):
    """A string setting: any value (``%`` and ``%(`` too: escaping is each renderer's job), but no
    newline or NUL, which no process manager's file format carries."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise GalaxyctlError(f"{where}: expected a string, got {_describe(value)}")
    value = str(value)
    if "\n" in value or "\r" in value or "\0" in value:
        raise GalaxyctlError(f"{where}: must not contain a newline or NUL character")
    return value


def _to_name(value, choices, where):
    value = _to_str(value, choices, where)
    if not value or not all(c.isalnum() or c in "_-." for c in value):
        raise GalaxyctlError(f"{where}: {clip_repr(value)} may only contain letters, digits, '_', '-' and '.'")
    return value


def _to_choice(value, choices, where):
    if value not in choices:
        raise GalaxyctlError(f"{where}: expected one of {', '.join(choices)}, got {_describe(value)}")
    return value


def _to_umask(value, choices, where):
    if isinstance(value, int) and not isinstance(value, bool):
        value = format(value, "03o")  # YAML 1.1 reads an unquoted 022 as octal 18
    if not isinstance(value, str) or not value or any(c not in "01234567" for c in value) or len(value) > 4:
        raise GalaxyctlError(f"{where}: expected an octal umask such as '022', got {_describe(value)}")
    return value


def _to_args(value, choices, where):
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
        return shlex.join(str(v) for v in value)
    value = _to_str(value, choices, where)
    try:
        shlex.split(value)
    except ValueError as exc:
        raise GalaxyctlError(f"{where}: cannot split into arguments: {exc}") from None
    return value


def _to_environment(value, choices, where):
    if not isinstance(value, dict):
        raise GalaxyctlError(f"{where}: expected a mapping of variable names to values, got {_describe(value)}")
    env = {}
    for name, item in value.items():
        if (
            not isinstance(name, str)
            or not name
            or not (name[0].isalpha() or name[0] == "_")
            or not all(c.isalnum() or c == "_" for c in name)
        ):
            raise GalaxyctlError(f"{where}: {_describe(name)} is not a valid environment variable name")
        if isinstance(item, bool):
            item = "true" if item else "false"
        env[name] = _to_str("" if item is None else item, None, f"{where}.{name}")
    return env


def _to_mapping(value, choices, where):
    if not isinstance(value, dict):
        raise GalaxyctlError(f"{where}: expected a mapping, got {_describe(value)}")
    return dict(value)


def _to_handlers(value, choices, where):
    if not isinstance(value, dict) or not all(isinstance(v, (dict, type(None))) for v in value.values()):
        raise GalaxyctlError(f"{where}: expected a mapping of handler names to settings, got {_describe(value)}")
    return {str(k): dict(v or {}) for k, v in value.items()}


CONVERTERS = {
    "bool": _to_bool,
    "int": _to_int,
    "port": _to_int,
    "number": _to_number,
    "str": _to_str,
    "name": _to_name,
    "choice": _to_choice,
    "umask": _to_umask,
    "args": _to_args,
    "environment": _to_environment,
    "mapping": _to_mapping,
    "handlers": _to_handlers,
}


def _convert(value, kind, choices, where, limit=None):
    """Check one raw value against its field's kind and range (``limit``, else the kind's own, see
    schema.KIND_LIMITS); return the converted value or raise naming ``where``."""
    if value is None:
        return None
    value = CONVERTERS[kind](value, choices, where)
    limit = limit or KIND_LIMITS.get(kind)
    return value if limit is None else check_limit(value, limit, where)


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
        kind, choices, limit = spec.metadata["kind"], spec.metadata["choices"], spec.metadata["limit"]
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
        converted = _convert(value, kind, choices, path, limit)
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
    for name, entry in settings.handlers.items():  # a typo there (procesess: 2) silently gave one process
        prefix = f"gravity.handlers.{_key_text(name)}"
        collected.extend(f"{prefix}.{_key_text(key)}{UNKNOWN_KEY}" for key in entry if key not in HANDLER_ENTRY_KEYS)
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


def load_configs(path):
    """Every instance a config file holds: one, or (a ``gravity:`` list, as gravity's docs show it)
    one per item, each naming its own Galaxy config with ``galaxy_config_file``."""
    path, data = _read_config(path)
    if not isinstance(data.get("gravity"), list):
        return (load_config(path, data),)
    if "galaxy" in data:
        raise GalaxyctlError(
            f"{path}: a gravity: list and a galaxy: section in one file is ambiguous: move galaxy: to its own file "
            "and name it with galaxy_config_file in each item"
        )
    if not data["gravity"]:
        raise GalaxyctlError(f"{path}: gravity: an empty list; give at least one instance")
    loaded = []
    for number, item in enumerate(data["gravity"]):
        if not isinstance(item, dict) or not isinstance(item.get("galaxy_config_file"), str):
            raise GalaxyctlError(
                f"{path}: gravity[{number}]: each instance of a gravity: list is a mapping naming its Galaxy config "
                "with galaxy_config_file"
            )
        loaded.append(load_config(path, {"gravity": item}))
    return tuple(loaded)


def _read_config(path):
    path = os.path.abspath(path)
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes from the command line; the state file is UTF-8
        raise GalaxyctlError(f"config file name {os.fsencode(path)!r} is not valid UTF-8; rename the file") from None
    if path.endswith(".ini"):
        return path, {}
    data = load_yaml_file(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise GalaxyctlError(f"{path}: expected a mapping at the top level, got {kind_only(data)}")
    return path, data


def load_config(path, data=None):
    """Read a galaxy.yml (or a gravity-only file naming ``galaxy_config_file``) without validating
    gravity; ``data``: the file's content, already read (one item of a gravity: list)."""
    if data is None:
        path, data = _read_config(path)
    if path.endswith(".ini"):
        return _load_ini(path)
    # a Galaxy config with its gravity section, or a gravity-only file: ``gravity:`` without ``galaxy:``
    # (usegalaxy.org's /etc/galaxy/gravity.d/*.yml), or the bare gravity keys
    with_sections = "gravity" in data or "galaxy" in data or "uwsgi" in data
    gravity_raw = (data.get("gravity") or {}) if with_sections else data
    galaxy = data.get("galaxy") or {}
    if isinstance(gravity_raw, list):
        raise GalaxyctlError(f"{path}: gravity: a list of {len(gravity_raw)} instances here is not expected")
    if not isinstance(gravity_raw, dict):
        raise GalaxyctlError(f"{path}: gravity: expected a mapping, got {_describe(gravity_raw)}")
    if not isinstance(galaxy, dict):
        raise GalaxyctlError(f"{path}: galaxy: expected a mapping, got {_describe(galaxy)}")
    named = gravity_raw.get("galaxy_config_file")
    if named is not None and not isinstance(named, str):
        raise GalaxyctlError(f"{path}: gravity.galaxy_config_file: expected a string, got {_describe(named)}")
    galaxy_config_file = os.path.join(os.path.dirname(path), named) if named else path
    if named and "galaxy" not in data:
        galaxy = named_galaxy_section(path, galaxy_config_file)  # the Galaxy settings are the named file's
    warnings = []
    parse_gravity(gravity_raw, path, warnings)  # validate now: bad input fails before any state changes
    return GalaxyConfig(
        path=path,
        galaxy_config_file=os.path.abspath(galaxy_config_file),
        gravity_raw=_without_nulls(gravity_raw),
        galaxy=galaxy,
        warnings=tuple(warnings),
    )


def named_galaxy_section(path, galaxy_config_file):
    """The ``galaxy:`` section of the Galaxy config a gravity-only file names (gravity 1.x reads its
    settings from there: tusd's hooks URL, gx-it-proxy's path prefix, the job configuration); {}
    while that file does not exist yet."""
    if not os.path.exists(galaxy_config_file):
        return {}
    main = load_yaml_file(galaxy_config_file)
    galaxy = main.get("galaxy") if isinstance(main, dict) else None
    if galaxy is not None and not isinstance(galaxy, dict):
        raise GalaxyctlError(f"{galaxy_config_file}: galaxy: expected a mapping, got {_describe(galaxy)}")
    if not isinstance(main, dict) or "galaxy" not in main:
        raise GalaxyctlError(
            f"{path}: gravity.galaxy_config_file: {galaxy_config_file} has no galaxy: section (is it Galaxy's config?)"
        )
    return galaxy or {}


def _load_ini(path):
    """A legacy galaxy.ini: ``[app:main]`` is Galaxy's config, ``[uwsgi]`` is run by uWSGI."""
    import configparser

    from galaxyctl_libs.core.uwsgi_config import read_uwsgi_config

    text = read_config_text(path)  # a regular file of sane size, before uwsgi opens it
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
    return {
        k: _without_nulls(v) if isinstance(v, dict) and k != "environment" else v
        for k, v in raw.items()
        if v is not None
    }


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
