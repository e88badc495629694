"""Configuration and configstate: pure loading, precedence, and bad input through the CLI."""

import os
import shutil
import subprocess
import sys

import pytest
from conftest import GALAXYCTL


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(text)
    return path


# ---------------------------------------------------------------- bad input through the CLI


def run_cli(state_dir, *args):
    env = dict(os.environ, GALAXYCTL_ALLOW_ROOT="1")
    return subprocess.run(
        [sys.executable, GALAXYCTL, "--state-dir", state_dir, *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env=env,
    )


@pytest.fixture
def registered(short_tmp):
    """A state dir with one registered config; returns (state_dir, config path, configstate bytes).
    (short_tmp: supervisord's socket path must stay short, and pytest-xdist lengthens tmp_path.)"""
    cfg = write(
        os.path.join(short_tmp, "galaxy", "config", "galaxy.yml"), "gravity:\n  gunicorn:\n    bind: localhost:1\n"
    )
    state_dir = os.path.join(short_tmp, "state")
    assert run_cli(state_dir, "register", cfg).returncode == 0
    with open(os.path.join(state_dir, "configstate.yaml"), "rb") as handle:
        return state_dir, cfg, handle.read()


def assert_one_line_error(result, fragment, code=1):
    assert result.returncode == code, result
    assert result.stderr.startswith("galaxyctl: error: "), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr and fragment in result.stderr


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("gravity:\n  gunicorn:\n    bind: [oops\n", "YAML syntax error"),
        ("gravity:\n  gunicorn:\n    workers: abc\n", "gravity.gunicorn.workers: expected an integer, got 'abc'"),
        ("gravity: [1, 2]\n", "gravity[0]: each instance of a gravity: list is a mapping naming its Galaxy config"),
        ("gravity: 3\n", "gravity: expected a mapping"),
        ("- just\n- a list\n", "expected a mapping at the top level"),
        ('gravity:\n  gunicorn:\n    bind: "a\\nb"\n', "must not contain a newline"),
        ("gravity: !include missing.yml\n", "config file not found"),
        ("gravity:\n  celery: {concurrency: -1}\n", "gravity.celery.concurrency: -1 is out of range"),
    ],
)
def test_bad_config_one_line_and_state_untouched(registered, content, fragment):
    state_dir, cfg, before = registered
    write(cfg, content)
    for command in (["update"], ["register", cfg], ["start", "--no-wait"]):
        result = run_cli(state_dir, *command)
        if command[0] == "register" and result.returncode == 0:
            continue  # already registered: register does not re-validate a known file
        assert_one_line_error(result, fragment)
        with open(os.path.join(state_dir, "configstate.yaml"), "rb") as handle:
            assert handle.read() == before


def test_missing_config_file(registered, tmp_path):
    state_dir, cfg, before = registered
    result = run_cli(state_dir, "register", str(tmp_path / "nope.yml"))
    assert_one_line_error(result, "config file not found")
    os.unlink(cfg)
    assert_one_line_error(run_cli(state_dir, "update"), f"config file not found: {cfg}")
    with open(os.path.join(state_dir, "configstate.yaml"), "rb") as handle:
        assert handle.read() == before


def test_unknown_key_is_a_warning_not_an_error(registered):
    state_dir, cfg, _ = registered
    write(cfg, "gravity:\n  gunicorn:\n    bind: localhost:1\n    wrokers: 2\n")
    result = run_cli(state_dir, "update")
    assert result.returncode == 0
    assert f"galaxyctl: warning: {cfg}: gravity.gunicorn.wrokers: unknown key, ignored" in result.stderr


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("config_files: [\n", "YAML error at line 2"),
        ("- a\n- b\n", "expected a mapping at the top level"),
        ("config_files: 3\n", "config_files is not a mapping"),
        ("config_files:\n  /x.yml:\n    services: 3\n", "services a list"),
    ],
)
def test_corrupt_configstate_is_reported_and_never_overwritten(registered, content, fragment):
    state_dir, cfg, _ = registered
    path = os.path.join(state_dir, "configstate.yaml")
    write(path, content)
    for command in (["update"], ["register", cfg], ["deregister", cfg], ["list"], ["start", "--no-wait"]):
        result = run_cli(state_dir, *command)
        assert_one_line_error(result, fragment)
        assert "corrupt state file" in result.stderr
        with open(path) as handle:
            assert handle.read() == content
    assert run_cli(state_dir, "status").returncode == 4


def test_usage_errors_exit_2_and_help_explains(tmp_path):
    result = run_cli(str(tmp_path), "frobnicate")
    assert result.returncode == 2
    helptext = run_cli(str(tmp_path), "start", "--help").stdout
    assert "--no-wait" in helptext and "--timeout" in helptext and "--foreground" in helptext


def test_register_deregister_rename_list(tmp_path):
    state_dir = str(tmp_path / "state")
    first = write(str(tmp_path / "a" / "galaxy.yml"), "gravity:\n  instance_name: a\n")
    second = write(str(tmp_path / "b" / "galaxy.yml"), "gravity:\n  instance_name: a\n")
    assert run_cli(state_dir, "register", first).returncode == 0
    assert "Already registered" in run_cli(state_dir, "register", first).stdout
    assert_one_line_error(run_cli(state_dir, "register", second), "instance name 'a' is already used")
    moved = str(tmp_path / "moved.yml")
    shutil.copy(first, moved)
    assert run_cli(state_dir, "rename", first, moved).returncode == 0
    listing = run_cli(state_dir, "list").stdout
    assert moved in listing and first not in listing
    assert run_cli(state_dir, "deregister", moved).returncode == 0
    assert "No config files registered" in run_cli(state_dir, "list").stdout
    assert_one_line_error(run_cli(state_dir, "deregister", moved), "not registered")
