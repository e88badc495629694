"""Hostile input through the real CLI: bounded time, memory and output; one error line; state kept.

galaxyctl runs as root while galaxy.yml may be writable by the Galaxy user, so a config can be an
alias bomb, include a FIFO or /etc/shadow, or be /etc/shadow.  Every case here must end quickly in
exactly one ``galaxyctl: error:`` line (no traceback), echo no file content beyond a short
prefix, and leave the state dir as it was.
"""

import errno
import hashlib
import json
import os
import stat
import subprocess
import sys
import time

import pytest
import yaml
from conftest import GALAXYCTL, REPO

from galaxyctl_libs import fsutil
from galaxyctl_libs.backends import record as targets
from galaxyctl_libs.core import config
from galaxyctl_libs.errors import GalaxyctlError

GOOD = "gravity:\n  gunicorn:\n    bind: localhost:18080\n  celery:\n    enable: false\n    enable_beat: false\n"
TIMEOUT = 20  # seconds any hostile case may take, through the CLI
SECRET = "SECRETHASH"
SHADOW = "".join(
    f"user{i}:$6$salt{i}${SECRET}{i:04d}abcdefghijklmnopqrstuvwxyz:19000:0:99999:7:::\n" for i in range(30)
)
SHADOW = f"root:$6$rootsalt${SECRET}rootABCDEFGHIJKLMNOPQRSTUVWXYZ0123:19000:0:99999:7:::\n" + SHADOW


# ---------------------------------------------------------------- helpers


def write(path, content):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(content if isinstance(content, bytes) else content.encode())
    return path


def snapshot(directory):
    """Every regular file under ``directory`` with a hash of its bytes (FIFOs are never opened)."""
    found = {}
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            if stat.S_ISREG(os.lstat(path).st_mode):
                with open(path, "rb") as handle:
                    found[path] = hashlib.sha256(handle.read()).hexdigest()
            else:
                found[path] = "special"
    return found


def run_bytes(gctl, *args, state_dir=None, env=None):
    """The CLI with bytes arguments allowed and bytes output (non-UTF-8 paths), decoded leniently."""
    argv = [sys.executable, GALAXYCTL, "--state-dir", state_dir or gctl.state_dir, *args]
    result = subprocess.run(argv, capture_output=True, timeout=TIMEOUT, env=env or gctl.env, stdin=subprocess.DEVNULL)
    return subprocess.CompletedProcess(
        result.args,
        result.returncode,
        result.stdout.decode("utf-8", "backslashreplace"),
        result.stderr.decode("utf-8", "backslashreplace"),
    )


def assert_one_error(result, fragment="", code=None, warnings=False):
    """Exactly one stderr line, ``galaxyctl: error: ...`` containing ``fragment``; non-zero exit.
    With ``warnings``, the config's own warning lines may come first (a failed start prints them)."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if not (warnings and line.startswith("galaxyctl: warning: "))]
    assert len(lines) == 1 and lines[0].startswith("galaxyctl: error: "), result.stderr[:3000]
    assert fragment in lines[0], lines[0]
    assert result.returncode != 0 if code is None else result.returncode == code, result.returncode
    return lines[0]


@pytest.fixture
def installed(gctl, short_tmp):
    """A registered, updated config: (config path, config dir)."""
    cfg_dir = os.path.join(short_tmp, "galaxy", "config")
    cfg = write(os.path.join(cfg_dir, "galaxy.yml"), GOOD)
    gctl("register", cfg)
    gctl("update")
    return cfg, cfg_dir


def alias_bomb(levels=9, indent="  "):
    """Each level an anchored list of nine aliases of the level below: 9**levels strings."""
    lines = [f"{indent}l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, levels + 1):
        lines.append(f"{indent}l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def merge_bomb(levels=30):
    """Merge keys doubling a mapping at every level: PyYAML's flattening would build 2**levels pairs."""
    lines = ["  m0: &m0 {a: 1, b: 2, c: 3, d: 4}"]
    for level in range(1, levels + 1):
        lines.append(f"  m{level}: &m{level} {{<<: [*m{level - 1}, *m{level - 1}]}}")
    return "\n".join(lines) + "\n"


MEASURED = (
    "import json, resource, subprocess, sys\n"
    "start = __import__('time').monotonic()\n"
    "result = subprocess.run(sys.argv[1:], capture_output=True, timeout=%d, stdin=subprocess.DEVNULL)\n"
    "print(json.dumps({'rc': result.returncode, 'seconds': __import__('time').monotonic() - start,\n"
    "                  'stdout': result.stdout.decode('utf-8', 'replace'), 'stderr': result.stderr.decode('utf-8', 'replace'),\n"
    "                  'maxrss_kib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))\n" % TIMEOUT
)


def run_measured(gctl, *args):
    """The CLI under a small wrapper that reports its peak RSS (this test process's other children
    would blur a RUSAGE_CHILDREN reading taken here)."""
    argv = [sys.executable, "-c", MEASURED, sys.executable, GALAXYCTL, "--state-dir", gctl.state_dir, *args]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT + 10, env=gctl.env, check=True)
    data = json.loads(out.stdout)
    return data, subprocess.CompletedProcess(argv, data["rc"], data["stdout"], data["stderr"])


# ---------------------------------------------------------------- 1. alias and entity bombs


BOMBS = [
    # (name, file under the config dir, its content, fragment of the error)
    ("galaxy.yml-option", "galaxy.yml", "gravity:\n" + alias_bomb() + "  gunicorn:\n    bind: *l9\n", "alias bomb"),
    ("galaxy.yml-galaxy-section", "galaxy.yml", GOOD + "galaxy:\n" + alias_bomb(), "alias bomb"),
    ("merge-keys", "galaxy.yml", GOOD + "galaxy:\n" + merge_bomb(), "alias bomb"),
    ("recursive-alias", "galaxy.yml", "gravity: &g\n  gunicorn: *g\n", "recursive structure"),
    ("deep-nesting", "galaxy.yml", "gravity:\n  x: " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper than"),
    ("huge-integer", "galaxy.yml", "gravity:\n  gunicorn:\n    workers: 0x" + "f" * 5000 + "\n", "more than 64 bits"),
    ("bad-timestamp", "galaxy.yml", "gravity:\n  gunicorn:\n    workers: 2020-13-45\n", "cannot read this timestamp"),
    ("job_conf.yml", "job_conf.yml", "handling:\n" + alias_bomb(), "alias bomb"),
    (
        "job_conf.xml-billion-laughs",
        "job_conf.xml",
        '<?xml version="1.0"?>\n<!DOCTYPE job_conf [\n <!ENTITY a "lollollollollollollollollollol">\n'
        + "".join(f' <!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">\n' for i in range(9))
        + ']>\n<job_conf><handlers><handler id="&j;"/></handlers></job_conf>\n',
        "XML entity declaration",
    ),
    (
        "job_conf.xml-external-entity",
        "job_conf.xml",
        '<?xml version="1.0"?>\n<!DOCTYPE job_conf [<!ENTITY s SYSTEM "file:///etc/shadow">]>\n'
        '<job_conf><handlers><handler id="&s;"/></handlers></job_conf>\n',
        "XML entity declaration",
    ),
]


@pytest.mark.parametrize("name, filename, content, fragment", BOMBS, ids=[b[0] for b in BOMBS])
def test_bombs_are_refused_quickly_and_quietly(gctl, installed, name, filename, content, fragment):
    cfg, cfg_dir = installed
    write(os.path.join(cfg_dir, filename), content)
    before = snapshot(gctl.state_dir)
    data, result = run_measured(gctl, "update")
    assert_one_error(result, fragment)
    assert len(result.stderr) < 2048
    assert data["seconds"] < TIMEOUT and data["maxrss_kib"] < 200 * 1024, data
    assert snapshot(gctl.state_dir) == before


def test_an_include_repeated_by_aliases_counts_every_time(gctl, installed):
    """Each file within the bound, the whole past it: what an include holds counts per alias."""
    cfg, cfg_dir = installed
    write(os.path.join(cfg_dir, "part.yml"), "parts:\n" + alias_bomb(levels=4))  # 74,740 nodes
    write(cfg, GOOD + "galaxy:\n  a: &a !include part.yml\n  b: [*a, *a, *a, *a, *a]\n")
    before = snapshot(gctl.state_dir)
    assert_one_error(gctl("update", check=False, timeout=TIMEOUT), "alias bomb")
    assert snapshot(gctl.state_dir) == before
    write(cfg, GOOD + "galaxy:\n  a: &a !include part.yml\n  b: [*a, *a]\n")  # about 224,000 nodes: allowed
    assert gctl("update", check=False, timeout=TIMEOUT).returncode == 0


def test_alias_bomb_in_configstate_is_a_corrupt_state(gctl, installed):
    path = os.path.join(gctl.state_dir, "configstate.yaml")
    with open(path) as handle:
        text = handle.read()
    write(path, text + "bomb:\n" + alias_bomb(levels=9))
    before = snapshot(gctl.state_dir)
    data, result = run_measured(gctl, "list")
    assert_one_error(result, "corrupt state file")
    assert "alias bomb" in result.stderr and len(result.stderr) < 2048 and data["maxrss_kib"] < 200 * 1024
    assert snapshot(gctl.state_dir) == before


def test_moderate_aliases_still_load(gctl, installed):
    """Anchors and merge keys as people use them keep working, in galaxy.yml and job_conf.yml."""
    cfg, cfg_dir = installed
    write(
        cfg,
        GOOD.replace("gravity:\n", "gravity:\n  _env: &env {A: '1', B: '2'}\n  _args: &args [--foo, bar]\n")
        + "  tusd:\n    environment: *env\n  reports:\n    extra_args: *args\n"
        + "galaxy:\n  job_config_file: job_conf.yml\n",
    )
    write(
        os.path.join(cfg_dir, "job_conf.yml"),
        "base: &base {environment: {X: '1'}}\nhandling:\n  assign: [db-skip-locked]\n"
        "  processes:\n    h1: {<<: *base}\n    h2: *base\n",
    )
    result = gctl("update", timeout=TIMEOUT)
    assert "_h1.conf" in result.stdout and "_h2.conf" in result.stdout
    assert "gravity._env: unknown key, ignored" in result.stderr
    with open(os.path.join(gctl.state_dir, "configstate.yaml")) as handle:
        assert "*id001" in handle.read()  # the shared list is saved as an alias...
    assert cfg in gctl("list").stdout  # ...and loads again (through the bounded loader)
    assert gctl("update").stdout.strip() == "No changes"


# ---------------------------------------------------------------- 2. FIFOs and other non-files


def _fifo(path):
    if os.path.lexists(path):
        os.unlink(path)
    os.mkfifo(path)
    return path


FIFOS = [
    # (name, path relative to the short tmp dir, config text or None, command, fragment)
    ("include", "galaxy/config/fifo.yml", GOOD + "galaxy: !include fifo.yml\n", ["update"], "is a FIFO"),
    ("job_conf.xml", "galaxy/config/job_conf.xml", GOOD, ["update"], "is a FIFO"),
    ("registered-config", "galaxy/other.yml", None, ["register", "{path}"], "is a FIFO"),
    ("galaxy.ini", "galaxy/galaxy.ini", None, ["register", "{path}"], "is a FIFO"),
    ("configstate.yaml", "state/configstate.yaml", None, ["list"], "is a FIFO"),
    ("services.json", "state/supervisor/services.json", None, ["workers"], "is a FIFO"),
]


@pytest.mark.parametrize("name, relative, text, command, fragment", FIFOS, ids=[f[0] for f in FIFOS])
def test_a_fifo_is_refused_without_hanging(gctl, installed, short_tmp, name, relative, text, command, fragment):
    cfg, _ = installed
    path = _fifo(os.path.join(short_tmp, relative))
    if text is not None:
        write(cfg, text)
    before = snapshot(gctl.state_dir)
    started = time.monotonic()
    result = gctl(*[part.format(path=path) for part in command], check=False, timeout=TIMEOUT)
    assert_one_error(result, fragment)
    assert path in result.stderr and time.monotonic() - started < TIMEOUT
    assert snapshot(gctl.state_dir) == before
    assert gctl("stop", check=False, timeout=TIMEOUT).stderr.count("Traceback") == 0  # the locks are free


def test_a_directory_or_oversized_file_is_refused(gctl, installed, short_tmp):
    cfg, cfg_dir = installed
    os.makedirs(os.path.join(cfg_dir, "dir.yml"))
    write(cfg, GOOD + "galaxy: !include dir.yml\n")
    assert_one_error(gctl("update", check=False), "is a directory, not a regular file")
    write(cfg, GOOD + "galaxy:\n  x: '" + "a" * (config.MAX_CONFIG_BYTES) + "'\n")
    assert_one_error(gctl("update", check=False), "is larger than 1 MiB")
    write(cfg, GOOD)
    state_file = os.path.join(gctl.state_dir, "configstate.yaml")
    os.truncate(state_file, fsutil.MAX_STATE_FILE_BYTES + 1)  # sparse: costs no disk
    with open(state_file, "rb") as handle:
        big = hashlib.sha256(handle.read()).hexdigest()
    assert_one_error(gctl("list", check=False), "configstate.yaml is larger than 16 MiB")
    assert_one_error(gctl("update", check=False), "configstate.yaml is larger than 16 MiB")
    with open(state_file, "rb") as handle:
        assert hashlib.sha256(handle.read()).hexdigest() == big


# ---------------------------------------------------------------- 3. where includes may come from


def test_includes_outside_the_config_dir_are_refused_unless_allowed(gctl, installed, short_tmp):
    cfg, cfg_dir = installed
    outside = write(os.path.join(short_tmp, "elsewhere", "gravity.yml"), "gunicorn:\n  bind: localhost:18099\n")
    before = snapshot(gctl.state_dir)
    cases = {
        "absolute": "/etc/shadow",
        "absolute-ours": outside,
        "dotdot": "../../elsewhere/gravity.yml",
        "symlink": "link.yml",
    }
    os.symlink(outside, os.path.join(cfg_dir, "link.yml"))
    for how, target in cases.items():
        write(cfg, f"gravity: !include {target}\n")
        line = assert_one_error(gctl("update", check=False), "is outside")
        assert cfg in line and "GALAXYCTL_INCLUDE_DIRS=" in line and "move the file there" in line, (how, line)
        assert snapshot(gctl.state_dir) == before
    # allowed: the directory named in GALAXYCTL_INCLUDE_DIRS (the symlink resolves into it)
    env = dict(gctl.env, GALAXYCTL_INCLUDE_DIRS=f"/nonexistent:{os.path.dirname(outside)}")
    for target in (outside, "../../elsewhere/gravity.yml", "link.yml"):
        write(cfg, f"gravity: !include {target}\n")
        result = gctl("update", check=False, env=env)
        assert result.returncode == 0, result.stderr
    assert "localhost:18099" in gctl("show", "--json", env=env).stdout
    relative = dict(gctl.env, GALAXYCTL_INCLUDE_DIRS="elsewhere")
    assert_one_error(
        gctl("update", check=False, env=relative), "GALAXYCTL_INCLUDE_DIRS: 'elsewhere' is not an absolute"
    )


def test_includes_under_the_config_dir_need_nothing(gctl, installed):
    cfg, cfg_dir = installed
    write(
        os.path.join(cfg_dir, "conf.d", "gravity.yml"),
        "gunicorn:\n  bind: localhost:18098\ncelery: !include ../celery.yml\n",
    )  # relative to conf.d: back in the config dir
    write(os.path.join(cfg_dir, "celery.yml"), "enable: false\nenable_beat: false\n")
    write(os.path.join(cfg_dir, "conf.d", "galaxy.yml"), "brand: inside\n")
    os.symlink("conf.d/galaxy.yml", os.path.join(cfg_dir, "inside-link.yml"))  # a symlink that stays inside
    write(cfg, "gravity: !include conf.d/gravity.yml\ngalaxy: !include inside-link.yml\n")
    gctl("update")
    assert "localhost:18098" in gctl("show", "--json").stdout


# ---------------------------------------------------------------- 4. no file content in messages


def test_registering_a_shadow_file_never_shows_its_hashes(gctl, short_tmp):
    shadow = write(os.path.join(short_tmp, "etc", "shadow"), SHADOW)
    for command in (["register", shadow], ["update"], ["show"]):
        result = gctl(*command, check=False)
        output = result.stdout + result.stderr
        assert SECRET not in output and "$6$" not in output and "Traceback" not in output, output
        if command[0] != "show":  # show prints the stored settings: what was asked for
            warnings = [line for line in result.stderr.splitlines() if line.startswith("galaxyctl: warning:")]
            assert len(warnings) == config.MAX_UNKNOWN_KEY_WARNINGS + 1, result.stderr
            key = SHADOW.splitlines()[0][:-1]  # YAML reads "root:...:7:::" as the key "root:...:7::"
            assert warnings[0].endswith(f"gravity.root… ({len(key)} characters): unknown key, ignored"), warnings[0]
            assert warnings[-1].endswith(f"... and {31 - config.MAX_UNKNOWN_KEY_WARNINGS} more unknown keys")
            assert all(len(line) < 200 for line in result.stderr.splitlines())


def test_other_files_read_by_mistake_show_no_content(gctl, installed, short_tmp):
    cfg, cfg_dir = installed
    passwd = write(os.path.join(short_tmp, "etc", "passwd"), f"root:x:0:0:{SECRET}:/root:/bin/bash\n")
    shadow = write(os.path.join(short_tmp, "etc", "shadow"), SHADOW)
    line = assert_one_error(gctl("register", passwd, check=False), "expected a mapping at the top level, got text")
    assert SECRET not in line
    checks = [
        (GOOD + f"galaxy:\n  job_config_file: {passwd}\n", "top level: expected a mapping, got text"),
        (GOOD + f"galaxy:\n  job_config_file: {shadow}\n", None),  # a mapping of unknown keys: no handlers
        ("gravity:\n  gunicorn:\n    workers: '" + "x" * 40 + SECRET * 50 + "'\n", "expected an integer, got"),
        ("gravity:\n  celery: '" + "x" * 40 + SECRET * 50 + "'\n", "gravity.celery: expected a mapping, got"),
        ("gravity:\n  handlers: {h: {environment: {'" + "X" * 40 + SECRET + "=': 1}}}\n", "is not a valid environment"),
        ("gravity: !include " + shadow + "\n", None),  # allowed below: its lines are unknown keys
    ]
    env = dict(gctl.env, GALAXYCTL_INCLUDE_DIRS=os.path.dirname(shadow))
    for text, fragment in checks:
        write(cfg, text)
        result = gctl("update", check=False, env=env)
        assert SECRET not in result.stdout + result.stderr and "Traceback" not in result.stderr, result.stderr
        if fragment:
            assert_one_error(result, fragment)


# ---------------------------------------------------------------- 5. no traceback on a broken disk or path


@pytest.fixture
def tmpfs(short_tmp):
    """Factory: mount a small tmpfs (size, ro) at a new dir; every mount is undone at the end."""
    mounted = []

    def mount(name, options="size=64k"):
        target = os.path.join(short_tmp, name)
        os.makedirs(target, exist_ok=True)
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", target], capture_output=True, text=True
        )
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
        mounted.append(target)
        return target

    try:
        yield mount
    finally:
        for target in reversed(mounted):
            subprocess.run(["umount", target], check=False)


def _fill(directory):
    """Use up every free block of ``directory``'s file system."""
    with open(os.path.join(directory, "filler"), "wb", buffering=0) as handle:
        try:
            while handle.write(b"\0" * 4096):
                pass
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def test_enospc_in_the_state_dir_is_one_line_and_keeps_the_state(tmpfs, short_tmp):
    from conftest import Galaxyctl

    disk = tmpfs("disk")
    gctl = Galaxyctl(os.path.join(disk, "state"))
    try:
        cfg = write(os.path.join(short_tmp, "g1", "galaxy.yml"), GOOD)
        other = write(
            os.path.join(short_tmp, "g2", "galaxy.yml"), GOOD.replace("18080", "18081") + "  instance_name: two\n"
        )
        gctl("register", cfg)
        gctl("update")
        _fill(disk)
        before = snapshot(gctl.state_dir)
        assert_one_error(gctl("register", other, check=False), "configstate.yaml: No space left on device")
        write(cfg, GOOD.replace("18080", "18082"))
        assert_one_error(gctl("update", check=False), "No space left on device")
        assert snapshot(gctl.state_dir) == before  # no temp file left behind either
        os.unlink(os.path.join(disk, "filler"))
        gctl("register", other)  # room again: everything works as before
    finally:
        gctl.cleanup()


def test_log_dir_that_is_a_file_or_read_only(gctl, installed, tmpfs, short_tmp):
    cfg, _ = installed
    supervisor_dir = os.path.join(gctl.state_dir, "supervisor")
    files_before = snapshot(supervisor_dir)
    registrations = gctl("list").stdout
    read_only = tmpfs("ro", "ro,size=64k")
    state_before = snapshot(gctl.state_dir)
    for log_dir, fragment in (
        (write(os.path.join(short_tmp, "a-file"), "x"), "is in the way"),
        (os.path.join(read_only, "logs"), "Read-only file system"),
    ):
        write(cfg, GOOD + f"  log_dir: {log_dir}\n")
        assert_one_error(gctl("update", check=False), fragment)
        assert snapshot(gctl.state_dir) == state_before  # the refused log_dir is not saved either
        assert snapshot(supervisor_dir) == files_before  # no supervisor file written
        assert gctl("list").stdout == registrations  # nothing lost


def test_prometheus_file_in_a_missing_directory(gctl, installed, short_tmp):
    before = snapshot(gctl.state_dir)
    result = gctl("check", "--prometheus", os.path.join(short_tmp, "no", "such", "dir", "galaxy.prom"), check=False)
    assert_one_error(result, "cannot write", code=3)  # Nagios UNKNOWN
    assert "galaxy.prom: No such file or directory" in result.stderr
    assert snapshot(gctl.state_dir) == before


def test_binary_configstate_is_corrupt_and_left_untouched(gctl, installed):
    cfg, _ = installed
    path = write(os.path.join(gctl.state_dir, "configstate.yaml"), b"config_files:\n  \xff\xfe: {}\n")
    before = snapshot(gctl.state_dir)
    for command in (["list"], ["update"], ["register", cfg], ["stop"]):
        result = gctl(*command, check=False)
        if command == ["stop"] and result.returncode == 0:
            continue  # nothing running: stop needs no state
        assert_one_error(result, "corrupt state file (not UTF-8 text")
        assert "left untouched" in result.stderr and path in result.stderr
    assert snapshot(gctl.state_dir) == before


def test_binary_services_json_counts_as_missing(gctl, installed):
    path = write(os.path.join(gctl.state_dir, "supervisor", "services.json"), b"\xff\xfe\x00binary")
    assert targets.load_applied(gctl.state_dir) is None
    for command in (["workers"], ["stop"], ["status"]):
        assert "Traceback" not in gctl(*command, check=False).stderr
    gctl("update")
    with open(path, encoding="utf-8") as handle:
        assert json.load(handle)["targets"]  # rewritten whole
    assert targets.load_applied(gctl.state_dir) is not None


def test_bad_paths_on_the_command_line(gctl, installed, short_tmp):
    cfg, _ = installed
    before = snapshot(gctl.state_dir)
    loop = os.path.join(short_tmp, "loop")
    os.symlink(loop + "2", loop)
    os.symlink(loop, loop + "2")
    long_path = os.path.join(short_tmp, "a" * 5000 + ".yml")
    undecodable = os.fsencode(short_tmp) + b"/\xffgalaxy.yml"
    write(undecodable.decode("utf-8", "surrogateescape"), GOOD)
    for args, fragment in (
        (["register", loop], "Too many levels of symbolic links"),
        (["register", long_path], "File name too long"),
        (["register", undecodable], "galaxy.yml' is not valid UTF-8"),
        (["rename", cfg, undecodable], "is not valid UTF-8"),
        (["deregister", undecodable], "not registered"),
    ):
        assert_one_error(run_bytes(gctl, *args), fragment)
        assert snapshot(gctl.state_dir) == before
    for state_dir, fragment in (
        (loop, "cannot create directory"),
        (os.path.join(short_tmp, "s" * 5000), "File name too long"),
        (os.fsencode(short_tmp) + b"/st\xffate", "\\xffate' is not valid UTF-8"),
    ):
        assert_one_error(run_bytes(gctl, "register", cfg, state_dir=state_dir), fragment)
        assert "Traceback" not in run_bytes(gctl, "list", state_dir=state_dir).stderr


# ---------------------------------------------------------------- the pieces, in-process


def test_read_bytes_refuses_special_files_at_once(tmp_path):
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(GalaxyctlError, match="is a FIFO, not a regular file"):
        fsutil.read_bytes(fifo, 100)
    assert time.monotonic() - started < 5
    with pytest.raises(GalaxyctlError, match="is a character device"):
        fsutil.read_bytes("/dev/zero", 100)
    (tmp_path / "f").write_bytes(b"x" * 101)
    with pytest.raises(GalaxyctlError, match="is larger than 100 bytes"):
        fsutil.read_bytes(str(tmp_path / "f"), 100)
    assert fsutil.read_bytes(str(tmp_path / "f"), 101) == b"x" * 101
    assert fsutil.read_bytes(str(tmp_path / "missing"), 100) is None
    os.symlink(str(tmp_path / "f"), str(tmp_path / "link"))
    with pytest.raises(GalaxyctlError, match="is a symbolic link"):
        fsutil.read_bytes(str(tmp_path / "link"), 200, follow_symlinks=False)
    (tmp_path / "bin").write_bytes(b"\xff")
    with pytest.raises(GalaxyctlError, match="not UTF-8"):
        fsutil.read_text(str(tmp_path / "bin"))


def test_write_if_changed_replaces_what_is_not_a_file_of_ours(tmp_path):
    path = str(tmp_path / "conf")
    os.mkfifo(path)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from galaxyctl_libs import fsutil\n"
        "assert fsutil.write_if_changed(sys.argv[2], 'new\\n') is True"
    )
    subprocess.run([sys.executable, "-c", code, REPO, path], check=True, timeout=TIMEOUT)  # a hang would be ours
    assert stat.S_ISREG(os.lstat(path).st_mode) and open(path).read() == "new\n"  # the FIFO was replaced
    assert fsutil.write_if_changed(path, "new\n") is False
    with open(path, "wb") as handle:
        handle.write(b"\xff")
    assert fsutil.write_if_changed(path, "new\n") is True
    with pytest.raises(GalaxyctlError, match="not valid UTF-8"):
        fsutil.write_if_changed(path, "\udcff")


def test_describe_and_key_text_show_only_a_prefix():
    assert config._describe("abc") == "'abc'"
    long = config._describe("x" * 1000)
    assert long.startswith("'" + "x" * config.SHOWN_CHARS + "'") and "1000 characters" in long and len(long) < 80
    assert config._describe({"a": 1}) == "a mapping (1 key)" and config._describe([1, 2]) == "a list (2 items)"
    assert config._key_text("wrokers") == "wrokers" and config._key_text("celery pool") == "celery pool"
    line = f"root:$6$salt${SECRET}:1:::"
    assert config._key_text(line) == f"root… ({len(line)} characters)"
    assert len(config._key_text("k" * 500)) < 70
    bomb = yaml.safe_load("a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n")
    assert config._describe(bomb) == "a mapping (3 keys)"
