"""The one gate (galaxyctl_libs/gate.py, README "Running as root"): as root, what the Galaxy user can
write is opened, followed, signalled or changed only through the gate.  This test reads the code:
a raw open, kill, chown, chmod, makedirs, removal or socket connect anywhere else fails it, unless
its module is listed below with the reason it never touches a name the Galaxy user chooses."""

import ast
import os

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "galaxyctl_libs")

RAW_OS_CALLS = {
    "open",
    "kill",
    "killpg",
    "chown",
    "lchown",
    "fchown",
    "chmod",
    "lchmod",
    "fchmod",
    "makedirs",
    "mkdir",
    "unlink",
    "remove",
    "rmdir",
    "rename",
    "replace",
    "symlink",
    "link",
    "truncate",
    "mkfifo",
}
RAW_OTHER = {("shutil", "rmtree"), ("shutil", "move"), ("shutil", "copy"), ("shutil", "chown")}

# module (relative to galaxyctl_libs) -> why its raw calls never touch a name the Galaxy user chooses
ALLOWED = {
    "gate.py": "the gate itself: the Galaxy user's ids, O_NOFOLLOW|O_NONBLOCK, bounded reads, proven PIDs",
    "fsutil.py": "root's own files (a root state dir, configs rootpolicy accepted); the gate calls it as the user",
    "probes/procfs.py": "/proc, written by the kernel only",
    "probes/listeners.py": "/proc/net, written by the kernel only",
    "probes/netio.py": "the socket connect; a Galaxy user's unix socket is connected only inside as_user",
    "probes/heartbeat.py": "SQLite connect: its callers read the Galaxy user's database inside as_user",
    "storage/config.py": "LUKS/Onedata files rootpolicy.check_root_controlled accepted, and /proc/self/mountinfo",
    "storage/volumes.py": "mount points and token files rootpolicy.check_root_controlled accepted",
    "backends/herder.py": "runs under the process manager as the Galaxy user, never as root",
    "backends/memwatch.py": "runs under the process manager as the Galaxy user, never as root",
    "backends/beatlock.py": "runs under the process manager as the Galaxy user, never as root",
    "backends/supervisor/launch.py": "starts supervisord as the user supervisord runs as, reading the config it is given",
    "demo.py": "the stand-in Galaxy the tests and the demo run as the Galaxy user, never galaxyctl as root",
}


def modules():
    for directory, _, files in os.walk(PACKAGE):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                yield os.path.relpath(path, PACKAGE).replace(os.sep, "/"), path


def raw_calls(path):
    """(line, call) of each raw file, process or socket operation in the module at ``path``."""
    found = []
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id == "open":
            found.append((node.lineno, "open"))
        elif isinstance(func, ast.Attribute):
            owner = func.value.id if isinstance(func.value, ast.Name) else None
            if owner == "os" and func.attr in RAW_OS_CALLS:
                found.append((node.lineno, f"os.{func.attr}"))
            elif (owner, func.attr) in RAW_OTHER:
                found.append((node.lineno, f"{owner}.{func.attr}"))
            elif func.attr in ("connect", "connect_ex"):
                found.append((node.lineno, f".{func.attr}"))
        elif isinstance(func, ast.Subscript) or (
            isinstance(func, ast.BoolOp) or isinstance(func, ast.IfExp)
        ):  # (os.killpg if group else os.kill)(...) hides the name: only the gate may do that
            names = {n.attr for n in ast.walk(func) if isinstance(n, ast.Attribute)}
            if names & RAW_OS_CALLS:
                found.append((node.lineno, "os.<chosen>"))
    return found


@pytest.mark.parametrize("module, path", list(modules()))
def test_raw_operations_only_in_the_gate_and_root_only_modules(module, path):
    if module in ALLOWED:
        return
    assert raw_calls(path) == [], f"{module}: use galaxyctl_libs.gate (or fsutil for root's own files)"


def test_the_list_names_only_modules_that_need_it():
    """A module that no longer makes raw calls leaves the list (so the list stays the truth)."""
    paths = dict(modules())
    stale = [module for module in ALLOWED if module not in paths or not raw_calls(paths[module])]
    assert stale == []


def test_the_checker_sees_what_it_must(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os, shutil\n"
        "open('x')\nos.open('x', 0)\nos.kill(1, 9)\nos.chown('x', 0, 0)\nshutil.rmtree('x')\n"
        "sock.connect(('h', 1))\n(os.killpg if g else os.kill)(1, 9)\nos.path.join('a')\n"
    )
    calls = [call for _, call in raw_calls(str(sample))]
    assert calls == ["open", "os.open", "os.kill", "os.chown", "shutil.rmtree", ".connect", "os.<chosen>"]
