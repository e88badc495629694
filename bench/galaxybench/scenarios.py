"""The scenarios: demo instances per tool, warm-ups, A/B interleaving; they fill ``Results``.

Every figure is measured A/B interleaved (the order flips every run) over ``--runs`` runs
(``--graceful-runs`` for start and graceful), after one uncounted warm-up call per tool:

1. CLI: ``python -c pass`` of the venv (the floor), ``--help``, ``status`` with supervisord running
   one instance of 4 services (gunicorn, celery, celery-beat, 1 dynamic handler), a no-op
   ``update`` on that instance; the peak RSS of each command (``ru_maxrss`` from ``os.wait4`` on
   the child: the command and the helpers it waited for);
2. no-op ``update`` with 1, 10, 100, 500 dynamic handler processes (supervisord not running, so
   nothing is started), the per-handler slope and whether growth is linear;
3. ``start`` (from stopped) to the first HTTP 200 and to the tool's own exit;
4. ``graceful`` under a request loop, for ``preload: false``, ``preload: true`` (Galaxy's default)
   and, for ours only, ``app_server: unicornherder`` (skipped when ours renders no herder yet).
"""

import time

from .common import GRACEFUL_MODES, HANDLER_COUNTS, log, median, secs
from .measure import measure_graceful, measure_start, profile_ours, settle, wait_http
from .tools import make_instance, settings_full, settings_handlers, settings_herder, settings_web


class Results:
    """What the scenarios found: ``raw`` (the JSON's "raw", every sample) and the figures beside it."""

    def __init__(self):
        self.raw = {}
        self.first_update = {}  # (tool key, instance name) -> seconds of the first update (writes the files)
        self.handlers_rendered = {}  # (tool key, handler count) -> handler processes in the supervisor files
        self.herder_commands = []  # the commands ours renders for app_server: unicornherder
        self.profile = None  # ours' status, profiled (--profile)


def interleaved(runs, tools, measure, label):
    """Call ``measure(tool)`` ``runs`` times per tool, the order flipping every run; → {key: [results]}."""
    samples = {tool.key: [] for tool in tools}
    for index in range(runs):
        for tool in tools if index % 2 == 0 else tools[::-1]:
            samples[tool.key].append(measure(tool))
    log(
        f"{label}: "
        + ", ".join(
            f"{t.key} {median([s['seconds'] for s in samples[t.key]]):.3f}s"
            for t in tools
            if all("seconds" in s for s in samples[t.key])
        )
    )
    return samples


def warm_then_interleave(runs, tools, measure, label):
    for tool in tools:  # warm-up, not counted
        measure(tool)
    return interleaved(runs, tools, measure, label)


class Scenarios:
    """The scenarios for gravity and ours, each on its own demo instances (keyed (tool key, name))."""

    def __init__(self, runner, gravity, ours, workdir, runs, long_runs):
        self.runner, self.gravity, self.ours, self.workdir = runner, gravity, ours, workdir
        self.tools = [gravity, ours]
        self.runs, self.long_runs = runs, long_runs
        self.inst = {}
        self.results = Results()
        self.raw = self.results.raw

    # -------- instances

    def set_up_instances(self):
        """Both tools: full (4 services), h1 .. h500 (handlers), web, webpre; ours: herder.  Then the first
        ``update`` (ours: ``register`` first) of each, timed."""
        for tool in self.tools:
            self._add(tool, "full", settings_full)
            for count in HANDLER_COUNTS:
                self._add(tool, f"h{count}", settings_handlers(count))
            self._add(tool, "web", settings_web(False))
            self._add(tool, "webpre", settings_web(True))
        self._add(self.ours, "herder", settings_herder)
        for (key, name), instance in self.inst.items():
            started = time.perf_counter()
            instance.tool.prepare(instance)
            self.results.first_update[(key, name)] = time.perf_counter() - started

    def _add(self, tool, name, settings_fn):
        self.inst[(tool.key, name)] = make_instance(tool, name, self.workdir, settings_fn, self.ours.python)

    # -------- 1. CLI: floor, --help, status (4 services running), no-op update

    def cli(self, profile=False):
        self._start_full()
        for name, measure in (
            ("python -c pass", self._floor),
            ("--help", self._help),
            ("status", self._status),
            ("update no-op", self._noop_update),
        ):
            self.raw[name] = warm_then_interleave(self.runs, self.tools, measure, name)
        status_rows = {}
        for tool in self.tools:
            last = self._status(tool)
            status_rows[tool.key] = {
                "rc": last["rc"],
                "out": last["out"].strip().splitlines(),
                "processes_rendered": self.inst[(tool.key, "full")].rendered_processes(),
            }
        self.raw["status_output"] = status_rows
        if profile:
            self.results.profile = profile_ours(self.ours, self.inst[("ours", "full")])
        for tool in self.tools:
            tool.shutdown(self.inst[(tool.key, "full")])

    def _start_full(self):
        log("starting the 4-service instances")
        for tool in self.tools:
            full = self.inst[(tool.key, "full")]
            tool.check(full, "start", timeout=180)
            tool.remember(full)
            if not wait_http(full.port, 60):
                raise RuntimeError(f"{tool.label}: the 4-service instance does not answer HTTP")
        time.sleep(3)  # let celery and beat finish booting
        for tool in self.tools:
            tool.remember(self.inst[(tool.key, "full")])

    def _floor(self, tool):
        return self.runner.run([tool.python, "-c", "pass"], home=tool.home)

    def _help(self, tool):
        return self.runner.run(tool.help_argv(), home=tool.home)

    def _status(self, tool):
        return tool.run(self.inst[(tool.key, "full")], "status")

    def _noop_update(self, tool):
        return tool.run(self.inst[(tool.key, "full")], "update")

    # -------- 2. update scaling with dynamic handlers (supervisord not running)

    def update_scaling(self):
        scaling = {}
        for count in HANDLER_COUNTS:

            def update_n(tool, count=count):
                return tool.run(self.inst[(tool.key, f"h{count}")], "update")

            scaling[count] = warm_then_interleave(self.runs, self.tools, update_n, f"update no-op, {count} handlers")
        self.raw["update_handlers"] = {str(k): v for k, v in scaling.items()}
        for count in HANDLER_COUNTS:
            for tool in self.tools:  # minus gunicorn
                self.results.handlers_rendered[(tool.key, count)] = (
                    self.inst[(tool.key, f"h{count}")].rendered_processes() - 1
                )
        for tool in self.tools:
            t1, t100, t500 = (secs(scaling[c][tool.key]) for c in (1, 100, 500))
            self.raw.setdefault("growth", {})[tool.key] = {
                "ms_per_100_handlers": (t500 - t1) / 4.99 * 1000,
                "growth_500_vs_100": (t500 - t1) / (t100 - t1) if t100 - t1 > 0.002 else None,
            }

    # -------- 3. start -> first HTTP 200, -> tool's exit ("ready")

    def start_to_ready(self):
        def start(tool):
            return measure_start(tool, self.inst[(tool.key, "web")])

        self.raw["start"] = interleaved(self.long_runs, self.tools, start, "start")
        for tool in self.tools:
            tool.shutdown(self.inst[(tool.key, "web")])
        for tool in self.tools:
            for sample in self.raw["start"][tool.key]:
                sample["exit_minus_first_200"] = (
                    (sample["exit_seconds"] - sample["first_200"]) if sample["first_200"] else None
                )

    # -------- 4. graceful under a request loop

    def graceful(self):
        self.results.herder_commands = self.inst[("ours", "herder")].rendered_commands()
        self.raw["graceful"] = {}
        for label, name in GRACEFUL_MODES:
            self.raw["graceful"][label] = self._graceful_mode(label, name)

    def _graceful_mode(self, label, name):
        """→ {tool key: [samples]}, or why the mode was skipped."""
        if name == "herder" and not any("herder" in c for c in self.results.herder_commands):
            return {"skipped": "no herder in rendered command", "commands": self.results.herder_commands}
        mode_tools = [t for t in self.tools if (t.key, name) in self.inst]
        for tool in mode_tools:
            instance = self.inst[(tool.key, name)]
            tool.check(instance, "start", timeout=180)
            tool.remember(instance)
            settle(instance)

        def graceful(tool):
            instance = self.inst[(tool.key, name)]
            result = measure_graceful(tool, instance)
            settle(instance, 0.5)
            return result

        samples = interleaved(self.long_runs, mode_tools, graceful, f"graceful {label}")
        for tool in mode_tools:
            tool.shutdown(self.inst[(tool.key, name)])
        return samples
