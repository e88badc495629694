"""gravity 1.x's global options without a process: the parser, where a run's configs come from
(cli/run_configs.py), which configs win (core/state.py) and exec -i's choice of process."""

import os
import types

import pytest

from galaxyctl_libs.cli import main as cli
from galaxyctl_libs.cli import run_configs
from galaxyctl_libs.cli.process_cmds import pick_process
from galaxyctl_libs.core import given
from galaxyctl_libs.core import state as statemod
from galaxyctl_libs.errors import GalaxyctlError


@pytest.fixture(autouse=True)
def no_run_configs(monkeypatch):
    monkeypatch.setattr(given, "_given", [])  # whatever a test selects ends with it


def write_config(path, instance_name=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    gravity = f"  instance_name: {instance_name}\n" if instance_name else "  gunicorn: {}\n"
    with open(path, "w") as handle:
        handle.write(f"gravity:\n{gravity}galaxy: {{}}\n")
    return str(path)


@pytest.mark.parametrize(
    "argv, word",
    [
        (["-c", "status", "start"], "start"),
        (["--config-file", "a.yml", "-c", "b.yml", "stop"], "stop"),
        (["--config", "a.yml", "list"], "list"),  # abbreviated
        (["--config-file=a.yml", "list"], "list"),
        (["-dc", "a.yml", "exec"], "exec"),  # a cluster ending in -c
        (["-d", "--user", "--no-user", "pm", "status"], "pm"),
        (["--version"], None),
    ],
)
def test_command_word_skips_option_values(argv, word):
    assert cli._command_word(argv) == word


def test_parser_global_options():
    args = cli.build_parser(["start"]).parse_args(["-d", "-c", "a.yml", "--config-file", "b.yml", "--user", "start"])
    assert (args.debug, args.config_files, args.user_mode) == (True, ["a.yml", "b.yml"], True)
    args = cli.build_parser(["stop"]).parse_args(["--no-user", "stop"])
    assert (args.debug, args.config_files, args.user_mode) == (False, None, False)
    assert cli.build_parser(["status"]).parse_args(["status"]).user_mode is None
    graceful = cli.build_parser(["graceful"]).parse_args(["graceful", "--start-if-stopped"])
    assert graceful.start_if_stopped is True
    exec_args = cli.build_parser(["exec"]).parse_args(["exec", "--no-exec", "-i", "1", "main", "handler"])
    assert (exec_args.dry_run, exec_args.service_instance, exec_args.words) == (True, 1, ["main", "handler"])
    assert cli.build_parser(["pm"]).parse_args(["pm", "tail", "-f", "gunicorn"]).arguments == ["tail", "-f", "gunicorn"]


def test_help_says_which_configs_win(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "those named with -c" in out and "else the registered ones; else $GRAVITY_CONFIG_FILE" in out
    assert "only matters with process_manager: systemd" in out


def test_version(capsys):
    import galaxyctl_libs

    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out == f"galaxyctl {galaxyctl_libs.__version__}\n"


def _args(command="start", config_files=None):
    return types.SimpleNamespace(command=command, config_files=config_files)


def test_find_configs_order(tmp_path):
    a, b, c = (write_config(tmp_path / f"{n}.yml") for n in "abc")
    env = {"GRAVITY_CONFIG_FILE": f"{a}::{b}", "GALAXY_CONFIG_FILE": c}
    assert run_configs.find_configs(_args(config_files=[c]), env) == ([c], statemod.FROM_OPTION)
    assert run_configs.find_configs(_args(), env) == ([a, b], statemod.FROM_GRAVITY_ENV)
    assert run_configs.find_configs(_args(), {"GALAXY_CONFIG_FILE": c}) == ([c], statemod.FROM_GALAXY_ENV)
    assert run_configs.find_configs(_args("register"), env) is None  # registrations ignore the environment
    assert run_configs.find_configs(_args("status"), {}, cwd=str(tmp_path), is_root=False) is None  # no auto-load
    with pytest.raises(GalaxyctlError, match=r"^\$GRAVITY_CONFIG_FILE: no such config file: /nope$"):
        run_configs.find_configs(_args(), {"GRAVITY_CONFIG_FILE": "/nope"})


def test_auto_load_in_the_current_directory(tmp_path):
    assert run_configs.auto_load(False, str(tmp_path)) == []
    sample = write_config(tmp_path / "config" / "galaxy.yml.sample")
    assert run_configs.auto_load(False, str(tmp_path)) == [sample]
    plain = write_config(tmp_path / "galaxy.yml")
    assert run_configs.auto_load(False, str(tmp_path)) == [plain]
    first = write_config(tmp_path / "config" / "galaxy.yml")
    assert run_configs.auto_load(False, str(tmp_path)) == [first]
    found = run_configs.find_configs(_args(), {}, cwd=str(tmp_path), is_root=False)
    assert found == ([first], statemod.FROM_AUTO_LOAD)


def test_auto_load_as_root_loads_every_etc_file(tmp_path, monkeypatch):
    monkeypatch.setattr(run_configs, "ROOT_CONFIG_DIR", str(tmp_path))
    write_config(tmp_path / "cwd" / "config" / "galaxy.yml")  # not root's rule
    assert run_configs.auto_load(True, str(tmp_path / "cwd")) == []
    names = ("gravity.d/b.yaml", "gravity.d/a.yml", "galaxy.yml", "gravity.yml", "gravity.d/c.txt")
    made = {name: write_config(tmp_path / name) for name in names}
    expected = ["gravity.yml", "galaxy.yml", "gravity.d/a.yml", "gravity.d/b.yaml"]
    assert run_configs.auto_load(True, "/") == [made[name] for name in expected]


def test_run_configs_precedence(tmp_path):
    state_dir = str(tmp_path / "state")
    mine = write_config(tmp_path / "mine.yml", "mine")
    other = write_config(tmp_path / "other.yml", "other")
    statemod.use_run_configs([other], statemod.FROM_GALAXY_ENV)
    transient = statemod.load_state(state_dir)
    assert transient.transient and transient.instance_names() == ["other"]
    with statemod.locked_state(state_dir) as state:
        state.config_files[other].attribs = {"changed": True}
    assert not os.path.exists(statemod.StatePaths.of(state_dir).configstate)  # never written

    from galaxyctl_libs.core import registration

    registration.register(state_dir, [mine])  # the registrations themselves, whatever the run names
    assert list(statemod.load_registered(state_dir).config_files) == [mine]
    for source in (statemod.FROM_GRAVITY_ENV, statemod.FROM_GALAXY_ENV, statemod.FROM_AUTO_LOAD):
        statemod.use_run_configs([other], source)
        assert list(statemod.load_state(state_dir).config_files) == [mine]  # registered configs win
    statemod.use_run_configs([mine], statemod.FROM_OPTION)
    assert not statemod.load_state(state_dir).transient  # -c naming the registered files: those
    statemod.use_run_configs([other], statemod.FROM_OPTION)
    with pytest.raises(GalaxyctlError, match="other config files registered .*mine.yml"):
        statemod.load_state(state_dir)


def _target(name, group=None, number=None):
    service = types.SimpleNamespace(service_name=name, gravity_service=group, process_number=number)
    return types.SimpleNamespace(service=service)


def test_pick_process():
    targets = [_target(n) for n in ("gunicorn", "handler_10", "handler_2", "handler_0", "celery1", "celery0")]
    assert pick_process(targets, "gunicorn").service.service_name == "gunicorn"
    assert pick_process(targets, "gunicorn", 0).service.service_name == "gunicorn"
    assert pick_process(targets, "handler", 1).service.service_name == "handler_2"  # number order
    assert pick_process(targets, "handler", 2).service.service_name == "handler_10"
    assert pick_process(targets, "celery", 1).service.service_name == "celery1"
    assert pick_process(targets, "handler_2").service.service_name == "handler_2"
    with pytest.raises(GalaxyctlError, match=r"handler runs as 3 processes \(handler_0, handler_2, handler_10\)"):
        pick_process(targets, "handler")
    with pytest.raises(GalaxyctlError, match="-i 3: handler runs as 3"):
        pick_process(targets, "handler", 3)
    with pytest.raises(GalaxyctlError, match="-i 1: gunicorn runs as 1"):
        pick_process(targets, "gunicorn", 1)
    with pytest.raises(GalaxyctlError, match="no service named 'tusd'"):
        pick_process(targets, "tusd")


def test_pick_process_by_gravitys_service_and_number():
    """``-i N NAME``: the process numbered N of gravity's service NAME, whatever its server name."""
    targets = [_target(f"{n}-main", "special", n) for n in (1, 0)] + [_target("handler0")]
    assert pick_process(targets, "special", 0).service.service_name == "0-main"
    assert pick_process(targets, "special", 1).service.service_name == "1-main"
    assert pick_process(targets, "handler0").service.service_name == "handler0"
    with pytest.raises(GalaxyctlError, match=r"special runs as 2 processes \(0-main, 1-main\)"):
        pick_process(targets, "special")
