"""galaxyctl_libs.core.jobconf: static handlers from Galaxy's job configuration, dynamic ones from gravity."""

import dataclasses
import json
import os
import shutil

import pytest
import yaml

from galaxyctl_libs.core.jobconf import DEFAULT_NAME_TEMPLATE, assignment_warning, load_job_handlers
from galaxyctl_libs.errors import GalaxyctlError

# handling.processes of job_conf.sample.yml (Galaxy 26.1)
SAMPLE_YML_HANDLERS = ["handler0", "handler1", "sge_handler", "special_handler0", "special_handler1"]
POSTGRES = "postgresql://galaxy@localhost/galaxy"


@pytest.fixture
def sample_yml(galaxy_samples):
    """Galaxy's job_conf.sample.yml (from galaxy-config, see conftest)."""
    return os.path.join(galaxy_samples, "job_conf.sample.yml")


@pytest.fixture
def sample_xml(galaxy_samples):
    """Galaxy's job_conf.xml.sample_basic."""
    return os.path.join(galaxy_samples, "job_conf.xml.sample_basic")


@pytest.fixture
def galaxy_yml(tmp_path):
    """A galaxy.yml on disk (jobconf only uses its path, its directory is the config dir)."""
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    path = config_dir / "galaxy.yml"
    path.write_text("gravity: {}\ngalaxy: {}\n")
    return path


def names(job_config, **filters):
    return [
        h.server_name for h in job_config.handlers if all(getattr(h, key) == value for key, value in filters.items())
    ]


def xml_with_handlers(sample_xml, handlers_xml):
    """The XML sample with a <handlers> block added, as an admin would."""
    with open(sample_xml) as fh:
        text = fh.read()
    return text.replace("</job_conf>", handlers_xml + "\n</job_conf>")


# ---------------------------------------------------------------- static handlers, Galaxy's samples


def test_sample_yml_next_to_galaxy_yml(galaxy_yml, sample_yml):
    shutil.copy(sample_yml, galaxy_yml.parent / "job_conf.yml")
    job_config = load_job_handlers({}, str(galaxy_yml), None)
    assert names(job_config) == SAMPLE_YML_HANDLERS
    with open(sample_yml) as fh:  # the list above really is what the sample defines
        assert list(yaml.safe_load(fh)["handling"]["processes"]) == SAMPLE_YML_HANDLERS
    assert job_config.source == "job_conf.yml"
    assert job_config.source_path == str(galaxy_yml.parent / "job_conf.yml")
    assert job_config.assign_methods == ()  # commented out in the sample
    assert all(h.source == "job_conf.yml" and not h.dynamic and h.pools == () for h in job_config.handlers)
    assert job_config.static_handlers == job_config.handlers and job_config.dynamic_handlers == ()


def test_sample_yml_by_absolute_job_config_file(galaxy_yml, sample_yml):
    job_config = load_job_handlers({"job_config_file": os.path.abspath(sample_yml)}, str(galaxy_yml), {})
    assert names(job_config) == SAMPLE_YML_HANDLERS
    assert job_config.source_path == os.path.abspath(sample_yml)


def test_sample_xml_basic_defines_no_handlers(galaxy_yml, sample_xml):
    """job_conf.xml.sample_basic has plugins and destinations but no <handlers>."""
    job_config = load_job_handlers({"job_config_file": os.path.abspath(sample_xml)}, str(galaxy_yml), None)
    assert job_config.handlers == ()
    assert job_config.source == "job_conf.xml"
    assert job_config.assign_methods == ()


def test_sample_xml_as_default_job_conf_xml(galaxy_yml, sample_xml):
    shutil.copy(sample_xml, galaxy_yml.parent / "job_conf.xml")
    job_config = load_job_handlers(None, str(galaxy_yml), None)
    assert job_config.source == "job_conf.xml"
    assert job_config.source_path == str(galaxy_yml.parent / "job_conf.xml")
    assert job_config.handlers == ()


def test_xml_handlers_assign_with_and_plugins(galaxy_yml, sample_xml):
    (galaxy_yml.parent / "job_conf.xml").write_text(
        xml_with_handlers(
            sample_xml,
            '    <handlers assign_with="db-preassign, DB-Self" default="handlers">\n'
            '        <handler id="handler0" tags="handlers"/>\n'
            '        <handler id="handler1" tags="handlers,special"><plugin id="local"/></handler>\n'
            '        <handler id="sge_handler"/>\n'
            "    </handlers>",
        )
    )
    job_config = load_job_handlers({}, str(galaxy_yml), None)
    assert names(job_config) == ["handler0", "handler1", "sge_handler"]
    assert {h.source for h in job_config.handlers} == {"job_conf.xml"}
    assert all(h.environment == () for h in job_config.handlers)
    assert job_config.assign_methods == ("db-preassign", "db-self")


def test_yml_preferred_over_xml_when_both_exist(galaxy_yml, sample_yml, sample_xml):
    shutil.copy(sample_yml, galaxy_yml.parent / "job_conf.yml")
    (galaxy_yml.parent / "job_conf.xml").write_text(
        xml_with_handlers(sample_xml, '<handlers><handler id="x"/></handlers>')
    )
    assert load_job_handlers({}, str(galaxy_yml), None).source == "job_conf.yml"


def test_relative_job_config_file_resolves_against_config_dir(galaxy_yml, sample_yml):
    (galaxy_yml.parent / "jobs").mkdir()
    shutil.copy(sample_yml, galaxy_yml.parent / "jobs" / "my_jobs.yml")
    job_config = load_job_handlers({"job_config_file": "jobs/my_jobs.yml"}, str(galaxy_yml), None)
    assert job_config.source_path == str(galaxy_yml.parent / "jobs" / "my_jobs.yml")
    assert names(job_config) == SAMPLE_YML_HANDLERS
    # galaxy.config_dir moves the base; a relative one is anchored at the Galaxy root
    root = galaxy_yml.parent.parent
    other = root / "elsewhere"
    other.mkdir()
    shutil.copy(sample_yml, other / "job_conf.yml")
    job_config = load_job_handlers({"config_dir": "elsewhere"}, str(galaxy_yml), None, galaxy_root=str(root))
    assert job_config.source_path == str(other / "job_conf.yml")


def test_yml_handler_environment(galaxy_yml):
    (galaxy_yml.parent / "job_conf.yml").write_text(
        yaml.safe_dump(
            {
                "handling": {
                    "assign": ["db-skip-locked"],
                    "processes": {
                        "handler0": {"environment": {"FOO": "foo", "N": 3, "ON": True}},
                        "handler1": None,
                    },
                },
            },
            sort_keys=False,
        )
    )
    job_config = load_job_handlers({}, str(galaxy_yml), None)
    first, second = job_config.handlers
    assert first.env == {"FOO": "foo", "N": "3", "ON": "true"}
    assert first.environment == (("FOO", "foo"), ("N", "3"), ("ON", "true"))
    assert second.server_name == "handler1" and second.env == {}
    assert job_config.assign_methods == ("db-skip-locked",)


def test_missing_job_conf_means_no_static_handlers(galaxy_yml):
    job_config = load_job_handlers({}, str(galaxy_yml), None)
    assert job_config.handlers == () and job_config.source is None and job_config.source_path is None
    assert job_config.notes == ()


def test_explicit_job_config_file_missing_is_a_note(galaxy_yml):
    job_config = load_job_handlers({"job_config_file": "nope.yml"}, str(galaxy_yml), None)
    assert job_config.handlers == () and job_config.source is None
    (note,) = job_config.notes
    assert "galaxy.job_config_file" in note and str(galaxy_yml.parent / "nope.yml") in note


# ---------------------------------------------------------------- inline job_config


def test_inline_job_config(galaxy_yml):
    galaxy = {
        "job_config": {
            "runners": {"local": {"load": "galaxy.jobs.runners.local:LocalJobRunner"}},
            "handling": {
                "assign": "db-transaction-isolation",
                "processes": {"main_handler": {"environment": {"TMPDIR": "/scratch"}}, "other": {}},
            },
        }
    }
    job_config = load_job_handlers(galaxy, str(galaxy_yml), None)
    assert names(job_config, source="job_config") == ["main_handler", "other"]
    assert job_config.handlers[0].env == {"TMPDIR": "/scratch"}
    assert job_config.source == "job_config" and job_config.source_path == str(galaxy_yml)
    assert job_config.assign_methods == ("db-transaction-isolation",)


def test_inline_job_config_wins_over_job_config_file(galaxy_yml, sample_yml):
    """As in Galaxy's JobConfiguration: an inline job_config is read even when job_config_file is set."""
    galaxy = {
        "job_config_file": os.path.abspath(sample_yml),
        "job_config": {"handling": {"processes": {"inline0": None}}},
    }
    assert names(load_job_handlers(galaxy, str(galaxy_yml), None)) == ["inline0"]


# ---------------------------------------------------------------- dynamic handlers (gravity.handlers)


def test_dynamic_handlers_processes_pools_environment(galaxy_yml):
    handlers = {
        "handler": {
            "processes": 3,
            "pools": ["job-handlers", "workflow-schedulers"],
            "environment": {"GALAXY_HANDLER": "yes"},
            "start_timeout": 20,
        }
    }
    job_config = load_job_handlers({}, str(galaxy_yml), handlers)
    assert DEFAULT_NAME_TEMPLATE == "{name}_{process}"
    assert names(job_config) == ["handler_0", "handler_1", "handler_2"]
    for handler in job_config.handlers:
        assert handler.source == "gravity.handlers" and handler.dynamic
        assert handler.pools == ("job-handlers", "workflow-schedulers")
        assert handler.attach_to_pool_args() == (
            "--attach-to-pool=job-handlers",
            "--attach-to-pool=workflow-schedulers",
        )
        assert handler.env == {"GALAXY_HANDLER": "yes"}
        assert dict(handler.options) == {"start_timeout": 20}


def test_dynamic_handler_naming_follows_gravity(galaxy_yml):
    handlers = {
        "handler0": {},  # one process, name ends in a digit: used as is
        "single": None,  # one process otherwise: the default template applies
        "workflow_scheduler": {"processes": 2, "name_template": "{name}{process}", "pools": ["workflow-schedulers"]},
        "jh": {"processes": 2, "name_template": "{instance_name}-{name}-{instance_number} "},
        "none": {"processes": 0},
    }
    job_config = load_job_handlers({}, str(galaxy_yml), handlers, instance_name="main")
    assert names(job_config) == [
        "handler0",
        "single_0",
        "workflow_scheduler0",
        "workflow_scheduler1",
        "main-jh-0",
        "main-jh-1",
    ]
    assert job_config.handlers[0].pools == () and job_config.handlers[0].attach_to_pool_args() == ()


def test_static_and_dynamic_together(galaxy_yml, sample_yml):
    shutil.copy(sample_yml, galaxy_yml.parent / "job_conf.yml")
    job_config = load_job_handlers({}, str(galaxy_yml), {"dyn": {"processes": 2, "pools": ["job-handlers"]}})
    assert names(job_config, source="job_conf.yml") == SAMPLE_YML_HANDLERS
    assert names(job_config, source="gravity.handlers") == ["dyn_0", "dyn_1"]
    assert [h.server_name for h in job_config.static_handlers] == SAMPLE_YML_HANDLERS
    assert [h.server_name for h in job_config.dynamic_handlers] == ["dyn_0", "dyn_1"]
    json.dumps(dataclasses.asdict(job_config))  # results are plain data
    with pytest.raises(dataclasses.FrozenInstanceError):
        job_config.handlers = ()


def test_duplicate_handler_name_between_static_and_dynamic(galaxy_yml, sample_yml):
    shutil.copy(sample_yml, galaxy_yml.parent / "job_conf.yml")
    with pytest.raises(GalaxyctlError, match="'handler1' is defined twice.*job_conf.yml.*gravity.handlers"):
        load_job_handlers({}, str(galaxy_yml), {"handler1": {}})


# ---------------------------------------------------------------- assignment method warning


def test_no_warning_without_dynamic_handlers(galaxy_yml, sample_yml):
    shutil.copy(sample_yml, galaxy_yml.parent / "job_conf.yml")
    assert assignment_warning(load_job_handlers({}, str(galaxy_yml), None)) is None


def test_warning_unset_method_on_default_sqlite(galaxy_yml, sample_yml):
    shutil.copy(sample_yml, galaxy_yml.parent / "job_conf.yml")
    message = assignment_warning(load_job_handlers({}, str(galaxy_yml), {"handler": {"processes": 2}}))
    assert "\n" not in message
    assert "handler_0, handler_1" in message
    assert f"handling.assign in {galaxy_yml.parent / 'job_conf.yml'} is not set" in message
    assert "set it to db-transaction-isolation" in message
    assert "SQLite" in message and "no SKIP LOCKED" in message and "db-skip-locked is unavailable" in message


def test_warning_on_postgres_recommends_skip_locked(galaxy_yml):
    galaxy = {"database_connection": POSTGRES, "job_config": {"handling": {"assign": ["db-preassign"]}}}
    message = assignment_warning(load_job_handlers(galaxy, str(galaxy_yml), {"handler": {}}))
    assert f"galaxy.job_config.handling.assign in {galaxy_yml} is db-preassign" in message
    assert "set it to db-skip-locked (or db-transaction-isolation)" in message
    assert "SQLite" not in message


@pytest.mark.parametrize(
    "connection, assign, warns",
    [
        (POSTGRES, ["db-skip-locked"], False),
        (POSTGRES, ["db-transaction-isolation"], False),
        (None, ["db-transaction-isolation"], False),
        ("sqlite:///database/universe.sqlite?isolation_level=IMMEDIATE", ["db-transaction-isolation"], False),
        (None, ["db-skip-locked"], True),  # SQLite has no SKIP LOCKED
        (POSTGRES, ["db-self", "db-skip-locked"], True),  # db-self always succeeds first
        (POSTGRES, ["db-preassign", "db-skip-locked"], False),  # preassign can skip to the next method
        (POSTGRES, [], True),
    ],
)
def test_warning_cases(galaxy_yml, connection, assign, warns):
    galaxy = {"job_config": {"handling": {"assign": assign}}}
    if connection:
        galaxy["database_connection"] = connection
    message = assignment_warning(load_job_handlers(galaxy, str(galaxy_yml), {"handler": {"processes": 1}}))
    assert (message is not None) == warns


def test_warning_on_sqlite_with_skip_locked_names_the_problem(galaxy_yml, sample_xml):
    (galaxy_yml.parent / "job_conf.xml").write_text(
        xml_with_handlers(sample_xml, '<handlers assign_with="db-skip-locked"/>')
    )
    message = assignment_warning(load_job_handlers({}, str(galaxy_yml), {"handler": {}}))
    assert f"the assign_with attribute of <handlers> in {galaxy_yml.parent / 'job_conf.xml'}" in message
    assert "unavailable on a SQLite database (SQLite has no SKIP LOCKED)" in message
    assert "use db-transaction-isolation" in message


def test_warning_without_any_job_configuration(galaxy_yml):
    message = assignment_warning(load_job_handlers({}, str(galaxy_yml), {"handler": {}}))
    assert "is not set" in message and f"create {galaxy_yml.parent / 'job_conf.yml'}" in message


# ---------------------------------------------------------------- errors


def test_broken_xml_names_file_line_and_column(galaxy_yml):
    path = galaxy_yml.parent / "job_conf.xml"
    path.write_text('<?xml version="1.0"?>\n<job_conf>\n  <handlers>\n  </handler>\n</job_conf>\n')
    with pytest.raises(GalaxyctlError) as info:
        load_job_handlers({}, str(galaxy_yml), None)
    assert str(info.value).startswith(f"{path}:4:")
    assert "invalid XML: mismatched tag" in str(info.value) and "\n" not in str(info.value)


def test_broken_yaml_names_file_line_and_column(galaxy_yml):
    path = galaxy_yml.parent / "job_conf.yml"
    path.write_text("handling:\n  processes:\n    handler0: {environment: [unclosed\n")
    with pytest.raises(GalaxyctlError) as info:
        load_job_handlers({}, str(galaxy_yml), None)
    assert str(info.value).startswith(f"{path}:4:1: invalid YAML:")
    assert "\n" not in str(info.value)


def test_xml_handler_without_id(galaxy_yml, sample_xml):
    (galaxy_yml.parent / "job_conf.xml").write_text(
        xml_with_handlers(sample_xml, '<handlers><handler tags="x"/></handlers>')
    )
    with pytest.raises(GalaxyctlError, match=r"job_conf.xml: <handlers>: <handler> number 1 has no id"):
        load_job_handlers({}, str(galaxy_yml), None)


@pytest.mark.parametrize(
    "content, message",
    [
        ("- a list\n", "top level: expected a mapping, got a list"),
        ("handling: db-skip-locked\n", "handling: expected a mapping, got 'db-skip-locked'"),
        ("handling:\n  processes: [handler0]\n", "handling.processes: expected a mapping of handler ids"),
        (
            "handling:\n  processes:\n    h0: {environment: [A]}\n",
            "handling.processes.h0.environment: expected a mapping",
        ),
        ("handling:\n  assign: 3\n", "handling.assign: expected a list of strings, got 3 (int)"),
        ("handling:\n  processes:\n    'bad name': {}\n", "'bad name' cannot be a job handler name"),
    ],
)
def test_wrong_types_in_job_conf_yml(galaxy_yml, content, message):
    path = galaxy_yml.parent / "job_conf.yml"
    path.write_text(content)
    with pytest.raises(GalaxyctlError) as info:
        load_job_handlers({}, str(galaxy_yml), None)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


@pytest.mark.parametrize(
    "handlers, message",
    [
        (["handler"], "gravity.handlers: expected a mapping of handler names to settings, got a list"),
        ({"handler": "two"}, "gravity.handlers.handler: expected a mapping, got 'two'"),
        (
            {"handler": {"processes": "abc"}},
            "gravity.handlers.handler.processes: expected a non-negative integer, got 'abc'",
        ),
        ({"handler": {"processes": True}}, "gravity.handlers.handler.processes: expected a non-negative integer"),
        ({"handler": {"pools": [1]}}, "gravity.handlers.handler.pools[0]: expected a string, got 1 (int)"),
        ({"handler": {"environment": {"A": [1]}}}, "gravity.handlers.handler.environment.A: expected a string"),
        ({"handler": {"environment": {"A=B": "x"}}}, "'A=B' is not a valid environment variable name"),
        (
            {"handler": {"environment": {"A": "x\ny"}}},
            "gravity.handlers.handler.environment.A: must not contain a newline",
        ),
        ({"handler": {"name_template": "{name}_{pid}"}}, "gravity.handlers.handler.name_template: unknown field {pid}"),
        ({"handler": {"name_template": "{name.__class__}"}}, "unknown field {name.__class__}"),
        ({"handler": {"name_template": "{name"}}, "gravity.handlers.handler.name_template: cannot expand"),
        ({"handler": {"name_template": 5}}, "gravity.handlers.handler.name_template: expected a string"),
        ({"handler": {"name_template": "a b{process}"}}, "'a b0' cannot be a job handler name"),
        ({"h": {"processes": 2, "name_template": "same"}}, "'same' is defined twice"),
    ],
)
def test_wrong_types_in_gravity_handlers(galaxy_yml, handlers, message):
    with pytest.raises(GalaxyctlError) as info:
        load_job_handlers({}, str(galaxy_yml), handlers)
    assert message in str(info.value)
    assert str(galaxy_yml) in str(info.value)


def test_errors_name_the_included_gravity_file(galaxy_yml):
    gravity_yml = galaxy_yml.parent / "gravity.yml"
    with pytest.raises(GalaxyctlError, match=f"^{gravity_yml}: gravity.handlers.h.processes: "):
        load_job_handlers({}, str(galaxy_yml), {"h": {"processes": -1}}, gravity_config_file=str(gravity_yml))


@pytest.mark.parametrize(
    "galaxy, message",
    [
        (["not", "a", "mapping"], "galaxy: expected a mapping, got a list"),
        ({"job_config_file": 3}, "galaxy.job_config_file: expected a path, got 3 (int)"),
        ({"database_connection": 5}, "galaxy.database_connection: expected a database URL"),
        ({"job_config": "job_conf.yml"}, "galaxy.job_config: expected a mapping, got 'job_conf.yml'"),
        (
            {"job_config": {"handling": {"processes": {"h": 1}}}},
            "galaxy.job_config.handling.processes.h: expected a mapping",
        ),
    ],
)
def test_wrong_types_in_galaxy_section(galaxy_yml, galaxy, message):
    with pytest.raises(GalaxyctlError, match=f"^{galaxy_yml}: {message}".replace("(", r"\(").replace(")", r"\)")):
        load_job_handlers(galaxy, str(galaxy_yml), None)


def test_never_prints(galaxy_yml, capsys, sample_yml):
    shutil.copy(sample_yml, galaxy_yml.parent / "job_conf.yml")
    job_config = load_job_handlers({}, str(galaxy_yml), {"handler": {"processes": 2}})
    assert assignment_warning(job_config)
    assert capsys.readouterr() == ("", "")
