"""systemd controller: state mapping, stale-unit removal by marker, the applied record (no systemd needed)."""

import os

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
