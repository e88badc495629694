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

Add ``bench/.venv-*/`` to ``.gitignore``.
"""

import argparse
import json
import os
import platform
import pwd
import shutil
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench/, for galaxybench

from galaxybench.common import HANDLER_COUNTS, log, median  # noqa: E402
from galaxybench.environments import choose_base_python, ensure_gravity_venv, ensure_ours_venv, venv_versions  # noqa: E402
from galaxybench.measure import measure_graceful, measure_start, profile_ours, settle, wait_http  # noqa: E402
from galaxybench.processes import PidRegistry, Runner  # noqa: E402
from galaxybench.tools import Gravity, Ours, make_instance, settings_full, settings_handlers, settings_herder, settings_web  # noqa: E402

MIB = 1024.0  # ru_maxrss is KiB on Linux


# ---------------------------------------------------------------- measurements


def interleaved(runs, tools, measure, label):
    """Call ``measure(tool)`` ``runs`` times per tool, the order flipping every run; → {key: [results]}."""
    samples = {tool.key: [] for tool in tools}
    for index in range(runs):
        for tool in (tools if index % 2 == 0 else tools[::-1]):
            samples[tool.key].append(measure(tool))
    log(f"{label}: " + ", ".join(f"{t.key} {median([s['seconds'] for s in samples[t.key]]):.3f}s" for t in tools
                                    if all('seconds' in s for s in samples[t.key])))
    return samples


# ---------------------------------------------------------------- the table


class Table:
    def __init__(self):
        self.rows = []

    def add(self, figure, gravity, ours, unit="s", note="", ratio=True):
        if ratio and isinstance(gravity, (int, float)) and isinstance(ours, (int, float)) and ours > 0:
            value = gravity / ours
        else:
            value = None
        self.rows.append({"figure": figure, "unit": unit, "gravity": gravity, "ours": ours, "ratio": value, "note": note})

    @staticmethod
    def fmt(value, unit):
        if value is None:
            return "n/a"
        if isinstance(value, str):
            return value
        if unit == "s":
            return f"{value:.3f} s"
        if unit == "ms":
            return f"{value:.1f} ms"
        if unit == "MiB":
            return f"{value:.1f} MiB"
        if isinstance(value, float):
            return f"{value:.2f}"
        return str(value)

    def render(self):
        lines = []
        width = max(len(r["figure"]) for r in self.rows) + 2
        lines.append(f"{'figure':<{width}}{'gravity':>14}{'ours':>14}{'ratio':>9}  note")
        lines.append("-" * (width + 14 + 14 + 9 + 8))
        for row in self.rows:
            ratio = f"{row['ratio']:.1f}x" if row["ratio"] is not None else ""
            lines.append(f"{row['figure']:<{width}}{self.fmt(row['gravity'], row['unit']):>14}"
                         f"{self.fmt(row['ours'], row['unit']):>14}{ratio:>9}  {row['note']}")
        return "\n".join(lines)


def rss_mib(samples):
    value = median([s["maxrss_kib"] for s in samples])
    return value / MIB if value is not None else None


def secs(samples, key="seconds"):
    return median([s.get(key) for s in samples])


# ---------------------------------------------------------------- main


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="A/B runs per figure (default: %(default)s)")
    parser.add_argument("--graceful-runs", type=int, help="runs for start and graceful figures (default: --runs)")
    parser.add_argument("--json", metavar="OUT", help="write the results as JSON here")
    parser.add_argument("--user", default="nobody", help="as root: run both tools as this user (default: %(default)s)")
    parser.add_argument("--base-python", help="interpreter for the venvs (default: this one, if --user can run it)")
    parser.add_argument("--profile", action="store_true", help="also profile ours' status (-X importtime, cProfile)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (for inspection)")
    args = parser.parse_args(argv)
    long_runs = args.graceful_runs or args.runs

    runner = Runner(args.user)
    workdir = tempfile.mkdtemp(prefix="gxbench-")
    os.chmod(workdir, 0o755)
    pids = PidRegistry()
    tools = []
    previous = {s: signal.signal(s, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt())) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        base_python = choose_base_python(runner, args.base_python)
        gravity_venv = ensure_gravity_venv(runner, base_python)
        ours_venv, stub_readme = ensure_ours_venv(runner, base_python, workdir)
        gravity = Gravity("gravity", "gravity", gravity_venv, runner, workdir, pids)
        ours = Ours("ours", "galaxyctl", ours_venv, runner, workdir, pids)
        tools = [gravity, ours]
        ours_python = ours.python
        meta = {
            "when": time.strftime("%Y-%m-%d %H:%M:%S"), "host": platform.node(), "cpus": os.cpu_count(),
            "kernel": platform.release(), "runs": args.runs, "long_runs": long_runs,
            "run_as": runner.user if runner.uid is not None else pwd.getpwuid(os.geteuid()).pw_name,
            "base_python": base_python, "gravity_venv": venv_versions(gravity_venv), "ours_venv": venv_versions(ours_venv),
            "ours_installed_with_stub_readme": stub_readme,
        }
        log(f"gravity venv {meta['gravity_venv']}; ours venv {meta['ours_venv']}")
        table = Table()
        raw = {}

        # -------- scenario trees
        inst = {}
        for tool in tools:
            inst[(tool.key, "full")] = make_instance(tool, "full", workdir, settings_full, ours_python)
            for count in HANDLER_COUNTS:
                inst[(tool.key, f"h{count}")] = make_instance(tool, f"h{count}", workdir, settings_handlers(count), ours_python)
            inst[(tool.key, "web")] = make_instance(tool, "web", workdir, settings_web(False), ours_python)
            inst[(tool.key, "webpre")] = make_instance(tool, "webpre", workdir, settings_web(True), ours_python)
        inst[("ours", "herder")] = make_instance(ours, "herder", workdir, settings_herder, ours_python)
        first_update = {}
        for (key, name), instance in inst.items():
            tool = instance.tool
            started = time.perf_counter()
            tool.prepare(instance)
            first_update[(key, name)] = time.perf_counter() - started

        # -------- 1. CLI: floor, --help, status (4 services running), no-op update
        log("starting the 4-service instances")
        for tool in tools:
            full = inst[(tool.key, "full")]
            tool.check(full, "start", timeout=180)
            tool.remember(full)
            if not wait_http(full.port, 60):
                raise RuntimeError(f"{tool.label}: the 4-service instance does not answer HTTP")
        time.sleep(3)  # let celery and beat finish booting
        for tool in tools:
            tool.remember(inst[(tool.key, "full")])

        def floor(tool):
            return runner.run([tool.python, "-c", "pass"], home=tool.home)

        def helps(tool):
            return runner.run(tool.help_argv(), home=tool.home)

        def status(tool):
            return tool.run(inst[(tool.key, "full")], "status")

        def noop_update(tool):
            return tool.run(inst[(tool.key, "full")], "update")

        for name, fn in (("python -c pass", floor), ("--help", helps), ("status", status), ("update no-op", noop_update)):
            for tool in tools:  # warm-up, not counted
                fn(tool)
            raw[name] = interleaved(args.runs, tools, fn, name)
        status_rows = {}
        for tool in tools:
            last = status(tool)
            status_rows[tool.key] = {"rc": last["rc"], "out": last["out"].strip().splitlines(),
                                     "processes_rendered": inst[(tool.key, "full")].rendered_processes()}
        raw["status_output"] = status_rows
        profile = profile_ours(ours, inst[("ours", "full")]) if args.profile else None
        for tool in tools:
            tool.shutdown(inst[(tool.key, "full")])

        g, o = raw["python -c pass"]["gravity"], raw["python -c pass"]["ours"]
        table.add("python -c pass (venv floor)", secs(g), secs(o))
        table.add("--help", secs(raw["--help"]["gravity"]), secs(raw["--help"]["ours"]))
        procs = {k: v["processes_rendered"] for k, v in status_rows.items()}
        table.add("status, supervisord up, 4 services", secs(raw["status"]["gravity"]), secs(raw["status"]["ours"]),
                  note=f"processes rendered: gravity {procs['gravity']}, ours {procs['ours']}; "
                       f"exit codes {status_rows['gravity']['rc']}/{status_rows['ours']['rc']}")
        table.add("update no-op, supervisord up", secs(raw["update no-op"]["gravity"]), secs(raw["update no-op"]["ours"]))
        for label, name in (("--help", "--help"), ("status", "status"), ("update no-op", "update no-op")):
            table.add(f"{label} / own python -c pass", secs(raw[name]["gravity"]) / secs(g), secs(raw[name]["ours"]) / secs(o),
                      unit="x", ratio=False)

        # -------- 2. update scaling with dynamic handlers (supervisord not running)
        scaling = {}
        for count in HANDLER_COUNTS:
            def update_n(tool, count=count):
                return tool.run(inst[(tool.key, f"h{count}")], "update")
            for tool in tools:
                update_n(tool)
            scaling[count] = interleaved(args.runs, tools, update_n, f"update no-op, {count} handlers")
        raw["update_handlers"] = {str(k): v for k, v in scaling.items()}
        for count in HANDLER_COUNTS:
            rendered = {t.key: inst[(t.key, f"h{count}")].rendered_processes() - 1 for t in tools}  # minus gunicorn
            table.add(f"update no-op, {count} handler processes", secs(scaling[count]["gravity"]),
                      secs(scaling[count]["ours"]),
                      note=f"handler processes rendered: gravity {rendered['gravity']}, ours {rendered['ours']}")
        for tool in tools:
            t1, t100, t500 = (secs(scaling[c][tool.key]) for c in (1, 100, 500))
            raw.setdefault("growth", {})[tool.key] = {
                "ms_per_100_handlers": (t500 - t1) / 4.99 * 1000,
                "growth_500_vs_100": (t500 - t1) / (t100 - t1) if t100 - t1 > 0.002 else None,
            }
        gr = raw["growth"]
        table.add("update: ms per 100 handlers (1->500)", gr["gravity"]["ms_per_100_handlers"], gr["ours"]["ms_per_100_handlers"],
                  unit="ms")
        table.add("update: (t500-t1)/(t100-t1), linear ~5", gr["gravity"]["growth_500_vs_100"], gr["ours"]["growth_500_vs_100"],
                  unit="x", ratio=False, note="" if None not in (gr["gravity"]["growth_500_vs_100"], gr["ours"]["growth_500_vs_100"])
                  else "n/a: t100 - t1 below timer noise")
        table.add("first update (writes files), 500 handlers", first_update[("gravity", "h500")],
                  first_update[("ours", "h500")], note="single run; ours includes register")
        for name in ("--help", "status", "update no-op"):
            table.add(f"peak RSS {name}", rss_mib(raw[name]["gravity"]), rss_mib(raw[name]["ours"]), unit="MiB")
        table.add("peak RSS update, 500 handlers", rss_mib(scaling[500]["gravity"]), rss_mib(scaling[500]["ours"]), unit="MiB")
        table.add("peak RSS python -c pass", rss_mib(g), rss_mib(o), unit="MiB")

        # -------- 3. start -> first HTTP 200, -> tool's exit ("ready")
        def start(tool):
            return measure_start(tool, inst[(tool.key, "web")])

        raw["start"] = interleaved(long_runs, tools, start, "start")
        for tool in tools:
            tool.shutdown(inst[(tool.key, "web")])
        for tool in tools:
            for sample in raw["start"][tool.key]:
                sample["exit_minus_first_200"] = (sample["exit_seconds"] - sample["first_200"]) if sample["first_200"] else None
        sg, so = raw["start"]["gravity"], raw["start"]["ours"]
        table.add("start -> first HTTP 200", secs(sg, "first_200"), secs(so, "first_200"))
        table.add("start -> tool exits (its 'ready')", secs(sg, "exit_seconds"), secs(so, "exit_seconds"))
        table.add("tool exit - first 200 (<0: exits unready)", secs(sg, "exit_minus_first_200"),
                  secs(so, "exit_minus_first_200"), ratio=False,
                  note="gravity does not wait for HTTP" if (secs(sg, "exit_minus_first_200") or 0) < 0 else "")
        table.add("peak RSS start", rss_mib(sg), rss_mib(so), unit="MiB")

        # -------- 4. graceful under a request loop
        modes = [("preload false", "web"), ("preload true (Galaxy default)", "webpre"), ("unicornherder (ours)", "herder")]
        raw["graceful"] = {}
        for label, name in modes:
            mode_tools = [t for t in tools if (t.key, name) in inst]
            note = ""
            if name == "herder":
                commands = inst[("ours", "herder")].rendered_commands()
                if not any("herder" in c for c in commands):
                    table.add(f"graceful {label}: failed requests", "n/a", "n/a", unit="",
                              note="ours renders no herder yet (plain gunicorn); gravity: unicornherder not installable")
                    raw["graceful"][label] = {"skipped": "no herder in rendered command", "commands": commands}
                    continue
                note = "gravity: unicornherder not installable"
            for tool in mode_tools:
                tool.check(inst[(tool.key, name)], "start", timeout=180)
                tool.remember(inst[(tool.key, name)])
                settle(inst[(tool.key, name)])

            def graceful(tool, name=name):
                result = measure_graceful(tool, inst[(tool.key, name)])
                settle(inst[(tool.key, name)], 0.5)
                return result

            samples = interleaved(long_runs, mode_tools, graceful, f"graceful {label}")
            for tool in mode_tools:
                tool.shutdown(inst[(tool.key, name)])
            raw["graceful"][label] = samples
            gs, os_ = samples.get("gravity"), samples.get("ours")

            def total(s, key):
                return sum(x[key] for x in s) if s else None

            def worst(s):
                return max(x["worst_latency"] for x in s) * 1000 if s else None

            reloaded = {k: sum(1 for x in v if x["new_workers_after"] is not None) for k, v in samples.items()}
            table.add(f"graceful {label}: failed / requests",
                      f"{total(gs, 'failed')}/{total(gs, 'requests')}" if gs else "n/a",
                      f"{total(os_, 'failed')}/{total(os_, 'requests')}", unit="", ratio=False,
                      note=(note + "; " if note else "") + "reloads seen: " +
                      ", ".join(f"{k} {v}/{len(samples[k])}" for k, v in reloaded.items()))
            table.add(f"graceful {label}: worst latency", worst(gs), worst(os_), unit="ms")
            table.add(f"graceful {label}: longest outage", max(x["longest_outage"] for x in gs) if gs else None,
                      max(x["longest_outage"] for x in os_), ratio=False, note="failed requests back to back")
            table.add(f"graceful {label}: median worst latency",
                      median([x["worst_latency"] * 1000 for x in gs]) if gs else None,
                      median([x["worst_latency"] * 1000 for x in os_]), unit="ms")
            table.add(f"graceful {label}: command time", secs(gs) if gs else None, secs(os_))
            table.add(f"graceful {label}: -> new workers answer", secs(gs, "new_workers_after") if gs else None,
                      secs(os_, "new_workers_after"))

        # -------- targets (issue 7)
        st, sf = secs(raw["status"]["ours"]), secs(o)
        targets = [
            ("status >= 10x faster than gravity", secs(raw["status"]["gravity"]) / st >= 10),
            ("status <= 3x own python -c pass", st / sf <= 3),
            ("--help <= 3x own python -c pass", secs(raw["--help"]["ours"]) / sf <= 3),
            ("peak RSS of status/--help/update <= 20 MiB",
             max(rss_mib(raw[n]["ours"]) for n in ("--help", "status", "update no-op")) <= 20),
            ("update no-op, 500 handlers <= 0.3 s", secs(scaling[500]["ours"]) <= 0.3),
            ("start -> first 200 <= 0.5 s", (secs(so, "first_200") or 99) <= 0.5),
            ("ready reported <= 0.3 s after first 200", 0 <= (secs(so, "exit_minus_first_200") or 99) <= 0.3),
        ]
        for label, _ in modes:
            samples = raw["graceful"].get(label, {})
            if isinstance(samples, dict) and samples.get("ours"):
                targets.append((f"0 failed requests, graceful {label}", sum(x["failed"] for x in samples["ours"]) == 0))
        if not any("herder" in c for c in inst[("ours", "herder")].rendered_commands()):
            targets.append(("unicornherder mode measured", False))
        handlers_rendered = inst[("ours", "h500")].rendered_processes() - 1
        if handlers_rendered != 500:
            targets.append((f"ours renders 500 handler processes (got {handlers_rendered})", False))

        print()
        print(f"galaxyctl vs gravity {meta['gravity_venv'].get('gravity')} — medians of {args.runs} A/B runs "
              f"({long_runs} for start/graceful); {meta['cpus']} CPUs; tools run as {meta['run_as']}; "
              f"gunicorn {meta['ours_venv'].get('gunicorn')}; python {meta['ours_venv'].get('python')}")
        print(table.render())
        print()
        print("issue 7 targets (ours):")
        for label, ok in targets:
            print(f"  [{'ok' if ok else 'MISS'}] {label}")
        result = {"meta": meta, "rows": table.rows, "targets": [{"target": t, "met": ok} for t, ok in targets], "raw": raw}
        if profile:
            result["profile_ours_status"] = prof = profile
            print(f"\nours: 'status' imports (supervisord up, 4 services), total {prof['import_total_us'] / 1000:.1f} ms; top:")
            for row in prof["top_imports"]:
                print(f"  {row['cumulative_us'] / 1000:7.1f} ms  {row['module']}")
            print("\nours: cProfile of 'status' (cumulative):")
            print("\n".join(prof["cprofile"].splitlines()[:45]))
        if args.json:
            with open(args.json, "w") as handle:
                json.dump(result, handle, indent=2, default=str)
            log(f"wrote {args.json}")
        return 0 if all(ok for _, ok in targets) else 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # a second Ctrl+C must not cut the clean-up short
            signal.signal(sig, signal.SIG_IGN)
        log("cleaning up")
        for tool in tools:
            for instance in tool.instances:
                try:
                    tool.shutdown(instance)
                except Exception as exc:  # keep cleaning
                    log(f"{tool.label} shutdown of {instance.name}: {exc}")
        runner.close()
        survivors = pids.stop_all()
        if survivors:
            log(f"had to signal leftover PIDs: {survivors}")
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
