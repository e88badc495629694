"""Atomic, locked file writes, private directories, and where the state dir is by default.

Every file galaxyctl owns is replaced whole (temp file, fsync, rename, fsync of the directory) so a
crash leaves the old or the new content, never a mix; state changes happen under an exclusive
``flock`` so a cron run and an admin's run serialise instead of losing each other's writes.
"""

import errno
import fcntl
import os
import stat

from galaxyctl_libs.errors import GalaxyctlError


def default_state_dir(environ=None):
    """``$GRAVITY_STATE_DIR``, else ``$XDG_CONFIG_HOME/galaxy-gravity`` (``~/.config`` by default)."""
    environ = os.environ if environ is None else environ
    if environ.get("GRAVITY_STATE_DIR"):
        return os.path.abspath(os.path.expanduser(environ["GRAVITY_STATE_DIR"]))
    config_home = environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.abspath(os.path.join(config_home, "galaxy-gravity"))


def ensure_private_dir(path, mode=0o700):
    """Create ``path`` (and parents) if needed and make sure it is ours, with ``mode``.

    Its name must be UTF-8: the state dir's paths are written into UTF-8 files (supervisord.conf),
    so a name with undecodable bytes is refused here, before anything is written under it.  The
    directory is checked on an O_NOFOLLOW descriptor: one that someone else made first (a race in
    /tmp after root judged the place free) or a link in its place is refused, not written into.
    """
    try:
        os.fsencode(path).decode("utf-8")
    except UnicodeDecodeError:
        raise GalaxyctlError(f"directory name {os.fsencode(path)!r} is not valid UTF-8; choose another") from None
    make_dirs(path, mode)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise GalaxyctlError(f"cannot use directory {path}: {exc.strerror} (a symbolic link?)") from None
    try:
        info = os.fstat(fd)
        if info.st_uid != os.geteuid():
            raise GalaxyctlError(
                f"directory {path} belongs to uid {info.st_uid}, not to this run's user (uid {os.geteuid()}): "
                "it was made by someone else; remove it or choose another"
            )
        if (info.st_mode & 0o777) != mode:
            os.fchmod(fd, mode)
    except OSError as exc:
        raise GalaxyctlError(f"cannot create directory {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    return path


def make_dirs(path, mode=0o755, what=None):
    """``os.makedirs(path, mode, exist_ok=True)``, failing as one line (a file in the way, EROFS...);
    ``what`` (e.g. "log_dir") starts the message."""
    prefix = f"{what}: " if what else ""
    try:
        os.makedirs(path, mode=mode, exist_ok=True)
    except FileExistsError:
        raise GalaxyctlError(
            f"{prefix}cannot create directory {path}: something that is not a directory is in the way"
        ) from None
    except OSError as exc:
        raise GalaxyctlError(f"{prefix}cannot create directory {path}: {exc.strerror or exc}") from None
    return path


# Files galaxyctl writes itself (configstate.yaml, supervisor/services.json): about 100 bytes per
# service in configstate.yaml and 1.5 KB in services.json, so 16 MiB leaves room for thousands of
# handlers while a damaged or planted file cannot make us read gigabytes.
MAX_STATE_FILE_BYTES = 16 << 20

_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def size_text(size):
    """``1 MiB``, ``16 MiB``, ``512 KiB``: limits as people write them."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift} {unit}"
    return f"{size} bytes"


def read_bytes(path, limit, follow_symlinks=True):
    """The bytes of regular file ``path``, or None when it does not exist; at most ``limit`` bytes.

    Opened non-blocking (a FIFO or device in place of a config must not hang us while we hold the
    state lock) and checked on the opened descriptor, so what is checked is what is read.  Anything
    but a regular file, or more than ``limit`` bytes, is refused as one line.  ``follow_symlinks=False``
    adds O_NOFOLLOW: the caller resolved the path already and a symlink swapped in since is refused.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow_symlinks else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_symlinks and os.path.islink(path):
            raise GalaxyctlError(f"cannot read {path}: it is a symbolic link") from None
        raise GalaxyctlError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = next((name for test, name in _FILE_KINDS if test(info.st_mode)), "a special file")
            raise GalaxyctlError(f"{path} is {kind}, not a regular file; refusing to read it")
        chunks, size = [], 0
        while size <= limit and info.st_size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit or info.st_size > limit:
            raise GalaxyctlError(f"{path} is larger than {size_text(limit)}; refusing to read it")
        return b"".join(chunks)
    except OSError as exc:
        raise GalaxyctlError(f"cannot read {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def read_text(path, limit=MAX_STATE_FILE_BYTES):
    """Return the file's UTF-8 text (see ``read_bytes``), or None when it does not exist."""
    data = read_bytes(path, limit)
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise GalaxyctlError(f"cannot read {path}: not UTF-8 text") from None


def _encoded(path, content):
    try:
        return content.encode("utf-8")
    except UnicodeEncodeError:  # a surrogate-escaped path from the command line, written into a file
        raise GalaxyctlError(
            f"cannot write {path}: its text is not valid UTF-8 (a path with undecodable bytes?)"
        ) from None


def _holds(path, data):
    """Is ``path`` a regular file holding exactly ``data``?  Anything else (missing, a FIFO, binary
    junk, unreadable) is simply rewritten by the caller."""
    try:
        return read_bytes(path, len(data)) == data
    except GalaxyctlError:
        return False


def atomic_write(path, content, mode=0o600, sync_dir=True):
    """Replace ``path`` with ``content`` atomically: readers see the old file or the new, whole.

    ``sync_dir=False`` leaves the directory's fsync (which makes the rename itself durable) to the
    caller: writing many files, one ``fsync_dir`` per directory at the end does for them all.  A
    failure (ENOSPC, EROFS, a missing directory) is one line naming ``path``; the old file stays.
    """
    import tempfile  # here, not at import: it pulls in random/hashlib, ~4 ms on every status run

    data = content if isinstance(content, bytes) else _encoded(path, content)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise GalaxyctlError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        _discard(tmp)
        raise GalaxyctlError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        _discard(tmp)
        raise
    if sync_dir:
        fsync_dir(directory)


def _discard(tmp):
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass


def write_if_changed(path, content, mode=0o600):
    """Write ``path`` only when its content differs; returns True when it wrote."""
    data = _encoded(path, content)
    if _holds(path, data):
        return False
    atomic_write(path, data, mode=mode)
    return True


PARALLEL_WRITERS = 8  # threads for write_many_if_changed
PARALLEL_FROM = 16  # fewer changed files than this are written in turn


def write_many_if_changed(files, mode=0o600):
    """``write_if_changed`` for many files (``{path: content}``); returns the paths written, sorted.

    Each file is still written atomically with its fsync, but the fsyncs run on a few threads (the
    file system merges concurrent flushes: 500 handler files take about half the time), and each
    directory is fsynced once at the end instead of once per file.
    """
    encoded = {path: _encoded(path, content) for path, content in files.items()}
    changed = sorted(path for path, data in encoded.items() if not _holds(path, data))
    errors = []

    def write(paths):
        try:
            for path in paths:
                atomic_write(path, encoded[path], mode=mode, sync_dir=False)
        except BaseException as exc:  # re-raised below, in the caller's thread
            errors.append(exc)

    if len(changed) < PARALLEL_FROM:
        write(changed)
    else:
        import threading

        threads = [
            threading.Thread(target=write, args=(changed[i::PARALLEL_WRITERS],)) for i in range(PARALLEL_WRITERS)
        ]
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


def remove_empty_dir(path, sync_dir=True):
    """Remove directory ``path`` when it is empty; returns True when it was removed."""
    try:
        os.rmdir(path)
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
            return False
        raise GalaxyctlError(f"cannot remove directory {path}: {exc.strerror}") from None
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
