"""Acting on Galaxy's storage: open/close the LUKS volume, mount/unmount Onedata spaces, and report.

The passphrase goes to cryptsetup's stdin and the Onedata token to oneclient's environment, never
to a command line, a log or a message.  Configuration and mount detection live in storage.py.
"""

import logging
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass

from galaxyctl_libs.errors import GalaxyctlError
from galaxyctl_libs.rootpolicy import check_root_controlled
from galaxyctl_libs.storage.config import MOUNTINFO, find_mount, missing_required

log = logging.getLogger(__name__)

TOKEN_VAR = "ONECLIENT_ACCESS_TOKEN"  # oneclient reads its token from here (onedata docs)
PROVIDER_VAR = "ONECLIENT_PROVIDER_HOST"


@dataclass(frozen=True)
class Commands:
    """Executables and deadlines; tests point these at fakes, admins at installs off PATH."""

    cryptsetup: str = "cryptsetup"
    dmsetup: str = "dmsetup"
    mount: str = "mount"
    umount: str = "umount"
    fusermount: str = "fusermount"
    status_timeout: float = 15.0
    action_timeout: float = 120.0  # luksOpen's key derivation and oneclient's handshake can be slow


DEFAULT_COMMANDS = Commands()


# ---------------------------------------------------------------- running commands


class CommandNotFound(GalaxyctlError):
    """The executable is not installed; status checks fall back to another way of knowing."""


def _run(argv, timeout, data=None, env=None, secret=None):
    """Run ``argv`` (no shell) with a deadline; returns (returncode, output).  Output goes to a file,
    not a pipe: a daemonising child (oneclient) would hold a pipe open long after mounting."""
    log.debug("running %s", argv)  # argv never carries a secret
    argv = [_trusted_program(argv[0])] + list(argv[1:])
    with tempfile.TemporaryFile() as out:
        stdin = {"input": data} if data is not None else {"stdin": subprocess.DEVNULL}
        try:
            proc = subprocess.run(
                argv, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=timeout, check=False, **stdin
            )
        except FileNotFoundError:
            raise CommandNotFound(f"{argv[0]}: command not found") from None
        except subprocess.TimeoutExpired:
            raise GalaxyctlError(
                f"{argv[0]} {argv[1] if len(argv) > 1 else ''} did not finish within {timeout:g} s"
            ) from None
        except OSError as exc:
            raise GalaxyctlError(f"cannot run {argv[0]}: {exc.strerror}") from None
        size = out.seek(0, os.SEEK_END)
        out.seek(max(0, size - (1 << 16)))  # the tail is what explains a failure
        text = out.read().decode("utf-8", "replace")
    if size > 1 << 16:
        text = text.partition("\n")[2]  # a cut first line could hold part of a secret
    text = text.strip()
    if secret:
        text = text.replace(secret, "***")
    return proc.returncode, text


def _trusted_program(name):
    """The program's path; as root, only a program that root alone can change (rootpolicy rule 2):
    ``onedata.oneclient`` pointing at a script the Galaxy user can edit must not run as uid 0."""
    import shutil

    path = name if os.sep in name else shutil.which(name)
    if path is None:
        raise CommandNotFound(f"{name}: command not found")
    check_root_controlled(path, "program")
    return path


def _failed(what, argv, code, text):
    last = " / ".join(text.splitlines()[-3:]) or "no output"
    return GalaxyctlError(f"{what}: {os.path.basename(argv[0])} exited with {code}: {last}")


def _must(what, argv, timeout, **kwargs):
    """Run, and raise naming ``what`` (and the tail of the output, secrets masked) on failure."""
    code, text = _run(argv, timeout, **kwargs)
    if code != 0:
        raise _failed(what, argv, code, text)


# ---------------------------------------------------------------- LUKS


@dataclass(frozen=True)
class LuksStatus:
    name: str
    device: str
    mount_point: str
    open: bool  # a device-mapper target /dev/mapper/NAME exists
    mounted: bool  # something is mounted at mount_point
    mounted_from: str = None
    type: str = None  # from cryptsetup status: LUKS1/LUKS2, cipher, key size
    cipher: str = None
    keysize: str = None
    detail: str = ""  # how "open" was decided, or why it is uncertain

    @property
    def ok(self):
        return self.open and self.mounted


def _is_open(cfg, commands):
    """(open, info, detail): cryptsetup status, else dmsetup info, else /dev/mapper/NAME exists."""
    env = dict(os.environ, LC_ALL="C")  # untranslated output, so it parses
    try:
        code, text = _run([commands.cryptsetup, "status", cfg.name], commands.status_timeout, env=env)
    except CommandNotFound:
        pass
    else:  # "  cipher:  aes-xts-plain64" lines under "/dev/mapper/NAME is active."
        info = {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in text.splitlines()[1:]) if v}
        detail = "cryptsetup status" if code in (0, 4) else f"cryptsetup status exited {code}: {text[-200:]}"
        return code == 0, info, detail
    try:
        code, text = _run([commands.dmsetup, "info", cfg.name], commands.status_timeout, env=env)
    except CommandNotFound:
        return os.path.exists(cfg.mapper_path), {}, f"{cfg.mapper_path} exists (no cryptsetup or dmsetup)"
    return code == 0 and "ACTIVE" in text, {}, "dmsetup info"


def luks_status(cfg, commands=DEFAULT_COMMANDS, mountinfo=MOUNTINFO):
    """Is the volume open, and is it mounted where configured?"""
    is_open, info, detail = _is_open(cfg, commands)
    mount = find_mount(cfg.mount_point, mountinfo=mountinfo)
    return LuksStatus(
        cfg.name,
        cfg.device_path,
        cfg.mount_point,
        is_open,
        mount is not None,
        mount.source if mount else None,
        info.get("type"),
        info.get("cipher"),
        info.get("keysize"),
        detail,
    )


def luks_open(cfg, passphrase=None, key_file=None, commands=DEFAULT_COMMANDS, mountinfo=MOUNTINFO):
    """Open the volume and mount it; steps already done are skipped.  The key goes to cryptsetup's
    stdin (``--key-file=-``) or as ``--key-file PATH`` — never in argv, where ps would show it."""
    before = luks_status(cfg, commands, mountinfo)
    opened = False
    if not before.open:
        key_file = key_file or (cfg.key_file if passphrase is None else None)
        if passphrase is None and key_file is None:
            raise GalaxyctlError(f"no passphrase or key file to open LUKS volume {cfg.name}")
        what = f"cannot open LUKS volume {cfg.device_path} as {cfg.name}"
        argv = [commands.cryptsetup, "luksOpen", cfg.device_path, cfg.name]
        if passphrase is not None:  # read as a key file: no newline is stripped, so none is added
            data = passphrase.encode() if isinstance(passphrase, str) else bytes(passphrase)
            _must(
                what,
                argv + ["--key-file=-"],
                commands.action_timeout,
                data=data,
                secret=data.decode("utf-8", "replace"),
            )
        else:
            check_root_controlled(key_file, "key file")
            _must(what, argv + ["--key-file", key_file], commands.action_timeout)
        opened = True
        log.info("opened LUKS volume %s as %s", cfg.device_path, cfg.name)
    if not before.mounted:
        os.makedirs(cfg.mount_point, exist_ok=True)
        argv = [commands.mount] + (["-t", cfg.filesystem] if cfg.filesystem else [])
        argv += [cfg.mapper_path, cfg.mount_point]
        code, text = _run(argv, commands.action_timeout)
        if code != 0:
            if opened:  # leave the volume as we found it
                _run([commands.cryptsetup, "luksClose", cfg.name], commands.action_timeout)
            raise _failed(f"cannot mount {cfg.mapper_path} on {cfg.mount_point}", argv, code, text)
        log.info("mounted %s on %s", cfg.mapper_path, cfg.mount_point)
    return luks_status(cfg, commands, mountinfo)


def luks_close(cfg, galaxy_running, commands=DEFAULT_COMMANDS, mountinfo=MOUNTINFO):
    """Unmount and close the volume; refused while Galaxy runs, since it would lose its data dir."""
    if galaxy_running:
        raise GalaxyctlError(
            f"refusing to close LUKS volume {cfg.name} ({cfg.mount_point}) while Galaxy "
            "is running; stop it first with 'galaxyctl stop'"
        )
    before = luks_status(cfg, commands, mountinfo)
    if before.mounted:
        _must(f"cannot unmount {cfg.mount_point}", [commands.umount, cfg.mount_point], commands.action_timeout)
    if before.open:
        _must(
            f"cannot close LUKS volume {cfg.name}",
            [commands.cryptsetup, "luksClose", cfg.name],
            commands.action_timeout,
        )
        log.info("closed LUKS volume %s", cfg.name)
    return luks_status(cfg, commands, mountinfo)


# ---------------------------------------------------------------- Onedata


@dataclass(frozen=True)
class OnedataStatus:
    space: str
    mount_point: str
    mounted: bool
    fstype: str = None
    provider: str = None


def onedata_status(onedata, name, mountinfo=MOUNTINFO):
    """Is the space mounted where configured?"""
    space = onedata.space(name)
    mount = find_mount(space.mount_point, mountinfo=mountinfo)
    return OnedataStatus(
        space.name, space.mount_point, mount is not None, mount.fstype if mount else None, space.provider
    )


def _read_token(space, environ):
    """The access token, from its file or variable; messages say where it was looked for, never what."""
    what = f"Onedata space {space.name}"
    if space.token_env:
        token = environ.get(space.token_env, "").strip()
        if not token:
            raise GalaxyctlError(f"{what}: environment variable {space.token_env} is not set")
        return token
    check_root_controlled(space.token_file, f"{what}: token file")
    try:
        with open(space.token_file, encoding="utf-8") as handle:
            token = handle.read().strip()
    except (OSError, UnicodeDecodeError) as exc:  # a decode error's text would quote the token's bytes
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise GalaxyctlError(f"{what}: cannot read token file {space.token_file}: {reason}") from None
    if not token:
        raise GalaxyctlError(f"{what}: token file {space.token_file} is empty")
    return token


def oneclient_argv(onedata, space):
    """oneclient's command line for ``space`` — by construction without the token."""
    argv = [onedata.oneclient] + (["-i"] if space.insecure else [])
    argv += ["-H", space.provider] if space.provider else []
    options = [opt for opt, on in (("allow_other", space.allow_other), ("nonempty", space.nonempty)) if on]
    options += [f"{key}={value}" for key, value in (("uid", space.uid), ("gid", space.gid)) if value is not None]
    argv += ["-o", ",".join(options)] if options else []
    return argv + [space.mount_point]


def onedata_mount(onedata, name, commands=DEFAULT_COMMANDS, mountinfo=MOUNTINFO, environ=None, wait=10.0):
    """Mount a space with oneclient (a no-op if mounted).  The token reaches oneclient only through
    its environment (ONECLIENT_ACCESS_TOKEN); waits up to ``wait`` s for the FUSE mount to appear."""
    space = onedata.space(name)
    status = onedata_status(onedata, name, mountinfo)
    if status.mounted:
        return status
    environ = os.environ if environ is None else environ
    token = _read_token(space, environ)
    env = dict(environ, **{TOKEN_VAR: token})
    if space.provider:
        env[PROVIDER_VAR] = space.provider
    argv = oneclient_argv(onedata, space)
    os.makedirs(space.mount_point, exist_ok=True)
    _must(
        f"cannot mount Onedata space {name} on {space.mount_point}",
        argv,
        commands.action_timeout,
        env=env,
        secret=token,
    )
    deadline = time.monotonic() + wait
    while not status.mounted and time.monotonic() < deadline:
        time.sleep(0.1)
        status = onedata_status(onedata, name, mountinfo)
    log.info("oneclient mounted space %s on %s: %s", name, space.mount_point, status.mounted)
    return status


def onedata_umount(onedata, name, commands=DEFAULT_COMMANDS, mountinfo=MOUNTINFO):
    """Unmount a space: ``fusermount -u``, or ``umount`` where fusermount is not installed."""
    space, status = onedata.space(name), onedata_status(onedata, name, mountinfo)
    if not status.mounted:
        return status
    argv = [commands.fusermount, "-u", space.mount_point]
    try:
        code, text = _run(argv, commands.action_timeout)
    except CommandNotFound:
        argv = [commands.umount, space.mount_point]
        code, text = _run(argv, commands.action_timeout)
    if code != 0:
        raise _failed(f"cannot unmount Onedata space {name} from {space.mount_point}", argv, code, text)
    return onedata_status(onedata, name, mountinfo)


# ---------------------------------------------------------------- everything at once


@dataclass(frozen=True)
class StorageStatus:
    luks: LuksStatus = None
    onedata: tuple = ()  # OnedataStatus per configured space
    required: tuple = ()
    missing: tuple = ()  # required mount points not mounted

    @property
    def ok(self):
        return not self.missing


def storage_status(storage, commands=DEFAULT_COMMANDS, mountinfo=MOUNTINFO):
    """All configured storage, for ``status`` and ``check``."""
    luks = luks_status(storage.luks, commands, mountinfo) if storage.luks else None
    spaces = tuple(onedata_status(storage.onedata, s.name, mountinfo) for s in storage.onedata.spaces)
    return StorageStatus(luks, spaces, storage.required, tuple(missing_required(storage, mountinfo)))
