"""Each service's command line and environment from a config (pure: no process)."""

import os
import shlex
import shutil
import sys

import pytest
import yaml

from galaxyctl_libs.backends.base import herded_argv
from galaxyctl_libs.core import state
from galaxyctl_libs.core.registration import resolve
from galaxyctl_libs.core.services import build_services
from galaxyctl_libs.errors import GalaxyctlError
from galaxyctl_libs.probes import procfs


def services_for(config_path, state_dir="/tmp/state"):
    instance, _, warnings = resolve(state.ConfigRecord(path=config_path), state_dir, enforce_user=False)
    return {s.service_name: s for s in build_services(instance)}, warnings, instance


def write_config(directory, gravity, galaxy=None):
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "galaxy.yml")
    with open(path, "w") as handle:
        yaml.safe_dump({"gravity": gravity, "galaxy": galaxy or {}}, handle)
    return path


def test_every_service_command_line(tmp_path):
    venv = str(tmp_path / "venv")
    os.makedirs(os.path.join(venv, "bin"))
    for exe in ("python", "gunicorn", "celery", "npx", "galaxy-main"):
        path = os.path.join(venv, "bin", exe)
        with open(path, "w") as handle:
            handle.write("#!/bin/sh\n")
        os.chmod(path, 0o755)
    config = write_config(
        str(tmp_path / "config"),
        {
            "virtualenv": venv,
            "gunicorn": {
                "bind": "unix:/run/galaxy.sock",
                "workers": 2,
                "extra_args": "--forwarded-allow-ips=*",
                "environment": {"FOO": "bar"},
            },
            "celery": {"concurrency": 4, "loglevel": "INFO", "extra_args": "-n worker1"},
            "gx_it_proxy": {
                "enable": True,
                "environment": {"PATH": "/opt/node/bin"},
                "port": 4003,
                "forward_ip": "10.0.0.2",
                "forward_port": 8000,
                "reverse_proxy": True,
            },
            "tusd": {"enable": True, "upload_dir": "/data/tus", "port": 1081},
            "reports": {"enable": True, "url_prefix": "/reports"},
            "handlers": {"handler": {"processes": 2, "pools": ["job-handlers"]}},
        },
        galaxy={
            "interactivetools_map": "/data/it.sqlite",
            "galaxy_infrastructure_url": "https://galaxy.example.org/",
            "database_connection": "postgresql:///galaxy",
        },
    )
    services, _, instance = services_for(config)
    bin_dir = os.path.join(venv, "bin")
    assert list(services) == [
        "gunicorn",
        "celery",
        "celery-beat",
        "gx-it-proxy",
        "tusd",
        "reports",
        "handler_0",
        "handler_1",
    ]
    # preload (the default): the service is gravity's command line; a backend runs it under our herder
    # (graceful re-execs it without downtime), with the pid file in the backend's own directory
    argv = services["gunicorn"].argv
    assert services["gunicorn"].graceful == "herder" and services["gunicorn"].ready_timeout == 300
    herded = herded_argv(services["gunicorn"], "/run/x")
    assert herded[:5] == (
        sys.executable,
        "-m",
        "galaxyctl_libs.backends.herder",
        "--pidfile",
        "/run/x/_default__gunicorn.pid",
    )
    assert herded[herded.index("--") + 1 :] == argv
    assert shlex.join(argv) == (
        f"{bin_dir}/gunicorn 'galaxy.webapps.galaxy.fast_factory:factory()' --timeout 300 --pythonpath lib "
        "-k galaxy.webapps.galaxy.workers.Worker -b unix:/run/galaxy.sock --workers=2 "
        "--config python:galaxy.web_stack.gunicorn_config --preload '--forwarded-allow-ips=*'"
    )
    env = dict(services["gunicorn"].environment)
    marker = {"GALAXYCTL_STATE_ID": procfs.state_id("/tmp/state"), "GALAXYCTL_SERVICE": "_default_/gunicorn"}
    assert env == {"PYTHONPATH": "lib", "GALAXY_CONFIG_FILE": config, "VIRTUAL_ENV": venv, "FOO": "bar", **marker}
    assert list(env)[-2:] == list(marker)  # last: a config's environment cannot override the marker
    assert services["gunicorn"].path_prepend == (bin_dir,)
    assert services["gunicorn"].full_environment({"PATH": "/usr/bin"})["PATH"] == f"{bin_dir}:/usr/bin"
    assert services["celery"].command_line == (
        f"{bin_dir}/celery --app galaxy.celery worker --concurrency 4 --loglevel INFO --pool threads "
        "--queues celery,galaxy.internal,galaxy.external -n worker1"
    )
    assert services["celery-beat"].command_line == (
        f"{bin_dir}/celery --app galaxy.celery beat --loglevel INFO --schedule /tmp/state/celerybeat-schedule"
    )
    assert services["gx-it-proxy"].command_line == (
        f"{bin_dir}/npx '@galaxyproject/gx-it-proxy@>=0.0.6' --ip localhost --port 4003 --sessions /data/it.sqlite "
        "--verbose --forwardIP 10.0.0.2 --forwardPort 8000 --reverseProxy --proxyPathPrefix /interactivetool/ep"
    )
    # npx says yes through npm_config_yes; a section's PATH gets the virtualenv's bin in front, like gravity's
    proxy_env = dict(services["gx-it-proxy"].environment)
    assert proxy_env["npm_config_yes"] == "true" and proxy_env["PATH"] == f"{bin_dir}:/opt/node/bin"
    assert services["gx-it-proxy"].path_prepend == ()
    assert services["tusd"].command_line == (
        "tusd -host=localhost -port=1081 -upload-dir=/data/tus -hooks-http=https://galaxy.example.org/api/upload/hooks "
        "-hooks-http-forward-headers=X-Api-Key,Cookie -hooks-enabled-events pre-create"
    )
    assert services["tusd"].graceful == "none"
    assert "GALAXY_CONFIG_FILE" not in dict(services["tusd"].environment)
    assert services["reports"].command_line == (
        f"{bin_dir}/gunicorn 'galaxy.webapps.reports.fast_factory:factory()' --timeout 300 --pythonpath lib "
        "-k uvicorn.workers.UvicornWorker -b localhost:9001 --workers=1 "
        "--config python:galaxy.web_stack.gunicorn_config --env SCRIPT_NAME=/reports"
    )
    reports_env = dict(services["reports"].environment)
    assert reports_env["GALAXY_REPORTS_CONFIG"] == os.path.join(os.path.dirname(config), "reports.yml")
    assert reports_env["PYTHONPATH"] == "lib" and "GALAXY_CONFIG_FILE" not in reports_env
    # a packaged Galaxy (no source tree): its galaxy-main; a handler has -c, not GALAXY_CONFIG_FILE
    assert services["handler_1"].command_line == (
        f"{bin_dir}/galaxy-main -c {config} --server-name=handler_1 --attach-to-pool=job-handlers"
    )
    assert set(dict(services["handler_1"].environment)) == {"VIRTUAL_ENV", *marker}


def test_gunicorn_without_preload_is_gravitys_command_line_and_hups(tmp_path):
    config = write_config(str(tmp_path / "config"), {"gunicorn": {"preload": False}})
    gunicorn = services_for(config)[0]["gunicorn"]
    assert gunicorn.argv[1] == "galaxy.webapps.galaxy.fast_factory:factory()" and gunicorn.graceful == "hup"
    assert "--preload" not in gunicorn.argv


def test_static_handlers_from_corpus_job_conf_yml_and_xml(tmp_path, galaxy_samples):
    directory = str(tmp_path / "config")
    config = write_config(directory, {"celery": {"enable": False, "enable_beat": False}})
    shutil.copy(os.path.join(galaxy_samples, "job_conf.sample.yml"), os.path.join(directory, "job_conf.yml"))
    services, _, _ = services_for(config)
    assert [n for n in services if n != "gunicorn"] == [
        "handler0",
        "handler1",
        "sge_handler",
        "special_handler0",
        "special_handler1",
    ]
    assert services["handler0"].argv[-1] == "--server-name=handler0"

    os.unlink(os.path.join(directory, "job_conf.yml"))
    with open(os.path.join(galaxy_samples, "job_conf.xml.sample_basic")) as handle:
        xml = handle.read()
    xml = xml.replace(
        "</job_conf>", '<handlers assign_with="db-skip-locked"><handler id="main_handler"/></handlers>\n</job_conf>'
    )
    with open(os.path.join(directory, "job_conf.xml"), "w") as handle:
        handle.write(xml)
    services, _, _ = services_for(config)
    assert [n for n in services if n != "gunicorn"] == ["main_handler"]


def test_handler_assignment_warning_names_the_setting(tmp_path):
    config = write_config(str(tmp_path / "config"), {"handlers": {"handler": {"processes": 1}}})
    _, warnings, _ = services_for(config)
    assert any("handling.assign" in w and "db-transaction-isolation" in w for w in warnings)


def test_memory_limits_are_carried_and_no_longer_said_to_be_ignored(tmp_path):
    config = write_config(str(tmp_path / "config"), {"memory_limit": 8, "celery": {"memory_high": 2}})
    services, warnings, _ = services_for(config)
    assert (services["gunicorn"].memory_limit, services["gunicorn"].memory_high) == (8, None)
    assert (services["celery"].memory_limit, services["celery"].memory_high) == (8, 2)
    assert services["gunicorn"].ignored == services["celery"].ignored == ()
    assert not any("memory" in w for w in warnings)


def test_a_handler_entry_carries_its_own_service_settings_as_in_gravity(tmp_path):
    handlers = {"handler": {"processes": 2, "memory_high": 1.5, "memory_limit": 3, "umask": "027", "stop_timeout": 90}}
    config = write_config(str(tmp_path / "config"), {"memory_limit": 8, "handlers": handlers})
    services, _, _ = services_for(config)
    for name in ("handler_0", "handler_1"):
        handler = services[name]
        assert (handler.memory_limit, handler.memory_high, handler.umask, handler.stop_timeout) == (3, 1.5, "027", 90)
    bad = write_config(str(tmp_path / "bad"), {"handlers": {"handler": {"memory_high": "lots"}}})
    with pytest.raises(GalaxyctlError, match="memory_high"):
        services_for(bad)


def test_proxy_path_prefix_follows_gravitys_rule():
    from galaxyctl_libs.core.services import proxy_path_prefix

    assert proxy_path_prefix({}) == "/interactivetool/ep"
    assert proxy_path_prefix({"interactivetools_base_path": "galaxy"}) == "/galaxy/interactivetool/ep"
    assert proxy_path_prefix({"interactivetools_base_path": "/a/b/", "interactivetools_prefix": "it"}) == "/a/b/it/ep"


def test_tusd_hooks_url_and_source_tree_handler(tmp_path):
    from galaxyctl_libs.demo import make_demo_galaxy

    config = make_demo_galaxy(
        str(tmp_path / "g"),
        gravity={
            "tusd": [{"enable": True, "upload_dir": "/u"}, {"enable": True, "hooks_http": "http://h/x", "port": 2}],
            "handlers": {"h1": {}},
        },
    )
    services = services_for(config)[0]
    assert "-hooks-http=http://localhost:8080/api/upload/hooks" in services["tusd_0"].argv
    assert "-hooks-http=http://h/x" in services["tusd_1"].argv
    assert services["h1"].argv[1:3] == ("./scripts/galaxy-main", "-c")
    assert services["h1"].cwd == str(tmp_path / "g")
