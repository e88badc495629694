"""Bounded everything, through the real CLI: a config's numbers out of range (NaN, infinity, 10**5),
names too long for a file name, and supervisord refusing to start a service each end in one
``galaxyctl: error:`` line naming the key (or the service and supervisord's cause), never a traceback
half-way through an update or a start.
"""

import os

import pytest
from test_bounded_input import assert_one_error, snapshot, write

TIMEOUT = 120


def gravity_yaml(extra):
    """A config of the demo's shape, ``extra`` (YAML text under gravity:, two spaces in) added."""
    return (
        "gravity:\n"
        "  gunicorn:\n    bind: localhost:18080\n"
        "  celery:\n    enable: false\n    enable_beat: false\n"
        f"{extra}"
    )


@pytest.fixture
def registered(gctl, short_tmp):
    """A registered, updated good config; returns its path."""
    path = write(os.path.join(short_tmp, "galaxy", "config", "galaxy.yml"), gravity_yaml(""))
    gctl("register", path)
    gctl("update")
    return path


@pytest.mark.parametrize(
    "extra, message",
    [
        ("  memory_limit: .nan\n", "gravity.memory_limit: nan is out of range (0 to 1024)"),
        ("  memory_limit: .inf\n", "gravity.memory_limit: inf is out of range (0 to 1024)"),
        ("  memory_high: 4096\n", "gravity.memory_high: 4096 is out of range (0 to 1024)"),
        ("  reports:\n    memory_limit: .inf\n", "gravity.reports.memory_limit: inf is out of range"),
        ("  handlers:\n    h:\n      memory_high: .nan\n", "gravity.handlers.h.memory_high: nan is out of range"),
        ("  start_stagger: .nan\n", "gravity.start_stagger: nan is out of range (0 to 3600)"),
        ("  start_stagger: 1.0e+12\n", "gravity.start_stagger: 1000000000000.0 is out of range (0 to 3600)"),
        ("  handlers:\n    h:\n      processes: 100000\n", "gravity.handlers.h.processes: 100000 is out of range"),
        ("  tusd:\n    stop_timeout: 100000000\n", "gravity.tusd.stop_timeout: 100000000 is out of range"),
        ("  reports:\n    workers: 5000\n", "gravity.reports.workers: 5000 is out of range (1 to"),
        ("  instance_name: " + "i" * 300 + "\n", "gravity.instance_name: 'iiii"),
        ("  handlers:\n    h:\n      name_template: " + "n" * 200 + "{process}\n", "at most 100 letters"),
    ],
)
def test_update_refuses_values_out_of_range_in_one_line(gctl, registered, extra, message):
    """Before: a traceback (int(NaN), File name too long) or, worse, accepted."""
    before = snapshot(gctl.state_dir)
    write(registered, gravity_yaml(extra))
    line = assert_one_error(gctl("update", check=False, timeout=TIMEOUT), message, code=1)
    assert registered in line
    assert snapshot(gctl.state_dir) == before


def test_register_refuses_an_instance_name_too_long_for_a_file_name(gctl, short_tmp):
    path = write(os.path.join(short_tmp, "g", "galaxy.yml"), gravity_yaml("  instance_name: " + "x" * 300 + "\n"))
    line = assert_one_error(gctl("register", path, check=False, timeout=TIMEOUT), "gravity.instance_name", code=1)
    assert "(300 characters) is too long: at most 64 characters" in line


def test_an_infinite_start_stagger_is_refused_before_anything_starts(gctl, demo_galaxy):
    """Before: some services were started, then time.sleep(inf) raised (a traceback); the rest stayed down."""
    handlers = {"handler": {"processes": 2}}
    config, port = demo_galaxy(gravity={"handlers": handlers})
    gctl("register", config)
    demo_galaxy(gravity={"handlers": handlers, "start_stagger": float("inf")}, port=port)
    try:
        result = gctl("start", check=False, timeout=TIMEOUT)
    finally:
        gctl("shutdown", check=False, timeout=TIMEOUT)
    assert_one_error(result, "gravity.start_stagger: inf is out of range (0 to 3600)", code=1)
    assert gctl.supervisord_pid() is None


def log_file_made_a_directory(log_dir, name):
    """What supervisord opens for a service's output is a directory: it cannot spawn it (SPAWN_ERROR)."""
    path = os.path.join(log_dir, f"{name}.log")
    if os.path.exists(path):
        os.rename(path, path + ".old")
    os.makedirs(path)


def test_a_start_supervisord_cannot_spawn_is_one_line_with_its_cause(gctl, demo_galaxy, short_tmp):
    log_dir = os.path.join(short_tmp, "logs")
    config, _ = demo_galaxy(gravity={"log_dir": log_dir})
    gctl("register", config)
    gctl("update")
    log_file_made_a_directory(log_dir, "gunicorn")
    try:
        result = gctl("start", check=False, timeout=TIMEOUT)
        line = assert_one_error(result, "supervisord refused startProcess gunicorn: SPAWN_ERROR: ", code=1)
        assert "EISDIR" in line and os.path.join(log_dir, "gunicorn.log") in line and "supervisord.log" in line
        gctl("shutdown", timeout=TIMEOUT)  # then the same start again, from a fresh supervisord, with -d
        debug = gctl("-d", "start", check=False, timeout=TIMEOUT)
        assert "Traceback" in debug.stderr and debug.returncode == 1
        assert debug.stderr.rstrip().splitlines()[-1] == line
    finally:
        gctl("shutdown", check=False, timeout=TIMEOUT)


def test_a_fault_on_another_path_is_one_line_too(gctl, demo_galaxy, short_tmp):
    """graceful starts a stopped service itself (actions/rolling.py): the CLI's last resort says the fault."""
    log_dir = os.path.join(short_tmp, "logs")
    config, _ = demo_galaxy(gravity={"log_dir": log_dir, "handlers": {"handler": {}}})
    gctl("register", config)
    try:
        gctl("start", timeout=TIMEOUT)
        gctl("stop", "gunicorn", timeout=TIMEOUT)  # the handler keeps supervisord up
        assert gctl.supervisord_pid() is not None
        log_file_made_a_directory(log_dir, "gunicorn")
        result = gctl("graceful", check=False, timeout=TIMEOUT)
        # the handler without a job configuration is warned about first (a failed start says the
        # config's warnings), then the fault is one line
        line = assert_one_error(result, "SPAWN_ERROR", code=1, warnings=True)
        assert "gunicorn" in line, line
        assert "Traceback" in gctl("-d", "graceful", check=False, timeout=TIMEOUT).stderr
    finally:
        gctl("shutdown", check=False, timeout=TIMEOUT)
