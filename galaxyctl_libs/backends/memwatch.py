"""memwatch: gravity's memory_limit/memory_high under supervisord, which has no such setting.

supervisord runs it beside the services it watches, as the Galaxy user (never root: it can only
signal the Galaxy user's processes, and root reads nothing it writes).  Every ``--interval``
seconds it asks supervisord for its processes (one XML-RPC call), sums the RSS of each watched
service's process tree from /proc, and acts as memlimits.decide says: a gunicorn worker is
recycled (SIGTERM; its master forks a new one), a service is restarted through supervisord
(stopProcess: its stop signal, stop_timeout, then KILL; startProcess once it stopped), or the
excess is logged.  Every action is one line on stdout (supervisord's log of this program), starting
``memwatch:``.  After acting on a service it leaves it alone for ``--cooldown`` seconds.

    python -m galaxyctl_libs.backends.memwatch --socket SUPERVISOR_SOCKET [--interval S]
        [--cooldown S] --watch PROGRAM KIND LIMIT_BYTES HIGH_BYTES [--watch ...]

It exits when supervisord goes (its parent changes) or on SIGTERM.  It takes no galaxyctl lock:
a ``galaxyctl stop NAME`` that lands between its stop and its start of a service is undone by
that start (a window of the service's stop time, only while it is being restarted).
"""

import argparse
import os
import signal
import sys
import time

from galaxyctl_libs.backends import memlimits
from galaxyctl_libs.backends.memlimits import RECYCLE, REPORT, RESTART, size_text
from galaxyctl_libs.backends.supervisor import rpc
from galaxyctl_libs.probes import procfs
from galaxyctl_libs.probes.workers import gunicorn_master

DEFAULT_INTERVAL = 5.0
DEFAULT_COOLDOWN = 60.0
RPC_TIMEOUT = 10.0
STOPPED_STATES = ("STOPPED", "EXITED", "FATAL")


def log(message):
    print(f"memwatch: {message}", flush=True)


def sample(watch, pid, tree):
    """(rss of the tree, workers as ((pid, rss), ...), job processes) of one running service."""
    workers, jobs = (), 0
    if watch.kind == memlimits.WEB:
        master = gunicorn_master(pid)
        workers = tuple((w, procfs.rss_bytes(w)) for w in tree.get(master, ()) if procfs.alive(w)) if master else ()
    elif watch.kind == memlimits.HANDLER:
        jobs = len(tree.get(pid, ()))  # a job the local runner runs is a child of the handler
    return procfs.tree_rss(pid, tree), workers, jobs


class Watcher:
    """The loop's state: when each service may be acted on again, restarts under way, what was reported."""

    def __init__(self, socket, watches, interval=DEFAULT_INTERVAL, cooldown=DEFAULT_COOLDOWN):
        self.socket, self.watches = socket, list(watches)
        self.interval, self.cooldown = interval, cooldown
        self.quiet_until = {}  # program -> monotonic time before which it is left alone
        self.restarting = {}  # program -> (PID stopped, startProcess sent): a restart under way
        self.reported = {}  # program -> the level last reported (logged once, again when it changes)
        self.parent = os.getppid()
        self.stopping = False

    def call(self, method, *args):
        return rpc.call(self.socket, f"supervisor.{method}", args, RPC_TIMEOUT)

    def run(self):
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        listed = ", ".join(_describe(w) for w in self.watches)
        log(f"watching every {self.interval:g}s: {listed}")
        while not self.stopping:
            if os.getppid() != self.parent:
                log("supervisord is gone; exiting")
                return 0
            try:
                self.tick()
            except (OSError, rpc.Fault) as exc:  # supervisord busy or shutting down: try again next time
                log(f"supervisord did not answer ({exc}); trying again in {self.interval:g}s")
            end = time.monotonic() + self.interval
            while not self.stopping and time.monotonic() < end and os.getppid() == self.parent:
                time.sleep(min(0.2, self.interval))
        log("stopped")
        return 0

    def _on_stop(self, _signum, _frame):
        self.stopping = True

    def tick(self):
        infos = {f"{p['group']}:{p['name']}": p for p in self.call("getAllProcessInfo")}
        tree = procfs.children_map()
        now = time.monotonic()
        for watch in self.watches:
            key = watch.program if ":" in watch.program else f"{watch.program}:{watch.program}"
            info = infos.get(key)
            if info is None:
                continue
            if watch.program in self.restarting:
                self.follow_restart(watch, info, now)
            elif info["statename"] == "RUNNING" and info["pid"] and now >= self.quiet_until.get(watch.program, 0):
                self.check(watch, info["pid"], tree, now)

    def check(self, watch, pid, tree, now):
        rss, workers, jobs = sample(watch, pid, tree)
        decision = memlimits.decide(watch, rss, workers, jobs)
        if decision is None:
            if self.reported.pop(watch.program, None):
                log(f"{watch.program} uses {size_text(rss)}, back under its limits")
            return
        usage = (
            f"{watch.program} (pid {pid}) uses {size_text(rss)}, over {decision.level} {size_text(decision.threshold)}"
        )
        if decision.action == REPORT:
            if self.reported.get(watch.program) != decision.level:
                log(f"{usage}: left running ({decision.note})")
            self.reported[watch.program] = decision.level
            return
        self.reported.pop(watch.program, None)
        self.quiet_until[watch.program] = now + self.cooldown
        if decision.action == RECYCLE:
            self.recycle(usage, decision, pid)
        elif decision.action == RESTART:
            log(f"{usage}: restarting it" + (f" ({decision.note})" if decision.note else ""))
            try:
                self.call("stopProcess", watch.program, False)
            except rpc.Fault as fault:
                log(f"{watch.program}: stop refused ({fault.faultString})")
                return
            self.restarting[watch.program] = (pid, False)

    def recycle(self, usage, decision, master_pid):
        """SIGTERM to the worker, if it is still one of the service's processes (not a reused PID)."""
        worker = decision.pid
        if worker not in procfs.descendants(master_pid):
            log(f"{usage}: worker {worker} already gone")
            return
        log(f"{usage}: recycling {decision.note} (SIGTERM; its master forks a new one)")
        try:
            os.kill(worker, signal.SIGTERM)
        except (ProcessLookupError, PermissionError) as exc:
            log(f"cannot signal worker {worker}: {exc}")

    def follow_restart(self, watch, info, now):
        """After stopProcess: start it once it has stopped; done when it runs with a new PID."""
        old, started = self.restarting[watch.program]
        state, pid = info["statename"], info["pid"]
        if state == "RUNNING" and pid and pid != old:
            log(f"{watch.program} restarted: pid {old} -> {pid}")
        elif state in STOPPED_STATES and started:
            log(f"{watch.program} did not start again ({state}); see its log")
        elif state in STOPPED_STATES:
            try:
                self.call("startProcess", watch.program, False)
                self.restarting[watch.program] = (old, True)
                return
            except rpc.Fault as fault:
                log(f"{watch.program}: start refused ({fault.faultString})")
        else:
            return  # STOPPING, STARTING, BACKOFF: on its way
        del self.restarting[watch.program]
        self.quiet_until[watch.program] = now + self.cooldown


def _describe(watch):
    sizes = (("memory_high", watch.high), ("memory_limit", watch.limit))
    return f"{watch.program} ({', '.join(f'{name} {size_text(size)}' for name, size in sizes if size)})"


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m galaxyctl_libs.backends.memwatch", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--socket", required=True, help="supervisord's unix socket")
    parser.add_argument("--interval", type=float, default=DEFAULT_INTERVAL, help="seconds between looks")
    parser.add_argument(
        "--cooldown", type=float, default=DEFAULT_COOLDOWN, help="seconds a service is left alone after an action"
    )
    parser.add_argument(
        "--watch",
        nargs=4,
        action="append",
        required=True,
        metavar=("PROGRAM", "KIND", "LIMIT", "HIGH"),
        help="a supervisord program, its kind (web, celery, handler, other) and limits in bytes (0: none)",
    )
    args = parser.parse_args(argv)
    try:
        args.watch = [memlimits.parse_watch(values) for values in args.watch]
    except ValueError as exc:
        parser.error(f"--watch: {exc}")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else list(argv))
    return Watcher(args.socket, args.watch, args.interval, args.cooldown).run()


if __name__ == "__main__":
    sys.exit(main())
