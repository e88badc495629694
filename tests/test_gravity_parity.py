"""``galaxyctl exec -n SERVICE`` prints what gravity 1.2.4's does (its ``Working directory:`` and
``Executing:`` lines, the same cwd, argv and environment), for one rich config.

gravity 1.2.4 comes from PyPI into a venv of its own under the temp dir (reused between local runs:
the ``gravity_galaxyctl`` fixture of conftest.py);
both tools print the service for the same ``galaxy.yml`` and the test compares (cwd, environment,
argv) service by service, after normalising only the differences README.rst lists ("Command lines:
what differs from gravity 1.x and why"):

- executables: ours are absolute paths (gravity leaves a bare name to PATH);
- ``--no-control-socket``: ours asks the installed gunicorn, gravity reads Galaxy's requirements.txt;
- our marker variables GALAXYCTL_STATE_ID and GALAXYCTL_SERVICE;
- PATH: gravity writes the virtualenv's bin with a trailing slash.

The herder around a preloaded gunicorn is not in ``exec -n`` (the supervisor file wraps it).
"""

import os
import shlex
import subprocess
import sys

import pytest
import yaml

from galaxyctl_libs.demo import make_demo_galaxy

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GALAXYCTL = os.path.join(REPO, "galaxyctl")
RUN_TIMEOUT = 120
MARKERS = ("GALAXYCTL_STATE_ID", "GALAXYCTL_SERVICE")

# (gravity's service name, its --service-instance or None, our service name)
SERVICES = [
    ("gunicorn", 0, "gunicorn_0"),
    ("gunicorn", 1, "gunicorn_1"),
    ("celery", None, "celery"),
    ("celery-beat", None, "celery-beat"),
    ("gx-it-proxy", None, "gx-it-proxy"),
    ("tusd", 0, "tusd_0"),
    ("tusd", 1, "tusd_1"),
    ("reports", None, "reports"),
    ("handler", 0, "handler_0"),
    ("handler", 1, "handler_1"),
    ("special", 0, "special-_default_-0"),
    ("special", 1, "special-_default_-1"),
    ("explicit3", None, "explicit3"),
    ("static_handler", None, "static_handler"),
]


def _fake_venv(directory):
    """A virtualenv as far as the command lines go: bin/python and the tools, never run."""
    for exe in ("python", "gunicorn", "celery", "npx", "galaxy-main"):
        path = os.path.join(directory, "bin", exe)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as handle:
            handle.write("#!/bin/sh\nexit 0\n")
        os.chmod(path, 0o755)


@pytest.fixture(scope="module")
def rich_config(tmp_path_factory):
    """One galaxy.yml setting every gravity 1.2.4 key that changes a command line or environment."""
    base = str(tmp_path_factory.mktemp("parity"))
    venv = os.path.join(base, "venv")
    _fake_venv(venv)
    root = os.path.join(base, "galaxy")
    gravity = {
        "process_manager": "supervisor",
        "galaxy_root": root,
        "virtualenv": venv,
        "umask": "027",
        "gunicorn": [
            {
                "bind": "127.0.0.1:8081",
                "workers": 2,
                "timeout": 600,
                "preload": True,
                "extra_args": "--forwarded-allow-ips='*' --max-requests 1000",
                "environment": {"FOO": "bar baz"},
            },
            {"bind": "unix:/tmp/parity-g2.sock", "preload": False, "umask": "002"},
        ],
        "celery": {
            "enable": True,
            "enable_beat": True,
            "concurrency": 4,
            "loglevel": "INFO",
            "pool": "prefork",
            "queues": "celery,galaxy.internal",
            "extra_args": "-n worker1@%h",
            "environment": {"C_FORCE_ROOT": "1", "PATH": "/opt/celery/bin"},
        },
        "gx_it_proxy": {
            "enable": True,
            "version": ">=0.0.7",
            "ip": "0.0.0.0",
            "port": 4003,
            "sessions": "database/ignored.sqlite",
            "verbose": True,
            "forward_ip": "10.0.0.2",
            "forward_port": 8000,
            "reverse_proxy": True,
            "environment": {"NODE_ENV": "production"},
        },
        "tusd": [
            {
                "enable": True,
                "tusd_path": "/opt/tusd/tusd",
                "upload_dir": "/data/tus",
                "port": 1081,
                "extra_args": "-behind-proxy -max-size 1000",
            },
            {
                "enable": True,
                "upload_dir": "/data/tus2",
                "host": "0.0.0.0",
                "hooks_http": "https://hooks.example.org/hooks",
                "hooks_enabled_events": "pre-create,post-finish",
                "environment": {"T": "2"},
            },
        ],
        "reports": {
            "enable": True,
            "config_file": "reports.yml",
            "bind": "127.0.0.1:9002",
            "workers": 2,
            "timeout": 120,
            "url_prefix": "/reports",
            "extra_args": "--log-level debug",
            "environment": {"R": "1"},
        },
        "handlers": {
            "handler": {
                "processes": 2,
                "pools": ["job-handlers", "workflow-schedulers"],
                "environment": {"H": "x y"},
            },
            "special": {"processes": 2, "name_template": "{name}-{instance_name}-{process}"},
            "explicit3": {},
        },
    }
    galaxy = {
        "interactivetools_enable": True,
        "interactivetools_map": "/data/it.sqlite",
        "interactivetools_base_path": "/galaxy/",
        "interactivetools_prefix": "its",
        "galaxy_infrastructure_url": "https://galaxy.example.org/",
        "galaxy_url_prefix": "/galaxy",
        "tus_upload_store": "/data/tus",
    }
    config = make_demo_galaxy(root, gravity=gravity, galaxy=galaxy)
    config_dir = os.path.dirname(config)
    with open(os.path.join(config_dir, "reports.yml"), "w") as handle:
        handle.write("reports: {}\n")
    job_conf = {
        "runners": {"local": {"load": "galaxy.jobs.runners.local:LocalJobRunner"}},
        "handling": {
            "assign": ["db-skip-locked"],
            "processes": {"static_handler": {"environment": {"S": "1"}}},
        },
    }
    with open(os.path.join(config_dir, "job_conf.yml"), "w") as handle:
        yaml.safe_dump(job_conf, handle)
    return config, base


def _environ(base):
    """A small, known environment for both tools (root may run them: CI does)."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": base,
        "LANG": "C.UTF-8",
        "GRAVITY_SKIP_SYSTEMD": "1",  # gravity as root: the supervisor process manager, no galaxy_user
        "GALAXYCTL_ALLOW_ROOT": "1",
    }


def _run(argv, base, cwd):
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env=_environ(base),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        timeout=RUN_TIMEOUT,
    )
    assert result.returncode == 0, f"{shlex.join(argv)}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result.stdout


def _split_env(words):
    env, index = {}, 0
    while index < len(words) and "=" in words[index] and words[index].split("=", 1)[0].isidentifier():
        name, value = words[index].split("=", 1)
        env[name] = value
        index += 1
    return env, words[index:]


def parse_gravity(output):
    """gravity prints ``Working directory: CWD`` and ``Executing: NAME=VALUE... COMMAND``."""
    cwd = argv = env = None
    for line in output.splitlines():
        if line.startswith("Working directory: "):
            cwd = line[len("Working directory: ") :]
        elif line.startswith("Executing: "):
            env, argv = _split_env(shlex.split(line[len("Executing: ") :]))
    assert cwd and argv, output
    return cwd, env, argv


def parse_ours(output):
    """ours prints gravity's two lines: parsed by gravity's parser, and nothing else is printed."""
    lines = output.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("Working directory: "), output
    assert lines[1].startswith("Executing: "), output
    return parse_gravity(output)


def normalise(cwd, env, argv, base_path):
    """Only the deliberate differences: executables' paths, --no-control-socket, markers, PATH's slashes."""
    env = {k: v for k, v in env.items() if k not in MARKERS}
    if "PATH" in env:
        env["PATH"] = ":".join(part.rstrip("/") or "/" for part in env["PATH"].split(":"))
        if env["PATH"] == base_path:
            del env["PATH"]  # ours prints only what differs from the inherited environment
    return cwd, env, [a for a in argv if a != "--no-control-socket"]


@pytest.fixture(scope="module")
def printed(gravity_galaxyctl, rich_config):
    """{our service name: (gravity's (cwd, env, argv), ours)} for every service of the config."""
    config, base = rich_config
    gravity_state = os.path.join(base, "gravity-state")
    our_state = os.path.join(base, "galaxyctl-state")
    _run([sys.executable, GALAXYCTL, "--state-dir", our_state, "register", config], base, base)
    result = {}
    for gravity_name, instance, ours in SERVICES:
        gravity_argv = [gravity_galaxyctl, "--state-dir", gravity_state, "-c", config, "exec", "-n"]
        gravity_argv += ["-i", str(instance), gravity_name] if instance is not None else [gravity_name]
        theirs = parse_gravity(_run(gravity_argv, base, base))
        mine = parse_ours(_run([sys.executable, GALAXYCTL, "--state-dir", our_state, "exec", "-n", ours], base, base))
        result[ours] = (theirs, mine, gravity_state, our_state)
    return result


@pytest.mark.parametrize("service", [ours for _, _, ours in SERVICES])
def test_exec_prints_gravitys_command_line_and_environment(printed, rich_config, service):
    (g_cwd, g_env, g_argv), (o_cwd, o_env, o_argv), gravity_state, our_state = printed[service]
    _, base = rich_config
    base_path = _environ(base)["PATH"]
    # the markers are there, and are ours alone
    assert o_env[MARKERS[1]] == f"_default_/{service}" and MARKERS[0] in o_env
    # each tool writes celery-beat's schedule in its own state dir
    g_argv = [a.replace(gravity_state, our_state) for a in g_argv]
    # gravity may leave a bare executable to PATH where ours found its absolute path: same program
    if os.path.isabs(g_argv[0]) != os.path.isabs(o_argv[0]):
        g_argv[0], o_argv[0] = os.path.basename(g_argv[0]), os.path.basename(o_argv[0])
    theirs = normalise(g_cwd, g_env, g_argv, base_path)
    mine = normalise(o_cwd, o_env, o_argv, base_path)
    assert mine == theirs


def test_gravity_reads_a_many_hosts_config_as_if_its_keys_were_not_there(gravity_galaxyctl, printed, rich_config):
    """gravity 1.2.4 drops the keys it does not know: ``gravity.hosts`` and ``gravity.beat_host`` (ours,
    README "Many hosts") leave every command line it prints as it was, so one shared galaxy.yml
    still serves a host that runs gravity."""
    config, base = rich_config
    with open(config) as handle:
        document = yaml.safe_load(handle)
    document["gravity"]["hosts"] = {
        "web1": {"services": ["gunicorn", "tusd", "gx_it_proxy", "reports"], "address": "10.0.0.1"},
        "default": {"services": ["celery"], "handlers": {"handler": 2, "special": 2, "explicit3": 1}},
    }
    document["gravity"]["beat_host"] = "jobs1"
    cluster_config = os.path.join(os.path.dirname(config), "galaxy-hosts.yml")
    with open(cluster_config, "w") as handle:
        yaml.safe_dump(document, handle, sort_keys=False)
    state = os.path.join(base, "gravity-hosts-state")
    for gravity_name, instance, ours in SERVICES:
        argv = [gravity_galaxyctl, "--state-dir", state, "-c", cluster_config, "exec", "-n"]
        argv += ["-i", str(instance), gravity_name] if instance is not None else [gravity_name]
        cwd, env, command = parse_gravity(_run(argv, base, base))
        (g_cwd, g_env, g_argv), _, gravity_state, _ = printed[ours]

        def as_plain(text, gravity_state=gravity_state):  # the other file and state dir, else the same
            return text.replace(cluster_config, config).replace(state, gravity_state)

        env = {name: as_plain(value) for name, value in env.items()}
        assert (cwd, env, [as_plain(a) for a in command]) == (g_cwd, g_env, g_argv), ours
