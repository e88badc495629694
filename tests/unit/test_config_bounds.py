"""Every number a config gives is finite and in a documented range; every name fits a file name
(pure: the schema, the converters, gravity.handlers and the memory sizes; no process)."""

import math
from dataclasses import fields

import pytest

from galaxyctl_libs.backends import memlimits
from galaxyctl_libs.core import config, schema
from galaxyctl_libs.core.jobconf import MAX_HANDLERS, load_job_handlers
from galaxyctl_libs.errors import GalaxyctlError

NAN, INF = float("nan"), float("inf")
SECTIONS = (
    schema.GravitySettings,
    schema.GunicornSettings,
    schema.CelerySettings,
    schema.GxItProxySettings,
    schema.TusdSettings,
    schema.ReportsSettings,
)


def refused(raw, source="F"):
    """The one-line message parse_gravity refuses ``raw`` with."""
    with pytest.raises(GalaxyctlError) as caught:
        config.parse_gravity(raw, source)
    assert "\n" not in caught.value.message
    return caught.value.message


def test_every_number_and_name_field_has_a_range():
    """A field added later without one would take NaN, infinity or 10**18 again."""
    for section in SECTIONS:
        for spec in fields(section):
            kind = spec.metadata["kind"]
            if kind in ("int", "number", "name"):
                assert spec.metadata["limit"], f"{section.__name__}.{spec.name} has no range"
            if kind == "port":
                assert config.KIND_LIMITS["port"] == (1, 65535)


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"memory_limit": NAN}, "F: gravity.memory_limit: nan is out of range (0 to 1024)"),
        ({"memory_limit": INF}, "F: gravity.memory_limit: inf is out of range (0 to 1024)"),
        ({"memory_high": 1025}, "F: gravity.memory_high: 1025 is out of range (0 to 1024)"),
        ({"gunicorn": {"memory_limit": NAN}}, "F: gravity.gunicorn.memory_limit: nan is out of range"),
        ({"celery": {"memory_high": -INF}}, "F: gravity.celery.memory_high: -inf is out of range"),
        ({"start_stagger": INF}, "F: gravity.start_stagger: inf is out of range (0 to 3600)"),
        ({"start_stagger": NAN}, "F: gravity.start_stagger: nan is out of range (0 to 3600)"),
        ({"tusd": {"start_stagger": 1e9}}, "F: gravity.tusd.start_stagger: 1000000000.0 is out of range"),
        ({"gunicorn": {"workers": 100000}}, "F: gravity.gunicorn.workers: 100000 is out of range (1 to 1000)"),
        ({"gunicorn": {"workers": 0}}, "F: gravity.gunicorn.workers: 0 is out of range (1 to 1000)"),
        ({"reports": {"workers": 1001}}, "F: gravity.reports.workers: 1001 is out of range (1 to 1000)"),
        ({"celery": {"concurrency": 5000}}, "F: gravity.celery.concurrency: 5000 is out of range (0 to 1000)"),
        ({"gunicorn": {"timeout": INF}}, "F: gravity.gunicorn.timeout: inf is out of range (0 to 86400)"),
        ({"gunicorn": {"timeout": NAN}}, "F: gravity.gunicorn.timeout: nan is out of range (0 to 86400)"),
        ({"gunicorn": {"restart_timeout": 86401}}, "gravity.gunicorn.restart_timeout: 86401 is out of range"),
        ({"celery": {"start_timeout": 10**12}}, "gravity.celery.start_timeout: 1000000000000 is out of range"),
        ({"gx_it_proxy": {"stop_timeout": -1}}, "gravity.gx_it_proxy.stop_timeout: -1 is out of range (0 to 86400)"),
        ({"gx_it_proxy": {"forward_port": 65536}}, "gravity.gx_it_proxy.forward_port: 65536 is out of range (1 to"),
        ({"gunicorn": {"workers": "²"}}, "F: gravity.gunicorn.workers: expected an integer, got '²'"),
        ({"instance_name": "a" * 65}, "F: gravity.instance_name: 'aaaa"),
    ],
)
def test_out_of_range_values_are_refused_naming_file_and_key(raw, message):
    assert message in refused(raw)


def test_a_long_instance_name_says_how_long_it_may_be():
    message = refused({"instance_name": "a" * 300})
    assert "at most 64 characters" in message and "(300 characters)" in message and "a" * 50 not in message


def test_values_at_the_edges_of_their_ranges_load():
    settings = config.parse_gravity(
        {
            "memory_limit": 1024,
            "memory_high": 0,
            "start_stagger": 3600,
            "instance_name": "i" * 64,
            "gunicorn": {"workers": 1000, "timeout": 86400, "restart_timeout": 0, "start_stagger": 0.5},
            "celery": {"concurrency": 0, "stop_timeout": 86400},
            "tusd": {"port": 65535},
        },
        "F",
    )
    assert (settings.memory_limit, settings.start_stagger, settings.gunicorn[0].workers) == (1024, 3600, 1000)
    assert settings.celery.concurrency == 0 and len(settings.instance_name) == 64


def handlers(gravity_handlers, tmp_path):
    return load_job_handlers({}, str(tmp_path / "galaxy.yml"), gravity_handlers)


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"processes": 100000}, "gravity.handlers.h.processes: 100000 is out of range (0 to 5000)"),
        ({"start_stagger": NAN}, "gravity.handlers.h.start_stagger: nan is out of range (0 to 3600)"),
        ({"start_stagger": INF}, "gravity.handlers.h.start_stagger: inf is out of range (0 to 3600)"),
        ({"memory_limit": INF}, "gravity.handlers.h.memory_limit: inf is out of range (0 to 1024)"),
        ({"stop_timeout": 10**9}, "gravity.handlers.h.stop_timeout: 1000000000 is out of range (0 to 86400)"),
        ({"name_template": "x" * 300 + "{process}"}, "cannot be a job handler name (use at most 100 letters"),
    ],
)
def test_gravity_handlers_entries_are_bounded(tmp_path, entry, message):
    with pytest.raises(GalaxyctlError) as caught:
        handlers({"h": entry}, tmp_path)
    assert message in caught.value.message and str(tmp_path) in caught.value.message


def test_handler_processes_are_bounded_in_all(tmp_path):
    """Each entry within its range, but together too many: refused before 1000 names are made each."""
    many = {f"h{i}": {"processes": 600} for i in range(1000)}
    with pytest.raises(GalaxyctlError, match=f"more than {MAX_HANDLERS} handler processes in all"):
        handlers(many, tmp_path)
    assert len(handlers({"h": {"processes": MAX_HANDLERS}}, tmp_path).handlers) == MAX_HANDLERS


def test_a_handler_name_of_100_characters_is_fine(tmp_path):
    assert handlers({"h" * 99 + "1": {}}, tmp_path).handlers[0].server_name == "h" * 99 + "1"


@pytest.mark.parametrize("bad", [NAN, INF, -INF, 1025, 10**400])
def test_memory_sizes_from_a_saved_record_are_checked_again(bad):
    """A record written before the config check existed may hold these: one error, not int(NaN)."""
    with pytest.raises(GalaxyctlError, match="positive number of GB, at most 1024"):
        memlimits.limit_bytes(bad, "gravity.memory_limit")
    assert memlimits.limit_bytes(1024) == 1024 * memlimits.GB and not math.isnan(memlimits.limit_bytes(0))
