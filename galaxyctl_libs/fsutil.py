"""Atomic, locked file writes and private directories.

Every file galaxyctl owns is replaced whole (temp file, fsync, rename, fsync of the directory) so a
crash leaves the old or the new content, never a mix; state changes happen under an exclusive
``flock`` so a cron run and an admin's run serialise instead of losing each other's writes.
"""

import contextlib
import errno
import fcntl
import os

from galaxyctl_libs.errors import GalaxyctlError


def ensure_private_dir(path, mode=0o700):
    """Create ``path`` (and parents) if needed and make sure it has ``mode``."""
    try:
        os.makedirs(path, mode=mode, exist_ok=True)
        if (os.stat(path).st_mode & 0o777) != mode:
            os.chmod(path, mode)
    except OSError as exc:
        raise GalaxyctlError(f"cannot create directory {path}: {exc.strerror}") from None
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


def atomic_write(path, content, mode=0o600):
    """Replace ``path`` with ``content`` atomically: readers see the old file or the new, whole."""
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
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def write_if_changed(path, content, mode=0o600):
    """Write ``path`` only when its content differs; returns True when it wrote."""
    if read_text(path) == content:
        return False
    atomic_write(path, content, mode=mode)
    return True


def remove_file(path):
    """Remove ``path``; returns True when something was removed."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    _fsync_dir(os.path.dirname(os.path.abspath(path)))
    return True


def _fsync_dir(directory):
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


@contextlib.contextmanager
def exclusive_lock(lock_path):
    """Hold an exclusive ``flock`` on ``lock_path`` for the ``with`` block (blocks until free)."""
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise GalaxyctlError(f"cannot open lock file {lock_path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
