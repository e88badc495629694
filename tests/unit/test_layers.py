"""The house (ARCHITECTURE.md, "The layer map"): arrows between the sub-packages run downwards only,
with no import cycle (every import counts, those inside functions too), and modules and functions
stay small.  ARCHITECTURE.md describes every room enforced here and names only modules that exist."""

import ast
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGE = os.path.join(REPO, "galaxyctl_libs")
ARCHITECTURE = os.path.join(REPO, "ARCHITECTURE.md")

# floors, top first: a module may import from its own room or from any room on a lower floor
FLOORS = (
    ("cli",),
    ("actions",),
    ("backends", "compat"),
    ("storage",),
    ("core",),
    ("gate",),  # galaxyctl_libs/gate.py: every touch of what the Galaxy user controls (reads /proc)
    ("probes",),
    ("ground",),  # errors, exitcodes, records, fsutil, rootpolicy
)
# top-level modules with a room of their own: api and tools are outside the house (may use anything)
TOP_LEVEL_ROOMS = {"__init__": "api", "demo": "tools", "herder": "tools", "gate": "gate"}
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60


def modules():
    found = {}
    for directory, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                relative = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3].replace(os.sep, ".")
                found[relative.removesuffix(".__init__")] = path
    return found


def room(module):
    parts = module.split(".")
    if len(parts) == 2 and parts[1] in TOP_LEVEL_ROOMS:
        return TOP_LEVEL_ROOMS[parts[1]]
    if len(parts) == 1:
        return "api"
    return parts[1] if len(parts) > 2 or parts[1] in {r for floor in FLOORS for r in floor} else "ground"


def floor(name):
    return next(i for i, rooms in enumerate(FLOORS) if name in rooms)


def imports(path, module, known):
    tree = ast.parse(open(path, encoding="utf-8").read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("galaxyctl_libs"):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in known else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("galaxyctl_libs"))
    return {m for m in found if m in known and m != module}


def graph():
    known = modules()
    return {module: imports(path, module, known) for module, path in known.items()}


def test_arrows_point_down_only():
    wrong = []
    for module, targets in graph().items():
        source = room(module)
        if source in ("api", "tools"):
            continue
        for target in targets:
            goal = room(target)
            if goal in ("api", "tools") or (goal != source and floor(goal) <= floor(source)):
                wrong.append(f"{module} -> {target}")
    assert wrong == []


def test_no_import_cycle():
    edges = graph()
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for target in sorted(edges.get(node, ())):
            if state.get(target) == "open":
                cycles.append(" -> ".join(stack[stack.index(target) :] + [target]))
            elif target not in state:
                visit(target, stack + [target])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert cycles == []


@pytest.mark.parametrize("module, path", sorted(modules().items()))
def test_sizes(module, path):
    text = open(path, encoding="utf-8").read()
    assert text.count("\n") <= MAX_MODULE_LINES, f"{module}: {text.count(chr(10))} lines"
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(text))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert long == [], f"{module}: {long}"


def architecture():
    return open(ARCHITECTURE, encoding="utf-8").read()


def test_architecture_describes_every_room():
    """Each room of FLOORS has its row in ARCHITECTURE.md's layer map, on its floor."""
    text = architecture()
    missing = [
        f"{room} (floor {number})"
        for number, rooms in enumerate(FLOORS, 1)
        for room in rooms
        if not re.search(rf"^\| {number} \| \*\*{room}\*\* \|", text, re.MULTILINE)
    ]
    assert missing == []


def test_architecture_names_only_modules_that_exist():
    """Every ``path.py`` and ``dir/`` ARCHITECTURE.md names is in galaxyctl_libs (or the repository)."""
    named = set(re.findall(r"`([\w/]+(?:\.py|/))`", architecture()))
    assert named, "no module named in ARCHITECTURE.md"
    gone = sorted(
        name for name in named if not any(os.path.exists(os.path.join(root, name)) for root in (PACKAGE, REPO))
    )
    assert gone == []
