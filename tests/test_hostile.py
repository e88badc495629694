"""Hostile and broken input: one line on stderr, exit 1, nothing changed — and no traceback, ever.

Table-driven cases go through the real CLI; hypothesis fuzzes the loaders in-process.
"""

import hashlib
import os
import pathlib
import subprocess
import sys

import pytest
import yaml
from conftest import GALAXYCTL
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from galaxyctl_libs.core import config, jobconf, state
from galaxyctl_libs.core import uwsgi_config as uwsgi
from galaxyctl_libs.errors import GalaxyctlError

GOOD = "gravity:\n  gunicorn:\n    bind: localhost:18080\n  celery:\n    enable: false\n    enable_beat: false\n"


def gravity(section):
    return yaml.safe_dump({"gravity": section})


# (name, file to write, its content, what the single error line must contain)
CASES = [
    # galaxy.yml: YAML syntax
    ("yaml-unclosed-flow", "galaxy.yml", "gravity:\n  gunicorn: {bind: x\n", "YAML syntax error"),
    ("yaml-bad-indent", "galaxy.yml", "gravity:\n  gunicorn:\n bind: x\n", "YAML syntax error"),
    ("yaml-tab", "galaxy.yml", "gravity:\n\tgunicorn: {}\n", "YAML syntax error"),
    ("yaml-unknown-tag", "galaxy.yml", "gravity: !python/object:os.system {}\n", "YAML syntax error"),
    ("yaml-duplicate-doc", "galaxy.yml", "gravity: {}\n---\ngravity: {}\n", "YAML"),
    ("yaml-binary", "galaxy.yml", b"\xff\xfe\x00garbage", "not valid UTF-8"),
    ("yaml-top-list", "galaxy.yml", "- gravity\n", "expected a mapping at the top level"),
    ("yaml-top-scalar", "galaxy.yml", "just a string\n", "expected a mapping at the top level"),
    ("include-missing", "galaxy.yml", "gravity: !include nope.yml\n", "config file not found"),
    ("include-self", "galaxy.yml", "gravity: !include galaxy.yml\n", "includes itself"),
    ("include-list", "galaxy.yml", "gravity: !include [a, b]\n", "YAML syntax error"),
    # galaxy.yml: types and values
    ("gravity-list", "galaxy.yml", "gravity: [1]\n", "gravity[0]: each instance of a gravity: list is a mapping"),
    ("galaxy-list", "galaxy.yml", "galaxy: [1]\n", "galaxy: expected a mapping"),
    (
        "workers-text",
        "galaxy.yml",
        gravity({"gunicorn": {"workers": "many"}}),
        "gravity.gunicorn.workers: expected an integer",
    ),
    (
        "workers-negative",
        "galaxy.yml",
        gravity({"gunicorn": {"workers": -2}}),
        "gravity.gunicorn.workers: -2 is out of range",
    ),
    ("workers-float", "galaxy.yml", gravity({"gunicorn": {"workers": 1.5}}), "expected an integer"),
    (
        "timeout-text",
        "galaxy.yml",
        gravity({"gunicorn": {"timeout": "long"}}),
        "gravity.gunicorn.timeout: expected a number",
    ),
    (
        "enable-text",
        "galaxy.yml",
        gravity({"celery": {"enable": "sometimes"}}),
        "gravity.celery.enable: expected true or false",
    ),
    (
        "port-big",
        "galaxy.yml",
        gravity({"gx_it_proxy": {"port": 99999}}),
        "gravity.gx_it_proxy.port: 99999 is out of range",
    ),
    ("port-zero", "galaxy.yml", gravity({"tusd": {"port": 0}}), "gravity.tusd.port: 0 is out of range"),
    ("loglevel", "galaxy.yml", gravity({"celery": {"loglevel": "TRACE"}}), "gravity.celery.loglevel: expected one of"),
    ("pool", "galaxy.yml", gravity({"celery": {"pool": "gevent2"}}), "gravity.celery.pool: expected one of"),
    ("app-server", "galaxy.yml", gravity({"app_server": "apache"}), "gravity.app_server: expected one of"),
    (
        "process-manager",
        "galaxy.yml",
        gravity({"process_manager": "runit"}),
        "gravity.process_manager: expected one of",
    ),
    ("umask-text", "galaxy.yml", gravity({"umask": "rw-r--r--"}), "gravity.umask: expected an octal umask"),
    (
        "umask-nine",
        "galaxy.yml",
        gravity({"gunicorn": {"umask": "099"}}),
        "gravity.gunicorn.umask: expected an octal umask",
    ),
    (
        "env-list",
        "galaxy.yml",
        gravity({"gunicorn": {"environment": ["A=1"]}}),
        "gravity.gunicorn.environment: expected a mapping",
    ),
    (
        "env-name",
        "galaxy.yml",
        gravity({"celery": {"environment": {"A B": "1"}}}),
        "is not a valid environment variable name",
    ),
    (
        "env-nested",
        "galaxy.yml",
        gravity({"celery": {"environment": {"A": {"b": 1}}}}),
        "gravity.celery.environment.A: expected a string",
    ),
    ("section-text", "galaxy.yml", gravity({"celery": "off"}), "gravity.celery: expected a mapping"),
    ("gunicorn-empty-list", "galaxy.yml", gravity({"gunicorn": []}), "gravity.gunicorn: an empty list"),
    (
        "gunicorn-list-bad",
        "galaxy.yml",
        gravity({"gunicorn": [{"workers": "x"}]}),
        "gravity.gunicorn[0].workers: expected an integer",
    ),
    (
        "instance-name-slash",
        "galaxy.yml",
        gravity({"instance_name": "../etc"}),
        "gravity.instance_name: '../etc' may only contain",
    ),
    (
        "extra-args-quote",
        "galaxy.yml",
        gravity({"gunicorn": {"extra_args": "--foo 'bar"}}),
        "cannot split into arguments",
    ),
    ("handlers-list", "galaxy.yml", gravity({"handlers": ["h"]}), "gravity.handlers: expected a mapping"),
    (
        "handlers-processes",
        "galaxy.yml",
        gravity({"handlers": {"h": {"processes": "two"}}}),
        "gravity.handlers.h.processes",
    ),
    ("handlers-pools", "galaxy.yml", gravity({"handlers": {"h": {"pools": [["nested"]]}}}), "gravity.handlers.h.pools"),
    ("handler-name", "galaxy.yml", gravity({"handlers": {"h h": {}}}), "h h"),
    ("config-file-int", "gravity.yml", "galaxy_config_file: 3\n", "gravity.galaxy_config_file: expected a string"),
    ("luks-text", "galaxy.yml", gravity({"luks": "yes"}), "gravity.luks: expected a mapping"),
    # injection attempts into the supervisor files
    (
        "inject-newline-bind",
        "galaxy.yml",
        gravity({"gunicorn": {"bind": "x:1\n[program:evil]\ncommand=/bin/sh"}}),
        "must not contain a newline",
    ),
    (
        "inject-newline-env",
        "galaxy.yml",
        gravity({"gunicorn": {"environment": {"A": "1\n[program:evil]"}}}),
        "must not contain a newline",
    ),
    (
        "inject-cr-user",
        "galaxy.yml",
        gravity({"galaxy_user": "galaxy\r\nuser=root"}),
        "gravity.galaxy_user: must not contain a newline",
    ),
    ("inject-nul", "galaxy.yml", gravity({"virtualenv": "/venv\x00/x"}), "must not contain a newline or NUL"),
    (
        "inject-handler-env",
        "galaxy.yml",
        gravity({"handlers": {"h": {"environment": {"X": "a\nb"}}}}),
        "gravity.handlers.h.environment",
    ),
    # job_conf
    (
        "jobconf-xml-broken",
        "job_conf.xml",
        "<job_conf><handlers><handler id='a'></handlers></job_conf>",
        "job_conf.xml",
    ),
    ("jobconf-xml-no-id", "job_conf.xml", "<job_conf><handlers><handler/></handlers></job_conf>", "job_conf.xml"),
    ("jobconf-yml-broken", "job_conf.yml", "handling: {processes: [\n", "job_conf.yml"),
    ("jobconf-yml-processes-list", "job_conf.yml", "handling:\n  processes: [a, b]\n", "job_conf.yml"),
    ("jobconf-yml-top-list", "job_conf.yml", "- a\n", "job_conf.yml"),
    # galaxy.ini (legacy uWSGI)
    ("ini-no-section", "galaxy.ini", "socket = 127.0.0.1:1\n", "galaxy.ini"),
    ("ini-bad-header", "galaxy.ini", "[uwsgi\nsocket = :1\n", "galaxy.ini"),
    ("ini-bad-socket", "galaxy.ini", "[uwsgi]\nsocket = 127.0.0.1:notaport\n", "galaxy.ini"),
    ("ini-binary", "galaxy.ini", b"[uwsgi]\nsocket = \xff\xff\n", "galaxy.ini"),
]

STATE_CASES = [
    ("state-yaml", "config_files: {\n", "YAML error"),
    ("state-list", "- 1\n", "expected a mapping at the top level"),
    ("state-files-list", "config_files: [a]\n", "config_files is not a mapping"),
    ("state-entry-scalar", "config_files:\n  /x.yml: 3\n", "is not a mapping"),
    ("state-attribs-list", "config_files:\n  /x.yml:\n    attribs: [1]\n", "attribs must be a mapping"),
    (
        "state-service-no-name",
        "config_files:\n  /x.yml:\n    services: [{service_type: gunicorn}]\n",
        "lacks service_name",
    ),
    ("state-binary", b"\x00\x01\x02", "corrupt state file"),
]


def snapshot(directory):
    """Every file under ``directory`` with a hash of its bytes."""
    found = {}
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as handle:
                found[path] = hashlib.sha256(handle.read()).hexdigest()
    return found


def run(state_dir, *args):
    env = dict(os.environ, GALAXYCTL_ALLOW_ROOT="1")
    return subprocess.run(
        [sys.executable, GALAXYCTL, "--state-dir", state_dir, *args],
        capture_output=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env=env,
    )


def assert_one_line(result, fragment):
    stderr = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 1, (result.returncode, stderr)
    lines = [line for line in stderr.splitlines() if not line.startswith("galaxyctl: warning:")]
    assert len(lines) == 1 and lines[0].startswith("galaxyctl: error: "), stderr
    assert "Traceback" not in stderr and fragment in lines[0], stderr


@pytest.fixture
def installed(short_tmp):
    """A registered, updated config: (state dir, config dir).  (short_tmp: supervisord's socket path
    must stay short, and pytest-xdist lengthens tmp_path.)"""
    config_dir = pathlib.Path(short_tmp) / "galaxy" / "config"
    config_dir.mkdir(parents=True)
    (config_dir / "galaxy.yml").write_text(GOOD)
    state_dir = os.path.join(short_tmp, "state")
    assert run(state_dir, "register", str(config_dir / "galaxy.yml")).returncode == 0
    assert run(state_dir, "update").returncode == 0
    return state_dir, config_dir


def test_there_are_at_least_fifty_cases():
    assert len(CASES) + len(STATE_CASES) >= 50


@pytest.mark.parametrize("name, filename, content, fragment", CASES, ids=[c[0] for c in CASES])
def test_malformed_input_is_one_line_and_changes_nothing(installed, name, filename, content, fragment):
    state_dir, config_dir = installed
    target = config_dir / filename
    if isinstance(content, bytes):
        target.write_bytes(content)
    else:
        target.write_text(content)
    if filename == "gravity.yml":
        command = ["register", str(target)]
    elif filename == "galaxy.ini":
        command = ["register", str(target)]
    else:
        command = ["update"]
    before = snapshot(state_dir)
    assert_one_line(run(state_dir, *command), fragment)
    assert snapshot(state_dir) == before


@pytest.mark.parametrize("name, content, fragment", STATE_CASES, ids=[c[0] for c in STATE_CASES])
def test_corrupt_state_is_one_line_and_never_overwritten(installed, name, content, fragment):
    state_dir, config_dir = installed
    path = os.path.join(state_dir, "configstate.yaml")
    with open(path, "wb") as handle:
        handle.write(content if isinstance(content, bytes) else content.encode())
    before = snapshot(state_dir)
    for command in (["update"], ["register", str(config_dir / "galaxy.yml")], ["start", "--no-wait"]):
        assert_one_line(run(state_dir, *command), fragment)
        assert snapshot(state_dir) == before


def test_expansion_syntax_reaches_the_process_intact(gctl, demo_galaxy, short_tmp):
    """'%(' is valid Galaxy configuration: supervisord must not expand it (the renderer escapes it)."""
    log_dir = os.path.join(short_tmp, "%(program_name)s")
    config, _ = demo_galaxy(
        gravity={
            "log_dir": log_dir,
            "gunicorn": {"environment": {"A": "%(ENV_HOME)s"}, "extra_args": "--statsd-prefix %(here)s"},
        }
    )
    gctl("register", config)
    gctl("start", "--timeout", "60")
    pid = yaml.safe_load(gctl("status", "--json").stdout)["services"][0]["pid"]
    with open(f"/proc/{pid}/cmdline", "rb") as handle:
        argv = handle.read().split(b"\0")
    assert b"--statsd-prefix\0%(here)s" in b"\0".join(argv)  # intact, wherever gravity's order puts it
    with open(f"/proc/{pid}/environ", "rb") as handle:
        assert b"A=%(ENV_HOME)s" in handle.read().split(b"\0")
    assert os.path.exists(os.path.join(log_dir, "gunicorn.log"))
    gctl("stop")


# ---------------------------------------------------------------- fuzzing the loaders


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
yaml_like = st.one_of(
    st.text(max_size=300),
    st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)),
        lambda children: st.one_of(
            st.lists(children, max_size=4), st.dictionaries(st.text(max_size=12), children, max_size=4)
        ),
        max_leaves=20,
    ).map(lambda data: yaml.safe_dump(data)),
    st.dictionaries(
        st.sampled_from(["gunicorn", "celery", "tusd", "handlers", "umask", "app_server", "log_dir", "gx_it_proxy"]),
        st.one_of(
            st.none(), st.integers(), st.text(max_size=10), st.dictionaries(st.text(max_size=8), st.text(max_size=8))
        ),
    ).map(lambda data: yaml.safe_dump({"gravity": data})),
)


def only_our_error(function, *args):
    try:
        function(*args)
    except GalaxyctlError as exc:
        assert exc.message and "\n" not in exc.message


@FUZZ
@given(text=yaml_like)
def test_fuzz_config_loader(tmp_path, text):
    path = tmp_path / "galaxy.yml"
    path.write_text(text)
    only_our_error(lambda: config.parse_gravity(config.load_config(str(path)).gravity_raw, str(path)))


@FUZZ
@given(text=yaml_like)
def test_fuzz_state_parser(tmp_path, text):
    only_our_error(state.parse_state, str(tmp_path), text, str(tmp_path / "configstate.yaml"))


@FUZZ
@given(text=st.one_of(st.text(max_size=300), yaml_like))
def test_fuzz_job_conf(tmp_path, text):
    (tmp_path / "job_conf.yml").write_text(text)
    (tmp_path / "galaxy.yml").write_text("galaxy: {}\n")
    only_our_error(jobconf.load_job_handlers, {"job_config_file": "job_conf.yml"}, str(tmp_path / "galaxy.yml"), {})


@FUZZ
@given(text=st.text(max_size=300), suffix=st.sampled_from([".ini", ".yml"]))
def test_fuzz_uwsgi_config(tmp_path, text, suffix):
    path = tmp_path / f"galaxy{suffix}"
    path.write_text(text)
    only_our_error(uwsgi.read_uwsgi_config, str(path))
