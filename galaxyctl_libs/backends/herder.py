"""herder: gunicorn in the foreground for supervisord, reloaded with zero downtime on SIGHUP.

gunicorn's zero-downtime reload (USR2) replaces the master by a re-exec'd child of the old one, but
supervisord must keep seeing one process.  The herder is that process: gunicorn's parent and a child
subreaper (orphaned masters are re-parented to it), it follows the current master through the pid
file (the new master writes ``PATH.2`` and renames it to ``PATH`` once the old one is gone).

    python -m galaxyctl_libs.backends.herder --pidfile PATH [--bind BIND] [--ready-path /api/version]
        [--ready-timeout SECONDS] [--stop-timeout SECONDS] -- GUNICORN_EXE ARG...

SIGHUP: reload.  SIGTERM/SIGINT/SIGQUIT: graceful stop, exit 0.  The master died by itself: exit 1.
"""

import argparse
import ctypes
import grp
import os
import pwd
import signal
import sys
import time

from galaxyctl_libs.probes.http import READY_PATH, parse_bind, probe
from galaxyctl_libs.probes.poll import wait_until
from galaxyctl_libs.probes.procfs import alive, children_map, descendants

PR_SET_CHILD_SUBREAPER = 36
TICK = 0.1
PROMOTE_TIMEOUT = 5.0  # a new master looks at its parent once a second, then renames PATH.2 to PATH
STRAY_TIMEOUT = 5.0

# how a wait of the herder ended (any other outcome of a reload is the reason it failed)
READY, GONE, OLD_GONE, STOPPING = "ready", "gone", "old master gone", "stopping"


def log(message):
    print(f"herder: {message}", file=sys.stderr, flush=True)


def read_pid(path):
    try:
        with open(path) as handle:
            return int(handle.read().strip() or 0) or None
    except (OSError, ValueError):
        return None


def heartbeats(master):
    """One bool per worker of ``master``: has it booted (app loaded, listeners polled)?

    The master holds one unlinked ``wgunicorn-*`` file per live worker, which the worker touches
    from its serving loop only, after the app loaded (sync, gthread, uvicorn workers alike).  Since
    gunicorn 20 the touch sets the mtime to ``time.monotonic()`` while the kernel sets the ctime to
    the wall clock, so a gap of more than 1 s between them means "touched at least once".
    """
    fd_dir, beats = f"/proc/{master}/fd", []
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return beats
    for fd in fds:
        try:
            if "/wgunicorn-" in os.readlink(f"{fd_dir}/{fd}"):
                info = os.stat(f"{fd_dir}/{fd}")
                beats.append(abs(info.st_ctime - info.st_mtime) > 1.0)
        except OSError:
            continue
    return beats


def catches(pid, sig):
    """Has ``pid`` installed a handler for ``sig``?  Before that, USR2 would kill a gunicorn master."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            mask = next(line.split()[1] for line in handle if line.startswith("SigCgt:"))
        return bool(int(mask, 16) >> (sig - 1) & 1)
    except (OSError, StopIteration, ValueError, IndexError):
        return False


def option_values(argv, short, long):
    """A gunicorn option's values in argv: ``-w 2``, ``-w2``, ``--workers 2``, ``--workers=2``."""
    values = []
    for i, arg in enumerate(argv):
        if arg in (short, long) and i + 1 < len(argv):
            values.append(argv[i + 1])
        elif arg.startswith(long + "=") or (arg.startswith(short) and not arg.startswith("--")):
            values.append(arg.split("=", 1)[1] if arg.startswith("--") else arg[len(short) :])
    return [value for value in values if value]


def send(pids, sig):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def become_subreaper():
    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def describe(status):
    if status is None:
        return "status unknown"
    code = os.waitstatus_to_exitcode(status)
    return f"killed by signal {-code}" if code < 0 else f"exit code {code}"


class Herder:
    """One gunicorn, reloaded in place: the herder's PID is what supervisord sees throughout."""

    def __init__(
        self,
        pidfile,
        command,
        bind=None,
        ready_path=READY_PATH,
        ready_timeout=300.0,
        stop_timeout=40.0,
        user=None,
        group=None,
    ):
        self.user, self.group = user, group
        self.pidfile = os.path.abspath(pidfile)
        self.argv = list(command) + ["--pid", self.pidfile]
        binds = [bind] if bind else option_values(command, "-b", "--bind")
        self.endpoint = parse_bind(binds[0]) if binds else None
        workers = [value for value in option_values(command, "-w", "--workers") if value.isdigit()]
        self.workers = int(workers[-1]) if workers else None  # else: as many as the old master has
        self.ready_path, self.ready_timeout, self.stop_timeout = ready_path, ready_timeout, stop_timeout
        self.master = None
        self.others = set()  # masters in flight during a reload: the new one, then the old one
        self.stop_signal, self.hups, self.reaped = None, 0, {}

    def _on_signal(self, signum, _frame):
        """Only record it: the main loop acts, so a handler never re-enters a write or a wait."""
        if signum == signal.SIGHUP:
            self.hups += 1
        elif self.stop_signal is None:
            self.stop_signal = signum

    def reap(self):
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.reaped[pid] = status

    def wait_gone(self, pids, timeout, abort_on_stop=False):
        """True once ``pids`` have all exited; False after ``timeout`` or, with ``abort_on_stop``,
        on a stop signal (stop() then takes over).  Reaps as it waits, keeping the exit statuses."""

        def settled():
            self.reap()
            if not any(alive(pid) for pid in pids):
                return GONE
            return STOPPING if abort_on_stop and self.stop_signal else None

        return wait_until(settled, timeout) == GONE

    def terminate(self, pids, timeout):
        """SIGTERM, a bounded wait, then SIGKILL whatever is left."""
        pids = [pid for pid in pids if alive(pid)]
        send(pids, signal.SIGTERM)
        if not self.wait_gone(pids, timeout):
            log(f"still running after {timeout:.0f}s, SIGKILL: {[pid for pid in pids if alive(pid)]}")
            send(pids, signal.SIGKILL)
            self.wait_gone(pids, STRAY_TIMEOUT)

    def strays(self, keep):
        """Our children but ``keep``: workers re-parented to us because their master was killed."""
        return [pid for pid in children_map().get(os.getpid(), []) if pid != keep and alive(pid)]

    def run(self):
        if not become_subreaper():
            log("warning: not a child subreaper; re-exec'd masters are followed by PID only")
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            signal.signal(sig, self._on_signal)
        try:
            self.master = spawn(self.argv, self.user, self.group)
        except (OSError, KeyError) as exc:
            log(f"cannot start {self.argv[0]}: {exc}")
            return 1
        log(f"started gunicorn master {self.master}")
        deferred = False
        # An event loop, not a deadline wait: it lasts the herder's life, acting on the signals the
        # handler recorded and on the master's exit, so it has no deadline and stays a plain loop.
        while True:
            self.reap()
            if self.stop_signal:
                return self.stop()
            if self.hups and alive(self.master) and not catches(self.master, signal.SIGUSR2):
                if not deferred:
                    log(f"reload deferred: master {self.master} is still starting")
                deferred = True
            elif self.hups and alive(self.master):
                # one reload serves every SIGHUP that came before it starts or while it runs
                extra, self.hups, deferred = self.hups - 1, 0, False
                self.reload()
                extra, self.hups = extra + self.hups, 0
                if extra:
                    log(f"ignored {extra} SIGHUP received during the reload")
                continue
            if not alive(self.master):
                successor = self.successor()
                if successor:
                    log(f"master {self.master} is gone; following master {successor} from the pid file")
                    self.master = successor
                    continue
                log(f"gunicorn master {self.master} exited unexpectedly ({describe(self.reaped.get(self.master))})")
                self.terminate(descendants(os.getpid()), STRAY_TIMEOUT)
                return 1
            time.sleep(TICK)

    def successor(self):
        """A live master of ours named by the pid file (e.g. after a USR2 sent by hand)."""
        ours = set(descendants(os.getpid()))
        candidates = [read_pid(self.pidfile), read_pid(self.pidfile + ".2")]
        return next((pid for pid in candidates if pid in ours and alive(pid)), None)

    def find_new_master(self, old):
        """The re-exec'd master, always a child of ``old``: the one PATH.2 names, or before that the
        one whose environment has ``GUNICORN_PID=old`` (so a master stuck loading is found too)."""
        kids = [pid for pid in children_map().get(old, []) if alive(pid)]
        named = read_pid(self.pidfile + ".2")
        if named in kids:
            return named
        marker = f"GUNICORN_PID={old}".encode()
        for child in kids:
            try:
                with open(f"/proc/{child}/environ", "rb") as handle:
                    if marker in handle.read().split(b"\0"):
                        return child
            except OSError:
                continue
        return None

    def serves(self, new, expected):
        """Ready: PATH.2 names it, ``expected`` of its workers booted, and the bind answers < 500."""
        if read_pid(self.pidfile + ".2") != new or sum(heartbeats(new)) < expected:
            return False
        return self.endpoint is None or probe(self.endpoint, self.ready_path, timeout=2.0).ok

    def reload(self):
        """USR2, wait until the new master serves, then retire the old one; on failure keep the old."""
        old, started = self.master, time.monotonic()
        expected = self.start_new_master(old)
        outcome, new = self.wait_new_master(old, expected)
        if outcome == OLD_GONE:
            if new is not None:
                log(f"reload: old master {old} died; following new master {new}")
                self.master, self.others = new, set()
            return
        if self.stop_signal:
            return  # stop() takes self.others along
        if outcome != READY:
            self.abandon_new_master(old, new, outcome)
            return
        log(f"reload: new master {new} serves after {time.monotonic() - started:.1f}s; retiring old master {old}")
        if self.retire_old_master(old, new):
            self.await_promotion(new)
            log(f"reload complete: master {new} (old master {old} exited, {time.monotonic() - started:.1f}s)")

    def start_new_master(self, old):
        """USR2 makes ``old`` re-exec a new master; returns how many booted workers make it ready."""
        expected = self.workers or max(1, len(heartbeats(old)))
        log(f"reload: USR2 to master {old}; waiting up to {self.ready_timeout:.0f}s for {expected} booted workers")
        send([old], signal.SIGUSR2)
        return expected

    def wait_new_master(self, old, expected):
        """Wait (``ready_timeout``) until the new master serves.  Returns (outcome, new master or None):
        READY, OLD_GONE, STOPPING, or why the new master failed."""
        new = None

        def settled():
            nonlocal new
            if self.stop_signal:
                return STOPPING
            self.reap()
            seen = self.find_new_master(old)
            if seen is None and new is not None:
                return f"new master {new} exited during startup"
            new = seen or new
            if new:
                self.others.add(new)  # from now on stop() ends it too
            if not alive(old):
                return OLD_GONE
            return READY if new is not None and self.serves(new, expected) else None

        outcome = wait_until(settled, self.ready_timeout)
        return outcome or f"no new master ready within {self.ready_timeout:.0f}s", new

    def abandon_new_master(self, old, new, reason):
        """The new master did not get ready: end it and whatever it left, keep ``old`` serving."""
        if alive(new):
            log(f"stopping new master {new}: it did not get ready")
            self.terminate([new], self.stop_timeout)
        self.terminate(self.strays(keep=old), STRAY_TIMEOUT)
        self.others = set()
        log(f"reload FAILED: {reason}; old master {old} keeps serving")

    def retire_old_master(self, old, new):
        """Make ``new`` the master and stop ``old`` gracefully (bounded, then SIGKILL and its strays).
        False when a stop signal came meanwhile: stop() takes ``old`` along."""
        self.master, self.others = new, {old}
        # WINCH: a daemonized gunicorn stops its workers gracefully (others ignore it).  TERM: graceful
        # stop, the old workers finish their in-flight requests (QUIT would drop them: not used).
        send([old], signal.SIGWINCH)
        send([old], signal.SIGTERM)
        if not self.wait_gone([old], self.stop_timeout, abort_on_stop=True):
            if self.stop_signal:
                return False
            log(f"old master {old} still running after {self.stop_timeout:.0f}s, SIGKILL")
            send([old], signal.SIGKILL)
            self.wait_gone([old], STRAY_TIMEOUT)
            self.terminate(self.strays(keep=new), STRAY_TIMEOUT)
        self.others = set()
        return True

    def await_promotion(self, new):
        """Wait (bounded) until ``new`` has seen its parent gone and renamed PATH.2 to PATH, so that
        once "reload complete" is logged the pid file names the new master."""
        wait_until(lambda: read_pid(self.pidfile) == new or not alive(new), PROMOTE_TIMEOUT)

    def stop(self):
        """TERM every master (graceful, bounded), then make sure no gunicorn process is left."""
        masters = sorted(pid for pid in {self.master, *self.others} if alive(pid))
        log(f"{signal.Signals(self.stop_signal).name}: stopping gunicorn master(s) {masters}")
        self.terminate(masters, self.stop_timeout)
        self.terminate(descendants(os.getpid()), STRAY_TIMEOUT)
        log("stopped")
        return 0


def spawn(argv, user=None, group=None):
    """Start gunicorn; as ``user`` (with its groups) when given: the herder may run as root, Galaxy never."""
    if not user:
        return os.posix_spawnp(argv[0], argv, os.environ)
    entry = pwd.getpwnam(user)
    gid = grp.getgrnam(group).gr_gid if group else entry.pw_gid
    pid = os.fork()
    if pid == 0:
        try:
            os.setgid(gid)
            os.initgroups(user, gid)
            os.setuid(entry.pw_uid)
            os.environ.update(HOME=entry.pw_dir, USER=user, LOGNAME=user)
            os.execvpe(argv[0], argv, os.environ)
        except OSError as exc:
            print(f"herder: cannot start {argv[0]} as {user}: {exc}", file=sys.stderr, flush=True)
        os._exit(127)
    return pid


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m galaxyctl_libs.backends.herder",
        description=__doc__.splitlines()[0],
        usage="%(prog)s --pidfile PATH [options] -- GUNICORN_EXE ARG...",
    )
    parser.add_argument("--pidfile", required=True, help="gunicorn's pid file (passed to it as --pid)")
    parser.add_argument("--bind", help="where to probe readiness (default: gunicorn's first -b)")
    parser.add_argument("--ready-path", default=READY_PATH, help="HTTP path that must answer < 500")
    parser.add_argument("--ready-timeout", type=float, default=300.0, help="seconds for a new master to serve")
    parser.add_argument("--stop-timeout", type=float, default=40.0, help="seconds for a master to stop")
    parser.add_argument("--user", help="run gunicorn as this user (when the herder runs as root)")
    parser.add_argument("--group", help="and this group (default: the user's)")
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    args.command = argv[split + 1 :]
    if not args.command:
        parser.error("the gunicorn command line is missing after --")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else list(argv))
    return Herder(
        args.pidfile,
        args.command,
        args.bind,
        args.ready_path,
        args.ready_timeout,
        args.stop_timeout,
        args.user,
        args.group,
    ).run()


if __name__ == "__main__":
    sys.exit(main())
