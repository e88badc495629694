"""gravity 1.2.4's names: the services a name on the command line selects, supervisord's program and
group names, systemd's unit names (pure: configs resolved, services built and rendered, supervisord's
own parser reads the files; no process).  The names expected are those gravity 1.2.4 gives the same
config (its SupervisorProgram.program_names and SystemdService.unit_names; tests/test_gravity_parity.py
asks gravity itself for real sites' configs)."""

import os

import pytest
import yaml
from test_render import parse_with_supervisor

from galaxyctl_libs.backends.supervisor import render as sup
from galaxyctl_libs.backends.systemd import render as sd
from galaxyctl_libs.backends.update import UpdateResult, all_targets
from galaxyctl_libs.core import state
from galaxyctl_libs.core.registration import resolve
from galaxyctl_libs.core.services import build_services
from galaxyctl_libs.core.targets import select
from galaxyctl_libs.errors import GalaxyctlError

GRAVITY = {
    "gunicorn": [{"bind": "localhost:8080"}, {"bind": "localhost:8081"}],
    "tusd": [{"enable": True, "upload_dir": "/t1"}, {"enable": True, "upload_dir": "/t2", "port": 1081}],
    "handlers": {
        "handler": {"processes": 2, "pools": ["job-handlers"]},
        "sched": {"processes": 2, "pools": ["workflow-schedulers"], "name_template": "{name}{process}"},
        "single": {},
        "explicit3": {},
    },
}


# the handlers' server names (ours, whatever use_service_instances says): gravity's name_template
HANDLER_NAMES = ["handler_0", "handler_1", "sched0", "sched1", "single_0", "explicit3"]


def built(tmp_path, **gravity):
    directory = str(tmp_path / gravity.get("instance_name", "default"))
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "galaxy.yml")
    with open(path, "w") as handle:
        yaml.safe_dump(
            {"gravity": {**GRAVITY, **gravity}, "galaxy": {"galaxy_infrastructure_url": "http://g"}},
            handle,
            sort_keys=False,
        )
    instance, _, _ = resolve(state.ConfigRecord(path=path), str(tmp_path / "state"), enforce_user=False)
    return instance, build_services(instance)


def supervisor_names(instances):
    grouped = len(instances) > 1 or any(i.name != "_default_" for i, _ in instances)
    return [sup.program_names(s, grouped)[1] for _, services in instances for s in services]


def test_supervisor_and_systemd_names_are_gravitys(tmp_path):
    instance, services = built(tmp_path)
    assert [s.service_name for s in services] == [
        "gunicorn_0",
        "gunicorn_1",
        "celery",
        "celery-beat",
        "tusd_0",
        "tusd_1",
        *HANDLER_NAMES,
    ]
    assert supervisor_names([(instance, services)]) == [
        "gunicorn:gunicorn_0",
        "gunicorn:gunicorn_1",
        "celery",
        "celery-beat",
        "tusd:tusd_0",
        "tusd:tusd_1",
        "handler:handler_0",
        "handler:handler_1",
        "sched:sched_0",
        "sched:sched_1",
        "single",
        "explicit3",
    ]
    assert [sd.unit_name(s, False) for s in services] == [
        "galaxy-gunicorn@0.service",
        "galaxy-gunicorn@1.service",
        "galaxy-celery.service",
        "galaxy-celery-beat.service",
        "galaxy-tusd@0.service",
        "galaxy-tusd@1.service",
        "galaxy-handler@0.service",
        "galaxy-handler@1.service",
        "galaxy-sched@0.service",
        "galaxy-sched@1.service",
        "galaxy-single.service",
        "galaxy-explicit3.service",
    ]
    files = sd.render_units(sd.Paths(str(tmp_path / "state"), "/u"), {"_default_": services})
    units = sorted(os.path.relpath(path, "/u") for path in files)
    assert [u for u in units if "@.service" in u] == [
        f"galaxy-{n}@.service" for n in ("gunicorn", "handler", "sched", "tusd")
    ]
    # the handlers' template holds everything; a gunicorn or tusd list's instances differ: drop-ins
    assert [u for u in units if ".d/" in u] == [
        f"galaxy-{name}@{n}.service.d/galaxyctl.conf" for name in ("gunicorn", "tusd") for n in (0, 1)
    ]


def test_supervisord_reads_gravitys_groups(tmp_path):
    instance, services = built(tmp_path)
    os.makedirs(tmp_path / "log")
    paths = sup.Paths(str(tmp_path / "state"))
    files = sup.render_files(paths, {"_default_": services}, {"_default_": str(tmp_path / "log")})
    parsed = parse_with_supervisor(files, paths.conf)
    names = sorted(f"{g.name}:{p.name}" for g in parsed.process_group_configs for p in g.process_configs)
    expected = [f"{n}:{n}" if ":" not in n else n for n in supervisor_names([(instance, services)])]
    assert names == sorted(expected)
    logs = sorted(os.path.basename(p.stdout_logfile) for g in parsed.process_group_configs for p in g.process_configs)
    assert logs == sorted(f"{s.service_name}.log" for s in services)  # the log files keep their names


def test_a_named_instance_is_one_group_as_in_gravity(tmp_path):
    instance, services = built(tmp_path, instance_name="main")
    names = supervisor_names([(instance, services)])
    os.makedirs(tmp_path / "log")
    assert names[:2] == ["main:gunicorn0", "main:gunicorn1"] and "main:celery" in names
    assert names[-6:] == [
        "main:handler0",
        "main:handler1",
        "main:sched0",
        "main:sched1",
        "main:single",
        "main:explicit3",
    ]
    paths = sup.Paths(str(tmp_path / "state"))
    files = sup.render_files(paths, {"main": services}, {"main": str(tmp_path / "log")})
    parsed = parse_with_supervisor(files, paths.conf)
    assert sorted(f"{g.name}:{p.name}" for g in parsed.process_group_configs for p in g.process_configs) == sorted(
        names
    )
    assert sd.unit_name(services[0], True) == "galaxy-main-gunicorn@0.service"


def test_without_service_instances_every_process_is_its_own_service(tmp_path):
    instance, services = built(tmp_path, use_service_instances=False)
    names = [s.service_name for s in services]
    assert names[:2] == ["gunicorn0", "gunicorn1"] and names[4:6] == ["tusd0", "tusd1"]
    assert supervisor_names([(instance, services)])[-6:] == names[-6:] == HANDLER_NAMES
    assert [sd.unit_name(s, False) for s in services][:2] == ["galaxy-gunicorn0.service", "galaxy-gunicorn1.service"]


def test_gravitys_service_names_select_all_their_processes(tmp_path):
    instance, services = built(tmp_path)
    result = UpdateResult((instance,), {"_default_": services}, None)
    targets = all_targets(result)

    def picked(*names):
        return [t.program for t in select(targets, names)]

    assert picked("handler") == ["handler:handler_0", "handler:handler_1"]
    assert picked("gunicorn", "tusd") == ["gunicorn:gunicorn_0", "gunicorn:gunicorn_1", "tusd:tusd_0", "tusd:tusd_1"]
    assert picked("sched1", "single") == ["sched:sched_1", "single"]  # our names (server names) too
    assert picked("_default_", "celery") == ["celery"]
    with pytest.raises(GalaxyctlError, match="no instance or service named nope"):
        select(targets, ["nope"])
