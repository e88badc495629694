"""systemd controller: state mapping, stale-unit removal by marker, the applied record (no systemd needed)."""

import os

import pytest

from galaxyctl_libs.backends import record
from galaxyctl_libs.backends.base import BACKOFF, FATAL, RUNNING, STARTING, STOPPED, STOPPING, UNKNOWN, client_for
from galaxyctl_libs.backends.supervisor.client import SupervisorClient
from galaxyctl_libs.backends.systemd import client, render
from galaxyctl_libs.paths import StatePaths


def test_states_from_active_and_sub_state():
    assert client.state_of("active", "running") == RUNNING
    assert client.state_of("activating", "start") == STARTING
    assert client.state_of("activating", "auto-restart") == BACKOFF
    assert client.state_of("failed", "failed") == FATAL
    assert client.state_of("inactive", "dead") == STOPPED
    assert client.state_of("deactivating", "stop-sigterm") == STOPPING
    assert client.state_of("maintenance", "x") == UNKNOWN


def test_a_failed_unit_says_why_as_supervisord_does():
    """status and a failed start show systemd's Result and exit status for FATAL and BACKOFF (base.state_reason)."""
    from galaxyctl_libs.backends.base import state_reason

    failed = {"ActiveState": "failed", "SubState": "failed", "Result": "start-limit-hit", "ExecMainStatus": "1"}
    assert state_reason(client._info("galaxy-tusd.service", failed, 0.0)) == "start-limit-hit, exit status 1"
    restarting = {"ActiveState": "activating", "SubState": "auto-restart", "Result": "exit-code", "ExecMainStatus": "2"}
    assert state_reason(client._info("galaxy-tusd.service", restarting, 0.0)) == "exit-code, exit status 2"
    running = {"ActiveState": "active", "SubState": "running", "Result": "success", "ExecMainStatus": "0"}
    assert client._info("galaxy-tusd.service", running, 0.0)["spawnerr"] == ""


def test_write_units_removes_only_our_marked_files(tmp_path):
    state, units = str(tmp_path / "state"), str(tmp_path / "units")
    paths = render.Paths(state, units)
    ours = f"# Maintained by galaxyctl\n{render.OWNER_KEY}{paths.state_id}\n[Unit]\n"
    other = f"# Maintained by galaxyctl\n{render.OWNER_KEY}someone-else\n[Unit]\n"
    os.makedirs(units)
    for name, text in (("galaxy-old.service", ours), ("galaxy-x.service", other), ("sshd.service", "[Unit]\n")):
        with open(os.path.join(units, name), "w") as handle:
            handle.write(text)
    os.symlink(os.path.join(units, "galaxy-old.service"), os.path.join(units, "alias.service"))
    keep = os.path.join(units, "galaxy.target")
    changes = client.write_units(paths, {keep: ours})
    assert changes.written == (keep,)
    assert changes.removed == (os.path.join(units, "galaxy-old.service"),)
    assert sorted(os.listdir(units)) == ["alias.service", "galaxy-x.service", "galaxy.target", "sshd.service"]
    assert client.write_units(paths, {keep: ours}).written == ()
    assert client._unit_pattern("/u/galaxy-handler@.service") == "galaxy-handler@*.service"


def test_record_names_the_backend_and_client_for_picks_it(tmp_path):
    state = str(tmp_path)
    paths = render.Paths(state, "/etc/systemd/system", False, None)
    record.write_applied(state, [], (), None, (None, None), ("systemd", paths))
    applied = record.load_applied(state)
    assert (applied.process_manager, applied.unit_dir, applied.user_mode) == ("systemd", "/etc/systemd/system", False)
    controller = client_for(state, applied)
    assert isinstance(controller, client.SystemdController) and controller.paths.unit_dir == "/etc/systemd/system"
    record.write_applied(state, [])
    assert record.load_applied(state).process_manager == "supervisor"
    assert isinstance(client_for(state, record.load_applied(state)), SupervisorClient)
    assert StatePaths.of(state).state_id == paths.state_id


def test_list_units_patterns_cover_template_instances_with_one_pattern():
    from galaxyctl_libs.backends.systemd import listing

    units = [f"galaxy-handler@{n}.service" for n in range(2000)] + ["galaxy-gunicorn.service", "galaxy.target"]
    assert listing.unit_patterns(units) == ["galaxy-handler@*.service", "galaxy-gunicorn.service", "galaxy.target"]


def test_list_units_lines_are_read_for_the_units_asked_only():
    from galaxyctl_libs.backends.systemd import listing

    text = (
        "galaxy-handler@0.service loaded active   running  Galaxy handler 0\n"
        "galaxy-handler@1.service loaded failed   failed   Galaxy handler 1\n"
        "galaxy-handler@7.service loaded inactive dead     someone else's instance\n"
        "galaxy-tusd.service      loaded activating auto-restart Galaxy tusd\n"
    )
    wanted = {"galaxy-handler@0.service", "galaxy-handler@1.service", "galaxy-tusd.service"}
    found = listing.parse_list_units(text, wanted)
    assert found == {
        "galaxy-handler@0.service": {"LoadState": "loaded", "ActiveState": "active", "SubState": "running"},
        "galaxy-handler@1.service": {"LoadState": "loaded", "ActiveState": "failed", "SubState": "failed"},
        "galaxy-tusd.service": {"LoadState": "loaded", "ActiveState": "activating", "SubState": "auto-restart"},
    }
    assert [u for u, props in found.items() if listing._needs_why(props)] == [
        "galaxy-handler@1.service",
        "galaxy-tusd.service",
    ]


def test_a_process_is_placed_in_its_unit_by_its_cgroup_line():
    from galaxyctl_libs.backends.systemd import listing

    wanted = {"galaxy-handler@3.service"}
    unified = "0::/system.slice/system-galaxy\\x2dhandler.slice/galaxy-handler@3.service\n"
    assert listing.unit_of(unified, wanted) == "galaxy-handler@3.service"
    v1 = "12:pids:/system.slice/galaxy-handler@3.service\n1:name=systemd:/system.slice/galaxy-handler@3.service\n"
    assert listing.unit_of(v1, wanted) == "galaxy-handler@3.service"
    user = "0::/user.slice/user-998.slice/user@998.service/app.slice/galaxy-handler@3.service\n"
    assert listing.unit_of(user, wanted) == "galaxy-handler@3.service"
    assert listing.unit_of("0::/system.slice/sshd.service\n", wanted) is None


def test_the_main_process_of_a_unit_is_the_topmost_of_its_cgroup_from_proc():
    """This very process and its child, placed in a made-up unit by their real cgroup line."""
    import subprocess
    import sys

    from galaxyctl_libs.backends.systemd import listing

    with open("/proc/self/cgroup") as handle:
        lines = handle.read()
    unit = next((p for p in reversed(lines.splitlines()[0].rpartition(":")[2].split("/")) if p), None)
    if unit is None:
        pytest.skip("this process sits in the root cgroup (test_systemd covers units in a real systemd)")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], stdin=subprocess.DEVNULL)
    try:
        found = listing.main_processes({unit})
        pid, _start = found[unit]
        assert pid != child.pid  # its parent is in the same cgroup
    finally:
        child.kill()
        child.wait()
