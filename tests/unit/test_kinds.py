"""The service kinds (core/kinds.py): every kind a builder makes has one entry, every entry a
builder, and nothing outside the registry decides by a service type's name."""

import ast
import os

import pytest

from galaxyctl_libs.backends import memlimits
from galaxyctl_libs.core import kinds, services, targets
from galaxyctl_libs.core.kinds import KINDS

SERVICES_PY = services.__file__


def built_types():
    """{service type: builder function name} from the ``_common(instance, section, TYPE, ...)``
    calls of core/services.py."""
    found = {}
    tree = ast.parse(open(SERVICES_PY, encoding="utf-8").read())
    for function in (node for node in tree.body if isinstance(node, ast.FunctionDef)):
        for call in ast.walk(function):
            if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "_common":
                kind = call.args[2]
                assert isinstance(kind, ast.Constant), f"{function.name}: a service type is a literal"
                found[kind.value] = function.name
    return found


def test_every_built_service_type_has_a_kind_naming_its_builder():
    built = built_types()
    assert built, "no _common call found in core/services.py"
    assert {t: KINDS[t].builder if t in KINDS else None for t in built} == built


def test_every_kind_is_built_by_its_builder():
    built = built_types()
    assert sorted(KINDS) == sorted(built)
    for kind in KINDS.values():
        assert callable(getattr(services, kind.builder, None)), kind.name
    assert services.builders() == tuple(dict.fromkeys(getattr(services, k.builder) for k in KINDS.values()))


@pytest.mark.parametrize("name", sorted(KINDS))
def test_each_kind_has_every_field_a_known_value(name):
    kind = KINDS[name]
    assert kind.name == name
    assert kind.memory in (memlimits.WEB, memlimits.CELERY, memlimits.HANDLER, memlimits.OTHER)
    assert kind.probe in kinds.PROBES
    assert kind.roll in kinds.ROLLS
    assert kind.reload in (targets.GRACEFUL_HUP, targets.GRACEFUL_RESTART, targets.GRACEFUL_NONE)
    assert kind.kill_mode in (None, "mixed", "control-group", "process")
    assert isinstance(kind.rank, int) and 0 <= kind.rank < kinds.OTHER.rank
    assert kind.rank == 0 if kind.web else kind.rank > 0  # web servers start first


def test_roles_come_from_the_pools_not_the_command_line():
    assert kinds.role_of_pools(("workflow-schedulers",)) == kinds.ROLE_WORKFLOW_SCHEDULER
    assert kinds.role_of_pools(("job-handlers", "workflow-schedulers")) == kinds.ROLE_JOB_HANDLER
    assert kinds.role_of_pools(()) == kinds.ROLE_JOB_HANDLER
    handler = targets.Service("_default_", "standalone", "h", (), (), "/")
    scheduler = targets.Service("_default_", "standalone", "s", (), (), "/", role=kinds.ROLE_WORKFLOW_SCHEDULER)
    assert kinds.rank(handler) < kinds.rank(scheduler) < KINDS["celery"].rank


def test_no_module_decides_by_a_service_types_name():
    """Comparisons of ``service_type`` with a literal belong in core/kinds.py: elsewhere they are a
    kind's meaning spread out again (a new kind would silently miss them)."""
    package = os.path.dirname(os.path.dirname(SERVICES_PY))
    wrong = []
    for directory, _, files in os.walk(package):
        for name in files:
            path = os.path.join(directory, name)
            if not name.endswith(".py") or path.endswith(os.path.join("core", "kinds.py")):
                continue
            for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
                if isinstance(node, ast.Compare):
                    sides = [node.left, *node.comparators]
                    names_type = any(getattr(side, "attr", None) == "service_type" for side in sides)
                    literal = any(isinstance(side, (ast.Constant, ast.Tuple, ast.List, ast.Set)) for side in sides)
                    if names_type and literal:
                        wrong.append(f"{os.path.relpath(path, package)}:{node.lineno}")
    assert wrong == []
