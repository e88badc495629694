"""The gravity: schema, includes, precedence and configstate.yaml (pure: no process)."""

import os

import pytest
import yaml

from galaxyctl_libs.core import config, state
from galaxyctl_libs.core.registration import resolve
from galaxyctl_libs.errors import GalaxyctlError


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(text)
    return path


def test_corpus_sample_loads_with_documented_defaults(galaxy_samples):
    sample = os.path.join(galaxy_samples, "galaxy.yml.sample")
    loaded = config.load_config(sample)
    assert loaded.warnings == ()
    settings = config.parse_gravity(loaded.gravity_raw, sample)
    gunicorn = settings.gunicorn[0]
    assert (gunicorn.enable, gunicorn.bind, gunicorn.workers, gunicorn.timeout) == (True, "localhost:8080", 1, 300)
    assert (gunicorn.start_timeout, gunicorn.stop_timeout, gunicorn.restart_timeout) == (15, 65, 300)
    assert config.effective_preload(settings, gunicorn) is True
    celery = settings.celery
    assert (celery.enable, celery.enable_beat, celery.concurrency, celery.loglevel, celery.pool) == (
        True,
        True,
        2,
        "DEBUG",
        "threads",
    )
    assert celery.queues == "celery,galaxy.internal,galaxy.external"
    proxy = settings.gx_it_proxy
    assert (proxy.enable, proxy.version, proxy.ip, proxy.port, proxy.verbose) == (
        False,
        ">=0.0.6",
        "localhost",
        4002,
        True,
    )
    assert proxy.sessions == "database/interactivetools_map.sqlite"
    tusd = settings.tusd[0]
    assert (tusd.enable, tusd.tusd_path, tusd.host, tusd.port, tusd.hooks_http, tusd.hooks_enabled_events) == (
        False,
        "tusd",
        "localhost",
        1080,
        "/api/upload/hooks",
        "pre-create",
    )
    reports = settings.reports
    assert (reports.enable, reports.config_file, reports.bind, reports.workers) == (
        False,
        "reports.yml",
        "localhost:9001",
        1,
    )
    assert (settings.app_server, settings.instance_name, settings.umask, settings.handlers) == (
        "gunicorn",
        "_default_",
        "022",
        {},
    )
    assert settings.service_command_style == "gravity" and settings.use_service_instances is True


def test_gravity_0x_style_config_and_include(tmp_path):
    write(
        str(tmp_path / "gravity.yml"),
        "log_dir: /var/log/galaxy\ngunicorn:\n  bind: localhost:8888\ncelery:\n  enable: false\n  enable_beat: false\n",
    )
    main = write(
        str(tmp_path / "galaxy.yml"), "gravity: !include gravity.yml\ngalaxy:\n  database_connection: sqlite://\n"
    )
    loaded = config.load_config(main)
    settings = config.parse_gravity(loaded.gravity_raw, main)
    assert settings.gunicorn[0].bind == "localhost:8888" and settings.log_dir == "/var/log/galaxy"
    assert settings.celery.enable is False and loaded.galaxy == {"database_connection": "sqlite://"}
    assert loaded.galaxy_config_file == main


def test_gravity_only_file_names_galaxy_config(tmp_path):
    write(str(tmp_path / "galaxy.yml"), "galaxy:\n  galaxy_url_prefix: /galaxy\n")
    only = write(str(tmp_path / "gravity-web.yml"), "galaxy_config_file: galaxy.yml\ngunicorn:\n  workers: 4\n")
    loaded = config.load_config(only)
    assert loaded.galaxy_config_file == str(tmp_path / "galaxy.yml")
    assert loaded.galaxy == {"galaxy_url_prefix": "/galaxy"}
    assert config.parse_gravity(loaded.gravity_raw, only).gunicorn[0].workers == 4


def test_gunicorn_list_and_legacy_keys():
    settings = config.parse_gravity({"gunicorn": [{"bind": "a:1"}, {"bind": "b:2", "preload": False}]}, "f")
    assert [g.bind for g in settings.gunicorn] == ["a:1", "b:2"]
    assert config.parse_gravity({"bind": "localhost:9999"}, "f").gunicorn[0].bind == "localhost:9999"
    assert config.parse_gravity({"bind_address": "0.0.0.0", "bind_port": 81}, "f").gunicorn[0].bind == "0.0.0.0:81"
    assert config.parse_gravity({"umask": 0o22}, "f").umask == "022"  # YAML 1.1 reads 022 as an int


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"gunicorn": {"workers": "abc"}}, "F: gravity.gunicorn.workers: expected an integer, got 'abc'"),
        (
            {"celery": {"loglevel": "LOUD"}},
            "F: gravity.celery.loglevel: expected one of DEBUG, INFO, WARNING, ERROR, got 'LOUD'",
        ),
        ({"gunicorn": {"enable": "yes please"}}, "F: gravity.gunicorn.enable: expected true or false"),
        ({"tusd": {"port": 70000}}, "F: gravity.tusd.port: 70000 is out of range"),
        ({"gunicorn": {"environment": ["A=1"]}}, "F: gravity.gunicorn.environment: expected a mapping"),
        ({"gunicorn": {"environment": {"1BAD": "x"}}}, "is not a valid environment variable name"),
        (
            {"gunicorn": {"bind": "localhost:8080\n[program:evil]"}},
            "F: gravity.gunicorn.bind: must not contain a newline",
        ),
        ({"instance_name": "a b"}, "F: gravity.instance_name: 'a b' may only contain"),
        ({"app_server": "mod_wsgi"}, "F: gravity.app_server: expected one of gunicorn, unicornherder, uwsgi"),
        ({"gunicorn": "fast"}, "F: gravity.gunicorn: expected a mapping, got 'fast'"),
    ],
)
def test_wrong_values_name_file_and_key(raw, message):
    with pytest.raises(GalaxyctlError) as caught:
        config.parse_gravity(raw, "F")
    assert message in caught.value.message and "\n" not in caught.value.message


def test_unknown_keys_warn():
    warnings = []
    config.parse_gravity({"gunicron": {}, "gunicorn": {"wokers": 2}}, "F", warnings)
    assert warnings == ["F: gravity.gunicron: unknown key, ignored", "F: gravity.gunicorn.wokers: unknown key, ignored"]


def test_yaml_syntax_error_names_file_line_column(tmp_path):
    bad = write(str(tmp_path / "galaxy.yml"), "gravity:\n  gunicorn:\n    bind: [unclosed\n")
    with pytest.raises(GalaxyctlError) as caught:
        config.load_config(bad)
    assert caught.value.message.startswith(f"{bad}:4:1: YAML syntax error") or caught.value.message.startswith(
        f"{bad}:3:"
    )


def test_precedence_set_overrides_unset_falls_back_except_app_server_and_handlers(tmp_path):
    path = write(str(tmp_path / "galaxy.yml"), "gravity:\n  gunicorn:\n    workers: 3\n")
    record = state.ConfigRecord(
        path=path,
        attribs={
            "gunicorn": {"workers": 1, "bind": "localhost:7000"},
            "log_dir": "/tmp/logs",
            "app_server": "unicornherder",
            "handlers": {"h": {}},
        },
    )
    instance, attribs, _ = resolve(record, str(tmp_path / "state"), enforce_user=False)
    gunicorn = instance.settings.gunicorn[0]
    assert gunicorn.workers == 3  # set in galaxy.yml: wins
    assert gunicorn.bind == "localhost:7000"  # unset: persisted value
    assert instance.log_dir == "/tmp/logs"
    assert instance.settings.app_server == "gunicorn" and instance.settings.handlers == {}  # revert to defaults
    assert "app_server" not in attribs and attribs["gunicorn"] == {"workers": 3, "bind": "localhost:7000"}


GRAVITY_0X_STATE = """\
config_files:
  {config}:
    config_type: galaxy
    instance_name: _default_
    attribs:
      app_server: gunicorn
      log_dir: {root}/database/gravity/log
      bind: 'localhost:8080'
      galaxy_root: {root}
    services:
    - config_type: galaxy
      service_type: gunicorn
      service_name: gunicorn
    - config_type: galaxy
      service_type: celery
      service_name: celery
    - config_type: galaxy
      service_type: celery-beat
      service_name: celery-beat
"""


def test_gravity_0x_configstate_loads_and_round_trips(tmp_path):
    root = str(tmp_path / "galaxy")
    cfg = write(os.path.join(root, "config", "galaxy.yml"), "galaxy: {}\n")
    state_dir = str(tmp_path / "state")
    write(os.path.join(state_dir, "configstate.yaml"), GRAVITY_0X_STATE.format(config=cfg, root=root))
    loaded = state.load_state(state_dir)
    record = loaded.config_files[cfg]
    assert record.instance_name == "_default_"
    assert [s.service_name for s in record.services] == ["gunicorn", "celery", "celery-beat"]
    assert yaml.safe_load(loaded.render()) == yaml.safe_load(GRAVITY_0X_STATE.format(config=cfg, root=root))
    state.save_state(loaded)
    assert state.load_state(state_dir).as_dict() == loaded.as_dict()
    instance, _, _ = resolve(record, state_dir, enforce_user=False)
    assert instance.settings.gunicorn[0].bind == "localhost:8080"  # the flat 0.x bind
    assert instance.galaxy_root == root and instance.log_dir == f"{root}/database/gravity/log"


def test_unknown_keys_inside_handler_entries_are_warned():
    """A typo in a handler entry (``procesess: 2``) silently gave one process: now it is said."""
    warnings = []
    raw = {"handlers": {"handler": {"procesess": 2, "pools": ["job-handlers"], "start_timeout": 5}, "h2": None}}
    config.parse_gravity(raw, "F", warnings)
    assert warnings == ["F: gravity.handlers.handler.procesess: unknown key, ignored"]


def test_the_handler_entry_keys_are_the_ones_jobconf_and_services_read():
    from galaxyctl_libs.core import jobconf, schema, services

    read = set(jobconf._HANDLER_KEYS) | {key for key, _, _ in services._HANDLER_SETTINGS}
    assert set(schema.HANDLER_ENTRY_KEYS) == read
