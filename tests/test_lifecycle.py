"""The core lifecycle against a real supervisord and gunicorn running the demo Galaxy."""

import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from conftest import GALAXYCTL, alive, children_of, http_get, kill_pids, wait_for

from galaxyctl_libs.cli import interrupts, process_cmds


def gunicorn_master(gctl):
    status = yaml.safe_load(gctl("status", "--json").stdout)
    pids = [s["pid"] for s in status["services"] if s["service"].startswith("gunicorn")]
    return pids[0]


def test_whole_lifecycle(gctl, demo_galaxy):
    config, port = demo_galaxy()
    url = f"http://127.0.0.1:{port}/api/version"

    out = gctl("register", config).stdout
    assert f"Registered galaxy config: {config}" in out
    gctl("update")
    conf_file = os.path.join(
        gctl.state_dir, "supervisor", "supervisord.conf.d", "_default_.d", "galaxy_gunicorn_gunicorn.conf"
    )
    assert os.path.exists(conf_file)

    started = gctl("start", "--timeout", "60")
    assert "gunicorn: ready on" in started.stdout
    assert http_get(url) == (200, {"version_major": "demo", "version_minor": "1", "pid": http_get(url)[1]["pid"]})

    # state dir and socket are private
    assert os.stat(gctl.state_dir).st_mode & 0o777 == 0o700
    assert os.stat(os.path.join(gctl.state_dir, "supervisor", "supervisor.sock")).st_mode & 0o077 == 0

    status = gctl("status")
    assert status.returncode == 0 and "gunicorn" in status.stdout and "web ok" in status.stdout

    # graceful with preload false: HUP — same master, new workers, new code
    master = gunicorn_master(gctl)
    workers = set(children_of(master))
    assert workers
    with open(os.path.join(os.path.dirname(os.path.dirname(config)), "VERSION"), "w") as handle:
        handle.write("2\n")
    gctl("graceful", "--timeout", "60")
    assert wait_for(lambda: http_get(url)[1]["version_minor"] == "2", timeout=30)
    assert gunicorn_master(gctl) == master
    # old workers finish their requests and exit; new ones took their place
    assert wait_for(lambda: set(children_of(master)) and not (set(children_of(master)) & workers), timeout=30)

    # restart: a new master
    gctl("restart", "--timeout", "60")
    assert http_get(url)[0] == 200
    restarted = gunicorn_master(gctl)
    assert restarted != master and not alive(master)

    supervisord = gctl.supervisord_pid()
    stopped = gctl("stop")
    assert "supervisord exited" in stopped.stdout
    assert not alive(restarted) and not alive(supervisord)
    assert gctl("status", check=False).returncode == 3
    assert "Shut down" in gctl("shutdown").stdout or "not running" in gctl("shutdown").stdout
    assert not any(alive(pid) for pid in gctl.seen_pids)


def test_update_is_idempotent_and_removes_disabled_services(gctl, demo_galaxy):
    config, _ = demo_galaxy(gravity={"celery": {"enable": True, "enable_beat": False}})
    gctl("register", config)
    gctl("update")
    conf_dir = os.path.join(gctl.state_dir, "supervisor", "supervisord.conf.d", "_default_.d")
    files = sorted(os.listdir(conf_dir))
    assert files == ["galaxy_celery_celery.conf", "galaxy_gunicorn_gunicorn.conf"]
    before = {f: os.stat(os.path.join(conf_dir, f)).st_mtime_ns for f in files}
    state_before = os.stat(os.path.join(gctl.state_dir, "configstate.yaml")).st_mtime_ns
    time.sleep(0.05)
    assert "No changes" in gctl("update").stdout
    assert {f: os.stat(os.path.join(conf_dir, f)).st_mtime_ns for f in files} == before
    assert os.stat(os.path.join(gctl.state_dir, "configstate.yaml")).st_mtime_ns == state_before

    data = yaml.safe_load(open(config))
    data["gravity"]["celery"]["enable"] = False
    with open(config, "w") as handle:
        yaml.safe_dump(data, handle)
    out = gctl("update").stdout
    assert "Removed" in out and "galaxy_celery_celery.conf" in out
    assert sorted(os.listdir(conf_dir)) == ["galaxy_gunicorn_gunicorn.conf"]
    state = yaml.safe_load(open(os.path.join(gctl.state_dir, "configstate.yaml")))
    services = state["config_files"][config]["services"]
    assert [s["service_name"] for s in services] == ["gunicorn"]


def test_two_instances_side_by_side(gctl, demo_galaxy):
    first, port1 = demo_galaxy("one", gravity={"instance_name": "one"})
    second, port2 = demo_galaxy("two", gravity={"instance_name": "two"})
    gctl("register", first, second)
    out = gctl("start", "--timeout", "60").stdout
    assert "one:gunicorn: ready" in out and "two:gunicorn: ready" in out
    assert http_get(f"http://127.0.0.1:{port1}/api/version")[0] == 200
    assert http_get(f"http://127.0.0.1:{port2}/api/version")[0] == 200
    status = gctl("status", "--json")
    rows = yaml.safe_load(status.stdout)["services"]
    assert sorted((r["instance"], r["state"] in ("RUNNING", "STARTING")) for r in rows) == [
        ("one", True),
        ("two", True),
    ]
    # act on one instance only
    gctl("stop", "two")
    assert http_get(f"http://127.0.0.1:{port1}/api/version")[0] == 200
    assert gctl("status", check=False).returncode == 3
    assert gctl("status", "one").returncode == 0
    gctl("shutdown")


def test_port_in_use_is_reported_with_its_pid(gctl, demo_galaxy):
    config, port = demo_galaxy()
    squatter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import socket,time; s=socket.socket(); s.bind(('127.0.0.1',{port})); s.listen(); time.sleep(60)",
        ]
    )
    try:
        assert wait_for(
            lambda: subprocess.run(["lsof", "-t", f"-iTCP:{port}", "-sTCP:LISTEN"], capture_output=True).stdout.strip()
        )
        gctl("register", config)
        result = gctl("start", "--timeout", "30", check=False)
        assert result.returncode == 1
        assert f"already in use by PID {squatter.pid}" in result.stderr
        assert result.stderr.startswith("galaxyctl: error:") and "Traceback" not in result.stderr
    finally:
        kill_pids([squatter.pid])
        squatter.wait(timeout=10)


def test_failed_start_shows_log_tail(gctl, demo_galaxy):
    config, _ = demo_galaxy(gravity={"gunicorn": {"environment": {"DEMO_GALAXY_FAIL": "1"}, "start_timeout": 1}})
    gctl("register", config)
    result = gctl("start", "--timeout", "30", check=False)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0].startswith("galaxyctl: error: gunicorn did not become ready")
    assert any("last lines of" in line for line in lines)
    assert "demo Galaxy asked to fail" in result.stderr
    assert "Traceback" not in lines[0]


def test_start_registers_from_a_galaxy_root_and_exec_prints_command(gctl, demo_galaxy):
    config, port = demo_galaxy()
    root = os.path.dirname(os.path.dirname(config))
    out = gctl("start", "--no-wait", cwd=root).stdout
    assert "gunicorn: started" in out
    assert gctl("list").stdout.split()[-1] == config
    assert wait_for(
        lambda: gctl("status", check=False).returncode == 0 and "web ok" in gctl("status").stdout, timeout=30
    )
    printed = gctl("exec", "-n", "gunicorn").stdout.splitlines()
    assert printed[0] == f"Working directory: {root}"  # gravity's two lines
    command = printed[1]
    assert command.startswith("Executing: ") and f" GALAXY_CONFIG_FILE={config} " in command
    for part in (
        "'galaxy.webapps.galaxy.fast_factory:factory()'",
        "-k galaxy.webapps.galaxy.workers.Worker",
        f"-b 127.0.0.1:{port}",
        "--config python:galaxy.web_stack.gunicorn_config",
        "--pythonpath lib",
        "--no-control-socket",
    ):
        assert part in command
    assert "--preload" not in command
    gctl("shutdown")


@pytest.mark.parametrize("quiet", [False, True], ids=["logs", "quiet"])
def test_galaxy_foreground_stops_on_sigterm(gctl, demo_galaxy, quiet):
    """``galaxy`` runs in the foreground until SIGTERM; with gravity's ``--quiet`` (the Ansible
    role's galaxy.service runs ``galaxyctl start --foreground --quiet``) it follows supervisord's own
    log, not the services' logs."""
    config, port = demo_galaxy()
    gctl("register", config)
    argv = [
        sys.executable,
        "-c",
        "import sys; sys.argv[0]='galaxy'; from galaxyctl_libs.cli.main import run_galaxy; run_galaxy()",
        "--state-dir",
        gctl.state_dir,
    ] + (["--quiet"] if quiet else [])
    env = dict(gctl.env, PYTHONPATH=os.path.dirname(GALAXYCTL))
    out_path = os.path.join(gctl.state_dir, "..", f"galaxy-foreground-{quiet}.out")
    with open(out_path, "w+") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, text=True, env=env, stdin=subprocess.DEVNULL
        )
        try:
            assert wait_for(lambda: _answers(port), timeout=60)
            gctl.remember()
            # what it follows: supervisord's own lines ("spawned: 'gunicorn' with pid ...") with
            # --quiet, else gunicorn's ("Listening at")
            followed, not_followed = ("spawned: ", "Listening at") if quiet else ("Listening at", "spawned: ")
            assert wait_for(lambda: followed in _read(out_path), timeout=60), _read(out_path)[-3000:]
            proc.send_signal(signal.SIGTERM)
            # the shutdown waits for each service's stop (gravity's stop_timeout for gunicorn is 65 s)
            try:
                proc.wait(timeout=150)
            except subprocess.TimeoutExpired:
                kill_pids([proc.pid])
                proc.wait(timeout=10)
                raise AssertionError(
                    f"galaxy did not exit within 150s of SIGTERM:\n{_read(out_path)[-3000:]}"
                ) from None
            output = _read(out_path)
            assert proc.returncode == 0, output
            assert "Shut down" in output
            assert gctl.supervisord_pid() is None
            assert not_followed not in output, output[-3000:]
        finally:
            if proc.poll() is None:
                kill_pids([proc.pid])
                proc.wait(timeout=10)


def _read(path):
    with open(path, errors="replace") as handle:
        return handle.read()


def test_an_interrupt_while_the_log_follower_starts_still_ends_it(monkeypatch):
    """A SIGTERM that lands inside Popen, after the fork (``galaxy`` stopped right as it starts
    following the logs), is held until the child is known, then ends it: no tail outlives galaxy.
    (CI saw one: it printed the shutdown's log lines and held the output open.)"""
    started = []

    class SignalledPopen(subprocess.Popen):  # the real Popen, then the signal, before it returns
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.append(self.pid)
            os.kill(os.getpid(), signal.SIGTERM)

    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    interrupts.install()
    try:
        monkeypatch.setattr(subprocess, "Popen", SignalledPopen)
        with pytest.raises(KeyboardInterrupt):
            process_cmds._run_until_interrupted(["sleep", "60"])
        monkeypatch.undo()
        assert len(started) == 1 and not alive(started[0])  # ended and reaped
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        kill_pids(started)


def _answers(port):
    try:
        return http_get(f"http://127.0.0.1:{port}/api/version", timeout=1)[0] == 200
    except OSError:
        return False
