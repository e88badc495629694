"""Who besides root can change a path (rootpolicy.changers), and root's refusal of such files."""

import os

import pytest

from galaxyctl_libs import rootpolicy
from galaxyctl_libs.errors import GalaxyctlError

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="ownership checks need root (CI is root)")


def make(path, mode, uid=0, directory=False):
    if directory:
        os.mkdir(path, mode)
    else:
        with open(path, "w") as handle:
            handle.write("x: 1\n")
    os.chmod(path, mode)
    os.chown(path, uid, -1)
    return str(path)


@ROOT_ONLY
def test_root_controlled_tree_has_no_changers(tmp_path):
    base = make(tmp_path / "etc", 0o755, directory=True)
    config = make(os.path.join(base, "galaxy.yml"), 0o644)
    assert rootpolicy.changers(config) == []
    rootpolicy.check_root_controlled(config, "config file")  # no error


@ROOT_ONLY
def test_owner_group_write_and_a_users_directory_above(tmp_path):
    base = make(tmp_path / "srv", 0o755, uid=65534, directory=True)  # nobody owns the directory above
    config = make(os.path.join(base, "galaxy.yml"), 0o664)
    found = rootpolicy.changers(config)
    assert ("nobody", f"directory {base} is owned by nobody") in found
    assert (rootpolicy.ANYONE, f"file {config} is writable by its group or by others") in found
    with pytest.raises(GalaxyctlError) as refused:
        rootpolicy.check_root_controlled(config, "config file")
    assert "chown root:" in refused.value.message and "\n" not in refused.value.message


@ROOT_ONLY
def test_sticky_directories_protect_root_entries_and_links_are_judged_by_their_target(tmp_path):
    sticky = make(tmp_path / "tmp", 0o1777, directory=True)
    entry = make(os.path.join(sticky, "state"), 0o700, directory=True)
    assert rootpolicy.changers(entry) == []
    assert rootpolicy.changers(sticky) != []  # the sticky dir itself is writable by all
    assert rootpolicy.changers(sticky, new_entry=True) == []  # but an entry made in it is root's
    users = make(tmp_path / "users", 0o755, uid=65534, directory=True)
    target = make(os.path.join(users, "real.yml"), 0o644)
    link = os.path.join(entry, "link.yml")
    os.symlink(target, link)
    assert ("nobody", f"directory {users} is owned by nobody") in rootpolicy.changers(link)


def test_subprocess_credentials_are_empty_unless_root():
    if os.geteuid() == 0:
        assert rootpolicy.subprocess_credentials(None) == {}
        assert rootpolicy.subprocess_credentials("nobody")["user"] == 65534
    else:
        assert rootpolicy.subprocess_credentials("nobody") == {}
