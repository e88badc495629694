"""How big sites lay gravity's configuration out, read as gravity 1.2.4 reads it (pure: configs
resolved and services built, units rendered; no process)."""

import os

import pytest
import yaml

from galaxyctl_libs.backends.systemd import render as sd
from galaxyctl_libs.core import state
from galaxyctl_libs.core.registration import register, resolve, resolve_all
from galaxyctl_libs.core.services import build_services
from galaxyctl_libs.errors import GalaxyctlError


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        yaml.safe_dump(data, handle, sort_keys=False)
    return path


def services_of(path, state_dir="/tmp/state"):
    instance, _, warnings = resolve(state.ConfigRecord(path=path), state_dir, enforce_user=False)
    return {s.service_name: s for s in build_services(instance)}, warnings


GALAXY = {
    "galaxy_infrastructure_url": "https://usegalaxy.example/",
    "interactivetools_enable": True,
    "interactivetools_base_path": "/galaxy",
    "database_connection": "postgresql:///galaxy",
    "job_config": {"handling": {"assign": ["db-skip-locked"]}},
}


def test_a_gravity_only_file_reads_the_galaxy_settings_of_the_file_it_names(tmp_path):
    """usegalaxy.org's layout: /etc/galaxy/gravity.d/NAME.yml holds ``gravity:`` only, naming
    galaxy.yml; tusd's hooks URL, gx-it-proxy's path prefix and the job configuration (no
    assignment warning) come from that galaxy.yml, as under gravity."""
    galaxy_yml = write(str(tmp_path / "galaxy.yml"), {"galaxy": GALAXY})
    gravity = {
        "galaxy_config_file": galaxy_yml,
        "tusd": {"enable": True, "upload_dir": "/tus"},
        "gx_it_proxy": {"enable": True},
        "handlers": {"handler": {"processes": 2}},
    }
    split = write(str(tmp_path / "gravity.d" / "galaxy.yml"), {"gravity": gravity})
    services, warnings = services_of(split)
    assert "-hooks-http=https://usegalaxy.example/api/upload/hooks" in services["tusd"].argv
    assert services["gx-it-proxy"].argv[-2:] == ("--proxyPathPrefix", "/galaxy/interactivetool/ep")
    assert dict(services["celery"].environment)["GALAXY_CONFIG_FILE"] == galaxy_yml
    assert not [w for w in warnings if "assign" in w or "job" in w], warnings
    # the same with the bare keys (no gravity: heading), and with a path relative to the file
    bare = write(str(tmp_path / "gravity.d" / "bare.yml"), {**gravity, "galaxy_config_file": "../galaxy.yml"})
    assert services_of(bare)[0]["tusd"].argv == services["tusd"].argv


def test_a_named_file_without_a_galaxy_section_is_refused(tmp_path):
    other = write(str(tmp_path / "other.yml"), {"uwsgi": {}})
    split = write(str(tmp_path / "gravity.yml"), {"gravity": {"galaxy_config_file": other}})
    with pytest.raises(GalaxyctlError, match=r"galaxy_config_file: .*other.yml has no galaxy: section"):
        services_of(split)


def test_log_namespace_is_gravitys_lognamespace(tmp_path):
    config = write(str(tmp_path / "galaxy.yml"), {"gravity": {"log_namespace": "galaxy"}, "galaxy": {}})
    services, _ = services_of(config)
    units = sd.render_units(sd.Paths("/tmp/state", "/u"), {"_default_": tuple(services.values())})
    assert all("\nLogNamespace=galaxy\n" in text for path, text in units.items() if path.endswith(".service"))
    assert "LogNamespace" not in units["/u/galaxy.target"]


def test_a_gravity_list_is_several_instances_in_one_file(tmp_path):
    """gravity's docs: several instances in one file, as a list, each naming its galaxy.yml."""
    items = []
    for name in ("test", "main"):
        galaxy_yml = write(
            str(tmp_path / name / "galaxy.yml"), {"galaxy": {"galaxy_infrastructure_url": f"https://{name}"}}
        )
        items.append({"instance_name": name, "galaxy_config_file": galaxy_yml, "tusd": {"enable": True}})
    path = write(str(tmp_path / "gravity.yml"), {"gravity": items})
    state_dir = str(tmp_path / "state")
    registered = register(state_dir, [path])
    assert [r.instance_name for r in registered] == ["test,main"]
    current = state.load_registered(state_dir)
    assert current.instance_names() == ["main", "test"] and current.record_for_instance("main").path == path
    resolved = resolve_all(current, enforce_user=False)
    assert [instance.name for _, instance, _, _ in resolved] == ["test", "main"]
    for _, instance, attribs, _ in resolved:
        (tusd,) = [s for s in build_services(instance) if s.service_type == "tusd"]
        assert f"-hooks-http=https://{instance.name}/api/upload/hooks" in tusd.argv and attribs == {}


@pytest.mark.parametrize(
    "content, message",
    [
        ({"gravity": [{"instance_name": "a"}]}, r"gravity\[0\]: .* galaxy_config_file"),
        ({"gravity": [], "galaxy": {}}, "ambiguous"),
        ({"gravity": []}, "an empty list"),
    ],
)
def test_a_gravity_list_is_refused_in_one_line_when_gravity_refuses_it(tmp_path, content, message):
    path = write(str(tmp_path / "gravity.yml"), content)
    with pytest.raises(GalaxyctlError, match=message):
        register(str(tmp_path / "state"), [path])
