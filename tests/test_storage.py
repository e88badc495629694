"""LUKS volume, Onedata spaces and ``storage.required`` (galaxyctl_libs.storage.config).

cryptsetup, dmsetup, oneclient, fusermount (and mount/umount where a LUKS or FUSE device would be
needed) want a kernel block device, dm-crypt and FUSE that CI does not have.  So those tests use
small FAKE executables, written into tmp_path and put first on PATH: each one appends its argv,
its stdin and its environment as a JSON line to a log file, prints what it is told to and exits
with the code it is told to.  The assertions read that log: what really reached each program.

Mount *detection* is tested for real: /proc/self/mountinfo of this process ('/' and '/proc' are
mounted, a fresh tmp dir is not) and, when this host lets us (CI runs as root), a real tmpfs.
"""

import json
import logging
import os
import shutil
import stat
import subprocess
import sys

import pytest
import yaml

from galaxyctl_libs.core import config
from galaxyctl_libs.errors import GalaxyctlError
from galaxyctl_libs.storage import config as storage
from galaxyctl_libs.storage import volumes
from galaxyctl_libs.storage.config import LuksConfig
from galaxyctl_libs.storage.volumes import Commands

PASSPHRASE = "correct horse battery staple ✓ $(reboot)"
TOKEN = "MDAxNWxvY2F0aW9uIG9uZXpvbmUK-TEST-TOKEN-7f3a9c"
UUID = "101de0a7-e4f5-4d40-9829-541a2b34c1bf"
REAL_MOUNT = shutil.which("mount")  # looked up before any test puts fakes first on PATH
REAL_UMOUNT = shutil.which("umount")

FAKE = """#!{python}
# FAKE {name} for tests: records argv, stdin and environment, then behaves as scripted.
import json, os, string, sys, time
record = {{"name": {name!r}, "argv": sys.argv,
          "stdin": sys.stdin.buffer.read().decode("utf-8", "surrogateescape"), "env": dict(os.environ)}}
with open({log!r}, "a") as handle:
    handle.write(json.dumps(record) + "\\n")
script = {script!r}
code, output, sleep = script.get(sys.argv[1] if len(sys.argv) > 1 else "", script.get("*", (0, "", 0)))
time.sleep(sleep)
sys.stderr.write(string.Template(output).safe_substitute(os.environ))
sys.exit(code)
"""


class Fakes:
    """A bin dir of fake executables (first on PATH) sharing one call log."""

    def __init__(self, tmp_path, monkeypatch):
        self.bin = tmp_path / "fakebin"
        self.bin.mkdir()
        self.log = tmp_path / "calls.jsonl"
        monkeypatch.setenv("PATH", f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}")

    def add(self, name, **script):
        """``script``: first argument (or '*') -> (exit code, stderr text with $VARS, seconds to sleep)."""
        script = {
            key: value + (0, "", 0)[len(value) :] if isinstance(value, tuple) else (value, "", 0)
            for key, value in script.items()
        }
        path = self.bin / name
        path.write_text(FAKE.format(python=sys.executable, name=name, log=str(self.log), script=script))
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        return str(path)

    def calls(self, name=None):
        if not self.log.exists():
            return []
        records = [json.loads(line) for line in self.log.read_text().splitlines()]
        return [r for r in records if name is None or r["name"] == name]


@pytest.fixture
def fakes(tmp_path, monkeypatch):
    return Fakes(tmp_path, monkeypatch)


def write_mountinfo(path, *mount_points, fstype="ext4", source="/dev/mapper/luksvol"):
    """A mountinfo file in proc(5) format: the real root plus ``mount_points`` (escaped like the kernel)."""
    lines = ["22 1 0:21 / / rw,relatime shared:1 - overlay overlay rw"]
    for i, point in enumerate(mount_points):
        escaped = str(point).replace("\\", "\\134").replace(" ", "\\040").replace("\t", "\\011")
        lines.append(f"{100 + i} 22 253:{i} / {escaped} rw,relatime shared:{i + 2} - {fstype} {source} rw")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def luks_cfg(tmp_path, **extra):
    return LuksConfig(
        name="luksvol", mount_point=str(tmp_path / "export"), device="/dev/vdb", filesystem="ext4", **extra
    )


# ---------------------------------------------------------------- LUKS: secrets and commands


def test_passphrase_reaches_cryptsetup_stdin_and_never_argv(fakes, tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="galaxyctl_libs.storage.volumes")
    fakes.add("cryptsetup", status=4, luksOpen=0)
    fakes.add("mount", **{"*": 0})
    cfg = luks_cfg(tmp_path)
    volumes.luks_open(cfg, passphrase=PASSPHRASE, mountinfo=write_mountinfo(tmp_path / "mi"))

    opened = [c for c in fakes.calls("cryptsetup") if c["argv"][1] == "luksOpen"]
    assert len(opened) == 1
    assert opened[0]["argv"][1:] == ["luksOpen", "/dev/vdb", "luksvol", "--key-file=-"]
    assert opened[0]["stdin"] == PASSPHRASE  # exactly: --key-file=- keeps a newline, so none is added
    for call in fakes.calls():
        assert not any(PASSPHRASE in arg or "horse" in arg for arg in call["argv"]), call["argv"]
    assert "horse" not in caplog.text
    (mounted,) = fakes.calls("mount")
    assert mounted["argv"][1:] == ["-t", "ext4", "/dev/mapper/luksvol", cfg.mount_point]
    assert mounted["stdin"] == ""
    assert os.path.isdir(cfg.mount_point)  # created when missing


def test_key_file_is_named_not_read_into_argv(fakes, tmp_path):
    fakes.add("cryptsetup", status=4, luksOpen=0)
    fakes.add("mount", **{"*": 0})
    key = tmp_path / "volume.key"
    key.write_bytes(b"\x00binary-key\xff")
    volumes.luks_open(luks_cfg(tmp_path, key_file=str(key)), mountinfo=write_mountinfo(tmp_path / "mi"))
    (opened,) = [c for c in fakes.calls("cryptsetup") if c["argv"][1] == "luksOpen"]
    assert opened["argv"][1:] == ["luksOpen", "/dev/vdb", "luksvol", "--key-file", str(key)]
    assert opened["stdin"] == ""


def test_open_without_key_is_a_user_error_and_runs_nothing_but_status(fakes, tmp_path):
    fakes.add("cryptsetup", status=4)
    with pytest.raises(GalaxyctlError, match="no passphrase or key file"):
        volumes.luks_open(luks_cfg(tmp_path), mountinfo=write_mountinfo(tmp_path / "mi"))
    assert [c["argv"][1] for c in fakes.calls()] == ["status"]


def test_open_uses_uuid_path_and_skips_what_is_done(fakes, tmp_path):
    fakes.add("cryptsetup", status=0)  # already open
    fakes.add("mount", **{"*": 0})
    cfg = LuksConfig(name="luksvol", mount_point=str(tmp_path / "export"), uuid=UUID)
    assert cfg.device_path == f"/dev/disk/by-uuid/{UUID}"
    mountinfo = write_mountinfo(tmp_path / "mi", cfg.mount_point)
    result = volumes.luks_open(cfg, passphrase=PASSPHRASE, mountinfo=mountinfo)
    assert result.open and result.mounted and result.ok
    assert [c["argv"][1] for c in fakes.calls()] == ["status", "status"]  # no luksOpen, no mount


def test_failed_mount_closes_what_it_opened_and_says_why(fakes, tmp_path):
    fakes.add("cryptsetup", status=4, luksOpen=0, luksClose=0)
    fakes.add("mount", **{"*": (32, "mount: wrong fs type, bad option, bad superblock\n")})
    with pytest.raises(GalaxyctlError) as err:
        volumes.luks_open(luks_cfg(tmp_path), passphrase=PASSPHRASE, mountinfo=write_mountinfo(tmp_path / "mi"))
    assert "cannot mount /dev/mapper/luksvol" in str(err.value) and "bad superblock" in str(err.value)
    assert "exited with 32" in str(err.value) and "\n" not in str(err.value)
    assert [c["argv"][1] for c in fakes.calls("cryptsetup")] == ["status", "luksOpen", "luksClose"]


def test_wrong_passphrase_is_one_line_without_the_passphrase(fakes, tmp_path):
    fakes.add("cryptsetup", status=4, luksOpen=(2, "No key available with this passphrase.\n"))
    with pytest.raises(GalaxyctlError) as err:
        volumes.luks_open(luks_cfg(tmp_path), passphrase=PASSPHRASE, mountinfo=write_mountinfo(tmp_path / "mi"))
    assert "No key available" in str(err.value) and "horse" not in str(err.value)
    assert fakes.calls("mount") == []


def test_close_refuses_while_galaxy_is_running(fakes, tmp_path):
    fakes.add("cryptsetup", **{"*": 0})
    fakes.add("umount", **{"*": 0})
    cfg = luks_cfg(tmp_path)
    with pytest.raises(GalaxyctlError, match="while Galaxy is running") as err:
        volumes.luks_close(cfg, galaxy_running=True, mountinfo=write_mountinfo(tmp_path / "mi", cfg.mount_point))
    assert "galaxyctl stop" in str(err.value)
    assert fakes.calls() == []  # refused before touching anything


def test_close_unmounts_then_closes(fakes, tmp_path):
    fakes.add("cryptsetup", status=0, luksClose=0)
    fakes.add("umount", **{"*": 0})
    cfg = luks_cfg(tmp_path)
    volumes.luks_close(cfg, galaxy_running=False, mountinfo=write_mountinfo(tmp_path / "mi", cfg.mount_point))
    order = [(c["name"], c["argv"][1:]) for c in fakes.calls() if c["argv"][1:2] != ["status"]]
    assert order == [("umount", [cfg.mount_point]), ("cryptsetup", ["luksClose", "luksvol"])]


def test_status_from_cryptsetup_then_dmsetup_fallback(fakes, tmp_path):
    out = (
        "/dev/mapper/luksvol is active and is in use.\n  type:    LUKS2\n  cipher:  aes-xts-plain64\n"
        "  keysize: 512 bits\n  device:  /dev/vdb\n"
    )
    fakes.add("cryptsetup", status=(0, out))
    cfg = luks_cfg(tmp_path)
    st = volumes.luks_status(cfg, mountinfo=write_mountinfo(tmp_path / "mi", cfg.mount_point))
    assert (st.open, st.mounted) == (True, True)
    assert (st.type, st.cipher, st.keysize) == ("LUKS2", "aes-xts-plain64", "512 bits")
    assert st.mounted_from == "/dev/mapper/luksvol" and st.ok
    assert fakes.calls("cryptsetup")[0]["env"]["LC_ALL"] == "C"

    fakes.add("dmsetup", info=(0, "Name:              luksvol\nState:             ACTIVE\n"))
    commands = Commands(cryptsetup=str(tmp_path / "not-installed"))
    st = volumes.luks_status(cfg, commands, mountinfo=write_mountinfo(tmp_path / "mi2"))
    assert (st.open, st.mounted, st.detail) == (True, False, "dmsetup info")


def test_hung_command_hits_its_deadline(fakes, tmp_path):
    fakes.add("cryptsetup", status=(0, "", 30))
    with pytest.raises(GalaxyctlError, match="did not finish within 0.5 s"):
        volumes.luks_status(
            luks_cfg(tmp_path), Commands(status_timeout=0.5), mountinfo=write_mountinfo(tmp_path / "mi")
        )


# ---------------------------------------------------------------- Onedata: the token


def onedata_config(tmp_path, **space):
    """A galaxy.yml with one Onedata space, loaded the way galaxyctl loads it."""
    token_file = tmp_path / "onedata.token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    entry = {
        "mount_point": str(tmp_path / "onedata"),
        "provider": "provider.example.org",
        "token_file": "onedata.token",
        "insecure": True,
        "nonempty": True,
        "uid": 1000,
        "gid": 1000,
    }
    entry.update(space)
    path = tmp_path / "galaxy.yml"
    path.write_text(yaml.safe_dump({"gravity": {"onedata": {"spaces": {"data": entry}}}}))
    loaded = config.load_config(str(path))
    return storage.parse_storage(config.parse_gravity(loaded.gravity_raw, loaded.path), loaded.path)


def test_token_only_in_oneclient_environment(fakes, tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="galaxyctl_libs.storage.volumes")
    fakes.add("oneclient", **{"*": 0})
    cfg = onedata_config(tmp_path)
    volumes.onedata_mount(cfg.onedata, "data", mountinfo=write_mountinfo(tmp_path / "mi"), wait=0)
    (call,) = fakes.calls("oneclient")
    assert call["env"]["ONECLIENT_ACCESS_TOKEN"] == TOKEN
    assert call["env"]["ONECLIENT_PROVIDER_HOST"] == "provider.example.org"
    assert call["argv"][1:] == [
        "-i",
        "-H",
        "provider.example.org",
        "-o",
        "allow_other,nonempty,uid=1000,gid=1000",
        str(tmp_path / "onedata"),
    ]
    assert not any(TOKEN in arg for arg in call["argv"])
    assert "running" in caplog.text and TOKEN not in caplog.text  # logged, and the log holds no token


def test_token_from_named_environment_variable(fakes, tmp_path):
    fakes.add("oneclient", **{"*": 0})
    cfg = onedata_config(
        tmp_path, token_file=None, token_env="GALAXY_ONEDATA_TOKEN", insecure=False, nonempty=False, uid=None, gid=None
    )
    environ = dict(os.environ, GALAXY_ONEDATA_TOKEN=TOKEN)
    volumes.onedata_mount(cfg.onedata, "data", mountinfo=write_mountinfo(tmp_path / "mi"), environ=environ, wait=0)
    (call,) = fakes.calls("oneclient")
    assert call["env"]["ONECLIENT_ACCESS_TOKEN"] == TOKEN
    assert call["argv"][1:] == ["-H", "provider.example.org", "-o", "allow_other", str(tmp_path / "onedata")]

    with pytest.raises(GalaxyctlError, match="GALAXY_ONEDATA_TOKEN is not set"):
        volumes.onedata_mount(cfg.onedata, "data", mountinfo=write_mountinfo(tmp_path / "mi"), environ={}, wait=0)


def test_token_never_in_error_messages_or_logs(fakes, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    # this oneclient fails and echoes its token to stderr: the error we raise must mask it
    fakes.add("oneclient", **{"*": (1, "auth failed for token $ONECLIENT_ACCESS_TOKEN\n")})
    cfg = onedata_config(tmp_path)
    with pytest.raises(GalaxyctlError) as err:
        volumes.onedata_mount(cfg.onedata, "data", mountinfo=write_mountinfo(tmp_path / "mi"), wait=0)
    message = str(err.value)
    assert "cannot mount Onedata space data" in message and "auth failed for token ***" in message
    assert TOKEN not in message and TOKEN not in repr(err.value.args) and TOKEN not in caplog.text

    (tmp_path / "onedata.token").write_text("  \n")
    with pytest.raises(GalaxyctlError, match="token file .* is empty"):
        volumes.onedata_mount(cfg.onedata, "data", mountinfo=write_mountinfo(tmp_path / "mi"), wait=0)
    (tmp_path / "onedata.token").write_bytes(TOKEN.encode() + b"\xff\xfe")
    with pytest.raises(GalaxyctlError) as err:
        volumes.onedata_mount(cfg.onedata, "data", mountinfo=write_mountinfo(tmp_path / "mi"), wait=0)
    assert "not UTF-8" in str(err.value) and TOKEN not in str(err.value)


def test_mounted_space_is_left_alone_and_umount_falls_back(fakes, tmp_path):
    fakes.add("oneclient", **{"*": 0})
    cfg = onedata_config(tmp_path)
    mountinfo = write_mountinfo(tmp_path / "mi", tmp_path / "onedata", fstype="fuse.oneclient", source="oneclient")
    status = volumes.onedata_mount(cfg.onedata, "data", mountinfo=mountinfo, wait=0)
    assert status.mounted and status.fstype == "fuse.oneclient" and fakes.calls() == []

    fakes.add("fusermount", **{"*": 0})
    volumes.onedata_umount(cfg.onedata, "data", mountinfo=mountinfo)
    assert [c["argv"][1:] for c in fakes.calls("fusermount")] == [["-u", str(tmp_path / "onedata")]]

    fakes.add("umount", **{"*": 0})
    volumes.onedata_umount(cfg.onedata, "data", Commands(fusermount=str(tmp_path / "none")), mountinfo=mountinfo)
    assert [c["argv"][1:] for c in fakes.calls("umount")] == [[str(tmp_path / "onedata")]]

    with pytest.raises(GalaxyctlError, match=r"unknown Onedata space 'nope' \(known: data\)"):
        volumes.onedata_status(cfg.onedata, "nope")


# ---------------------------------------------------------------- configuration


SOURCE = "/etc/galaxy/galaxy.yml"
DEV = {"name": "v", "device": "/dev/vdb"}
CONFIG_ERRORS = [
    ({"luks": {**DEV, "mount_point": 5}}, "gravity.luks.mount_point: expected a string"),
    ({"luks": {**DEV, "mount_point": "export"}}, "gravity.luks.mount_point: expected an absolute path"),
    ({"luks": {**DEV, "name": "a/b", "mount_point": "/export"}}, "gravity.luks.name: 'a/b' is not a valid"),
    ({"luks": {**DEV, "name": "-v", "mount_point": "/export"}}, "gravity.luks.name: '-v' is not a valid"),
    ({"luks": {"name": "v", "mount_point": "/export"}}, "gravity.luks: give the encrypted device as 'device'"),
    ({"luks": {"device": "/dev/vdb", "mount_point": "/export"}}, "gravity.luks.name: required"),
    ({"luks": {"name": "v", "uuid": "../../etc", "mount_point": "/x"}}, "gravity.luks.uuid: '../../etc' is not a"),
    ({"luks": {**DEV, "mount_point": "/x", "filesystem": "ext4;rm"}}, "gravity.luks.filesystem"),
    (
        {"luks": {**DEV, "mount_point": "/x\n[program:evil]"}},
        "gravity.luks.mount_point: expected a non-empty, single-line string",
    ),
    ({"luks": "/dev/vdb"}, "gravity.luks: expected a mapping"),
    ({"onedata": {"spaces": ["data"]}}, "gravity.onedata.spaces: expected a mapping"),
    ({"onedata": {"spaces": {"data": {"token_file": "/t"}}}}, "gravity.onedata.spaces.data.mount_point: required"),
    ({"onedata": {"spaces": {"data": {"mount_point": "/m"}}}}, "give exactly one of token_file or token_env"),
    (
        {"onedata": {"spaces": {"data": {"mount_point": "/m", "token_file": "/t", "token_env": "T"}}}},
        "gravity.onedata.spaces.data: give exactly one",
    ),
    (
        {"onedata": {"spaces": {"data": {"mount_point": "/m", "token_env": "T", "insecure": "yes"}}}},
        "gravity.onedata.spaces.data.insecure: expected true or false, got 'yes'",
    ),
    (
        {"onedata": {"spaces": {"data": {"mount_point": "/m", "token_env": "A-B"}}}},
        "gravity.onedata.spaces.data.token_env: 'A-B' is not a valid",
    ),
    (
        {"onedata": {"spaces": {"data": {"mount_point": "/m", "token_env": "T", "provider": "-oevil"}}}},
        "gravity.onedata.spaces.data.provider: '-oevil' is not a valid",
    ),
    (
        {"onedata": {"spaces": {"data": {"mount_point": "/m", "token_env": "T", "uid": "no-such-user-xyz"}}}},
        "gravity.onedata.spaces.data.uid: no such user 'no-such-user-xyz'",
    ),
    (
        {"onedata": {"spaces": {"data": {"mount_point": "/m", "token_env": "T", "gid": -1}}}},
        "gravity.onedata.spaces.data.gid: expected a non-negative integer",
    ),
    (
        {"onedata": {"spaces": {"da ta": {"mount_point": "/m", "token_env": "T"}}}},
        "gravity.onedata.spaces: space name: 'da ta' is not a valid name",
    ),
    ({"storage": {"required": 5}}, "gravity.storage.required: expected a list of mount points"),
    ({"storage": {"required": ["/export", "data"]}}, "gravity.storage.required[1]: expected an absolute path"),
    ({"storage": ["/export"]}, "gravity.storage: expected a mapping"),
]


@pytest.mark.parametrize("raw, expected", CONFIG_ERRORS, ids=[e for _, e in CONFIG_ERRORS])
def test_config_errors_name_file_and_key(raw, expected):
    with pytest.raises(GalaxyctlError) as err:
        storage.parse_storage(raw, SOURCE)
    message = str(err.value)
    assert message.startswith(f"{SOURCE}: gravity.") and expected in message, message
    assert "\n" not in message


def test_full_config_parses_with_warnings_for_unknown_keys(tmp_path):
    raw = {
        "luks": {
            "device": "/dev/vdb",
            "name": "luksvol",
            "mount_point": "/export/",
            "key_file": "keys/vol.key",
            "colour": "red",
        },
        "onedata": {
            "oneclient": "/opt/oneclient/bin/oneclient",
            "spaces": {"ref": {"mount_point": "/refdata", "token_env": "T", "uid": "root", "gid": "0"}},
        },
        "storage": {"required": "/export"},
    }
    parsed = storage.parse_storage(raw, str(tmp_path / "galaxy.yml"))
    assert parsed.luks == LuksConfig(
        name="luksvol", mount_point="/export", device="/dev/vdb", key_file=str(tmp_path / "keys" / "vol.key")
    )
    (space,) = parsed.onedata.spaces
    assert (space.name, space.uid, space.gid, space.allow_other) == ("ref", 0, 0, True)
    assert parsed.onedata.oneclient == "/opt/oneclient/bin/oneclient"
    assert parsed.required == ("/export",)
    assert parsed.warnings == (f"{tmp_path / 'galaxy.yml'}: gravity.luks.colour: unknown key, ignored",)
    empty = storage.parse_storage({}, SOURCE)
    assert empty.luks is None and empty.onedata.spaces == () and empty.required == ()


CRYPTDEV_INI = """\
[luks]
cipher_algorithm = aes-xts-plain64
hash_algorithm = sha256
keysize = 256
device = /dev/vdb
uuid = 101de0a7-e4f5-4d40-9829-541a2b34c1bf
cryptdev = crypt
mapper = /dev/mapper/crypt
mountpoint = /export
filesystem = ext4
header_path = /etc/luks/luks-header.bck

[logs]
fastluks = /var/log/galaxy/fastluks.log
"""


def test_laniakea_cryptdev_ini(tmp_path):
    (tmp_path / "luks-cryptdev.ini").write_text(CRYPTDEV_INI)
    source = str(tmp_path / "galaxy.yml")
    luks = storage.parse_storage({"luks": {"ini": "luks-cryptdev.ini"}}, source).luks
    assert luks == LuksConfig(name="crypt", mount_point="/export", device="/dev/vdb", uuid=UUID, filesystem="ext4")
    assert luks.device_path == f"/dev/disk/by-uuid/{UUID}"  # the UUID wins, as luksctl opens it

    # galaxy.yml keys override the ini; the mapper path names the volume when cryptdev is absent
    (tmp_path / "luks-cryptdev.ini").write_text(CRYPTDEV_INI.replace("cryptdev = crypt\n", ""))
    luks = storage.parse_storage(
        {"luks": {"ini": str(tmp_path / "luks-cryptdev.ini"), "mount_point": "/data"}}, source
    ).luks
    assert (luks.name, luks.mount_point) == ("crypt", "/data")

    # errors name the ini file and its key, or the galaxy.yml key that points at it
    (tmp_path / "luks-cryptdev.ini").write_text(CRYPTDEV_INI.replace(UUID, "disk uuid"))
    with pytest.raises(GalaxyctlError, match=r"luks-cryptdev.ini: \[luks\] uuid: 'disk uuid' is not a valid"):
        storage.parse_storage({"luks": {"ini": "luks-cryptdev.ini"}}, source)
    with pytest.raises(GalaxyctlError, match=r"galaxy.yml: gravity.luks.ini: cannot read .*missing.ini"):
        storage.parse_storage({"luks": {"ini": "missing.ini"}}, source)
    (tmp_path / "bad.ini").write_text("[logs]\nx = 1\n")
    with pytest.raises(GalaxyctlError, match=r"gravity.luks.ini: .*bad.ini: no \[luks\] section"):
        storage.parse_storage({"luks": {"ini": "bad.ini"}}, source)


# ---------------------------------------------------------------- what is mounted, for real


def test_real_mountinfo(tmp_path):
    assert storage.is_mounted("/")
    assert storage.is_mounted("/proc")
    assert storage.is_mounted("/proc/")
    assert not storage.is_mounted(str(tmp_path))
    assert not storage.is_mounted(str(tmp_path / "does-not-exist"))
    (proc,) = [m for m in storage.read_mounts() if m.mount_point == "/proc"]
    assert proc.fstype == "proc"


def test_mountinfo_octal_escapes(tmp_path):
    odd = tmp_path / "my disk\\with\ttab"
    mountinfo = write_mountinfo(tmp_path / "mi", odd)
    assert "\\040" in open(mountinfo).read()
    assert storage.is_mounted(str(odd), mountinfo=mountinfo)
    assert not storage.is_mounted(str(tmp_path / "my disk"), mountinfo=mountinfo)
    with pytest.raises(GalaxyctlError, match="cannot read"):
        storage.is_mounted("/", mountinfo=str(tmp_path / "nope"))


def test_real_tmpfs_mount_is_detected_then_unmounted(tmp_path):
    point = tmp_path / "galaxy data"  # a space: mountinfo shows it as \040
    point.mkdir()
    done = subprocess.run(
        [REAL_MOUNT, "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(point)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"mount -t tmpfs refused here: {done.stderr.strip()}")
    try:
        assert storage.is_mounted(str(point))
        assert storage.find_mount(str(point)).fstype == "tmpfs"
        required = storage.StorageConfig(required=(str(point), str(tmp_path / "absent")), source="galaxy.yml")
        assert storage.missing_required(required) == [str(tmp_path / "absent")]
    finally:
        subprocess.run([REAL_UMOUNT, str(point)], check=True)
    assert not storage.is_mounted(str(point))


def test_missing_required_and_the_refusal_line(tmp_path):
    cfg = storage.parse_storage(
        {
            "luks": {"name": "luksvol", "device": "/dev/vdb", "mount_point": "/export"},
            "onedata": {"spaces": {"ref": {"mount_point": "/refdata", "token_env": "T"}}},
            "storage": {"required": ["/export", "/refdata", "/proc"]},
        },
        SOURCE,
    )
    mountinfo = write_mountinfo(tmp_path / "mi", "/proc")
    assert storage.missing_required(cfg, mountinfo) == ["/export", "/refdata"]
    with pytest.raises(GalaxyctlError) as err:
        storage.check_required(cfg, mountinfo)
    assert str(err.value) == (
        f"required storage not mounted: /export, /refdata ({SOURCE}: "
        "gravity.storage.required); mount it first: galaxyctl luks open, "
        "galaxyctl onedata mount ref"
    )
    storage.check_required(cfg, write_mountinfo(tmp_path / "mi2", "/export", "/refdata", "/proc"))  # no error
    assert storage.missing_required(storage.StorageConfig()) == []


def test_storage_status_reports_everything(fakes, tmp_path):
    fakes.add("cryptsetup", status=0)
    cfg = storage.parse_storage(
        {
            "luks": {"name": "luksvol", "device": "/dev/vdb", "mount_point": "/export"},
            "onedata": {"spaces": {"ref": {"mount_point": "/refdata", "token_env": "T"}}},
            "storage": {"required": ["/export", "/refdata"]},
        },
        SOURCE,
    )
    status = volumes.storage_status(cfg, mountinfo=write_mountinfo(tmp_path / "mi", "/export"))
    assert status.luks.ok and not status.onedata[0].mounted
    assert status.missing == ("/refdata",) and not status.ok


def test_import_has_no_side_effects():
    """Importing runs no program and opens nothing but code (an audit hook watches)."""
    code = (
        "import sys\n"
        "seen = []\n"
        "def hook(event, args):\n"
        "    if event in ('subprocess.Popen', 'os.system', 'os.exec', 'os.posix_spawn'):\n"
        "        seen.append(event)\n"
        "    elif event == 'open' and isinstance(args[0], str) and not args[0].endswith(('.py', '.pyc', '.so')):\n"
        "        seen.append(args[0])\n"
        "sys.addaudithook(hook)\n"
        "import galaxyctl_libs.storage.config, galaxyctl_libs.storage.volumes\n"
        "assert not seen, seen\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(os.path.dirname(__file__)))
