#!/usr/bin/env python3
"""galaxyctl vs gravity 1.2.4 in systemd mode, side by side in one systemd-nspawn container.

Usage (as root; standard library only; run from anywhere)::

    python3 bench/systemd.py [--runs N] [--graceful-runs N] [--json OUT] [--profile] [--keep]

Why a script of its own rather than a flag of ``bench/run.py``: this one needs root and
systemd-nspawn, runs both tools as root inside a container (run.py runs them as a plain user on
the host, with supervisord) and has its own set of figures; both share ``bench/galaxybench/``
(the spawn server that times commands and takes their peak RSS, the HTTP probe, ``start`` and
``graceful`` measurements, the table).

What it does:

1. Downloads wheels on the host (this checkout, gunicorn, celery, ``gravity==1.2.4`` and their
   dependencies) into a temporary directory, and boots a real systemd 252 in a throw-away
   systemd-nspawn container (``tests/nspawn.py``, the one ``tests/test_systemd.py`` boots; the
   Debian rootfs is built once with debootstrap and cached).  Inside: ``/opt/venv`` (galaxyctl +
   gunicorn + celery) and ``/opt/gravity`` (gravity + gunicorn + celery), installed with no index,
   and the system user ``galaxy``.
2. Writes a demo Galaxy tree per tool and per scenario (``galaxyctl_libs.demo.make_demo_galaxy``)
   with the same ``gravity:`` settings as ``bench/run.py`` plus ``process_manager: systemd``,
   ``galaxy_user: galaxy`` and an ``instance_name`` of its own (``g...`` gravity, ``o...`` ours), so
   that the two tools' units (``galaxy-gweb-gunicorn.service``, ``galaxy-oweb.target``...) live
   side by side in /etc/systemd/system and never share a name.  Both run as root inside, as
   ``galaxyctl --state-dir STATE -c CONFIG COMMAND`` from their venv.
3. Measures each tool, A/B interleaved (the order flips every run), medians of ``--runs``
   (default 10; ``--graceful-runs`` for start and graceful), wall time and peak RSS taken inside
   the container by a fork server (no ``nsenter`` in the timed path):

   - with Galaxy running (gunicorn, celery, celery-beat, 1 handler): ``python -c pass`` of the
     venv (the floor), ``--help``, ``status``, a no-op ``update``;
   - ``update`` with 100 handler processes: the first one (writes the units, ``daemon-reload``;
     a fresh instance each run) and a no-op one;
   - ``start`` from stopped (every unit of the instance inactive, its port closed) to the first
     HTTP 200 on ``/api/version`` and to the tool's own exit, with ``preload: true`` (Galaxy's
     default) and ``preload: false``;
   - a request loop (>= 300 requests, one every ~10 ms) across ``graceful``: failed requests, worst
     latency, longest outage, when new workers answered, exit codes, for ``preload: true`` and
     ``preload: false``.

4. Prints one table (figure, gravity, ours, ratio = gravity / ours: above 1 means ours is better)
   and, with ``--json OUT``, writes it with every raw sample and the versions found inside.
   ``--profile`` also prints ``-X importtime`` and cProfile summaries of ours' ``status``.

The container is powered off at the end whatever happened (that ends every unit both tools
started), and the temporary directory is removed (kept with ``--keep``, or when the run failed:
its ``nspawn.log`` is the container's console).  All waits are bounded.
"""

import argparse
import os
import platform
import shutil
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench/, for galaxybench

from galaxybench import container  # noqa: E402
from galaxybench.common import add_common_options, log  # noqa: E402
from galaxybench.container import nspawn  # noqa: E402
from galaxybench.report import print_profile, write_json  # noqa: E402
from galaxybench.systemd_scenarios import SystemdScenarios, build_table, print_report, print_scale  # noqa: E402
from galaxybench.tools import interrupt  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_options(parser)
    parser.add_argument(
        "--scale",
        metavar="SIZES",
        help="instead: ours' start, status and check with N handler processes (e.g. 400,2000)",
    )
    return parser.parse_args(argv)


def measure(machine, args, long_runs):
    """Both tools in the booted container: set up, the scenarios, the table; → (meta, table, raw)."""
    runner = container.ContainerRunner(machine)
    try:
        container.set_up(machine)
        gravity, ours = container.make_tools(runner)
        meta = {
            "when": time.strftime("%Y-%m-%d %H:%M:%S"),
            "host": platform.node(),
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "runs": args.runs,
            "long_runs": long_runs,
            "versions": container.versions(machine),
        }
        log(f"inside: {meta['versions']}")
        scenarios = SystemdScenarios(runner, gravity, ours, args.runs, long_runs)
        if args.scale:
            scenarios.scale([int(size) for size in args.scale.split(",")])
            return meta, None, scenarios.raw, None
        scenarios.set_up_instances()
        scenarios.cli(profile=args.profile)
        scenarios.update_handlers()
        scenarios.start_to_ready()
        scenarios.graceful()
        return meta, build_table(scenarios.raw), scenarios.raw, scenarios.profile
    finally:
        runner.close()


def main(argv=None):
    args = parse_args(argv)
    long_runs = args.graceful_runs or args.runs
    try:
        nspawn.tools()
        nspawn.rootfs()
    except nspawn.Unavailable as exc:
        raise SystemExit(f"bench: no container here: {exc}")
    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    workdir = tempfile.mkdtemp(prefix="gxsdbench-")
    keep = args.keep
    try:
        wheel_dir = container.download_wheels(workdir)
        log_path = os.path.join(workdir, "nspawn.log")
        packages = ("galaxyctl", "gunicorn", "celery")
        with nspawn.booted(f"gxsdbench{os.getpid()}", log_path, venv_packages=packages, wheel_dir=wheel_dir) as box:
            meta, table, raw, profile = measure(box, args, long_runs)
    except BaseException:
        keep = True
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if table is None:
        print_scale(meta, raw)
    else:
        print_report(meta, table)
    if profile:
        print_profile(profile)
    if args.json:
        result = {"meta": meta, "rows": table.rows if table else None, "raw": raw}
        if profile:
            result["profile_ours_status"] = profile
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
