#!/usr/bin/env python3
"""gravity 1.2.4 and galaxyctl on the same real Galaxy 26.1: first start, and graceful while jobs run.

Usage (heavy: about 5 minutes per run and tool; the Galaxy venv tests/test_e2e_galaxy.py builds)::

    flock /tmp/galaxyctl-heavy.lock python3 bench/real_galaxy.py [--runs N] [--tools ours,gravity] \
        [--db empty|created] [--venv /tmp/galaxyctl-e2e-0/galaxy-26.1.2] [--json OUT]

Per run and tool, in a fresh directory: the quickstart's config (tests/galaxy_api.py) with the web
server (gunicorn, one worker), celery, celery beat and two job handlers, Galaxy's sqlite database
and its default broker.  Both tools get the same gravity-style command lines,
``TOOL -c galaxy.yml start|graceful|shutdown`` (ours with ``--state-dir ROOT/state``; gravity's
state in its default ``DATA_DIR/gravity``), run as the Galaxy user: as root, the bench runs both
tools as ``--user`` (default ``galaxy``), since gravity 1.2.4 refuses root under supervisor.
Each tool has a venv built from Galaxy's interpreter (``bench/.venv-ours-galaxy`` with this
checkout, ``bench/.venv-gravity-galaxy``; see ``galaxybench/environments.py``), as if installed
into Galaxy's venv.

start
    ``--db empty`` (default): no database beforehand, as on a new site;
    ``--db created``: Galaxy's own database check is run once first (what the quickstart does).
    Figures: ``start``'s exit status and time, seconds to the first HTTP 200 on /api/version
    (polled every 0.2 s) and to both handlers ready (the heartbeat row of a live process in
    Galaxy's ``worker_process`` table), the exits supervisord did not expect (crashes it restarted)
    and the logs that name ``NoVersionTableError``.
graceful
    Once both handlers are ready: a job (pasted text upload) every ``--job-every`` seconds for two
    periods, then ``graceful``, then two periods more.  Figures: graceful's time, the longest time
    without a ready handler (sampled every 0.1 s), the jobs submitted, refused (the web server did
    not take them), failed, and failed because a handler's shutdown killed them (galaxy#6246); the
    web server's failed answers to /api/version (every 0.25 s) and its longest outage.

Every process a run starts is ended by PID at the end and its directory removed.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))

import galaxy_api  # noqa: E402  (tests/galaxy_api.py: what the e2e tests assert is what we measure)
from galaxybench.common import log, median  # noqa: E402
from galaxybench.environments import ensure_gravity_for_galaxy, ensure_ours_for_galaxy  # noqa: E402
from galaxybench.processes import PidRegistry  # noqa: E402
from galaxybench.tools import free_port  # noqa: E402

from galaxyctl_libs.probes.poll import wait_until  # noqa: E402

START_TIMEOUT = 300
READY_TIMEOUT = 300  # both handlers' heartbeat after start
JOBS_TIMEOUT = 900  # every job submitted must end within this
LABELS = {"ours": "galaxyctl", "gravity": "gravity 1.2.4"}
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception): ")  # a traceback's last line


class Site:
    """One fresh Galaxy directory driven by one tool; ``close`` ends every process it started."""

    def __init__(self, tool, argv0, venv, user, handlers=2, servers=None):
        self.tool, self.user = tool, user
        self.quickstart = galaxy_api.load_quickstart()
        self.root = tempfile.mkdtemp(prefix=f"gx{tool[:2]}")  # short: supervisor's socket path is limited
        os.chmod(self.root, 0o755)
        for sub in ("config", "data", "logs"):
            os.makedirs(os.path.join(self.root, sub))
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.config = os.path.join(self.root, "config", "galaxy.yml")
        with open(self.config, "w") as handle:
            text = galaxy_api.render_config(self.quickstart, self.root, self.port, None, venv, handlers, servers)
            # as root both tools would pick systemd (gravity's rule): this bench is about supervisor
            handle.write(text.replace("gravity:\n", "gravity:\n  process_manager: supervisor\n", 1))
        self.database = os.path.join(self.root, "data", "universe.sqlite")
        as_user = ["runuser", "-u", user, "--"] if user else []
        self.argv = as_user + argv0 + ["-c", self.config]
        if tool == "ours":
            self.state = os.path.join(self.root, "state")
            self.argv += ["--state-dir", self.state]
        else:  # gravity's default
            self.state = os.path.join(self.root, "data", "gravity")
        self.env = dict(os.environ, HOME=self.root)
        self.pids = PidRegistry()  # (pid, start time): the end signals only what is still ours

    def own(self):
        """The whole site to the Galaxy user, who runs the tool (gravity refuses root under supervisor)."""
        if self.user:
            self.quickstart.chown_tree(self.root, self.user)

    def run(self, *command, timeout=START_TIMEOUT + 120):
        return subprocess.run(self.argv + list(command), capture_output=True, text=True, env=self.env, timeout=timeout)

    def remember(self):
        """supervisord and every process under it, to be ended by PID in ``close``."""
        try:
            with open(os.path.join(self.state, "supervisor", "supervisord.pid")) as handle:
                self.pids.record_tree(int(handle.read().strip()))
        except (OSError, ValueError):
            pass

    def crashes(self):
        """Exits supervisord did not expect (it restarted those), which logs name NoVersionTableError,
        and the distinct exception lines in the log of each service that crashed."""
        try:
            with open(os.path.join(self.state, "supervisor", "supervisord.log")) as handle:
                exits = [line.split("exited: ", 1)[1].strip() for line in handle if "not expected" in line]
        except OSError:
            exits = []
        crashed = {line.split()[0] for line in exits}
        named, errors = [], {}
        for name in sorted(os.listdir(os.path.join(self.root, "logs"))):
            with open(os.path.join(self.root, "logs", name), errors="replace") as handle:
                text = handle.read()
            if "NoVersionTableError" in text:
                named.append(name)
            raised = [line for line in text.splitlines() if EXCEPTION_LINE.match(line)]
            if raised and name.rsplit(".", 1)[0] in crashed:
                errors[name] = sorted({line[:200] for line in raised})[:5]
        return {"unexpected_exits": exits, "no_version_table_in": named, "exceptions_of_crashed": errors}

    def close(self):
        self.remember()
        try:
            self.run("shutdown", timeout=300)
        except subprocess.TimeoutExpired:
            log(f"{self.tool}: shutdown did not end in 300 s")
        self.pids.stop_all()
        shutil.rmtree(self.root, ignore_errors=True)


def measure_start(site, db, venv):
    figures = {}
    if db == "created":
        site.quickstart.create_database(venv, site.config, os.path.join(site.root, "logs", "create-db.log"))
    site.own()
    stop, found = threading.Event(), []
    poller = threading.Thread(target=galaxy_api.poll_first_200, args=(site.base, found, stop))
    began = time.monotonic()
    poller.start()
    try:
        result = site.run("start", *(["--timeout", str(START_TIMEOUT)] if site.tool == "ours" else []))
        figures["start_exit_s"] = round(time.monotonic() - began, 1)
        figures["start_ok"] = result.returncode == 0
        if result.returncode:
            figures["start_error"] = (result.stderr or result.stdout).strip().splitlines()[-1:]
        site.remember()
        if not site.pids.known:
            figures["error"] = "no supervisord after start: " + " ".join(figures.get("start_error", []))
            return figures
        ready = wait_until(lambda: len(galaxy_api.ready_handlers(site.database) or {}) == 2, READY_TIMEOUT, 0.2, 0.2)
        if ready:
            figures["handlers_ready_s"] = round(time.monotonic() - began, 1)
        poller.join(timeout=max(1.0, START_TIMEOUT - (time.monotonic() - began)))
    finally:
        stop.set()
        poller.join()
    if found:
        figures["first_200_s"] = round(found[0] - began, 1)
    site.remember()
    figures.update(site.crashes())
    return figures


def measure_graceful(site, job_every):
    figures = {}
    jobs = galaxy_api.Jobs(site.base)
    jobs.submit()
    with galaxy_api.JobTraffic(jobs, site.database, job_every) as traffic, galaxy_api.WebWatch(site.base) as web:
        time.sleep(job_every * 2)  # jobs under way before the restarts
        began = time.monotonic()
        result = site.run("graceful")
        figures["graceful_s"] = round(time.monotonic() - began, 1)
        figures["graceful_ok"] = result.returncode == 0
        if result.returncode:
            figures["graceful_error"] = (result.stderr or result.stdout).strip().splitlines()[-3:]
        time.sleep(job_every * 2)  # and after them
    figures.update(traffic.figures())
    figures.update(web.figures())
    figures["jobs_submitted"] = len(jobs.ids)
    figures["submit_errors"] = len(jobs.errors)
    figures["jobs_all_finished"] = bool(wait_until(jobs.all_finished, JOBS_TIMEOUT, 2, 2))
    outcome = galaxy_api.job_outcome(site.database)
    figures["jobs_failed"] = len(outcome["failed"])
    figures["jobs_killed_by_handler_shutdown"] = len(outcome["killed"])
    site.remember()
    return figures


def one_run(tool, argv0, args):
    site = Site(tool, argv0, args.venv, args.user)
    try:
        figures = measure_start(site, args.db, args.venv)
        if "handlers_ready_s" in figures and "first_200_s" in figures and not args.start_only:
            figures.update(measure_graceful(site, args.job_every))
        return figures
    finally:
        site.close()


def _count(runs, key):
    return sum(1 for run in runs if run.get(key))


def _sum(runs, key):
    return sum(run.get(key, 0) for run in runs)


def summarize(results):
    """One row per figure, one column per tool: medians over runs, counts summed."""
    rows = [
        ("start exited 0 (runs)", lambda r: f"{_count(r, 'start_ok')}/{len(r)}"),
        ("start → first HTTP 200 (median s)", lambda r: median([x.get("first_200_s") for x in r])),
        ("start → both handlers ready (median s)", lambda r: median([x.get("handlers_ready_s") for x in r])),
        ("start → tool exits (median s)", lambda r: median([x.get("start_exit_s") for x in r])),
        ("unexpected exits at start (all runs)", lambda r: sum(len(x.get("unexpected_exits", [])) for x in r)),
        ("runs with NoVersionTableError", lambda r: _count(r, "no_version_table_in")),
        ("graceful (median s)", lambda r: median([x.get("graceful_s") for x in r])),
        (
            "longest without a ready handler (max s)",
            lambda r: max((x["longest_without_ready_handler_s"] for x in r if "samples" in x), default=None),
        ),
        ("jobs failed / submitted (all runs)", lambda r: f"{_sum(r, 'jobs_failed')}/{_sum(r, 'jobs_submitted')}"),
        ("job submissions refused (all runs)", lambda r: _sum(r, "submit_errors")),
        ("web: failed / requests (all runs)", lambda r: f"{_sum(r, 'web_failed')}/{_sum(r, 'web_requests')}"),
        (
            "longest web outage (max s)",
            lambda r: max((x["longest_web_outage_s"] for x in r if "web_requests" in x), default=None),
        ),
        ("  of which killed by a handler's shutdown", lambda r: _sum(r, "jobs_killed_by_handler_shutdown")),
    ]
    tools = list(results)
    lines = [" | ".join(["figure"] + [LABELS[t] for t in tools])]
    for label, figure in rows:
        lines.append(" | ".join([label] + [str(figure(results[t])) for t in tools]))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per tool, alternating (default: %(default)s)")
    parser.add_argument("--tools", default="gravity,ours", help="comma-separated: gravity, ours")
    parser.add_argument("--db", choices=("empty", "created"), default="empty")
    parser.add_argument(
        "--job-every",
        type=float,
        default=15.0,
        help="seconds between two jobs during graceful (default: %(default)s; a job takes ~30 s of a local "
        "runner worker on 2 cores, and one handler of two has 2 workers: below ~15 s jobs pile up faster than "
        "they run while a handler restarts)",
    )
    parser.add_argument("--start-only", action="store_true", help="measure the start only")
    parser.add_argument("--venv", default=f"/tmp/galaxyctl-e2e-{os.getuid()}/galaxy-26.1.2", help="Galaxy's venv")
    parser.add_argument(
        "--user",
        default="galaxy" if os.getuid() == 0 else None,
        help="as root: the user both tools run as, and Galaxy with them (default: %(default)s)",
    )
    parser.add_argument("--json", help="write every run's figures here")
    args = parser.parse_args(argv)
    if not os.path.exists(os.path.join(args.venv, "bin", "galaxy-main")):
        parser.error(f"no Galaxy in {args.venv} (run tests/test_e2e_galaxy.py once to build it)")
    tools = [t for t in args.tools.split(",") if t]
    argv0 = {}
    if "ours" in tools:
        with tempfile.TemporaryDirectory() as workdir:
            argv0["ours"] = [os.path.join(ensure_ours_for_galaxy(args.venv, workdir), "bin", "galaxyctl")]
    if "gravity" in tools:
        argv0["gravity"] = [os.path.join(ensure_gravity_for_galaxy(args.venv), "bin", "galaxyctl")]
    results = {tool: [] for tool in tools}
    for number in range(args.runs):
        for tool in tools:
            figures = one_run(tool, argv0[tool], args)
            results[tool].append(figures)
            print(f"run {number + 1} {tool}: {json.dumps(figures, sort_keys=True)}", flush=True)
    print(f"\nreal Galaxy 26.1, web + celery + beat + 2 handlers, --db {args.db}, {args.runs} run(s) per tool")
    print(summarize(results))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"db": args.db, "runs": results}, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
