"""Root on a locked-down host: whose authority galaxyctl acts with, and who Galaxy runs as.

The trust model (README, "Running as root"), enforced here and at the places that call in:

1. **The state dir decides whose authority a root run has.**  If a user other than root can change
   the state dir (it owns it, or owns a directory above it), the state dir is that user's and
   galaxyctl switches to that user for the whole run before it reads anything (``enter``), exactly
   as if the user had run it; commands that need root (LUKS, mounts) are refused there.
2. **With a root state dir, root reads and runs only what root alone can change**: the registered
   configs and every file they include, job_conf files, key and token files, and each program it
   runs as root (cryptsetup, mount, oneclient).  Anything else is refused with one line naming the
   file, who can change it, and the fix (``check_root_controlled``).
3. **Galaxy's side is the Galaxy user's.**  supervisord and every service run as ``galaxy_user``
   in a runtime dir that user owns (so service logs are opened by that user, never by root);
   galaxyctl touches that dir, talks to that supervisord and signals its processes only with the
   Galaxy user's ids (``as_user``), and starts programs for it with every id dropped
   (``subprocess_credentials``).  Root chowns nothing but directories it has just created.
4. Galaxy never runs as root by accident: ``run_as`` refuses unless the admin said so
   (``--allow-root``).

Light on purpose: ``--allow-root`` and the edge check cost the light commands no config imports.
"""

import os
import pwd
import stat

from galaxyctl_libs.errors import GalaxyctlError

ALLOW_ROOT_ENV = "GALAXYCTL_ALLOW_ROOT"  # "1": the admin explicitly accepts running Galaxy as root
ANYONE = None  # in ``changers``: a group or everyone, not one user


# ---------------------------------------------------------------- who can change a path


def _user_name(uid):
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _ancestry(path):
    """``path`` and every directory above it, for the path as written and for the path it resolves to
    (a symlink's target can be swapped by whoever can change the directory holding the link)."""
    seen = []
    for start in (os.path.abspath(path), os.path.realpath(path)):
        current = start
        while True:
            if current not in seen:
                seen.append(current)
            parent = os.path.dirname(current)
            if parent == current:
                break
            current = parent
    return seen


def changers(path, new_entry=False):
    """Who besides root can change what ``path`` holds: a list of (user name or ANYONE, why).

    The owner of the file and of every directory above it can replace it; a file or directory
    writable by its group or by others can be changed by them, except that in a sticky directory
    (/tmp) only an entry's owner can replace the entry.  Paths that do not exist are skipped.
    ``new_entry``: ``path`` is the directory an entry is about to be made in (so it, too, counts as
    a directory above that entry).
    """
    found = []
    for index, current in enumerate(_ancestry(path)):
        try:
            info = os.lstat(current)
        except OSError:
            continue
        if stat.S_ISLNK(info.st_mode):
            continue  # a link's own bits mean nothing; its directory and its target are checked
        kind = "directory" if stat.S_ISDIR(info.st_mode) else "file"
        if info.st_uid != 0:
            found.append((_user_name(info.st_uid), f"{kind} {current} is owned by {_user_name(info.st_uid)}"))
        writable = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        above = new_entry or current != os.path.abspath(path)
        sticky_dir = kind == "directory" and info.st_mode & stat.S_ISVTX and above
        if writable and not sticky_dir:
            found.append((ANYONE, f"{kind} {current} is writable by its group or by others"))
    return found


def check_root_controlled(path, what):
    """As root, refuse to read or run ``path`` unless root alone can change it (no-op otherwise)."""
    if os.geteuid() != 0:
        return
    found = changers(path)
    if not found:
        return
    who, why = found[0]
    fix = f"make it root's (chown root: {path}; chmod go-w {path}, and the same for the directories above it)"
    if who is not ANYONE:
        fix += f", or run galaxyctl as {who} with a state dir of its own"
    raise GalaxyctlError(f"{what} {path}: {why}; as root, galaxyctl only uses what root alone can change: {fix}")


# ---------------------------------------------------------------- the edge: whose run is this?


def _nearest_existing(path):
    path = os.path.abspath(path)
    while not os.path.lexists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def state_dir_owner(state_dir):
    """As root: None when root alone can change the state dir (or the place it will be created),
    else the one user who can (its pwd entry).  Two users, or a group, is refused."""
    nearest = _nearest_existing(state_dir)
    # a state dir still to be made is judged as the entry it will be in its nearest existing dir: in a
    # sticky one (/tmp), nobody else can replace an entry root creates
    found = changers(nearest, new_entry=nearest != os.path.abspath(state_dir))
    if not found:
        return None
    users = {who for who, _ in found}
    if ANYONE in users or len(users) > 1:
        why = next((why for who, why in found if who is ANYONE), found[-1][1])
        raise GalaxyctlError(
            f"state dir {state_dir}: {why}; as root, galaxyctl needs a state dir that only root (or only the "
            "Galaxy user) can change"
        )
    name = users.pop()
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise GalaxyctlError(f"state dir {state_dir} is owned by {name}, which has no account") from None


def enter_state_dir(state_dir, needs_root=False):
    """Called once by the CLI before anything is read (and by a library caller as root that wants the
    same): as root with a state dir that a user owns, become that user for the rest of the process.
    Returns the user's name, or None (no switch)."""
    if os.geteuid() != 0:
        return None
    entry = state_dir_owner(state_dir)
    if entry is None:
        return None
    if needs_root:
        raise GalaxyctlError(
            f"state dir {state_dir} belongs to {entry.pw_name}: this command acts as root, so it needs a state dir "
            "and config that only root can change"
        )
    become(entry.pw_name)
    return entry.pw_name


_ROOTS_OWN = set()  # state dirs found root's in this process (the walk is a few lstat calls)


def refuse_foreign_state_dir(state_dir):
    """Rule 1 for library callers running as root: a state dir another user can change is refused,
    since the library cannot switch users behind its caller's back.  ``enter_state_dir(state_dir)`` first does
    what the CLI does (this process becomes that user for good)."""
    if os.geteuid() != 0 or state_dir in _ROOTS_OWN:
        return
    entry = state_dir_owner(state_dir)
    if entry is not None:
        raise GalaxyctlError(
            f"state dir {state_dir} belongs to {entry.pw_name}: as root, galaxyctl_libs acts only on a state dir "
            f"that only root can change; run this as {entry.pw_name}, or call galaxyctl_libs.enter_state_dir() "
            f"first to become {entry.pw_name} for the rest of this process, as the galaxyctl command does"
        )
    if os.path.isdir(state_dir):
        _ROOTS_OWN.add(state_dir)  # one still to be made is judged again (fsutil checks what is made)


def become(user, group=None):
    """Switch this process to ``user`` (and its groups) for good: no id of root is kept."""
    entry, gid, groups = user_ids(user, group)
    os.setgroups(groups)
    os.setresgid(gid, gid, gid)
    os.setresuid(entry.pw_uid, entry.pw_uid, entry.pw_uid)
    os.environ.update(HOME=entry.pw_dir, USER=entry.pw_name, LOGNAME=entry.pw_name)
    os.environ.pop(ALLOW_ROOT_ENV, None)


def user_ids(user, group=None):
    """(pwd entry, gid, supplementary gids) of ``user``, with ``group`` as its primary group if given."""
    import grp

    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise GalaxyctlError(f"no such user {user!r}") from None
    try:
        gid = grp.getgrnam(group).gr_gid if group else entry.pw_gid
    except KeyError:
        raise GalaxyctlError(f"no such group {group!r}") from None
    return entry, gid, sorted(set(os.getgrouplist(user, gid)))


# ---------------------------------------------------------------- acting for the Galaxy user


class as_user:  # noqa: N801 - used as a function: ``with as_user(user, group):``
    """For the block, touch files, connect to sockets and send signals with ``user``'s ids.

    Real and effective ids both become the user's (so the kernel refuses signals to anyone else's
    processes); only the saved ids stay root's, to switch back at the end.  A no-op unless root,
    and when ``user`` is None (--allow-root) or the process already is someone else.  Programs must
    not be started inside the block without ``subprocess_credentials`` (they would keep root's saved
    id).  A class, not contextlib: status runs through here.
    """

    def __init__(self, user, group=None):
        self.user, self.group, self.saved_groups = user, group, None

    def __enter__(self):
        if not self.user or os.geteuid() != 0:
            return self
        entry, gid, groups = user_ids(self.user, self.group)
        self.saved_groups = os.getgroups()
        os.setgroups(groups)
        os.setresgid(gid, gid, 0)
        os.setresuid(entry.pw_uid, entry.pw_uid, 0)
        return self

    def __exit__(self, *exc_info):
        if self.saved_groups is not None:
            os.setresuid(0, 0, 0)
            os.setresgid(0, 0, 0)
            os.setgroups(self.saved_groups)
            self.saved_groups = None
        return False


def subprocess_credentials(user, group=None):
    """``subprocess`` keyword arguments that start a program as ``user`` with no id of root left
    (nothing when not root or when ``user`` is None)."""
    if not user:
        return {}
    real, effective, saved = os.getresuid()
    if 0 not in (real, effective, saved):
        return {}
    entry, gid, groups = user_ids(user, group)
    credentials = {"user": entry.pw_uid, "group": gid}
    if effective == 0:
        credentials["extra_groups"] = groups  # inside ``as_user`` they are already the user's
    return credentials


def run_as(settings, config_path, environ=None):
    """Who Galaxy's processes run as: never root by accident.  (None, None) means "as galaxyctl".

    As root: ``galaxy_user`` if set, else refuse, unless the admin set ``GALAXYCTL_ALLOW_ROOT=1``
    (``galaxyctl --allow-root``).  The config's owner is not asked: as root the config must be
    root's, and a state dir a user owns makes galaxyctl that user before this is asked.
    A group of root is refused like the user root: root's group opens root's files.
    """
    environ = os.environ if environ is None else environ
    if os.geteuid() != 0:
        return None, None
    if settings.galaxy_group:
        import grp

        try:
            if grp.getgrnam(settings.galaxy_group).gr_gid == 0:
                raise GalaxyctlError(f"{config_path}: gravity.galaxy_group: refusing to run Galaxy in the group root")
        except KeyError:
            raise GalaxyctlError(
                f"{config_path}: gravity.galaxy_group: no such group {settings.galaxy_group!r}"
            ) from None
    if settings.galaxy_user:
        try:
            entry = pwd.getpwnam(settings.galaxy_user)
        except KeyError:
            raise GalaxyctlError(f"{config_path}: gravity.galaxy_user: no such user {settings.galaxy_user!r}") from None
        if entry.pw_uid == 0:
            raise GalaxyctlError(f"{config_path}: gravity.galaxy_user: refusing to run Galaxy as root")
        if entry.pw_gid == 0 and not settings.galaxy_group:
            raise GalaxyctlError(
                f"{config_path}: gravity.galaxy_user: {settings.galaxy_user}'s primary group is root; set gravity.galaxy_group"
            )
        return settings.galaxy_user, settings.galaxy_group
    if environ.get(ALLOW_ROOT_ENV) == "1":
        return None, None
    raise GalaxyctlError(
        f"refusing to run Galaxy as root: set gravity.galaxy_user in {config_path}, "
        "or give the Galaxy user a state dir of its own (--allow-root overrides)"
    )
