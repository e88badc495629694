"""systemd mode: one systemd-nspawn container (``tests/nspawn.py``) holding both tools, and the
demo Galaxy instances they manage in it as systemd units.

Inside the container: ``/opt/venv`` (this checkout's galaxyctl + gunicorn + celery, as
``tests/test_systemd.py`` installs it) and ``/opt/gravity`` (``gravity==1.2.4`` + gunicorn +
celery), both from wheels downloaded on the host and installed with no index; the system user
``galaxy`` runs Galaxy.  Commands run inside through a spawn server started with ``nsenter`` (the
same fork server ``processes.Runner`` uses), so their wall time and peak RSS are taken inside the
container, with no ``nsenter`` in the timed path.

Both tools run as root inside (as systemd-mode sites run them), each instance with its own
``instance_name`` (``g...`` for gravity, ``o...`` for ours) so that their units never share a
name: ``galaxy-gweb.target``, ``galaxy-oweb-gunicorn.service``...  Each command names its config
with ``-c`` and a state dir of that instance with ``--state-dir``.
"""

import contextlib
import json
import os
import shutil
import sys
import tempfile

from .common import REPO, log
from .environments import GRAVITY_PIN
from .measure import get
from .processes import SPAWNER, Runner
from .tools import MAKE_DEMO, ToolCommands

sys.path.insert(0, os.path.join(REPO, "tests"))  # nspawn.py: the container the systemd tests boot too

import nspawn  # noqa: E402

OURS_VENV, GRAVITY_VENV = "/opt/venv", "/opt/gravity"
BASE = "/opt/gxbench"  # the instances' trees and state dirs, inside
IO_DIR = "/var/tmp/gxbench-io"  # the commands' stdout/stderr files, inside
ACTIVE = ("active", "activating", "deactivating", "reloading")


class ContainerRunner(Runner):
    """``processes.Runner`` whose spawn server runs inside the container, as root there."""

    def __init__(self, machine):
        super().__init__(None)
        self.machine = machine
        self.env_base = dict(self.env_base, PATH=nspawn.CLEAN_ENV["PATH"])
        os.makedirs(machine.path(IO_DIR), exist_ok=True)

    def spawner_argv(self):
        return ["nsenter", "-t", str(self.machine.leader), "-a", "--", "/usr/bin/python3", "-I", "-S", "-c", SPAWNER]

    def resolve(self, argv):
        return list(argv)  # paths inside the container: the host's PATH means nothing there

    @contextlib.contextmanager
    def output_file(self):
        with tempfile.NamedTemporaryFile(dir=self.machine.path(IO_DIR)) as handle:
            yield handle, f"{IO_DIR}/{os.path.basename(handle.name)}"

    def kill(self, pid):
        self.machine.run("kill", "-KILL", str(pid), check=False, timeout=30)  # pid is the container's


# ---------------------------------------------------------------- the container


def download_wheels(workdir):
    """Wheels of this checkout and of everything both venvs need, for an install with no index."""
    wheel_dir = os.path.join(workdir, "wheels")
    os.makedirs(wheel_dir)
    log("downloading wheels (this checkout, gunicorn, celery, gravity 1.2.4)")
    nspawn.wheels(wheel_dir, REPO, extra=("celery", GRAVITY_PIN))
    return wheel_dir


def set_up(machine):
    """The gravity venv and the galaxy user (the booted container already has ours)."""
    log(f"installing {GRAVITY_PIN} into {GRAVITY_VENV} inside")
    machine.venv(GRAVITY_VENV, (GRAVITY_PIN, "gunicorn", "celery"))
    machine.run("useradd", "--system", "--user-group", "--home-dir", "/nonexistent", "galaxy")


def versions(machine):
    code = (
        "import importlib.metadata as m, json, sys\n"
        "out = {'python': sys.version.split()[0]}\n"
        "for d in ('gravity', 'galaxyctl', 'gunicorn', 'celery', 'pydantic'):\n"
        "    try: out[d] = m.version(d)\n"
        "    except Exception: pass\n"
        "print(json.dumps(out))"
    )
    found = {key: json.loads(machine.run(f"{venv}/bin/python", "-c", code).stdout) for key, venv in TOOLS_VENVS}
    found["systemd"] = machine.run("systemctl", "--version").stdout.split("\n", 1)[0]
    return found


# ---------------------------------------------------------------- tools and instances


class Instance:
    """One demo Galaxy tree + config + state dir inside the container, for one tool."""

    def __init__(self, tool, name, instance_name, port):
        self.tool, self.name, self.instance_name, self.port = tool, name, instance_name, port
        self.home = f"{BASE}/{instance_name}"
        self.root, self.state_dir = f"{self.home}/galaxy", f"{self.home}/state"
        self.config = f"{self.root}/config/galaxy.yml"

    @property
    def unit_patterns(self):
        return [f"galaxy-{self.instance_name}-*", f"galaxy-{self.instance_name}.target"]


class SystemdTool(ToolCommands):
    """A tool (gravity or ours) inside the container: ``VENV/bin/python VENV/bin/galaxyctl --state-dir S -c
    CONFIG COMMAND`` (its venv's interpreter, as in ``bench/run.py``)."""

    def __init__(self, key, label, venv, runner):
        self.key, self.label, self.venv, self.runner = key, label, venv, runner
        self.machine = runner.machine
        self.python, self.script = f"{venv}/bin/python", f"{venv}/bin/galaxyctl"
        self.home = "/root"
        self.instances = []

    def argv(self, instance, *command):
        return [self.python, self.script, "--state-dir", instance.state_dir, "-c", instance.config, *command]

    def remember(self, instance):
        """Nothing to record: the container's poweroff ends whatever runs in it."""

    def shutdown(self, instance):
        """``stop``, then wait (bounded) until no unit of the instance is active and its port is closed:
        gravity's ``stop`` returns before gunicorn has exited."""
        self.run(instance, "stop", timeout=120)
        if not nspawn.wait_until(lambda: not self.active_units(instance) and not get(instance.port, 0.5)[0], 60):
            raise RuntimeError(
                f"{self.label} {instance.name}: still active 60 s after stop: {self.active_units(instance)}"
            )

    def unit_states(self, instance):
        """{unit: "ACTIVE/SUB"} for the instance's units systemd has loaded."""
        listed = self.machine.run(
            "systemctl", "list-units", "--all", "--plain", "--no-legend", *instance.unit_patterns, check=False
        ).stdout
        rows = [line.split() for line in listed.splitlines()]
        return {row[0]: f"{row[2]}/{row[3]}" for row in rows if len(row) > 3}

    def active_units(self, instance):
        return [unit for unit, state in self.unit_states(instance).items() if state.split("/")[0] in ACTIVE]

    def services_not_running(self, instance):
        """Service units not active/running, or restarted since they started (crash-looping): → {unit: why}."""
        units = [unit for unit in self.unit_states(instance) if unit.endswith(".service")]
        if not units:
            return {instance.unit_patterns[0]: "no unit loaded"}
        shown = self.machine.run("systemctl", "show", "-p", "Id,ActiveState,SubState,NRestarts", *units).stdout
        broken = {}
        for block in shown.strip().split("\n\n"):
            props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
            state = f"{props.get('ActiveState')}/{props.get('SubState')}"
            if state != "active/running" or props.get("NRestarts", "0") != "0":
                broken[props.get("Id")] = f"{state}, {props.get('NRestarts')} restarts"
        return broken

    def unit_files(self, instance):
        unit_dir = self.machine.path("/etc/systemd/system")
        prefix = f"galaxy-{instance.instance_name}"
        return sorted(n for n in os.listdir(unit_dir) if n == f"{prefix}.target" or n.startswith(f"{prefix}-"))

    def remove_units(self, instance):
        """Take an instance's (never started) units away: disable its target, delete its files, reload."""
        files = self.unit_files(instance)
        targets = [n for n in files if n.endswith(".target")]
        if targets:
            self.machine.run("systemctl", "disable", "--no-reload", *targets, check=False)
        for name in files:
            os.unlink(os.path.join(self.machine.path("/etc/systemd/system"), name))
        self.machine.run("systemctl", "daemon-reload")


TOOLS_VENVS = (("gravity", GRAVITY_VENV), ("ours", OURS_VENV))


def make_tools(runner):
    return SystemdTool("gravity", "gravity", GRAVITY_VENV, runner), SystemdTool("ours", "galaxyctl", OURS_VENV, runner)


def make_instance(tool, name, port, settings_fn):
    """A demo tree (``make_demo_galaxy``, run inside with ours' venv) with the ``gravity:`` settings of
    ``bench/run.py`` (``settings_fn``) plus what both tools get the same here: systemd, galaxy_user and
    the instance name.  Its ``database/`` belongs to the galaxy user (gravity's units run gravity as it)."""
    instance = Instance(tool, name, f"{tool.key[0]}{name}", port)
    settings = settings_fn(instance.root, port, tool.venv)
    settings.update(process_manager="systemd", galaxy_user="galaxy", instance_name=instance.instance_name)
    machine = tool.machine
    machine.run(f"{OURS_VENV}/bin/python", "-c", MAKE_DEMO, instance.root, str(port), json.dumps(settings))
    machine.run("install", "-d", "-m", "0755", instance.state_dir)
    machine.run("chown", "-R", "galaxy:galaxy", f"{instance.root}/database")
    # the demo's galaxy.celery puts its queue in lib/database/ (one level short of the root's database/), and
    # kombu's filesystem transport its "control" dir in the working directory (the root): as the galaxy user,
    # in a root-owned tree, celery and beat would crash-loop without these two
    for directory in ("lib/database", "control"):
        machine.run("install", "-d", "-o", "galaxy", "-g", "galaxy", f"{instance.root}/{directory}")
    tool.instances.append(instance)
    return instance


def remove_instance(instance):
    instance.tool.instances.remove(instance)
    shutil.rmtree(instance.tool.machine.path(instance.home), ignore_errors=True)
