"""Real sites' gravity configurations (tests/data/real_sites.yml: usegalaxy.org, usegalaxy.org.au,
gravity's docs, the Ansible role's default), run by gravity 1.2.4 and by galaxyctl side by side.

For every service gravity configures, and every process of it: galaxyctl takes gravity's own
``exec -n [-i N] NAME`` and prints the same command line, environment and working directory (the
deliberate differences README.rst lists, "Command lines: what differs from gravity 1.x and why",
normalised as tests/test_gravity_parity.py does); supervisord knows it by gravity's name and systemd
by gravity's unit name (gravity's names asked from gravity itself, tests/gravity_names.py).
"""

import json
import os

import pytest
import yaml
from test_gravity_parity import (
    GALAXYCTL,
    _environ,
    _fake_venv,
    _run,
    normalise,
    parse_gravity,
    parse_ours,
)

from galaxyctl_libs.backends.base import instances_grouped
from galaxyctl_libs.backends.supervisor import render as sup
from galaxyctl_libs.backends.systemd import render as sd
from galaxyctl_libs.core import state
from galaxyctl_libs.core.registration import resolve_record
from galaxyctl_libs.core.services import build_services

HERE = os.path.dirname(os.path.abspath(__file__))
SITES = yaml.safe_load(open(os.path.join(HERE, "data", "real_sites.yml")))["sites"]
GRAVITY_NAMES = os.path.join(HERE, "gravity_names.py")
SCHEDULE = "celerybeat-schedule"


def _filled(value, paths):
    """The site's data with {root}, {venv} and {config} replaced (YAML anchors already resolved)."""
    if isinstance(value, dict):
        return {k: _filled(v, paths) for k, v in value.items()}
    if isinstance(value, list):
        return [_filled(v, paths) for v in value]
    if isinstance(value, str):
        for name, path in paths.items():
            value = value.replace("{" + name + "}", path)
    return value


def write_site(site, base):
    """The site's files under ``base``: returns the config file both tools are given (-c)."""
    names = {"root": "server", "venv": "venv", "config": "config"}
    paths = {"base": base, **{key: os.path.join(base, name) for key, name in names.items()}}
    gravity, galaxy = _filled(site["gravity"], paths), _filled(site["galaxy"], paths)
    if site["layout"] == "list":  # one file, several instances, each with its own tree and galaxy.yml
        for item in gravity:
            _tree(item["galaxy_root"], item["virtualenv"])
            _dump(item["galaxy_config_file"], {"galaxy": galaxy})
        return _dump(os.path.join(base, "gravity.d", f"{site['name']}.yml"), {"gravity": gravity})
    _tree(paths["root"], paths["venv"])
    galaxy_yml = os.path.join(paths["config"], "galaxy.yml")
    if site["layout"] == "split":
        _dump(galaxy_yml, {"galaxy": galaxy})
        return _dump(os.path.join(base, "gravity.d", f"galaxy_{site['name']}.yml"), {"gravity": gravity})
    return _dump(galaxy_yml, {"gravity": gravity, "galaxy": galaxy})


def _tree(root, venv):
    """A Galaxy source tree as far as the command lines go, and its virtualenv."""
    _fake_venv(venv)
    os.makedirs(os.path.join(root, "lib", "galaxy"))
    os.makedirs(os.path.join(root, "scripts"))
    open(os.path.join(root, "scripts", "galaxy-main"), "w").close()


def _dump(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        yaml.safe_dump(data, handle, sort_keys=False)
    return path


def gravity_names(gravity_exe, config, base):
    """gravity's own names for the services of ``config`` (tests/gravity_names.py, run by its Python)."""
    python = os.path.join(os.path.dirname(gravity_exe), "python")
    out = _run([python, GRAVITY_NAMES, config], base, cwd=base)
    return json.loads(out)


def our_names(config, state_dir):
    """{(instance, gravity's service name, process number): (supervisord's name, systemd's unit)} of ours."""
    instances = [i for i, _, _ in resolve_record(state.ConfigRecord(path=config), state_dir, enforce_user=False)]
    grouped = instances_grouped([instance.name for instance in instances])
    names = {}
    for instance in instances:
        for service in build_services(instance):
            key = (instance.name, service.gravity_name, service.process_number or 0)
            names[key] = (sup.program_names(service, grouped)[1], sd.unit_name(service, grouped))
    return names


def _without_schedule(argv):
    """celery-beat's --schedule: each tool's own state dir, and galaxyctl's file name carries an
    instance not named _default_ (README: "Command lines"); the rest of the command line is compared."""
    if "--schedule" not in argv:
        return argv, None
    at = argv.index("--schedule") + 1
    return argv[:at] + argv[at + 1 :], os.path.basename(argv[at])


def compare(theirs, mine, base_path):
    (g_cwd, g_env, g_argv), (o_cwd, o_env, o_argv) = theirs, mine
    if os.path.isabs(g_argv[0]) != os.path.isabs(o_argv[0]):  # gravity leaves a bare name to PATH
        g_argv, o_argv = [os.path.basename(g_argv[0])] + g_argv[1:], [os.path.basename(o_argv[0])] + o_argv[1:]
    (g_argv, g_schedule), (o_argv, o_schedule) = _without_schedule(g_argv), _without_schedule(o_argv)
    assert (g_schedule is None) == (o_schedule is None) and (o_schedule or SCHEDULE).endswith(SCHEDULE)
    assert normalise(o_cwd, o_env, o_argv, base_path) == normalise(g_cwd, g_env, g_argv, base_path)


@pytest.mark.parametrize("site", SITES, ids=[site["name"] for site in SITES])
def test_a_real_sites_config_runs_as_under_gravity(gravity_galaxyctl, tmp_path, site):
    base = str(tmp_path)
    config = write_site(site, base)
    gravity_state, our_state = os.path.join(base, "gravity-state"), os.path.join(base, "galaxyctl-state")
    theirs = gravity_names(gravity_galaxyctl, config, base)
    assert theirs, f"gravity configures no service for {site['name']}"
    ours = our_names(config, our_state)
    expected = {}
    for service in theirs:
        for number in range(service["count"]):
            key = (service["instance"], service["service"], number)
            expected[key] = (service["supervisor"][number], service["systemd"][number])
    assert ours == expected  # the same services, each known to supervisord and systemd by gravity's names
    base_path = _environ(base)["PATH"]
    for service in theirs:
        for number in range(service["count"]):
            which = ["-i", str(number)] if service["count"] > 1 else []
            instance = [service["instance"]] if len({s["instance"] for s in theirs}) > 1 else []
            words = ["exec", "-n", *which, *instance, service["service"]]
            gravity_out = _run([gravity_galaxyctl, "--state-dir", gravity_state, "-c", config, *words], base, base)
            our_out = _run([GALAXYCTL, "--state-dir", our_state, "-c", config, *words], base, base)
            compare(parse_gravity(gravity_out), parse_ours(our_out), base_path)
