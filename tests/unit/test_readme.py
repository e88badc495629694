"""The user's documents stay true: README.rst (and CONTRIBUTING.rst, CHANGELOG.rst) render without a
warning, as PyPI renders the long description; the README's two commands come first and the test
command is the one CI runs; and the README's configuration reference names every key galaxyctl
reads (core/schema.py, the handler entries, storage/config.py), so a new key cannot go undocumented.
"""

import io
import os
import re
from dataclasses import fields

import docutils.core
import pytest

from galaxyctl_libs.core import jobconf, schema, services
from galaxyctl_libs.storage import config as storage

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _read(name):
    with open(os.path.join(REPO, name), encoding="utf-8") as handle:
        return handle.read()


def _sections(text, underline):
    """{title: body} of the headings underlined with ``underline`` characters."""
    parts = re.split(rf"^(.+)\n{re.escape(underline)}{{4,}}\n", text, flags=re.M)
    return {title.strip(): body for title, body in zip(parts[1::2], parts[2::2])}


def _reference():
    return _sections(_sections(_read("README.rst"), "=")["Configuration reference"], "-")


def _literals(text):
    return set(re.findall(r"``([^`]+)``", text))


@pytest.mark.parametrize("name", ["README.rst", "CONTRIBUTING.rst", "CHANGELOG.rst"])
def test_renders_without_warnings(name):
    warnings = io.StringIO()
    docutils.core.publish_doctree(
        _read(name), settings_overrides={"warning_stream": warnings, "report_level": 2, "halt_level": 5}
    )
    assert warnings.getvalue() == "", warnings.getvalue()


def test_the_two_commands_come_first_and_ci_runs_the_test_command():
    readme = _read("README.rst")
    blocks = re.findall(r"::\n\n    (.+)\n", readme)
    assert blocks[0].startswith("python3 scripts/galaxy-quickstart "), blocks[0]
    ci_lines = [line for line in _read(".ci/run").splitlines() if line.strip() and not line.startswith("#")]
    assert blocks[1] == ci_lines[-1], "README's test command differs from the last command of .ci/run"


def test_gravity_section_names_every_top_level_key_and_no_other():
    body = _reference()["The ``gravity:`` section"]
    documented = _literals(body)
    missing = [f.name for f in fields(schema.GravitySettings) if f.name not in documented]
    assert not missing, f"README's configuration reference lacks gravity keys: {missing}"
    known = {f.name for f in fields(schema.GravitySettings)} | set(schema.LEGACY_KEYS)
    listed = re.findall(r"^- ``([a-z_]+)``", body, flags=re.M)
    assert listed and set(listed) <= known, f"documented but not read: {set(listed) - known}"


def test_every_service_key_is_documented():
    body = _reference()["Keys every service section takes"]
    documented = _literals(body)
    missing = []
    for section in (
        schema.ServiceCommon,
        schema.GunicornSettings,
        schema.CelerySettings,
        schema.GxItProxySettings,
        schema.TusdSettings,
        schema.ReportsSettings,
    ):
        missing += [f"{section.__name__}.{f.name}" for f in fields(section) if f.name not in documented]
    assert not missing, f"README's configuration reference lacks: {missing}"


def test_every_handler_entry_key_is_documented():
    documented = _literals(_reference()["``handlers``: job handlers"])
    keys = set(jobconf._HANDLER_KEYS) | {key for key, _, _ in services._HANDLER_SETTINGS}
    keys |= {"{%s}" % field for field in jobconf.TEMPLATE_FIELDS}  # what name_template may use
    missing = sorted(keys - documented)
    assert not missing, f"README's configuration reference lacks handler keys: {missing}"


def test_every_storage_key_is_documented():
    documented = _literals(_reference()["Storage: ``luks``, ``onedata``, ``storage``"])
    keys = {f.name for f in fields(storage.LuksConfig)} | {"ini"}  # ini: Laniakea's luks-cryptdev.ini
    keys |= {f.name for f in fields(storage.OnedataConfig)}
    keys |= {f.name for f in fields(storage.OnedataSpace)} - {"name"}  # a space's name is its mapping key
    keys |= {"required"}  # gravity.storage.required
    missing = sorted(keys - documented)
    assert not missing, f"README's configuration reference lacks storage keys: {missing}"
