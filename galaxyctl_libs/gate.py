"""The one gate: everything galaxyctl does to a file, pid or process the Galaxy user can influence.

As root with a Galaxy user, that user can write its runtime dir (supervisord's socket and pid
file), its log dir, its data dir, its virtualenv and a state dir it owns: every name there is its
choice -- a link to /etc/shadow, a FIFO, the PID of a root process.  So each touch of such a name
happens here (README, "Running as root"):

- with the Galaxy user's ids (``as_user``, from rootpolicy): the kernel refuses what that user
  could not do itself, whatever the name points at;
- files opened with O_NOFOLLOW and O_NONBLOCK, checked on the descriptor to be regular files, and
  read with a bound, so a link is never followed and a FIFO never hangs a cron check;
- a PID read from a file is believed only when the process proves it (``proven_pid``);
- signals are sent with the Galaxy user's ids, to processes that are still the ones read.

Root's own files (a root state dir, configs rootpolicy.check_root_controlled accepted, /proc) are
read elsewhere (fsutil, probes/procfs).  tests/unit/test_gate.py reads every module and fails when
a raw open, kill, chown, chmod, makedirs or connect appears outside the modules it lists.
"""

import errno
import os
import stat

from galaxyctl_libs.errors import GalaxyctlError
from galaxyctl_libs.probes import procfs
from galaxyctl_libs.rootpolicy import as_user, subprocess_credentials, user_ids

NOBODY = (None, None)  # run_as when there is no Galaxy user: act with galaxyctl's own ids
PID_FILE_BYTES = 64
CLOCK_SLACK = 2.0  # seconds: a pid file's mtime and /proc's start time come from different clocks


def _open_regular(path, run_as):
    """(fd, stat) of regular file ``path``, opened with ``run_as``'s ids, never through a link nor
    blocking on a FIFO; None when it is missing or anything else (a link, a FIFO, a directory, not
    permitted)."""
    with as_user(*run_as):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        return None
    return fd, info


def read(path, run_as=NOBODY, limit=64 * 1024, start=0, from_end=False):
    """Up to ``limit`` bytes of the Galaxy user's regular file ``path``, read with that user's ids,
    from ``start`` (0 again when the file is shorter: it was rotated), or its last ``limit`` bytes
    (``from_end``).  None when it cannot be read that way (missing, a link, a FIFO, not allowed)."""
    opened = _open_regular(path, run_as)
    if opened is None:
        return None
    fd, info = opened
    try:
        offset = max(0, info.st_size - limit) if from_end else (start if 0 <= start <= info.st_size else 0)
        return os.pread(fd, limit, offset)
    except OSError:
        return None
    finally:
        os.close(fd)


def size(path, run_as=NOBODY):
    """The size of the Galaxy user's regular file ``path`` (0 when it cannot be read as such)."""
    opened = _open_regular(path, run_as)
    if opened is None:
        return 0
    os.close(opened[0])
    return opened[1].st_size


def tail(path, run_as=NOBODY, lines=15, window=64 * 1024):
    """The last ``lines`` lines of a log (empty when it cannot be read safely)."""
    data = read(path, run_as, window, from_end=True)
    return data.decode("utf-8", "replace").splitlines()[-lines:] if data else []


def first_line(path, run_as=NOBODY, limit=512):
    """The first line of ``path`` (a script's ``#!``), '' when it cannot be read safely."""
    data = read(path, run_as, limit)
    return data.split(b"\n", 1)[0].decode("utf-8", "replace") if data else ""


def held_locks(directory, run_as=NOBODY, suffix=".lock", limit=1000):
    """The names of the regular files ending in ``suffix`` in the Galaxy user's ``directory`` that a
    process holds a ``flock`` on (tested with a shared, non-blocking lock, released at once), as
    that user; [] when it does not exist, None when it cannot be listed."""
    import fcntl

    with as_user(*run_as):
        try:
            names = sorted(n for n in os.listdir(directory) if n.endswith(suffix))[:limit]
        except FileNotFoundError:
            return []
        except OSError:
            return None
    held = []
    for name in names:
        opened = _open_regular(os.path.join(directory, name), run_as)
        if opened is None:
            continue
        try:
            fcntl.flock(opened[0], fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            held.append(name)
        except OSError:
            pass
        finally:
            os.close(opened[0])  # closing drops our own lock, if we took it
    return held


# ---------------------------------------------------------------- pids and signals


def proven_pid(pidfile, run_as, argv_item):
    """The PID in ``pidfile`` when the process proves it is ours, else None.

    Proof: it is alive; every uid of it is the Galaxy user's (galaxyctl's own without one); its
    command line has ``argv_item`` (this state dir's supervisord.conf) as one argument; and it
    started no later than the pid file was written (a PID reused by a newer process fails).
    A pid file the Galaxy user rewrote to name any other process is not believed.
    """
    opened = _open_regular(pidfile, run_as)
    if opened is None:
        return None
    fd, info = opened
    try:
        text = os.read(fd, PID_FILE_BYTES).strip()
    except OSError:
        return None
    finally:
        os.close(fd)
    if not text.isdigit() or len(text) > 10 or int(text) <= 1:
        return None
    pid = int(text)
    if not procfs.alive(pid) or procfs.uids(pid) != {owner_uid(run_as)}:
        return None
    if argv_item not in procfs.cmdline(pid):
        return None
    started = procfs.started_at(pid)
    return pid if started is not None and started <= info.st_mtime + CLOCK_SLACK else None


def owner_uid(run_as):
    """The uid the Galaxy user's processes have: its own, or galaxyctl's without one."""
    return user_ids(run_as[0], run_as[1])[0].pw_uid if run_as[0] else os.geteuid()


def signal(pid, sig, run_as=NOBODY, group=False):
    """Send ``sig`` to ``pid`` (its process group with ``group``) with the Galaxy user's ids.
    Returns False when it is gone; a process that is not the user's is refused by the kernel
    (PermissionError propagates: the caller names it)."""
    with as_user(*run_as):
        try:
            (os.killpg if group else os.kill)(pid, sig)
        except ProcessLookupError:
            return False
    return True


def exists(pid, run_as=NOBODY):
    """Is there a process ``pid`` (one we may not signal counts)?"""
    with as_user(*run_as):
        try:
            os.kill(pid, 0)
        except OSError as exc:
            return exc.errno != errno.ESRCH
    return True


# ---------------------------------------------------------------- programs for the Galaxy user


def popen(argv, run_as=NOBODY, cwd="/", **kwargs):
    """Start ``argv`` as the Galaxy user, with no id of root left.  Started inside ``as_user``:
    subprocess enters ``cwd`` before it drops ids, and a working directory the user can swap for a
    link must be entered with the user's ids, not root's."""
    import subprocess

    with as_user(*run_as):
        return subprocess.Popen(argv, cwd=cwd, **subprocess_credentials(*run_as), **kwargs)


def run(argv, run_as=NOBODY, cwd="/", timeout=None, **kwargs):
    """``subprocess.run(argv, capture_output=True, text=True)`` through ``popen``; a child still
    running at ``timeout`` is killed (by its PID, it is ours) and TimeoutExpired raised."""
    import subprocess

    process = popen(argv, run_as, cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    return subprocess.CompletedProcess(argv, process.returncode, out, err)


# ---------------------------------------------------------------- the Galaxy user's directories


def make_dirs(path, run_as=NOBODY, what=None):
    """Create ``path`` (and parents) as the Galaxy user: a link or a root dir in the way refuses."""
    from galaxyctl_libs import fsutil

    with as_user(*run_as):
        return fsutil.make_dirs(path, what=what)


def remove(path, run_as=NOBODY):
    """Remove the Galaxy user's file ``path`` (a link is removed, not followed) with its ids."""
    with as_user(*run_as):
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
    return True


def clear_dir(path, run_as=NOBODY):
    """Empty the Galaxy user's directory ``path`` (its files and links, one level: a runtime dir
    has no subdirectories of value) with that user's ids; subdirectories are emptied the same way.
    Returns False when it is not a directory we can read."""
    with as_user(*run_as):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            _clear_fd(fd)
        finally:
            os.close(fd)
    return True


def _clear_fd(fd, depth=0):
    """Remove everything in the directory open as ``fd``, relative to it (no path is re-resolved)."""
    for entry in os.listdir(fd):
        try:
            os.unlink(entry, dir_fd=fd)
        except IsADirectoryError:
            if depth > 8:
                continue
            try:
                sub = os.open(entry, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError:
                continue
            try:
                _clear_fd(sub, depth + 1)
            finally:
                os.close(sub)
            try:
                os.rmdir(entry, dir_fd=fd)
            except OSError:
                pass
        except OSError:
            continue


def hand_over_dir(path, user, group):
    """As root: make ``path`` (in a root-only parent) and give it to the Galaxy user, 0700.  An
    existing one must already be that user's (or root's, from an older run): never a link."""
    entry, gid, _ = user_ids(user, group)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise GalaxyctlError(f"cannot create {path}: {exc.strerror}") from None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise GalaxyctlError(f"{path} is not a directory of its own ({exc.strerror}): remove it") from None
    try:
        owner = os.fstat(fd).st_uid
        if owner == 0:  # made by root just now, or by an older galaxyctl: only root can write the parent
            os.fchown(fd, entry.pw_uid, gid)
            os.fchmod(fd, 0o700)
        elif owner != entry.pw_uid:
            raise GalaxyctlError(f"{path} belongs to uid {owner}, not to the Galaxy user {user}: remove it")
    finally:
        os.close(fd)
