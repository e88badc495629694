"""systemd mode (``bench/systemd.py``): the scenarios, both tools in one container, and their table.

Every figure is A/B interleaved over ``--runs`` runs (``--graceful-runs`` for start and graceful)
after one uncounted warm-up per tool, as in supervisor mode (``scenarios``):

1. CLI, Galaxy running (gunicorn, celery, celery-beat, 1 handler as systemd units): ``python -c
   pass`` of the venv (the floor), ``--help``, ``status``, a no-op ``update``, with peak RSS;
2. ``update`` with 100 handler processes (nothing started): the first one (writes the units and
   runs ``daemon-reload``; each run on a fresh instance whose units are removed afterwards) and a
   no-op one;
3. ``start`` (from stopped: every unit inactive, the port closed) to the first HTTP 200 on
   ``/api/version`` and to the tool's own exit, with ``preload: false`` and ``preload: true``;
4. ``graceful`` under a request loop (>= 300 requests, one every ~10 ms): failed requests, worst
   latency, longest outage, with ``preload: true`` (Galaxy's default) and ``preload: false``.
"""

import re
import time

from .common import log, secs
from .container import OURS_VENV, make_instance, remove_instance
from .measure import measure_graceful, measure_start, profile_ours, settle, wait_http
from .report import Table, graceful_rows, rss_mib, start_rows
from .scenarios import interleaved, warm_then_interleave
from .tools import free_port, settings_full, settings_handlers, settings_web

HANDLERS = 100
# inside the container, with ours' venv: the stand-in's handlers exec sleep, and each has a fresh heartbeat
SLEEPING_STAND_IN = (
    "import sys\nfrom galaxyctl_libs.demo import write_heartbeats, write_sleeping_handlers\n"
    "write_sleeping_handlers(sys.argv[1])\nwrite_heartbeats(sys.argv[1], int(sys.argv[2]))"
)
# (table label, instance name), for start and graceful
PRELOAD_MODES = (("preload true", "webpre"), ("preload false", "web"))


class SystemdScenarios:
    def __init__(self, runner, gravity, ours, runs, long_runs):
        self.runner, self.tools = runner, [gravity, ours]
        self.runs, self.long_runs = runs, long_runs
        self.inst = {}  # (tool key, name) -> Instance
        self.raw = {"first_update": {}}
        self.profile = None  # ours' status, profiled (--profile)

    def set_up_instances(self):
        """Per tool: full (4 services), h100, web (preload false), webpre (preload true); then the
        first ``update`` of each (single runs, kept in the JSON)."""
        for tool in self.tools:
            for name, settings_fn in (
                ("full", settings_full),
                (f"h{HANDLERS}", settings_handlers(HANDLERS)),
                ("web", settings_web(False)),
                ("webpre", settings_web(True)),
            ):
                instance = make_instance(tool, name, free_port(), settings_fn)
                self.inst[(tool.key, name)] = instance
                result = tool.check(instance, "update")
                self.raw["first_update"].setdefault(tool.key, {})[name] = result["seconds"]

    # -------- 1. CLI with Galaxy running

    def cli(self, profile=False):
        for tool in self.tools:
            full = self.inst[(tool.key, "full")]
            tool.check(full, "start", timeout=180)
            if not wait_http(full.port, 60):
                raise RuntimeError(f"{tool.label}: the 4-service instance does not answer HTTP")
        time.sleep(5)  # let celery and beat finish booting (a crash loop shows in NRestarts by then)
        self.raw["not_running"] = {}
        for tool in self.tools:  # a crash-looping unit would skew status: say so in the table
            broken = tool.services_not_running(self.inst[(tool.key, "full")])
            self.raw["not_running"][tool.key] = broken
            if broken:
                log(f"{tool.label}: units of the 4-service instance not running: {broken}")
        for name, measure in (
            ("python -c pass", lambda tool: self.runner.run([tool.python, "-c", "pass"], home=tool.home)),
            ("--help", lambda tool: self.runner.run([tool.python, tool.script, "--help"], home=tool.home)),
            ("status", lambda tool: tool.run(self.inst[(tool.key, "full")], "status")),
            ("update no-op", lambda tool: tool.run(self.inst[(tool.key, "full")], "update")),
        ):
            self.raw[name] = warm_then_interleave(self.runs, self.tools, measure, name)
        if profile:
            self.profile = profile_ours(self.tools[1], self.inst[("ours", "full")])
        self.raw["status_output"] = {}
        for tool in self.tools:
            full = self.inst[(tool.key, "full")]
            last = tool.run(full, "status")
            self.raw["status_output"][tool.key] = {
                "rc": last["rc"],
                "out": last["out"].strip().splitlines(),
                "active_units": tool.active_units(full),
            }
            tool.shutdown(full)

    # -------- 2. update with 100 handler processes: first (writes units) and no-op

    def update_handlers(self):
        name = f"h{HANDLERS}"
        self.raw["handler_units"] = {t.key: self._handler_units(t, self.inst[(t.key, name)]) for t in self.tools}

        def noop(tool):
            return tool.run(self.inst[(tool.key, name)], "update")

        self.raw[f"update no-op, {HANDLERS} handlers"] = warm_then_interleave(self.runs, self.tools, noop, "no-op")
        counter = iter(range(10**6))

        def first(tool):
            fresh = make_instance(tool, f"{name}w{next(counter)}", free_port(), settings_handlers(HANDLERS))
            try:
                result = tool.run(fresh, "update")
                result["unit_files"] = tool.unit_files(fresh)
                return result
            finally:
                tool.remove_units(fresh)
                remove_instance(fresh)

        self.raw[f"update first, {HANDLERS} handlers"] = warm_then_interleave(
            self.runs, self.tools, first, f"first update, {HANDLERS} handlers"
        )

    @staticmethod
    def _handler_units(tool, instance):
        """Handler instances the tool's target wants (template instances ``...-handler@N.service``)."""
        target = [n for n in tool.unit_files(instance) if n.endswith(".target")]
        if not target:
            return None
        with open(tool.machine.path(f"/etc/systemd/system/{target[0]}")) as handle:
            return len(set(re.findall(r"-handler@\d+\.service", handle.read())))

    # -------- 3. start -> first HTTP 200, -> the tool's exit

    def start_to_ready(self):
        self.raw["start"] = {}
        for label, name in PRELOAD_MODES:

            def start(tool, name=name):
                return measure_start(tool, self.inst[(tool.key, name)])

            samples = interleaved(self.long_runs, self.tools, start, f"start, {label}")
            for tool in self.tools:
                tool.shutdown(self.inst[(tool.key, name)])
                for sample in samples[tool.key]:
                    first = sample["first_200"]
                    sample["exit_minus_first_200"] = sample["exit_seconds"] - first if first else None
            self.raw["start"][label] = samples

    # -------- 4. graceful under a request loop

    def graceful(self):
        self.raw["graceful"] = {}
        for label, name in PRELOAD_MODES:
            for tool in self.tools:
                instance = self.inst[(tool.key, name)]
                tool.check(instance, "start", timeout=180)
                settle(instance)

            def graceful(tool, name=name):
                instance = self.inst[(tool.key, name)]
                result = measure_graceful(tool, instance)
                settle(instance, 0.5)
                return result

            self.raw["graceful"][label] = interleaved(self.long_runs, self.tools, graceful, f"graceful {label}")
            for tool in self.tools:
                tool.shutdown(self.inst[(tool.key, name)])

    # -------- 5. many handler processes (``--scale``): ours' start, status and check (issue 26)

    def scale(self, sizes):
        """For each N: ours with a handler entry of N processes that exec ``sleep`` (bench/scale.py's
        stand-in) and a fresh heartbeat row each; ``start`` from stopped (it returns once every
        unit is past its start timeout), then ``status`` and ``check`` (medians of ``--runs``),
        then ``stop``.  Ours only: the goals are absolute (issue 26: status 0.5 s, check 1 s)."""
        tool = self.tools[1]
        self.raw["scale"] = {}
        for count in sizes:
            instance = make_instance(tool, f"s{count}", free_port(), settings_handlers(count))
            tool.machine.run(f"{OURS_VENV}/bin/python", "-c", SLEEPING_STAND_IN, instance.root, str(count))
            tool.machine.run("chown", "-R", "galaxy:galaxy", f"{instance.root}/database")
            figures = {"update": tool.check(instance, "update", timeout=600)["seconds"]}
            figures["start"] = tool.check(instance, "start", timeout=1800)["seconds"]
            figures["not_running"] = len(tool.services_not_running(instance))
            for command in ("status", "check"):
                samples = [tool.run(instance, command, timeout=300) for _ in range(self.runs)]
                figures[command] = sorted(sample["seconds"] for sample in samples)[len(samples) // 2]
                figures[f"{command}_rc"] = sorted({sample["rc"] for sample in samples})
            log(f"systemd, {count} handlers: {figures}")
            self.raw["scale"][count] = figures
            tool.shutdown(instance)


def print_scale(meta, raw):
    """The ``--scale`` figures: one row per N."""
    print(f"\nsystemd mode, galaxyctl with N handler processes (each execs sleep); medians of {meta['runs']}; seconds")
    print(f"{'N':>6} {'update':>8} {'start':>8} {'status':>8} {'check':>8}  not running, exit codes")
    for count, f in sorted(raw["scale"].items()):
        print(
            f"{count:>6} {f['update']:>8.2f} {f['start']:>8.1f} {f['status']:>8.3f} {f['check']:>8.3f}  "
            f"{f['not_running']}, status {f['status_rc']} check {f['check_rc']}"
        )


# ---------------------------------------------------------------- the table


def build_table(raw):
    """Raw results → Table (figure, gravity, ours, ratio = gravity / ours: above 1 means ours is better)."""
    table = Table()
    for name in ("python -c pass", "--help"):
        table.add(name, secs(raw[name]["gravity"]), secs(raw[name]["ours"]))
    out = raw["status_output"]
    table.add(
        "status, Galaxy running (4 services)",
        secs(raw["status"]["gravity"]),
        secs(raw["status"]["ours"]),
        note=f"exit codes {out['gravity']['rc']}/{out['ours']['rc']}; "
        f"units active {len(out['gravity']['active_units'])}/{len(out['ours']['active_units'])}"
        + "".join(f"; {key} NOT RUNNING: {', '.join(units)}" for key, units in raw["not_running"].items() if units),
    )
    table.add("update no-op, Galaxy running", secs(raw["update no-op"]["gravity"]), secs(raw["update no-op"]["ours"]))
    first, noop = raw[f"update first, {HANDLERS} handlers"], raw[f"update no-op, {HANDLERS} handlers"]
    units = raw["handler_units"]
    table.add(
        f"update first (writes units), {HANDLERS} handlers",
        secs(first["gravity"]),
        secs(first["ours"]),
        note=f"incl. daemon-reload; handler units wanted: gravity {units['gravity']}, ours {units['ours']}",
    )
    table.add(f"update no-op, {HANDLERS} handlers", secs(noop["gravity"]), secs(noop["ours"]))
    for name, samples in (("status", raw["status"]), ("update no-op", raw["update no-op"])):
        table.add(f"peak RSS {name}", rss_mib(samples["gravity"]), rss_mib(samples["ours"]), unit="MiB")
    table.add(
        f"peak RSS update first, {HANDLERS} handlers", rss_mib(first["gravity"]), rss_mib(first["ours"]), unit="MiB"
    )
    for label, _ in PRELOAD_MODES:
        samples = raw["start"][label]
        start_rows(table, samples["gravity"], samples["ours"], label)
        table.add(
            f"start exit codes, {label}", _codes(samples["gravity"]), _codes(samples["ours"]), unit="", ratio=False
        )
    for label, name in PRELOAD_MODES:
        samples = raw["graceful"][label]
        graceful_rows(table, label, name, samples)
        table.add(
            f"graceful {label}: exit codes", _codes(samples["gravity"]), _codes(samples["ours"]), unit="", ratio=False
        )
    return table


def _codes(samples):
    """The exit codes seen: "0", or "0 x9, 1 x1" when they differ."""
    codes = [s["rc"] for s in samples]
    distinct = sorted(set(codes))
    return str(distinct[0]) if len(distinct) == 1 else ", ".join(f"{c} x{codes.count(c)}" for c in distinct)


def print_report(meta, table):
    print()
    print(
        f"systemd mode: galaxyctl vs gravity {meta['versions']['gravity'].get('gravity')}, same container "
        f"({meta['versions']['systemd']}) — medians of {meta['runs']} A/B runs ({meta['long_runs']} for "
        f"start/graceful); {meta['cpus']} CPUs; tools run as root, Galaxy as 'galaxy' (preload true: Galaxy's default); "
        f"gunicorn {meta['versions']['ours'].get('gunicorn')}; python {meta['versions']['ours'].get('python')}"
    )
    print(table.render())
