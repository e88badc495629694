"""The broker Galaxy's celery uses, read from galaxy.yml as Galaxy 26.1 reads it (core/broker.py: pure)."""

from galaxyctl_libs.core.broker import celery_broker, celery_broker_url
from galaxyctl_libs.probes import celeryping

ROOT = "/srv/galaxy"  # a source tree: data_dir defaults to ROOT/database
CONFIG = "/srv/galaxy/config/galaxy.yml"


def url_of(galaxy, environ=None, root=ROOT, config=CONFIG, cwd=ROOT):
    return celery_broker_url(galaxy, environ, root, config, cwd)


def test_amqp_internal_connection_in_every_form_is_celerys_broker_unchanged():
    for url in (
        "amqp://galaxy:secret@localhost:5672/galaxy",
        "pyamqp://galaxy:secret@mq.example.org:5671/galaxy?ssl=1",
        "redis://localhost:6379/0",
        "sqlalchemy+sqlite:////srv/galaxy/database/control.sqlite?isolation_level=IMMEDIATE",
        "sqlalchemy+postgresql://galaxy:pw@localhost:5432/galaxy",
        "sqlalchemy+postgresql:///galaxy?host=/var/run/postgresql",
        "sqla+sqlite:////tmp/broker.sqlite",
    ):
        assert url_of({"amqp_internal_connection": url}) == (url, "amqp_internal_connection")


def test_celery_conf_broker_url_overrides_amqp_internal_connection():
    galaxy = {
        "amqp_internal_connection": "pyamqp://galaxy:pw@localhost:5672/galaxy",
        "celery_conf": {"broker_url": "redis://localhost:6379/1", "result_backend": "redis://localhost:6379/2"},
    }
    assert url_of(galaxy) == ("redis://localhost:6379/1", "celery_conf.broker_url")
    # null or empty (Galaxy's training material writes `broker_url: null`): amqp_internal_connection
    for empty in (None, ""):
        galaxy["celery_conf"]["broker_url"] = empty
        assert url_of(galaxy) == ("pyamqp://galaxy:pw@localhost:5672/galaxy", "amqp_internal_connection")
    # a celery_conf without broker_url, or not a mapping at all
    assert url_of({"celery_conf": {"task_routes": {}}, "amqp_internal_connection": "amqp://x"})[0] == "amqp://x"
    assert url_of({"celery_conf": "nonsense", "amqp_internal_connection": "amqp://x"})[0] == "amqp://x"


def test_without_amqp_internal_connection_the_database_carries_it():
    url, source = url_of({"database_connection": "postgresql://galaxy:pw@db.example.org/galaxy"})
    assert (url, source) == ("sqlalchemy+postgresql://galaxy:pw@db.example.org/galaxy", "database_connection")
    # Galaxy's _fix_postgresql_dburl first: postgres:// and postgres+driver:// are postgresql
    assert url_of({"database_connection": "postgres://g@h/db"})[0] == "sqlalchemy+postgresql://g@h/db"
    assert url_of({"database_connection": "postgres+psycopg2://g@h/db"})[0] == "sqlalchemy+postgresql+psycopg2://g@h/db"
    absolute = "sqlite:////data/galaxy/universe.sqlite?isolation_level=IMMEDIATE"
    assert url_of({"database_connection": absolute})[0] == "sqlalchemy+" + absolute
    # a relative SQLite path is relative to where the worker runs
    relative = url_of({"database_connection": "sqlite:///database/universe.sqlite"}, cwd="/srv/galaxy")[0]
    assert relative == "sqlalchemy+sqlite:////srv/galaxy/database/universe.sqlite"


def test_nothing_set_is_control_sqlite_in_the_data_dir():
    default = "Galaxy's default (control.sqlite in data_dir)"
    # a source tree: ROOT/database
    assert url_of({}) == ("sqlalchemy+sqlite:////srv/galaxy/database/control.sqlite?isolation_level=IMMEDIATE", default)
    # a packaged Galaxy (no root): data beside the config file
    packaged = url_of({}, root=None, config="/etc/galaxy/galaxy.yml", cwd="/etc/galaxy")[0]
    assert packaged == "sqlalchemy+sqlite:////etc/galaxy/data/control.sqlite?isolation_level=IMMEDIATE"
    # data_dir set: there (relative to where the worker runs)
    assert (
        url_of({"data_dir": "/var/galaxy"})[0]
        == "sqlalchemy+sqlite:////var/galaxy/control.sqlite?isolation_level=IMMEDIATE"
    )
    assert url_of({"data_dir": "data"}, cwd="/srv/galaxy")[0].startswith(
        "sqlalchemy+sqlite:////srv/galaxy/data/control"
    )
    # an empty database_connection is no database_connection
    assert url_of({"database_connection": ""})[1] == default


def test_an_empty_amqp_internal_connection_is_celerys_own_default():
    assert url_of({"amqp_internal_connection": None, "database_connection": "postgresql:///g"})[0] == "amqp://"


def test_environment_overrides_as_galaxy_reads_them():
    galaxy = {"amqp_internal_connection": "pyamqp://file@localhost//", "database_connection": "postgresql:///g"}
    # GALAXY_CONFIG_OVERRIDE_KEY replaces the file's key
    env = {"GALAXY_CONFIG_OVERRIDE_AMQP_INTERNAL_CONNECTION": "pyamqp://env@localhost//"}
    assert url_of(galaxy, env)[0] == "pyamqp://env@localhost//"
    # GALAXY_CONFIG_KEY only sets a key the file lacks
    env = {"GALAXY_CONFIG_AMQP_INTERNAL_CONNECTION": "pyamqp://env@localhost//"}
    assert url_of(galaxy, env)[0] == "pyamqp://file@localhost//"
    assert url_of({"database_connection": "postgresql:///g"}, env)[0] == "pyamqp://env@localhost//"
    # both: the override wins, in whatever order the environment lists them
    env = {"GALAXY_CONFIG_OVERRIDE_DATA_DIR": "/override", "GALAXY_CONFIG_DATA_DIR": "/plain"}
    assert url_of({}, env)[0] == "sqlalchemy+sqlite:////override/control.sqlite?isolation_level=IMMEDIATE"
    env = {"GALAXY_CONFIG_DATABASE_CONNECTION": "postgresql://env/g"}
    assert url_of({}, env) == ("sqlalchemy+postgresql://env/g", "database_connection")
    # celery's own CELERY_BROKER_URL comes before any configured broker_url
    galaxy["celery_conf"] = {"broker_url": "redis://localhost/1"}
    found = url_of(galaxy, {"CELERY_BROKER_URL": "redis://elsewhere/2"})
    assert found == ("redis://elsewhere/2", "CELERY_BROKER_URL in the worker's environment")


def test_broker_settings_go_with_the_url():
    transport = {"data_folder_in": "/q", "data_folder_out": "/q", "control_folder": "/q/control"}
    galaxy = {
        "celery_conf": {
            "broker_url": "filesystem://",
            "broker_transport_options": transport,
            "broker_use_ssl": False,
            "result_backend": "redis://localhost/2",
            "task_routes": {"galaxy.fetch_data": "galaxy.external"},
        }
    }
    found = celery_broker(galaxy, {}, ROOT, CONFIG, ROOT)
    assert found.url == "filesystem://"
    assert found.options == {"broker_transport_options": transport, "broker_use_ssl": False}
    assert celery_broker({}, {}, ROOT, CONFIG, ROOT).options == {}


def test_passwords_are_found_and_masked():
    url = "pyamqp://galaxy:s%40cret@mq1:5672/galaxy;pyamqp://galaxy:other@mq2:5672/galaxy"
    assert set(celeryping.passwords(url)) == {"s%40cret", "s@cret", "other"}
    text = "OperationalError: cannot log in as galaxy:s@cret to mq1 (other)"
    assert celeryping.redact(text, url) == "OperationalError: cannot log in as galaxy:*** to mq1 (***)"
    assert celeryping.passwords("redis://:onlypw@localhost:6379/0") == ["onlypw"]
    assert celeryping.passwords("filesystem://") == [] and celeryping.passwords("sqlalchemy+sqlite:////x.sqlite") == []
    assert celeryping.passwords("pyamqp://user:p[w@host/") == ["p[w"]  # no valid URL (a bracket): still masked


def test_the_celery_worker_service_carries_its_broker(tmp_path):
    from galaxyctl_libs.core import state
    from galaxyctl_libs.core.registration import resolve
    from galaxyctl_libs.core.services import build_services
    from galaxyctl_libs.demo import demo_celery_conf, make_demo_galaxy

    gravity = {"celery": {"enable": True, "enable_beat": True, "environment": {"GALAXY_CONFIG_OVERRIDE_X": "1"}}}
    config = make_demo_galaxy(str(tmp_path / "galaxy"), 8080, gravity=gravity)
    instance, _, _ = resolve(state.ConfigRecord(path=config), str(tmp_path / "state"), enforce_user=False)
    services = {s.service_name: s for s in build_services(instance)}
    worker, beat = services["celery"], services["celery-beat"]
    conf = demo_celery_conf(str(tmp_path / "galaxy"))
    assert (worker.broker_url, worker.broker_from) == ("filesystem://", "celery_conf.broker_url")
    assert worker.broker_options == {"broker_transport_options": conf["broker_transport_options"]}
    assert "filesystem://" not in worker.command_line and beat.broker_url is None  # beat is never pinged
