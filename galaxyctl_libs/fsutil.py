"""Atomic, locked file writes, private directories, and where the state dir is by default.

Every file galaxyctl owns is replaced whole (temp file, fsync, rename, fsync of the directory) so a
crash leaves the old or the new content, never a mix; state changes happen under an exclusive
``flock`` so a cron run and an admin's run serialise instead of losing each other's writes.
"""

import errno
import fcntl
import os

from galaxyctl_libs.errors import GalaxyctlError


def default_state_dir(environ=None):
    """``$GRAVITY_STATE_DIR``, else ``$XDG_CONFIG_HOME/galaxy-gravity`` (``~/.config`` by default)."""
    environ = os.environ if environ is None else environ
    if environ.get("GRAVITY_STATE_DIR"):
        return os.path.abspath(os.path.expanduser(environ["GRAVITY_STATE_DIR"]))
    config_home = environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.abspath(os.path.join(config_home, "galaxy-gravity"))


def ensure_private_dir(path, mode=0o700):
    """Create ``path`` (and parents) if needed and make sure it has ``mode``."""
    try:
        os.makedirs(path, mode=mode, exist_ok=True)
        if (os.stat(path).st_mode & 0o777) != mode:
            os.chmod(path, mode)
    except OSError as exc:
        raise GalaxyctlError(f"cannot create directory {path}: {exc.strerror}") from None
    return path


def make_dirs(path, mode=0o755, what="directory"):
    """``os.makedirs`` that reports a failure (a file in the way, read-only, no permission) in one line."""
    try:
        os.makedirs(path, mode=mode, exist_ok=True)
    except OSError as exc:
        raise GalaxyctlError(f"{what}: cannot create {path}: {exc.strerror}") from None
    if not os.path.isdir(path):
        raise GalaxyctlError(f"{what}: {path} is not a directory")
    return path


def read_text(path):
    """Return the file's text, or None when it does not exist."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise GalaxyctlError(f"cannot read {path}: {exc.strerror}") from None


def atomic_write(path, content, mode=0o600, sync_dir=True):
    """Replace ``path`` with ``content`` atomically: readers see the old file or the new, whole.

    ``sync_dir=False`` leaves the directory's fsync (which makes the rename itself durable) to the
    caller: writing many files, one ``fsync_dir`` per directory at the end does for them all.
    """
    import tempfile  # here, not at import: it pulls in random/hashlib, ~4 ms on every status run

    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if sync_dir:
        fsync_dir(directory)


def write_if_changed(path, content, mode=0o600):
    """Write ``path`` only when its content differs; returns True when it wrote."""
    if read_text(path) == content:
        return False
    atomic_write(path, content, mode=mode)
    return True


PARALLEL_WRITERS = 8  # threads for write_many_if_changed
PARALLEL_FROM = 16  # fewer changed files than this are written in turn


def write_many_if_changed(files, mode=0o600):
    """``write_if_changed`` for many files (``{path: content}``); returns the paths written, sorted.

    Each file is still written atomically with its fsync, but the fsyncs run on a few threads (the
    file system merges concurrent flushes: 500 handler files take about half the time), and each
    directory is fsynced once at the end instead of once per file.
    """
    changed = sorted(path for path, content in files.items() if read_text(path) != content)
    errors = []

    def write(paths):
        try:
            for path in paths:
                atomic_write(path, files[path], mode=mode, sync_dir=False)
        except BaseException as exc:  # re-raised below, in the caller's thread
            errors.append(exc)

    if len(changed) < PARALLEL_FROM:
        write(changed)
    else:
        import threading

        threads = [threading.Thread(target=write, args=(changed[i::PARALLEL_WRITERS],)) for i in range(PARALLEL_WRITERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]
    for directory in sorted({os.path.dirname(os.path.abspath(path)) for path in changed}):
        fsync_dir(directory)
    return changed


def remove_file(path, sync_dir=True):
    """Remove ``path``; returns True when something was removed."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    if sync_dir:
        fsync_dir(os.path.dirname(os.path.abspath(path)))
    return True


def fsync_dir(directory):
    """Make renames and removals in ``directory`` durable (quietly skipped where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:  # some filesystems refuse fsync on directories
        if exc.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(fd)


class exclusive_lock:  # noqa: N801 - used as a function: ``with exclusive_lock(path):``
    """Hold an exclusive ``flock`` on ``lock_path`` for the ``with`` block (blocks until free).

    A lock file that cannot be opened for writing (a read-only state dir while Galaxy runs: stop,
    shutdown and status must still work) is opened read-only: ``flock`` needs no write access.  On
    a read-only file system without a lock file, nothing can be created and the block runs unlocked:
    no writer can run there either.

    A class rather than ``contextlib.contextmanager``: contextlib is an import every status run
    would pay for (this module is on that path) without using it.
    """

    def __init__(self, lock_path):
        self.lock_path = lock_path
        self.fd = None

    def __enter__(self):
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise GalaxyctlError(f"cannot open lock file {self.lock_path}: {exc.strerror}") from None
            try:
                fd = os.open(self.lock_path, os.O_RDONLY)
            except FileNotFoundError:
                if exc.errno == errno.EROFS:
                    return self
                raise GalaxyctlError(f"cannot open lock file {self.lock_path}: {exc.strerror}") from None
            except OSError as again:
                raise GalaxyctlError(f"cannot open lock file {self.lock_path}: {again.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        return self

    def __exit__(self, *exc_info):
        fd, self.fd = self.fd, None
        if fd is None:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        return False


def read_only_dir(path):
    """Is ``path`` an existing directory on a file system mounted read-only?"""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False
