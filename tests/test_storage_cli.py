"""Storage through galaxyctl: start refuses without required storage; luks commands (with fakes).

cryptsetup needs a real block device that CI lacks: a fake cryptsetup on PATH records its argv and
stdin instead (Fakes from test_storage).  The mount point checks read the real /proc/self/mountinfo.
"""

import os

import yaml
from test_storage import Fakes


def test_start_refuses_while_required_storage_is_missing(gctl, demo_galaxy, short_tmp):
    missing = os.path.join(short_tmp, "export")
    config, _ = demo_galaxy(gravity={"storage": {"required": [missing, "/proc"]}})
    gctl("register", config)
    result = gctl("start", "--timeout", "30", check=False)
    assert result.returncode == 1
    assert result.stderr.startswith(f"galaxyctl: error: required storage not mounted: {missing} (")
    assert len(result.stderr.splitlines()) == 1
    assert gctl.supervisord_pid() is None  # nothing was started

    # once running (here: the requirement dropped), status and check report storage from the record
    data = yaml.safe_load(open(config))
    data["gravity"]["storage"]["required"] = ["/proc"]
    with open(config, "w") as handle:
        yaml.safe_dump(data, handle)
    gctl("start", "--timeout", "60")
    assert gctl("check", "--restart-window", "0").returncode == 0
    data["gravity"]["storage"]["required"] = ["/proc", missing]
    with open(config, "w") as handle:
        yaml.safe_dump(data, handle)
    gctl("update")
    status = gctl("status", check=False)
    assert f"required storage not mounted: {missing}" in status.stdout
    check = gctl("check", "--restart-window", "0", check=False)
    assert check.returncode == 2 and f"required storage {missing} not mounted" in check.stdout
    gctl("stop")


def test_luks_commands_through_the_cli(gctl, demo_galaxy, short_tmp, tmp_path, monkeypatch):
    fakes = Fakes(tmp_path, monkeypatch)
    fakes.add("cryptsetup", status=(4, "/dev/mapper/gxvol is inactive."), luksOpen=0, luksClose=0)
    fakes.add("mount", **{"*": 0})
    mount_point = os.path.join(short_tmp, "export")
    key = tmp_path / "key"
    key.write_text("s3cret passphrase")
    config, _ = demo_galaxy(gravity={"luks": {"device": "/dev/vdb", "name": "gxvol", "mount_point": mount_point}})
    gctl("register", config)
    env = dict(gctl.env, PATH=os.environ["PATH"])
    status = gctl("luks", "status", env=env, check=False)
    assert status.returncode == 3 and "gxvol: closed, not mounted" in status.stdout
    opened = gctl("luks", "open", "--key-file", str(key), env=env, check=False)
    assert opened.returncode == 0, opened.stderr
    [call] = [c for c in fakes.calls("cryptsetup") if c["argv"][1] == "luksOpen"]
    assert call["argv"][1:] == ["luksOpen", "/dev/vdb", "gxvol", "--key-file", str(key)]
    assert not any("s3cret" in arg for c in fakes.calls() for arg in c["argv"])
    # without a terminal and without a key file there is nobody to ask: a clear refusal
    refused = gctl("luks", "open", env=env, check=False)
    assert refused.returncode == 1 and "use --key-file" in refused.stderr
    gctl("start", "--timeout", "60")
    closing = gctl("luks", "close", env=env, check=False)
    assert closing.returncode == 1 and "running" in closing.stderr
    assert not [c for c in fakes.calls("cryptsetup") if c["argv"][1] == "luksClose"]
    gctl("stop")
