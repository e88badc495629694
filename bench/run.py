#!/usr/bin/env python3
"""galaxyctl vs gravity, side by side: CLI latency, peak memory, update scaling, readiness, graceful.

Usage (standard library only; run from anywhere)::

    python3 bench/run.py [--runs N] [--json OUT] [--profile]

What it does:

1. Makes two venvs next to this script and reuses them on later runs:
   ``bench/.venv-gravity`` (``gravity==1.2.4``, or the newest gravity that installs, + gunicorn +
   celery) and ``bench/.venv-ours`` (this checkout + gunicorn + celery).  Ours is re-installed on
   every run from a staged copy of the checkout (so the figures are those of the current code and
   no build files land in the checkout).  Delete a venv to rebuild it.
2. Writes a demo Galaxy tree per tool and per scenario (``galaxyctl_libs.demo.make_demo_galaxy``,
   the test fixtures' tree) with the *same* ``gravity:`` settings for both tools (only ports,
   roots and ``virtualenv`` differ), in a temporary directory removed at the end.
3. Measures each tool through its own venv's interpreter (``VENV/bin/python VENV/bin/galaxyctl``),
   A/B interleaved (the order flips every run), medians of ``--runs`` (default 10):

   - ``python -c pass`` of the venv (the floor), ``--help``, ``status`` with supervisord running
     one instance of 4 services (gunicorn, celery, celery-beat, 1 dynamic handler), a no-op
     ``update`` on that instance;
   - no-op ``update`` with 1, 10, 100, 500 dynamic handler processes (supervisord not running,
     so nothing is started), the per-handler slope and whether growth is linear;
   - peak RSS of every command (``ru_maxrss`` from ``os.wait4`` on the child: the command and
     the helpers it waited for);
   - ``start`` (from stopped, supervisord not running) to the first HTTP 200 on ``/api/version``
     and to the tool's own exit (its "ready" report; gravity does not wait);
   - a request loop (>= 300 requests, one every ~10 ms) across ``graceful``: failed requests and
     the worst latency, for ``preload: false``, ``preload: true`` (Galaxy's default) and, for
     ours only, ``app_server: unicornherder`` ("n/a" when ours does not render a herder yet).

4. Prints one table (figure, gravity, ours, ratio = gravity / ours: above 1 means ours is better)
   and the issue's targets, and writes everything (raw samples included) as JSON with ``--json``.

As root, both tools run as an unprivileged user (``--user``, default ``nobody``): gravity refuses
to run supervisord as root, so running both as the same plain user is the equivalent setup.  The
venvs are then built from an interpreter that user can execute (``--base-python``, else this
interpreter if it can, else ``/usr/bin/python3``).

Every process started is stopped at the end: each tool's ``shutdown``, then SIGTERM/SIGKILL of
the recorded PIDs (supervisord and its descendants) that are still alive.  All waits are bounded.
``--profile`` also prints ``-X importtime`` and cProfile summaries of ours' ``status``.

The code is in ``bench/galaxybench/`` (one concern per module, see its ``__init__``); this file
only parses the options and runs the steps in order.  (``.gitignore`` lists ``bench/.venv-*/``.)

systemd mode: ``bench/systemd.py`` (as root) runs gravity 1.2.4 and ours side by side in one
systemd-nspawn container, with systemd units instead of supervisord; see its docstring.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench/, for galaxybench

from galaxybench.common import add_common_options, log  # noqa: E402
from galaxybench.environments import choose_base_python, describe_run, ensure_gravity_venv, ensure_ours_venv  # noqa: E402
from galaxybench.report import as_json, build_table, check_targets, print_profile, print_report, write_json  # noqa: E402
from galaxybench.scenarios import Scenarios  # noqa: E402
from galaxybench.tools import Gravity, Ours, Session  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_options(parser)
    parser.add_argument("--user", default="nobody", help="as root: run both tools as this user (default: %(default)s)")
    parser.add_argument("--base-python", help="interpreter for the venvs (default: this one, if --user can run it)")
    return parser.parse_args(argv)


def set_up_tools(session, args, long_runs):
    """Both venvs, then gravity and ours on them; → (gravity, ours, meta)."""
    runner = session.runner
    base_python = choose_base_python(runner, args.base_python)
    gravity_venv = ensure_gravity_venv(runner, base_python)
    ours_venv, stub_readme = ensure_ours_venv(runner, base_python, session.workdir)
    gravity = session.add_tool(Gravity, "gravity", "gravity", gravity_venv)
    ours = session.add_tool(Ours, "ours", "galaxyctl", ours_venv)
    meta = describe_run(runner, args.runs, long_runs, base_python, gravity_venv, ours_venv, stub_readme)
    log(f"gravity venv {meta['gravity_venv']}; ours venv {meta['ours_venv']}")
    return gravity, ours, meta


def run_scenarios(session, gravity, ours, args, long_runs):
    scenarios = Scenarios(session.runner, gravity, ours, session.workdir, args.runs, long_runs)
    scenarios.set_up_instances()
    scenarios.cli(profile=args.profile)
    scenarios.update_scaling()
    scenarios.start_to_ready()
    scenarios.graceful()
    return scenarios.results


def main(argv=None):
    args = parse_args(argv)
    long_runs = args.graceful_runs or args.runs
    with Session(args.user, keep=args.keep) as session:  # stops every process started, whatever happens
        gravity, ours, meta = set_up_tools(session, args, long_runs)
        results = run_scenarios(session, gravity, ours, args, long_runs)
        table, targets = build_table(results), check_targets(results)
        print_report(meta, table, targets)
        if results.profile:
            print_profile(results.profile)
        if args.json:
            write_json(args.json, as_json(meta, table, targets, results))
        return 0 if all(ok for _, ok in targets) else 1


if __name__ == "__main__":
    sys.exit(main())
