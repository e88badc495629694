"""The storage Galaxy lives on: Laniakea's encrypted LUKS volume and Onedata spaces.

Why it matters: Galaxy started on an empty mount point writes its datasets to the root disk, so
galaxyctl opens and mounts these volumes, reports them, and refuses to start while one that the
config lists under ``gravity.storage.required`` is missing.  Secrets never reach a command line, a
log or a message: the LUKS passphrase goes to cryptsetup's stdin, the Onedata token to oneclient's
environment.  Nothing runs at import; every command is an argv list with a deadline.
"""

import grp
import os
import pwd
import re
from dataclasses import dataclass

from galaxyctl_libs.core.values import describe
from galaxyctl_libs.errors import GalaxyctlError

MOUNTINFO = "/proc/self/mountinfo"
_NAME = re.compile(r"[A-Za-z0-9_.+][A-Za-z0-9_.+-]*")  # device-mapper / space names: no '/', no leading '-'
_UUID = re.compile(r"[0-9A-Fa-f][0-9A-Fa-f-]{7,63}")
_FSTYPE = re.compile(r"[a-z0-9_.]+")
_HOST = re.compile(r"[A-Za-z0-9_.\[\]][A-Za-z0-9_.:\[\]-]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OCTAL = re.compile(rb"\\([0-3][0-7][0-7])")  # mountinfo escapes space, tab, newline, backslash


# ---------------------------------------------------------------- configuration


@dataclass(frozen=True)
class LuksConfig:
    name: str  # device-mapper name: the volume opens as /dev/mapper/NAME
    mount_point: str
    device: str = None
    uuid: str = None  # preferred over device: device names can change across reboots
    filesystem: str = None
    key_file: str = None

    @property
    def device_path(self):
        return f"/dev/disk/by-uuid/{self.uuid}" if self.uuid else self.device

    @property
    def mapper_path(self):
        return f"/dev/mapper/{self.name}"


@dataclass(frozen=True)
class OnedataSpace:
    name: str
    mount_point: str
    provider: str = None
    token_file: str = None
    token_env: str = None
    insecure: bool = False
    nonempty: bool = False
    allow_other: bool = True  # oneclient runs as root, Galaxy as galaxy_user: FUSE hides it otherwise
    uid: int = None
    gid: int = None


@dataclass(frozen=True)
class OnedataConfig:
    spaces: tuple = ()
    oneclient: str = "oneclient"

    def space(self, name):
        """The space called ``name``; an unknown name is a user error listing the known ones."""
        for space in self.spaces:
            if space.name == name:
                return space
        known = ", ".join(s.name for s in self.spaces) or "none configured in gravity.onedata.spaces"
        raise GalaxyctlError(f"unknown Onedata space {name!r} (known: {known})")


@dataclass(frozen=True)
class StorageConfig:
    luks: LuksConfig = None
    onedata: OnedataConfig = OnedataConfig()
    required: tuple = ()  # mount points that must be mounted before Galaxy starts
    source: str = ""  # the config file, for messages
    warnings: tuple = ()


def _bad(where, problem):
    return GalaxyctlError(f"{where}: {problem}")


_PATTERNS = {
    "name": (_NAME, "name (letters, digits, '_.+-', not starting with '-')"),
    "uuid": (_UUID, "UUID"),
    "fstype": (_FSTYPE, "filesystem type"),
    "host": (_HOST, "host name"),
    "env": (_ENV_NAME, "environment variable name"),
}
_LOOKUP = {"uid": ("user", lambda n: pwd.getpwnam(n).pw_uid), "gid": ("group", lambda n: grp.getgrnam(n).gr_gid)}


def _convert(value, kind, where, base=None):
    """Check one value: ``path`` absolute, ``file`` absolute or relative to the config's directory,
    ``flag`` a bool, ``int``/``uid``/``gid`` a number (or a user/group name), else a matching string."""
    if kind == "flag":
        if isinstance(value, bool):
            return value
        raise _bad(where, f"expected true or false, got {describe(value)}")
    if kind in _LOOKUP:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        if isinstance(value, str) and value.isdigit():
            return int(value)
        if isinstance(value, str) and value:
            what, lookup = _LOOKUP[kind]
            try:
                return lookup(value)  # resolved now, so a typo fails before anything is mounted
            except KeyError:
                raise _bad(where, f"no such {what} {value!r}") from None
        raise _bad(where, f"expected a non-negative integer, got {describe(value)}")
    if isinstance(value, bool) or not isinstance(value, (str, int, float) if kind in ("name", "text") else str):
        raise _bad(where, f"expected a string, got {describe(value)}")
    value = str(value).strip()
    if not value or any(c in value for c in "\n\r\0"):
        raise _bad(where, "expected a non-empty, single-line string")
    if kind in _PATTERNS and not _PATTERNS[kind][0].fullmatch(value):
        raise _bad(where, f"{value!r} is not a valid {_PATTERNS[kind][1]}")
    if kind in ("path", "file"):
        if not os.path.isabs(value) and (kind == "path" or base is None):
            raise _bad(where, f"expected an absolute path, got {value!r}")
        return os.path.normpath(os.path.join(base or "/", value))
    return value


def _section(value, where, known, warnings):
    """A mapping (absent: empty); an unknown key is a warning, as everywhere in the gravity section."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad(where, f"expected a mapping, got {describe(value)}")
    if known is not None:
        warnings.extend(f"{where}.{key}: unknown key, ignored" for key in value if key not in known)
    return value


def parse_storage(gravity, source):
    """Validate the ``luks``/``onedata``/``storage`` keys of a gravity section (a raw mapping or
    GravitySettings); every error names ``source`` and the key path."""
    pick = gravity.get if isinstance(gravity, dict) else lambda key: getattr(gravity, key, None)
    base = os.path.dirname(os.path.abspath(source)) if source else None
    at = f"{source}: gravity" if source else "gravity"
    warnings = []
    luks = _parse_luks(_section(pick("luks"), f"{at}.luks", ("ini",) + tuple(_LUKS_SPEC), warnings), f"{at}.luks", base)
    onedata = _parse_onedata(
        _section(pick("onedata"), f"{at}.onedata", ("spaces", "oneclient"), warnings), f"{at}.onedata", base, warnings
    )
    storage = _section(pick("storage"), f"{at}.storage", ("required",), warnings)
    required = storage.get("required") or []
    required = [required] if isinstance(required, str) else required
    if not isinstance(required, list):
        raise _bad(f"{at}.storage.required", f"expected a list of mount points, got {describe(required)}")
    required = tuple(_convert(p, "path", f"{at}.storage.required[{i}]") for i, p in enumerate(required))
    return StorageConfig(luks, onedata, required, source or "", tuple(warnings))


_LUKS_SPEC = {
    "name": "name",
    "mount_point": "path",
    "device": "path",
    "uuid": "uuid",
    "filesystem": "fstype",
    "key_file": "file",
}


def _parse_luks(raw, where, base):
    if not raw:
        return None
    values, origin = {}, {}
    if raw.get("ini") is not None:
        ini = _convert(raw["ini"], "file", f"{where}.ini", base)
        for key, value in read_cryptdev_ini(ini, f"{where}.ini: ").items():
            values[key], origin[key] = value, f"{ini}: [luks] {key}"
    for key in _LUKS_SPEC:  # keys in galaxy.yml override the ini file
        if raw.get(key) is not None:
            values[key], origin[key] = raw[key], f"{where}.{key}"
    for key in ("name", "mount_point"):
        if key not in values:
            raise _bad(f"{where}.{key}", "required (the device-mapper name, and where to mount the volume)")
    if "device" not in values and "uuid" not in values:
        raise _bad(where, "give the encrypted device as 'device' or 'uuid'")
    return LuksConfig(**{k: _convert(v, _LUKS_SPEC[k], origin[k], base) for k, v in values.items()})


# Laniakea's luks-cryptdev.ini ([luks] section, written by fast-luks) -> our key names.  Its cipher,
# hash, keysize and header_path describe how the volume was made; opening it does not need them.
_INI_KEYS = {
    "device": "device",
    "uuid": "uuid",
    "cryptdev": "name",
    "mountpoint": "mount_point",
    "mount_point": "mount_point",
    "filesystem": "filesystem",
}


def read_cryptdev_ini(path, where=""):
    """The ``[luks]`` section of Laniakea's luks-cryptdev.ini in our key names (``cryptdev`` or the
    basename of ``mapper`` -> name, ``mountpoint`` -> mount_point); other sections are ignored.
    ``where`` prefixes errors (the galaxy.yml key that names the file)."""
    import configparser  # only for the one file it reads

    from galaxyctl_libs.rootpolicy import check_root_controlled

    check_root_controlled(path, f"{where}file")
    parser = configparser.RawConfigParser()
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except OSError as exc:
        raise GalaxyctlError(f"{where}cannot read {path}: {exc.strerror}") from None
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise GalaxyctlError(f"{where}{path}: {str(exc).splitlines()[0]}") from None
    if not parser.has_section("luks"):
        raise GalaxyctlError(f"{where}{path}: no [luks] section")
    section = parser["luks"]
    values = {ours: section[key] for key, ours in _INI_KEYS.items() if section.get(key, "").strip()}
    mapper = section.get("mapper", "").strip()
    if "name" not in values and mapper.startswith("/dev/mapper/"):
        values["name"] = mapper[len("/dev/mapper/") :]
    return values


_SPACE_SPEC = {
    "mount_point": "path",
    "provider": "host",
    "token_file": "file",
    "token_env": "env",
    "insecure": "flag",
    "nonempty": "flag",
    "allow_other": "flag",
    "uid": "uid",
    "gid": "gid",
}


def _parse_onedata(raw, where, base, warnings):
    spaces = []
    for name, item in _section(raw.get("spaces"), f"{where}.spaces", None, warnings).items():
        at = f"{where}.spaces.{name}"
        name = _convert(name, "name", f"{where}.spaces: space name")
        item = _section(item, at, _SPACE_SPEC, warnings)
        if item.get("mount_point") is None:
            raise _bad(f"{at}.mount_point", "required")
        if (item.get("token_file") is None) == (item.get("token_env") is None):
            raise _bad(at, "give exactly one of token_file or token_env (never the token itself)")
        spaces.append(
            OnedataSpace(
                name,
                **{
                    k: _convert(item[k], kind, f"{at}.{k}", base)
                    for k, kind in _SPACE_SPEC.items()
                    if item.get(k) is not None
                },
            )
        )
    oneclient = raw.get("oneclient")
    oneclient = "oneclient" if oneclient is None else _convert(oneclient, "text", f"{where}.oneclient")
    return OnedataConfig(tuple(spaces), oneclient)


# ---------------------------------------------------------------- what is mounted


@dataclass(frozen=True)
class Mount:
    mount_point: str
    fstype: str
    source: str
    options: str


def _unescape(raw):
    return os.fsdecode(_OCTAL.sub(lambda m: bytes([int(m.group(1), 8)]), raw))


def read_mounts(mountinfo=MOUNTINFO):
    """Every mount this process sees, in mount order, from /proc/self/mountinfo (proc(5) format:
    ``ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTIONS``)."""
    try:
        with open(mountinfo, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise GalaxyctlError(f"cannot read {mountinfo}: {exc.strerror}") from None
    mounts = []
    for line in data.splitlines():
        fields = line.split(b" ")
        if b"-" not in fields[6:]:
            continue
        sep = fields.index(b"-", 6)
        if len(fields) < sep + 3:
            continue
        mounts.append(
            Mount(_unescape(fields[4]), _unescape(fields[sep + 1]), _unescape(fields[sep + 2]), _unescape(fields[5]))
        )
    return tuple(mounts)


def find_mount(path, mounts=None, mountinfo=MOUNTINFO):
    """The mount whose mount point is ``path`` (the topmost if stacked), or None.  The path is only
    normalised, never stat()ed: a hung NFS or dead FUSE mount must not hang ``status`` or ``check``."""
    target = os.path.normpath(os.path.abspath(path))
    mounts = read_mounts(mountinfo) if mounts is None else mounts
    return next((m for m in reversed(mounts) if m.mount_point == target), None)


def is_mounted(path, mountinfo=MOUNTINFO):
    """True when something is mounted exactly at ``path`` (not merely somewhere above it)."""
    return find_mount(path, mountinfo=mountinfo) is not None


def missing_required(storage, mountinfo=MOUNTINFO):
    """The ``storage.required`` mount points that are not mounted, in config order."""
    mounts = read_mounts(mountinfo) if storage.required else ()
    return [p for p in storage.required if find_mount(p, mounts) is None]


def check_required(storage, mountinfo=MOUNTINFO):
    """Raise one clear line (what is missing, and the command that mounts it) if Galaxy must not start."""
    missing = missing_required(storage, mountinfo)
    if not missing:
        return
    hints = []
    for path in missing:
        if storage.luks and storage.luks.mount_point == path:
            hints.append("galaxyctl luks open")
        hints.extend(f"galaxyctl onedata mount {s.name}" for s in storage.onedata.spaces if s.mount_point == path)
    hint = f"; mount it first: {', '.join(hints)}" if hints else ""
    raise GalaxyctlError(
        f"required storage not mounted: {', '.join(missing)} ({storage.source}: gravity.storage.required){hint}"
    )


def instance_storage(instance):
    """The storage settings of one resolved instance (``gravity.luks``, ``onedata``, ``storage``)."""
    return parse_storage(instance.settings, instance.config_path)
