"""Public interfaces of the standard library only: no module of galaxyctl imports a private module
(``_json``, ``_socket``, ``_sqlite3``, ``re._parser``…), a private name of a standard module, or
reads a private attribute of one (``sys._getframe``).  Such an interface changes without notice
from one Python to the next.  Every import counts, those inside functions too."""

import ast
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGE = os.path.join(REPO, "galaxyctl_libs")
OWN = "galaxyctl_libs"  # its own modules may share private names with each other
ALLOWED_ATTRIBUTES = {("os", "_exit")}  # documented: the child's exit after a fork


def sources():
    found = [os.path.join(REPO, "galaxyctl")]  # the script that installs as `galaxyctl`
    for directory, _, files in os.walk(PACKAGE):
        found += [os.path.join(directory, name) for name in files if name.endswith(".py")]
    return sorted(found)


def _private(dotted):
    """Is some part of a dotted module name private (``_json``, ``re._parser``)?"""
    return any(part.startswith("_") and part != "__future__" for part in dotted.split("."))


def _stdlib(dotted):
    return dotted.split(".")[0] in sys.stdlib_module_names


def violations(source, filename="<test>"):
    """(line, what) of every private interface ``source`` uses."""
    tree = ast.parse(source, filename)
    found, stdlib_names = [], {}  # local name -> the standard module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _private(alias.name):
                    found.append((node.lineno, f"import {alias.name}"))
                elif _stdlib(alias.name):
                    bound = alias.asname or alias.name.split(".")[0]
                    stdlib_names[bound] = alias.name if alias.asname else bound
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module.split(".")[0] != OWN:
            if _private(node.module):
                found.append((node.lineno, f"from {node.module} import"))
            for alias in node.names:
                if alias.name.startswith("_") and _stdlib(node.module):
                    found.append((node.lineno, f"from {node.module} import {alias.name}"))
                elif _stdlib(node.module):
                    stdlib_names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Call) and _imports_by_name(node.func) and node.args:
            name = node.args[0]
            if isinstance(name, ast.Constant) and isinstance(name.value, str) and _private(name.value):
                found.append((node.lineno, f"import of {name.value!r} by name"))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and isinstance(node.value, ast.Name)
            and node.value.id in stdlib_names
            and (stdlib_names[node.value.id], node.attr) not in ALLOWED_ATTRIBUTES
        ):
            found.append((node.lineno, f"{stdlib_names[node.value.id]}.{node.attr}"))
    return sorted(found)


def _imports_by_name(func):
    """``__import__(…)``, ``importlib.import_module(…)`` or ``import_module(…)``."""
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
    return name in ("__import__", "import_module")


@pytest.mark.parametrize("path", sources(), ids=lambda path: os.path.relpath(path, REPO))
def test_no_private_interface_of_the_standard_library(path):
    with open(path, encoding="utf-8") as handle:
        source = handle.read()
    assert [f"line {line}: {what}" for line, what in violations(source, path)] == []


def test_the_check_sees_each_kind_of_private_use():
    source = (
        "import _json\n"
        "import _socket as s\n"
        "import re._parser\n"
        "from _sqlite3 import connect\n"
        "from json import _default_decoder\n"
        "import importlib\n"
        "importlib.import_module('_json')\n"
        "__import__('_socket')\n"
        "import sys as system\n"
        "system._getframe()\n"
        "from os import path\n"
        "path._joinrealpath\n"
        "def f():\n"
        "    import _sqlite3\n"
    )
    assert [what for _, what in violations(source)] == [
        "import _json",
        "import _socket",
        "import re._parser",
        "from _sqlite3 import",
        "from json import _default_decoder",
        "import of '_json' by name",
        "import of '_socket' by name",
        "sys._getframe",
        "os.path._joinrealpath",
        "import _sqlite3",
    ]


def test_public_interfaces_and_own_private_names_pass():
    source = (
        "from __future__ import annotations\n"
        "import json, socket, sqlite3\n"
        "import os\n"
        "from galaxyctl_libs.rootpolicy import _ids\n"
        "from . import _local\n"
        "os._exit(0)\n"
        "self._private = json.loads('1')\n"
        "socket.socket(socket.AF_UNIX)\n"
        "__import__('json')\n"
    )
    assert violations(source) == []
