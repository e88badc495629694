"""The two tools under test, the demo Galaxy instances they manage, and the session around them.

Each scenario gets its own demo Galaxy tree per tool (``galaxyctl_libs.demo.make_demo_galaxy``, the
test fixtures' tree) with the *same* ``gravity:`` settings for both tools (only ports, roots and
``virtualenv`` differ), in a temporary directory removed at the end.  Each tool runs through its own
venv's interpreter (``VENV/bin/python VENV/bin/galaxyctl``).
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile

from .common import CMD_TIMEOUT, log
from .processes import PidRegistry, Runner

# ``python -c MAKE_DEMO ROOT PORT GRAVITY_JSON`` with ours' interpreter: a demo tree, prints its config path
MAKE_DEMO = (
    "import json, sys\nfrom galaxyctl_libs.demo import make_demo_galaxy\n"
    "print(make_demo_galaxy(sys.argv[1], int(sys.argv[2]), gravity=json.loads(sys.argv[3])))"
)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Instance:
    """One demo Galaxy tree + config + state dir, for one tool."""

    def __init__(self, tool, name, root, config, state_dir, port):
        self.tool, self.name, self.root, self.config, self.state_dir, self.port = (
            tool,
            name,
            root,
            config,
            state_dir,
            port,
        )

    @property
    def pidfile(self):
        return os.path.join(self.state_dir, "supervisor", "supervisord.pid")

    def supervisord_pid(self):
        try:
            with open(self.pidfile) as handle:
                pid = int(handle.read().strip())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def rendered_processes(self):
        """How many processes the supervisor files ask for (``numprocs`` summed over programs)."""
        total = 0
        conf_dir = os.path.join(self.state_dir, "supervisor", "supervisord.conf.d")
        for dirpath, _, filenames in os.walk(conf_dir):
            for filename in filenames:
                if not filename.endswith(".conf"):
                    continue
                with open(os.path.join(dirpath, filename)) as handle:
                    text = handle.read()
                for section in re.split(r"^\[", text, flags=re.M):
                    if section.startswith("program:"):
                        found = re.search(r"^numprocs\s*=\s*(\d+)", section, re.M)
                        total += int(found.group(1)) if found else 1
        return total

    def rendered_commands(self):
        commands = []
        conf_dir = os.path.join(self.state_dir, "supervisor", "supervisord.conf.d")
        for dirpath, _, filenames in os.walk(conf_dir):
            for filename in sorted(filenames):
                with open(os.path.join(dirpath, filename)) as handle:
                    commands += re.findall(r"^command\s*=\s*(.*)$", handle.read(), re.M)
        return commands


class ToolCommands:
    """Running a tool's command for an instance through its runner (host or container): what every
    tool shares; ``argv``, ``runner``, ``home`` and ``label`` are the tool's own."""

    def run(self, instance, *command, timeout=CMD_TIMEOUT):
        return self.runner.run(self.argv(instance, *command), home=self.home, timeout=timeout)

    def check(self, instance, *command, timeout=CMD_TIMEOUT):
        return self.runner.check(
            self.argv(instance, *command), self.home, f"{self.label} {' '.join(command)}", timeout=timeout
        )


class Tool(ToolCommands):
    def __init__(self, key, label, venv, runner, workdir, pids):
        self.key, self.label, self.venv, self.runner, self.pids = key, label, venv, runner, pids
        self.python = os.path.join(venv, "bin", "python")
        self.script = os.path.join(venv, "bin", "galaxyctl")
        self.home = os.path.join(workdir, f"home-{key}")
        os.makedirs(self.home)
        runner.chown(self.home)
        self.instances = []

    def argv(self, instance, *command):
        raise NotImplementedError

    def help_argv(self):
        return [self.python, self.script, "--help"]

    def prepare(self, instance):
        """Register (ours) and write the supervisor files once."""
        self.instances.append(instance)

    def remember(self, instance):
        self.pids.record_tree(instance.supervisord_pid())

    def shutdown(self, instance):
        self.remember(instance)
        if instance.supervisord_pid():
            self.run(instance, "shutdown", timeout=120)


class Gravity(Tool):
    def argv(self, instance, *command):
        return [self.python, self.script, "--state-dir", instance.state_dir, "-c", instance.config, *command]

    def prepare(self, instance):
        super().prepare(instance)
        self.check(instance, "update")


class Ours(Tool):
    def argv(self, instance, *command):
        extra = ["--allow-root"] if self.runner.uid is None and os.geteuid() == 0 else []
        return [self.python, self.script, "--state-dir", instance.state_dir, *extra, *command]

    def prepare(self, instance):
        super().prepare(instance)
        self.check(instance, "register", instance.config)
        self.check(instance, "update")


def make_instance(tool, name, workdir, settings_fn, ours_python):
    root = os.path.join(workdir, f"{tool.key}-{name}", "galaxy")
    state_dir = os.path.join(workdir, f"{tool.key}-{name}", "state")
    os.makedirs(state_dir)
    port = free_port()
    gravity = settings_fn(root, port, tool.venv)
    config = subprocess.run(
        [ours_python, "-c", MAKE_DEMO, root, str(port), json.dumps(gravity)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    tool.runner.chown(os.path.join(workdir, f"{tool.key}-{name}"))
    return Instance(tool, name, root, config, state_dir, port)


def _web(root, port, venv, preload=False, **extra):
    env = {"PYTHONPATH": os.path.join(root, "lib")}  # gravity does not add it; ours does: same for both
    settings = {
        "galaxy_root": root,
        "virtualenv": venv,
        "gunicorn": {"bind": f"127.0.0.1:{port}", "preload": preload, "environment": env},
        "celery": {"enable": False, "enable_beat": False},
    }
    settings.update(extra)
    return settings


def settings_full(root, port, venv):
    env = {"PYTHONPATH": os.path.join(root, "lib")}
    return _web(
        root,
        port,
        venv,
        celery={"enable": True, "enable_beat": True, "environment": env},
        handlers={"handler": {"processes": 1}},
    )


def settings_handlers(count):
    return lambda root, port, venv: _web(root, port, venv, handlers={"handler": {"processes": count}})


def settings_web(preload):
    return lambda root, port, venv: _web(root, port, venv, preload=preload)


def settings_herder(root, port, venv):
    return _web(root, port, venv, app_server="unicornherder")


# ---------------------------------------------------------------- the session (stop everything at the end)


def interrupt(signum, frame):
    """A signal handler: SIGTERM and SIGHUP interrupt like Ctrl+C."""
    raise KeyboardInterrupt()


class Session:
    """One bench run: the runner, a temporary workdir, the PID registry and the tools.

    As a context manager: SIGTERM and SIGHUP interrupt like Ctrl+C; on the way out (whatever
    happened) each tool's ``shutdown`` runs for every instance it prepared, the spawn server is
    closed, recorded PIDs still alive get SIGTERM then SIGKILL, and the workdir is removed."""

    def __init__(self, user, keep=False):
        self.runner = Runner(user)
        self.workdir = tempfile.mkdtemp(prefix="gxbench-")
        os.chmod(self.workdir, 0o755)
        self.pids = PidRegistry()
        self.keep = keep
        self.tools = []
        self._previous = {}

    def add_tool(self, cls, key, label, venv):
        tool = cls(key, label, venv, self.runner, self.workdir, self.pids)
        self.tools.append(tool)
        return tool

    def __enter__(self):
        self._previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
        return self

    def __exit__(self, *exc_info):
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # a second Ctrl+C must not cut the clean-up short
            signal.signal(sig, signal.SIG_IGN)
        log("cleaning up")
        for tool in self.tools:
            for instance in tool.instances:
                try:
                    tool.shutdown(instance)
                except Exception as exc:  # keep cleaning
                    log(f"{tool.label} shutdown of {instance.name}: {exc}")
        self.runner.close()
        survivors = self.pids.stop_all()
        if survivors:
            log(f"had to signal leftover PIDs: {survivors}")
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if self.keep:
            log(f"kept {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return False
