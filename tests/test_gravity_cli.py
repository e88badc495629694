"""gravity 1.x's command line against a real supervisord: configs named with -c or the environment
(or auto-loaded) instead of registered ones, pm, exec -i, --version and which configs win.

Auto-load as root reads /etc/galaxy: the test points cli/run_configs.ROOT_CONFIG_DIR elsewhere
through a wrapper; the current-directory rule is gravity's for other users, tested when not root
(and in tests/unit either way)."""

import os
import sys

import pytest
import yaml
from conftest import REPO

from galaxyctl_libs import __version__

HANDLERS = {"handlers": {"handler": {"processes": 2}}}


def configstate(gctl):
    return os.path.join(gctl.state_dir, "configstate.yaml")


def registered(gctl):
    if not os.path.exists(configstate(gctl)):
        return {}
    with open(configstate(gctl)) as handle:
        return (yaml.safe_load(handle) or {}).get("config_files") or {}


def test_config_option_start_status_pm_exec_stop_with_nothing_registered(gctl, demo_galaxy):
    config, port = demo_galaxy(gravity=HANDLERS)
    started = gctl("-c", config, "start", "--timeout", "60")
    assert f"gunicorn: ready on 127.0.0.1:{port}" in started.stdout and "handler_1: started" in started.stdout
    assert gctl("-c", config, "status").returncode == 0
    assert registered(gctl) == {}  # stateless: nothing written down
    assert os.path.isdir(os.path.join(gctl.state_dir, "supervisor"))  # supervisord's files: the state dir
    pm = gctl("pm", "status", check=False).stdout
    assert "handler_0" in pm and "handler_1" in pm and "gunicorn" in pm
    assert gctl("-c", config, "list").stdout.split() == ["_default_", config]

    second = gctl("-c", config, "exec", "-n", "-i", "1", "handler").stdout
    assert second.splitlines()[-1].endswith("--server-name=handler_1")
    assert "--server-name=handler_0" in gctl("-c", config, "exec", "--no-exec", "-i", "0", "handler").stdout
    ambiguous = gctl("-c", config, "exec", "-n", "handler", check=False)
    assert ambiguous.returncode != 0 and "pick one with -i N" in ambiguous.stderr
    out_of_range = gctl("-c", config, "exec", "-n", "-i", "2", "handler", check=False)
    assert out_of_range.returncode != 0 and "-i 2" in out_of_range.stderr

    gctl("-c", config, "stop", "handler_0")
    reloaded = gctl("-c", config, "graceful", "--start-if-stopped", "--timeout", "60")
    assert "handler_0: reloaded" in reloaded.stdout
    assert "handler_0" in gctl("status").stdout and "STOPPED" not in gctl("status").stdout

    stopped = gctl("-c", config, "stop")
    assert "supervisord exited" in stopped.stdout
    assert gctl.supervisord_pid() is None and registered(gctl) == {}


def test_two_config_files_two_instances(gctl, demo_galaxy):
    one, port_one = demo_galaxy("one", gravity={"instance_name": "one"})
    two, port_two = demo_galaxy("two", gravity={"instance_name": "two"})
    started = gctl("-c", one, "--config-file", two, "start", "--timeout", "60")
    assert f"127.0.0.1:{port_one}" in started.stdout and f"127.0.0.1:{port_two}" in started.stdout
    status = gctl("-c", one, "-c", two, "status")
    assert "one:gunicorn" in status.stdout and "two:gunicorn" in status.stdout
    gctl("-c", one, "-c", two, "stop")
    assert gctl.supervisord_pid() is None and registered(gctl) == {}


def test_environment_variables(gctl, demo_galaxy):
    one, _ = demo_galaxy("one", gravity={"instance_name": "one"})
    two, port_two = demo_galaxy("two", gravity={"instance_name": "two"})
    both = gctl("list", env=dict(gctl.env, GRAVITY_CONFIG_FILE=f"{one}:{two}")).stdout
    assert both.split() == ["one", one, "two", two]
    env = dict(gctl.env, GALAXY_CONFIG_FILE=two)
    assert f"127.0.0.1:{port_two}" in gctl("exec", "-n", "gunicorn", env=env).stdout
    # $GRAVITY_CONFIG_FILE before $GALAXY_CONFIG_FILE, -c before both
    assert gctl("list", env=dict(env, GRAVITY_CONFIG_FILE=one)).stdout.split() == ["one", one]
    assert gctl("-c", one, "list", env=dict(env, GRAVITY_CONFIG_FILE=two)).stdout.split() == ["one", one]
    missing = gctl("list", check=False, env=dict(gctl.env, GALAXY_CONFIG_FILE="/no/such/galaxy.yml"))
    assert missing.returncode != 0 and "$GALAXY_CONFIG_FILE: no such config file" in missing.stderr
    assert registered(gctl) == {}


def test_registered_configs_against_config_option_and_environment(gctl, demo_galaxy):
    mine, port = demo_galaxy("mine", gravity={"instance_name": "mine"})
    other, _ = demo_galaxy("other", gravity={"instance_name": "other"})
    gctl("register", mine)
    # -c naming other files than the registered ones is refused: it would drop them from supervisord
    refused = gctl("-c", other, "start", "--no-wait", check=False)
    assert refused.returncode != 0 and "other config files registered" in refused.stderr
    assert gctl.supervisord_pid() is None
    # -c naming the registered files is the registered set
    assert f"127.0.0.1:{port}" in gctl("-c", mine, "exec", "-n", "gunicorn").stdout
    # the environment yields to registrations (it is often set for Galaxy itself)
    listed = gctl("list", env=dict(gctl.env, GALAXY_CONFIG_FILE=other, GRAVITY_CONFIG_FILE=other)).stdout
    assert listed.split() == ["mine", mine]
    # registration commands take their files as arguments
    assert "does not apply to 'register'" in gctl("-c", other, "register", other, check=False).stderr
    assert list(registered(gctl)) == [mine]


def test_version_and_debug(gctl):
    assert gctl("--version").stdout.strip() == f"galaxyctl {__version__}"
    plain = gctl("-c", "/no/such.yml", "list", check=False)
    assert plain.stderr.strip() == "galaxyctl: error: -c: no such config file: /no/such.yml"
    debug = gctl("-d", "-c", "/no/such.yml", "list", check=False)
    assert "Traceback" in debug.stderr and debug.stderr.rstrip().endswith("no such config file: /no/such.yml")


# Runs galaxyctl with cli/run_configs.ROOT_CONFIG_DIR set to argv[1] (instead of /etc/galaxy).
WITH_ROOT_CONFIG_DIR = (
    "import sys\n"
    f"sys.path.insert(0, {REPO!r})\n"
    "from galaxyctl_libs.cli import run_configs\n"
    "run_configs.ROOT_CONFIG_DIR = sys.argv[1]\n"
    "from galaxyctl_libs.cli.main import main\n"
    "sys.exit(main(sys.argv[2:]))\n"
)


@pytest.mark.skipif(os.geteuid() != 0, reason="gravity's auto-load as root (CI is root)")
def test_auto_load_as_root(gctl, demo_galaxy, short_tmp):
    config, port = demo_galaxy(gravity={"instance_name": "etc"})
    etc = os.path.join(short_tmp, "etc-galaxy")
    os.makedirs(os.path.join(etc, "gravity.d"))
    with open(config) as handle:
        settings = yaml.safe_load(handle)
    settings["gravity"]["galaxy_root"] = os.path.dirname(os.path.dirname(config))
    with open(os.path.join(etc, "gravity.d", "demo.yaml"), "w") as handle:
        yaml.safe_dump(settings, handle)
    gctl.command = (sys.executable, "-c", WITH_ROOT_CONFIG_DIR, etc)
    assert gctl("list").stdout.split() == ["etc", os.path.join(etc, "gravity.d", "demo.yaml")]
    started = gctl("start", "--timeout", "60", cwd=short_tmp)
    assert f"gunicorn: ready on 127.0.0.1:{port}" in started.stdout
    assert gctl("status").returncode == 0
    gctl("stop")
    assert gctl.supervisord_pid() is None and registered(gctl) == {}


@pytest.mark.skipif(os.geteuid() == 0, reason="the current-directory rule is gravity's for non-root users")
def test_auto_load_from_the_current_directory(gctl, demo_galaxy, short_tmp):
    config, port = demo_galaxy()
    here = os.path.join(short_tmp, "deploy")
    os.makedirs(os.path.join(here, "config"))
    with open(config) as handle:
        settings = yaml.safe_load(handle)
    settings["gravity"]["galaxy_root"] = os.path.dirname(os.path.dirname(config))
    with open(os.path.join(here, "config", "galaxy.yml"), "w") as handle:
        yaml.safe_dump(settings, handle)
    assert f"127.0.0.1:{port}" in gctl("exec", "-n", "gunicorn", cwd=here).stdout
    assert registered(gctl) == {}


def test_gravitys_names_under_supervisord_and_a_state_dir_renamed_by_update(gctl, demo_galaxy):
    """A state dir whose supervisord runs the names of before (every process its own program, as
    older galaxyctl named them and as use_service_instances: false still does) is renamed by one
    update: the old programs stop, the new ones (gravity's groups) run; then gravity's names act on
    every process of a service: restart handler, status handler, pm status 'handler:*'."""
    config, _ = demo_galaxy(gravity={**HANDLERS, "use_service_instances": False})
    gctl("register", config)
    gctl("start", "--timeout", "60")
    before = gctl("pm", "status", check=False).stdout
    assert [line.split()[0] for line in before.splitlines() if line.strip()] == ["gunicorn", "handler_0", "handler_1"]
    with open(config) as handle:
        data = yaml.safe_load(handle)
    data["gravity"]["use_service_instances"] = True  # gravity's default (removing the key: the state's value stays)
    with open(config, "w") as handle:
        yaml.safe_dump(data, handle)
    gctl("update")
    after = gctl("pm", "status", check=False).stdout
    running = {line.split()[0]: line.split()[1] for line in after.splitlines() if line.strip()}
    assert {running["handler:handler_0"], running["handler:handler_1"]} <= {"STARTING", "RUNNING"}, after
    assert "handler_0" not in running and "handler_1" not in running  # the old programs are gone
    pids = {name: status_pid(gctl, name) for name in ("handler_0", "handler_1")}
    restarted = gctl("restart", "handler", "--timeout", "60")
    assert "handler_0" in restarted.stdout and "handler_1" in restarted.stdout
    assert all(status_pid(gctl, name) not in (None, pid) for name, pid in pids.items())
    rows = gctl("status", "handler").stdout
    assert "handler_0" in rows and "handler_1" in rows and "gunicorn" not in rows
    group = gctl("pm", "status", "handler:*", check=False).stdout
    assert [line.split()[0] for line in group.splitlines() if line.strip()] == [
        "handler:handler_0",
        "handler:handler_1",
    ]


def status_pid(gctl, name):
    import json

    rows = json.loads(gctl("status", "--json", check=False).stdout)["services"]
    return next(row["pid"] for row in rows if row["service"] == name)
