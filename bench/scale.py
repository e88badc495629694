#!/usr/bin/env python3
"""galaxyctl vs gravity with many processes: update, start, status and check at 10 to 2,000 handlers.

Usage (standard library only; as root, the tools run as ``--user``, as bench/run.py does)::

    python3 bench/scale.py [--sizes 10,100,400,1000,2000] [--runs 3] [--json OUT]

For each size N, for gravity 1.2.4 then ours (one tool's processes at a time, so that the two do
not share the machine): a stand-in Galaxy (``galaxyctl_libs.demo``, the venvs of bench/run.py,
``bench/.venv-gravity`` and ``bench/.venv-ours``) with gunicorn and a dynamic handler of N
processes, each of which execs ``sleep`` (a handler costs the process manager what a real one
does, and the machine nothing), and heartbeat rows for all of them in its SQLite database (so that
ours' ``check`` reads them all and says OK).  Measured:

- ``update``: the first one, which writes the N files (ours registers the config first);
- ``start`` from stopped: the tool's own exit, and until every process is RUNNING (the last
  ``entered RUNNING state`` line of supervisord's log: read from the file, without asking
  supervisord, which would slow what it measures);
- ``status`` and ``check`` (gravity has no check), medians of ``--runs``, with everything running;
- then ``shutdown`` (not measured).

It prints one table with both tools and how each figure grows from one size to the next (x5 from
400 to 2,000 processes: linear cost grows x5).  Every process started is stopped at the end (each
tool's shutdown, then the PIDs recorded under supervisord).  All waits are bounded.
"""

import argparse
import glob
import json
import os
import re
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [BENCH, os.path.dirname(BENCH)]  # bench/, for galaxybench; the checkout, for galaxyctl_libs

from galaxybench.common import log, median  # noqa: E402
from galaxybench.environments import choose_base_python, describe_run, ensure_gravity_venv, ensure_ours_venv  # noqa: E402
from galaxybench.tools import Gravity, Ours, Session, make_instance, settings_handlers  # noqa: E402

from galaxyctl_libs.demo import write_heartbeats, write_sleeping_handlers  # noqa: E402

SIZES = (10, 100, 400, 1000, 2000)
RUNNING_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d+) \w+ success: (\S+) entered RUNNING state", re.M)
START_LIMIT = 1800  # seconds for a start to bring every process to RUNNING


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="handler processes (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=3, help="runs of status and check per size (default: %(default)s)")
    parser.add_argument("--tools", default="gravity,ours", help="which tools to measure (default: %(default)s)")
    parser.add_argument("--json", metavar="OUT", help="write the figures as JSON here")
    parser.add_argument("--user", default="nobody", help="as root: run both tools as this user (default: %(default)s)")
    parser.add_argument("--base-python", help="interpreter for the venvs (default: this one, if --user can run it)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (for inspection)")
    return parser.parse_args(argv)


def stand_in(tool, count, workdir, ours_python, runner):
    """The demo Galaxy with ``count`` sleeping handler processes, for ``tool``."""
    instance = make_instance(tool, f"n{count}", workdir, settings_handlers(count), ours_python)
    write_sleeping_handlers(instance.root)
    runner.chown(os.path.dirname(instance.root))
    return instance


def fresh_heartbeats(instance, count, runner):
    """A heartbeat row per handler, written now, in the stand-in's database (what Galaxy's handlers write)."""
    write_heartbeats(instance.root, count)
    runner.chown(os.path.join(instance.root, "database", "universe.sqlite"))


def running_times(instance, since):
    """{process: when it entered RUNNING} after ``since`` (wall clock), from supervisord's log(s)."""
    found = {}
    pattern = os.path.join(os.path.dirname(instance.root), "**", "supervisord.log")
    for path in glob.glob(pattern, recursive=True):
        with open(path, encoding="utf-8", errors="replace") as handle:
            for stamp, millis, name in RUNNING_LINE.findall(handle.read()):
                when = time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) + int(millis) / 1000
                if when >= since - 1:
                    found[name.rsplit(":", 1)[-1]] = when
    return found


def measure_start(tool, instance, count):
    """(seconds until the command returned, seconds until all count+1 processes were RUNNING)."""
    since = time.time()
    result = tool.run(instance, "start", timeout=START_LIMIT)
    tool.remember(instance)
    if result["rc"] != 0:
        log(f"{tool.label} start exited {result['rc']}: {(result['out'] + result['err'])[-500:]}")
    deadline = time.monotonic() + START_LIMIT
    while time.monotonic() < deadline:
        times = running_times(instance, since)
        if len(times) >= count + 1:
            return result["seconds"], max(times.values()) - since
        time.sleep(2)
    log(f"{tool.label}: only {len(running_times(instance, since))} of {count + 1} processes RUNNING")
    return result["seconds"], None


def measure_size(tool, count, runs, workdir, ours_python, runner):
    instance = stand_in(tool, count, workdir, ours_python, runner)
    figures = {}
    started = time.perf_counter()
    tool.prepare(instance)  # ours: register + update; gravity: update
    figures["update"] = time.perf_counter() - started
    try:
        figures["start"], figures["all running"] = measure_start(tool, instance, count)
        tool.remember(instance)
        fresh_heartbeats(instance, count, runner)
        commands = [("status", ("status",))] + ([("check", ("check", "--no-ping"))] if tool.key == "ours" else [])
        for name, command in commands:
            samples = [tool.run(instance, *command, timeout=300) for _ in range(runs)]
            figures[name] = median([s["seconds"] for s in samples])
            figures[f"{name} rc"] = samples[-1]["rc"]
            figures[f"{name} lines"] = len(samples[-1]["out"].splitlines())
    finally:
        tool.shutdown(instance)
    log(f"{tool.label} N={count}: " + ", ".join(f"{k} {v:.3f}" for k, v in figures.items() if isinstance(v, float)))
    return figures


def growth(values, sizes):
    """'x4.8' per step between sizes, for a row of figures."""
    steps = []
    for (a, b), (n, m) in zip(zip(values, values[1:]), zip(sizes, sizes[1:])):
        steps.append(f"x{b / a:.1f} for x{m / n:g}" if a and b else "-")
    return steps


def print_table(results, sizes):
    print()
    rows = [
        ("update (first)", "update"),
        ("start: command", "start"),
        ("start: all RUNNING", "all running"),
        ("status", "status"),
        ("check", "check"),
    ]
    head = f"{'figure':<22} {'tool':<8} " + " ".join(f"{f'N={n}':>9}" for n in sizes)
    print(head)
    print("-" * len(head))
    for label, key in rows:
        for tool in ("gravity", "ours"):
            values = [results[tool].get(n, {}).get(key) for n in sizes]
            if all(v is None for v in values):
                continue
            cells = " ".join(f"{v:>8.2f}s" if v is not None else f"{'n/a':>9}" for v in values)
            print(f"{label:<22} {tool:<8} {cells}")
    print()
    for tool in ("gravity", "ours"):
        for key in ("status", "check", "all running"):
            values = [results[tool].get(n, {}).get(key) for n in sizes]
            if any(v is not None for v in values):
                print(f"growth of {tool} {key}: " + ", ".join(growth(values, sizes)))


def main(argv=None):
    args = parse_args(argv)
    sizes = [int(n) for n in args.sizes.split(",")]
    with Session(args.user, keep=args.keep) as session:
        runner = session.runner
        base_python = choose_base_python(runner, args.base_python)
        gravity = session.add_tool(Gravity, "gravity", "gravity", ensure_gravity_venv(runner, base_python))
        ours_venv, stub = ensure_ours_venv(runner, base_python, session.workdir)
        ours = session.add_tool(Ours, "ours", "galaxyctl", ours_venv)
        meta = describe_run(runner, args.runs, args.runs, base_python, gravity.venv, ours_venv, stub)
        results = {"gravity": {}, "ours": {}}
        chosen = [tool for tool in (gravity, ours) if tool.key in args.tools.split(",")]
        for count in sizes:
            for tool in chosen:
                results[tool.key][count] = measure_size(tool, count, args.runs, session.workdir, ours.python, runner)
        print(
            f"\ngalaxyctl vs gravity {meta['gravity_venv'].get('gravity')}, {meta['cpus']} CPUs, tools run as "
            f"{meta['run_as']}; medians of {args.runs} for status and check; handler processes exec sleep"
        )
        print_table(results, sizes)
        if args.json:
            with open(args.json, "w") as handle:
                json.dump({"meta": meta, "sizes": sizes, "results": results}, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
