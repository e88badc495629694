"""Hostile values in supervisord's files: each reaches the process byte-exact, or galaxyctl refuses it in one line.

The end-to-end tests look only at the receiving end: ``/proc/PID/environ``, ``/proc/PID/cmdline`` and
``/proc/PID/cwd`` of the processes supervisord started, and the files supervisord itself opened; never at
the rendered text or ``exec -n``.  The unit tests feed the renderer's output to supervisor's own parser.
"""

import os
import subprocess
import sys

import pytest
import yaml
from conftest import GALAXYCTL, Galaxyctl, free_port, wait_for
from hostile_values import ENV_CARRIED, ENV_REFUSED, HOSTILE, LONG, xml_safe  # noqa: F401 - shared table

from galaxyctl_libs.backends.supervisor import client as supervisor_client
from galaxyctl_libs.backends.supervisor import render as sup
from galaxyctl_libs.demo import make_demo_galaxy

# supervisor's environment lexer has no escape character and strips quotes at both ends of a value
# as directory names (a path component holds at most 255 bytes)
PATH_VALUES = {k: v for k, v in HOSTILE.items() if k not in ("long", "empty")}
PATH_VALUES["long"] = LONG[:200]


# ---------------------------------------------------------------- helpers


def proc_cmdline(pid):
    with open(f"/proc/{pid}/cmdline", "rb") as handle:
        return handle.read().split(b"\0")[:-1]


def proc_environ(pid):
    with open(f"/proc/{pid}/environ", "rb") as handle:
        return dict(item.split(b"=", 1) for item in handle.read().split(b"\0") if item)


def encoded(values):
    return [v.encode() for v in values]


def supervisord_pids(state_dir):
    """{"group:name": PID} of the processes supervisord runs (asked in-process: no galaxyctl run per poll)."""
    infos = supervisor_client.SupervisorClient(sup.Paths(state_dir)).survey().processes or {}
    return {name: info["pid"] for name, info in infos.items() if info["pid"]}


def wait_for_pids(state_dir, names, timeout=30):
    found = wait_for(
        lambda: (lambda pids: pids if set(names) <= set(pids) else None)(supervisord_pids(state_dir)),
        timeout=timeout,
        interval=0.1,
    )
    assert found, f"not all of {names} got a PID: {supervisord_pids(state_dir)}"
    return found


def exec_done(pid, tail):
    """True once ``pid`` runs the program whose argv ends with ``tail`` (supervisord forks, then execs)."""
    return wait_for(lambda: proc_cmdline(pid)[-len(tail) :] == tail, timeout=20)


def run(state_dir, *args):
    env = dict(os.environ, GALAXYCTL_ALLOW_ROOT="1")
    env.pop("GRAVITY_STATE_DIR", None)
    return subprocess.run(
        [sys.executable, GALAXYCTL, "--state-dir", state_dir, *args],
        capture_output=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env=env,
    )


def assert_one_line(result, *fragments):
    stderr = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 1, (result.returncode, stderr)
    lines = [line for line in stderr.splitlines() if not line.startswith("galaxyctl: warning:")]
    assert len(lines) == 1 and lines[0].startswith("galaxyctl: error: "), stderr
    assert "Traceback" not in stderr and all(f in lines[0] for f in fragments), stderr


def entries(directory):
    return sorted(os.listdir(directory))


# ---------------------------------------------------------------- the renderer, read back by supervisor itself


# ---------------------------------------------------------------- real processes: environment and argv


def test_environment_and_arguments_reach_the_processes_byte_exact(gctl, demo_galaxy):
    env = {f"GXT_{name}": value for name, value in ENV_CARRIED.items()}
    extra = [item for value in HOSTILE.values() for item in ("--statsd-prefix", value)]  # gunicorn ignores it
    pools = [value for value in HOSTILE.values() if value.strip()]  # gravity strips pool names
    config, _ = demo_galaxy(
        gravity={
            "gunicorn": {"environment": env, "extra_args": extra},
            "handlers": {"h1": {"environment": env, "pools": pools, "start_timeout": 1}},
        }
    )
    gctl("register", config)
    gctl("start", "--no-wait")
    pids = wait_for_pids(gctl.state_dir, ["gunicorn:gunicorn", "h1:h1"])

    gunicorn = pids["gunicorn:gunicorn"]
    # extra_args come before --no-control-socket, as gravity orders them: a contiguous run, not the tail
    assert wait_for(lambda: contains_run(proc_cmdline(gunicorn), encoded(extra)), timeout=20), proc_cmdline(gunicorn)
    handler = pids["h1:h1"]
    handler_tail = encoded(["--server-name=h1"] + [f"--attach-to-pool={p.strip()}" for p in pools])
    assert exec_done(handler, handler_tail), proc_cmdline(handler)
    for pid in (gunicorn, handler):
        received = proc_environ(pid)
        for name, value in env.items():
            assert received.get(name.encode()) == value.encode(), (pid, name)
    assert proc_environ(gunicorn)[b"GALAXY_CONFIG_FILE"] == config.encode()
    assert contains_run(proc_cmdline(handler), encoded(["-c", config]))  # a handler gets its config as gravity's do
    gctl("stop")


@pytest.mark.parametrize("where", ["gunicorn", "handler"])
@pytest.mark.parametrize("value", list(ENV_REFUSED.values()), ids=list(ENV_REFUSED))
def test_environment_values_that_cannot_be_carried_are_refused_by_update(gctl, demo_galaxy, where, value):
    section = {"environment": {"GXT": value}}
    config, _ = demo_galaxy(gravity={"gunicorn": section} if where == "gunicorn" else {"handlers": {"h1": section}})
    gctl("register", config)
    service = "gunicorn" if where == "gunicorn" else "h1"
    assert_one_line(run(gctl.state_dir, "update"), f"_default_/{service}: environment GXT ", "supervisord cannot pass")
    assert not os.path.exists(os.path.join(gctl.state_dir, "supervisor"))


# ---------------------------------------------------------------- real processes: paths


def contains_run(items, run):
    """Does ``items`` hold ``run`` as consecutive elements?"""
    return any(items[i : i + len(run)] == run for i in range(len(items) - len(run) + 1))


def fake_venv(path):
    """A virtualenv as galaxyctl sees one: ``bin/python`` (this interpreter, which runs the demo's
    scripts/galaxy-main for a handler, as gravity runs a source tree's)."""
    os.makedirs(os.path.join(path, "bin"), exist_ok=True)
    os.symlink(sys.executable, os.path.join(path, "bin", "python"))
    return path


def test_paths_reach_the_processes_byte_exact(gctl, short_tmp):
    """The config file's path (so the Galaxy root, working directory and ``-c CONFIG``), log_dir and
    virtualenv, one instance per hostile value under one supervisord."""
    expected = {}
    for number, value in enumerate(PATH_VALUES.values()):
        root = os.path.join(short_tmp, value)
        venv = fake_venv(os.path.join(root, value, "venv"))  # VIRTUAL_ENV may not end with a quote: see below
        log_dir = os.path.join(short_tmp, "logs", xml_safe(value))  # XML-RPC reports it: see below
        config = make_demo_galaxy(
            root,
            free_port(),
            gravity={
                "instance_name": f"i{number}",
                "gunicorn": {"enable": False},
                "log_dir": log_dir,
                "virtualenv": venv,
                "handlers": {"h1": {"start_timeout": 1}},
            },
        )
        expected[f"i{number}:h1"] = (root, config, venv, log_dir)
    gctl("register", *[config for _, config, _, _ in expected.values()])
    gctl("start", "--no-wait")
    pids = wait_for_pids(gctl.state_dir, list(expected))
    for key, (root, config, venv, log_dir) in expected.items():
        pid = pids[key]
        # gravity's form for a source tree: the venv's python runs ./scripts/galaxy-main in the root
        tail = encoded(["./scripts/galaxy-main", "-c", config, "--server-name=h1"])
        assert exec_done(pid, tail), (key, proc_cmdline(pid))
        assert os.readlink(f"/proc/{pid}/cwd".encode()) == root.encode()
        received = proc_environ(pid)
        assert received[b"VIRTUAL_ENV"] == venv.encode()
        # an element, not the prefix: a pyenv shim for the demo's '/usr/bin/env python3' prepends its own
        assert os.path.join(venv, "bin").encode() in received[b"PATH"].split(b":")
        # supervisord opened the log file at exactly this path
        log = os.path.join(log_dir, f"{key.split(':')[0]}_galaxy_standalone_h1.log")
        assert wait_for(
            lambda: os.path.exists(log) and "demo handler h1" in open(log, encoding="utf-8").read(), timeout=20
        ), (key, os.listdir(log_dir) if os.path.isdir(log_dir) else None)
    gctl("stop")  # supervisord stops one group at a time when it is itself told to end: slow for many


@pytest.mark.parametrize(
    "where, value, fragment",
    [
        ("root", "g\nx", "cannot carry a newline"),
        ("log_dir", "log\nx", "gravity.log_dir: must not contain a newline"),
        ("log_dir", "log\x1ex", "supervisord reports log file paths over XML-RPC"),
        ("virtualenv", "/v\rx", "gravity.virtualenv: must not contain a newline"),
        ("virtualenv", "v:x", "PATH cannot carry a ':' in a directory"),
        ("virtualenv", "'venv'", "'venv'\": supervisord cannot pass"),
    ],
)
def test_paths_that_cannot_be_carried_are_refused_by_update(gctl, short_tmp, where, value, fragment):
    root = os.path.join(short_tmp, value if where == "root" else "g")
    # the handler alone (scripts/galaxy-main): gunicorn would first need a real virtualenv
    gravity = {"handlers": {"h1": {}}, "gunicorn": {"enable": False}}
    if where == "virtualenv" and not value.startswith("/"):
        value = fake_venv(os.path.join(short_tmp, value))  # a real one: the handler runs its bin/python
    if where != "root":
        gravity[where] = value
    config = make_demo_galaxy(root, free_port(), gravity=gravity)
    registered = run(gctl.state_dir, "register", config)
    if registered.returncode == 0:
        result = run(gctl.state_dir, "update")
    else:
        result = registered
    assert_one_line(result, fragment)
    assert not os.path.exists(os.path.join(gctl.state_dir, "supervisor"))


# ---------------------------------------------------------------- real processes: the state dir


STATE_DIRS = [
    # (state dir name, where a value cut at the first whitespace + ';'/'#' would end)
    ("s a ;b #c %(here)s %(ENV_HOME)s 100%", "s a"),
    ("s\tq\"u 'x' $HOME Grüße ✓ a\t#b ", "s\tq\"u 'x' $HOME Grüße ✓ a"),
]


@pytest.mark.parametrize("name, truncated", STATE_DIRS, ids=["comment-characters", "quotes-tab-unicode"])
def test_state_dir_with_comment_characters_is_used_exactly(short_tmp, name, truncated):
    """A state dir with whitespace + ';'/'#': supervisord binds, logs and writes its pid exactly there, and
    nothing outside the state dir is created or replaced (the old renderer bound the socket at the cut path)."""
    galaxy = os.path.join(short_tmp, "g")
    config = make_demo_galaxy(
        galaxy, free_port(), gravity={"gunicorn": {"enable": False}, "handlers": {"h1": {"start_timeout": 1}}}
    )
    precious = os.path.join(short_tmp, truncated)
    with open(precious, "w") as handle:
        handle.write("precious\n")
    before = entries(short_tmp)
    gctl = Galaxyctl(os.path.join(short_tmp, name))
    try:
        gctl("register", config)
        gctl("start", "--no-wait")
        pid = wait_for_pids(gctl.state_dir, ["h1:h1"])["h1:h1"]
        paths = sup.Paths(gctl.state_dir)
        assert gctl.supervisord_pid() is not None  # read from the pid file at the exact path
        assert os.path.exists(paths.socket) and os.path.exists(paths.log)
        log = os.path.join(gctl.state_dir, "log", "h1.log")
        assert wait_for(lambda: os.path.exists(log) and "demo handler h1" in open(log).read(), timeout=20)
        assert "h1 " in gctl("supervisorctl", "status", check=False).stdout  # it read serverurl exactly
        assert exec_done(pid, encoded(["--server-name=h1"]))
        assert entries(short_tmp) == sorted(set(before) | {name})
        with open(precious) as handle:
            assert handle.read() == "precious\n"
    finally:
        gctl.cleanup()


def test_state_dir_with_a_newline_is_refused(short_tmp):
    config = make_demo_galaxy(os.path.join(short_tmp, "g"), free_port())
    state_dir = os.path.join(short_tmp, "s\nx")
    assert run(state_dir, "register", config).returncode == 0
    before = entries(short_tmp)
    assert_one_line(run(state_dir, "update"), "state dir '", "newline")
    assert entries(short_tmp) == before and not os.path.exists(os.path.join(state_dir, "supervisor"))


def test_instance_name_from_a_hand_edited_state_file_is_refused(gctl, demo_galaxy):
    config, _ = demo_galaxy()
    gctl("register", config)
    state_file = os.path.join(gctl.state_dir, "configstate.yaml")
    with open(state_file) as handle:
        data = yaml.safe_load(handle)
    data["config_files"][config]["instance_name"] = "x]\n[program:evil"
    with open(state_file, "w") as handle:
        yaml.safe_dump(data, handle)
    assert_one_line(run(gctl.state_dir, "update"), "instance name ", "cannot name a supervisord program")
    assert not os.path.exists(os.path.join(gctl.state_dir, "supervisor"))
