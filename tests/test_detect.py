"""detect: DetectGalaxyCommands against supervisord configs, systemd units, upstart and sysv scripts
written by the test into temp dirs (never the host's /etc).  One supervisord config is validated
by running a real supervisord from the venv and driving it with the detected commands."""

import os
import signal
import subprocess
import sys
import time

import pytest

from galaxyctl_libs.compat.detect import DetectGalaxyCommands, GalaxyCommands, detect_galaxy_commands
from galaxyctl_libs.errors import GalaxyctlError
from galaxyctl_libs.probes import procfs

BIN = os.path.dirname(sys.executable)
SUPERVISORCTL = os.path.join(BIN, "supervisorctl")
HAVE_SUPERVISOR = os.access(SUPERVISORCTL, os.X_OK)


@pytest.fixture
def paths(tmp_path):
    """Every search location of the detector, inside tmp_path (all empty to start with)."""
    return {
        "supervisor_configs": (
            str(tmp_path / "etc/supervisor/supervisord.conf"),
            str(tmp_path / "etc/supervisord.conf"),
        ),
        "unit_dirs": (str(tmp_path / "etc/systemd/system"), str(tmp_path / "lib/systemd/system")),
        "upstart_dir": str(tmp_path / "etc/init"),
        "initd_dir": str(tmp_path / "etc/init.d"),
    }


def _write(path, text, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(path, mode)
    return path


def _main_conf(directory, include="conf.d/*.conf"):
    return (
        f"[unix_http_server]\nfile = {directory}/supervisor.sock   ; the control socket\nchmod = 0700\n\n"
        f"[supervisord]\nlogfile = {directory}/supervisord.log\npidfile = {directory}/supervisord.pid\n"
        f"childlogdir = {directory}\n\n"
        "[rpcinterface:supervisor]\n"
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n"
        f"[supervisorctl]\nserverurl = unix://{directory}/supervisor.sock\n\n"
        f"[include]\nfiles = {include}\n"
    )


SLEEPER = f"{sys.executable} -c 'import time; time.sleep(120)'"


def _galaxy_conf():
    return (
        "[program:galaxy_web]\n"
        f"command = {SLEEPER}\nstartsecs = 0\nautostart = true\nstopwaitsecs = 5\n\n"
        "[program:handler]\n"
        f"command = {SLEEPER}\nprocess_name = handler%(process_num)s\nnumprocs = 2\nstartsecs = 0\n\n"
        "[group:galaxy]\nprograms = galaxy_web, handler\n"
    )


def test_supervisor_group_via_include(paths):
    conf = paths["supervisor_configs"][0]
    directory = os.path.dirname(conf)
    _write(conf, _main_conf(directory))
    _write(os.path.join(directory, "conf.d/galaxy.conf"), _galaxy_conf())
    commands = detect_galaxy_commands(**paths)
    assert commands == GalaxyCommands(
        manager="supervisord",
        startup=["supervisord", "-c", conf],
        start=["supervisorctl", "-c", conf, "start", "galaxy:*"],
        stop=["supervisorctl", "-c", conf, "stop", "galaxy:*"],
        restart=["supervisorctl", "-c", conf, "restart", "galaxy:*"],
        status=["supervisorctl", "-c", conf, "status", "galaxy:*"],
        source=conf,
        name="galaxy:*",
    )


@pytest.mark.skipif(not HAVE_SUPERVISOR, reason="supervisor is not installed in this venv")
def test_detected_supervisor_commands_drive_a_real_supervisord(paths):
    conf = paths["supervisor_configs"][1]  # the RHEL location, with the .ini fragments of supervisord.d
    directory = os.path.dirname(conf)
    _write(conf, _main_conf(directory, include="%(here)s/supervisord.d/*.ini"))
    _write(os.path.join(directory, "supervisord.d/galaxy.ini"), _galaxy_conf())
    detector = DetectGalaxyCommands(
        "supervisord", supervisorctl=SUPERVISORCTL, supervisord=os.path.join(BIN, "supervisord"), **paths
    )
    assert detector.get_init() == "supervisord"
    startup = detector.get_startup_command()
    assert startup == [os.path.join(BIN, "supervisord"), "-c", conf]
    daemon = subprocess.Popen(
        [sys.executable, "-m", "supervisor.supervisord", "-n", "-c", conf],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    children = []
    try:
        deadline = time.monotonic() + 15
        status = None
        while time.monotonic() < deadline:
            status = _run(detector.get_status_command())
            if status.stdout.count("RUNNING") == 3:
                break
            assert daemon.poll() is None, "supervisord exited"
            time.sleep(0.1)
        assert status.stdout.count("RUNNING") == 3, status.stdout
        assert "galaxy:galaxy_web" in status.stdout and "galaxy:handler1" in status.stdout
        children = [int(line.split("pid ")[1].split(",")[0]) for line in status.stdout.splitlines()]
        assert _run(detector.get_stop_command()).returncode == 0
        assert _run(detector.get_status_command()).stdout.count("STOPPED") == 3
        assert _run(detector.get_start_command()).returncode == 0
        assert _run(detector.get_restart_command()).returncode == 0
        after = _run(detector.get_status_command())
        assert after.stdout.count("RUNNING") == 3
        children += [int(line.split("pid ")[1].split(",")[0]) for line in after.stdout.splitlines()]
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=15)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait(timeout=5)
        for pid in children:  # supervisord stops its programs; make sure, by PID (if still ours)
            if "time.sleep(120)" in " ".join(procfs.cmdline(pid)):
                os.kill(pid, signal.SIGKILL)


def _run(argv):
    return subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=20,
        check=False,
    )


def test_supervisor_plain_program_and_numprocs(paths, tmp_path):
    conf = paths["supervisor_configs"][0]
    _write(conf, "[supervisord]\n[program:galaxy]\ncommand = /bin/true\n")
    assert detect_galaxy_commands(**paths).start[-1] == "galaxy"
    _write(
        conf,
        "[supervisord]\n[program:galaxy]\ncommand = /bin/true\nnumprocs = 2\n"
        "process_name = %(program_name)s_%(process_num)s\n",
    )
    assert detect_galaxy_commands(**paths).stop[-1] == "galaxy:*"
    _write(conf, "[supervisord]\n[program:web]\ncommand = /bin/true\n[group:gx]\nprograms = web\n")
    assert detect_galaxy_commands(program_names=("web",), **paths).status[-1] == "gx:web"


def test_supervisor_config_without_galaxy_falls_through(paths):
    first, second = paths["supervisor_configs"]
    _write(first, "[supervisord]\n[program:nginx]\ncommand = nginx\n")
    _write(second, "[supervisord]\n[program:gunicorn]\ncommand = gunicorn\n")
    commands = detect_galaxy_commands(**paths)
    assert commands.source == second and commands.name == "gunicorn"
    with pytest.raises(GalaxyctlError, match="cannot tell how Galaxy is managed"):
        detect_galaxy_commands(program_names=("nope",), **paths)


def test_broken_supervisor_config_names_the_file(paths):
    conf = _write(paths["supervisor_configs"][0], "[supervisord\nlogfile = x\n")
    with pytest.raises(GalaxyctlError, match=f"invalid supervisord config {conf}"):
        detect_galaxy_commands(**paths)


def test_systemd_unit(paths):
    unit_dir = paths["unit_dirs"][1]
    _write(
        os.path.join(unit_dir, "galaxy-gunicorn.service"),
        "[Unit]\nDescription=Galaxy\n[Service]\n"
        "ExecStart=/srv/galaxy/.venv/bin/gunicorn\n[Install]\nWantedBy=multi-user.target\n",
    )
    detector = DetectGalaxyCommands(**paths)
    assert detector.get_init() == "systemd"
    assert detector.get_start_command() == ["systemctl", "start", "galaxy-gunicorn.service"]
    assert detector.get_stop_command() == ["systemctl", "stop", "galaxy-gunicorn.service"]
    assert detector.get_restart_command() == ["systemctl", "restart", "galaxy-gunicorn.service"]
    assert detector.get_status_command() == ["systemctl", "status", "--no-pager", "galaxy-gunicorn.service"]
    assert detector.get_startup_command() == ["systemctl", "start", "galaxy-gunicorn.service"]
    # the first configured name wins over later ones, whatever directory holds it
    _write(os.path.join(paths["unit_dirs"][0], "galaxy.service"), "[Service]\nExecStart=/bin/true\n")
    assert detect_galaxy_commands(**paths).name == "galaxy.service"
    assert detect_galaxy_commands(unit_names=("galaxy-gunicorn.service",), **paths).source == os.path.join(
        unit_dir, "galaxy-gunicorn.service"
    )


def test_laniakea_init_choice_skips_supervisor(paths):
    _write(paths["supervisor_configs"][0], "[supervisord]\n[program:galaxy]\ncommand = /bin/true\n")
    _write(os.path.join(paths["unit_dirs"][0], "galaxy.service"), "[Service]\nExecStart=/bin/true\n")
    assert DetectGalaxyCommands(**paths).get_init() == "supervisord"
    assert DetectGalaxyCommands("init", **paths).get_init() == "systemd"
    assert DetectGalaxyCommands("systemd", **paths).get_start_command()[0] == "systemctl"


def test_upstart_and_sysv(paths):
    initd = _write(os.path.join(paths["initd_dir"], "galaxy"), "#!/bin/sh\nexit 0\n", mode=0o755)
    commands = detect_galaxy_commands(**paths)
    assert commands.manager == "sysv"
    assert (commands.start, commands.stop, commands.status) == ([initd, "start"], [initd, "stop"], [initd, "status"])
    _write(os.path.join(paths["upstart_dir"], "galaxy.conf"), 'description "Galaxy"\nexec /bin/true\n')
    commands = detect_galaxy_commands(**paths)
    assert commands.manager == "upstart"
    assert commands.restart == ["initctl", "restart", "galaxy"]
    assert detect_galaxy_commands("sysv", **paths).manager == "sysv"


def test_non_executable_init_script_is_ignored(paths):
    _write(os.path.join(paths["initd_dir"], "galaxy"), "#!/bin/sh\n", mode=0o644)
    with pytest.raises(GalaxyctlError, match="init scripts galaxy in"):
        detect_galaxy_commands(**paths)


def test_unknown_system_is_a_clear_error(paths):
    with pytest.raises(GalaxyctlError) as info:
        DetectGalaxyCommands(**paths)
    message = str(info.value)
    assert "cannot tell how Galaxy is managed" in message and paths["unit_dirs"][0] in message
    assert paths["supervisor_configs"][0] in message and "\n" not in message
    with pytest.raises(GalaxyctlError, match="unknown init system 'launchd'"):
        DetectGalaxyCommands("launchd", **paths)
