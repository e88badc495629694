"""celery-beat's lock, for one beat across the hosts: ``python -m galaxyctl_libs.backends.beatlock
LOCK -- CELERY ... beat ...``.

Runs under the process manager as the Galaxy user (never as root).  Takes an exclusive ``flock``
on LOCK (in Galaxy's data dir, which the hosts share: NFS carries flock as a lock on the whole file)
and execs the beat with the locked descriptor inherited, so the beat itself holds the lock while it
runs, with the same PID, and the kernel (or the NFS server) drops it when the beat exits, however it
exits.  ``check --cluster`` counts the locks held (core/hosts.py, gate.held_locks): that is the
number of beats running.  A second beat on the same host cannot take the lock and exits with 75.
"""

import fcntl
import os
import sys

LOCKED = 75  # EX_TEMPFAIL: another beat holds this host's lock


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m galaxyctl_libs.backends.beatlock LOCK -- COMMAND...", file=sys.stderr)
        return 2
    lock, command = argv[0], argv[2:]
    os.makedirs(os.path.dirname(lock), mode=0o755, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"celery-beat: another beat holds {lock}; not starting a second one", file=sys.stderr)
        return LOCKED
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()} {os.uname().nodename}\n".encode())  # for people: the lock is the proof
    os.set_inheritable(fd, True)
    os.execvp(command[0], command)


if __name__ == "__main__":
    sys.exit(main())
