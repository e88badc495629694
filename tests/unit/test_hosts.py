"""Many hosts, one galaxy.yml (core/hosts.py): which host this is, each host's share of the services,
server names unique across the cluster (pure: configs in a temp dir, no process)."""

import os

import pytest
import yaml

from galaxyctl_libs.cli import main as cli_main
from galaxyctl_libs.core import hosts, state
from galaxyctl_libs.core.config import parse_gravity
from galaxyctl_libs.core.registration import resolve
from galaxyctl_libs.core.services import build_services
from galaxyctl_libs.errors import GalaxyctlError

CLUSTER = {
    "hosts": {
        "web1": {"services": ["gunicorn", "tusd"], "handlers": {"handler": 1}, "address": "10.0.0.1"},
        "jobs1": {"services": ["celery"], "handlers": {"handler": 2, "workflow_scheduler": 1}},
        "celery*": {"services": ["celery"]},
        "default": {},
    },
    "beat_host": "jobs1",
    "gunicorn": {"bind": "0.0.0.0:8080"},
    "tusd": {"enable": True, "upload_dir": "/data/tus"},
    "handlers": {
        "handler": {"processes": 3, "pools": ["job-handlers"]},
        "workflow_scheduler": {"pools": ["workflow-schedulers"]},
    },
}


def write_config(directory, gravity, galaxy=None):
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "galaxy.yml")
    with open(path, "w") as handle:
        galaxy = galaxy or {"job_config": {"handling": {"assign": ["db-skip-locked"]}}}
        yaml.safe_dump({"gravity": gravity, "galaxy": galaxy}, handle, sort_keys=False)  # the hosts' order counts
    return path


def share_services(path, host):
    """{service name: Service} the host runs, and the warnings."""
    instance, _, warnings = resolve(state.ConfigRecord(path=path), "/tmp/state", enforce_user=False, host=host)
    return {s.service_name: s for s in build_services(instance)}, warnings


def test_this_host_is_the_option_else_the_environment_else_the_machine(monkeypatch):
    assert hosts.this_host({}) == os.uname().nodename
    assert hosts.this_host({"GALAXYCTL_HOST": "web1"}) == "web1"
    with pytest.raises(GalaxyctlError, match="GALAXYCTL_HOST: 'a/b' is not a host name"):
        hosts.this_host({"GALAXYCTL_HOST": "a/b"})
    assert hosts.this_host({"GALAXYCTL_HOST": "a/b"}, checked=False) == "a/b"  # no gravity.hosts: not judged
    monkeypatch.delenv("GALAXYCTL_HOST", raising=False)
    args = cli_main.build_parser(["--host", "jobs1", "list"]).parse_args(["--host", "jobs1", "list"])
    assert args.host == "jobs1"
    quick = cli_main.quick_status(["--host", "jobs1", "status"])
    assert quick.host == "jobs1"


def test_a_host_gets_its_entry_else_the_first_matching_pattern_else_the_default():
    cluster = hosts.parse(parse_gravity(CLUSTER, "g.yml"), "g.yml")
    assert hosts.share_of(cluster, "web1", "g.yml").key == "web1"
    assert hosts.share_of(cluster, "celery7", "g.yml").key == "celery*"
    assert hosts.share_of(cluster, "other", "g.yml").key == "default"
    assert cluster.named_hosts() == ("web1", "jobs1")
    without_default = dict(CLUSTER, hosts={k: v for k, v in CLUSTER["hosts"].items() if k != "default"})
    cluster = hosts.parse(parse_gravity(without_default, "g.yml"), "g.yml")
    with pytest.raises(GalaxyctlError, match="no entry for host 'other' and no 'default'"):
        hosts.share_of(cluster, "other", "g.yml")


def test_each_host_runs_only_its_share(tmp_path):
    path = write_config(str(tmp_path), CLUSTER)
    web, _ = share_services(path, "web1")
    assert sorted(web) == ["gunicorn", "handler_web1_0", "tusd"]
    jobs, _ = share_services(path, "jobs1")
    assert sorted(jobs) == ["celery", "celery-beat", "handler_jobs1_0", "handler_jobs1_1", "workflow_scheduler_0"]
    celery_host, _ = share_services(path, "celery3")
    assert sorted(celery_host) == ["celery"]
    assert share_services(path, "elsewhere")[0] == {}


def test_names_carry_the_host_where_hosts_share_an_entry(tmp_path):
    path = write_config(str(tmp_path), CLUSTER)
    web, _ = share_services(path, "web1")
    assert "--server-name=handler_web1_0" in web["handler_web1_0"].argv
    assert dict(web["gunicorn"].environment)["GALAXY_CONFIG_SERVER_NAME"] == "main_web1"
    jobs, _ = share_services(path, "jobs1")
    argv = jobs["celery"].argv
    assert argv[argv.index("--hostname") + 1] == "celery@jobs1"
    # an entry only one host runs keeps gravity's name
    assert "--server-name=workflow_scheduler_0" in jobs["workflow_scheduler_0"].argv


def test_hostname_in_a_name_template_also_without_hosts(tmp_path):
    gravity = {"handlers": {"handler": {"processes": 2, "name_template": "{name}_{hostname}_{process}"}}}
    services, _ = share_services(write_config(str(tmp_path), gravity), "gx-a")
    assert sorted(n for n in services if n.startswith("handler")) == ["handler_gx-a_0", "handler_gx-a_1"]
    gravity = {"handlers": {"handler": {"name_template": "{hostname}-{name}{process:02d}"}}}
    services, _ = share_services(write_config(str(tmp_path), gravity), "gx-a")
    assert "gx-a-handler00" in services


def test_two_hosts_with_one_server_name_are_refused_on_any_host(tmp_path):
    gravity = dict(CLUSTER, handlers=dict(CLUSTER["handlers"], handler={"name_template": "{name}_{process}"}))
    path = write_config(str(tmp_path), gravity)
    for host in ("web1", "jobs1", "celery1"):
        with pytest.raises(GalaxyctlError) as caught:
            share_services(path, host)
        assert "server name 'handler_0' would be used on both web1 and jobs1" in caught.value.message
        assert "\n" not in caught.value.message


def test_a_pattern_share_must_make_its_names_from_the_host(tmp_path):
    gravity = {
        "hosts": {"jobs*": {"handlers": {"handler": 1}}},
        "beat_host": "jobs1",
        "handlers": {"handler": {"name_template": "{name}_{process}"}},
    }
    with pytest.raises(GalaxyctlError, match=r"gravity.hosts.jobs\*: may be several hosts.*'handler_0'"):
        share_services(write_config(str(tmp_path), gravity), "jobs1")
    gravity["handlers"]["handler"]["name_template"] = "{name}_{hostname}"
    services, _ = share_services(write_config(str(tmp_path), gravity), "jobs1")
    assert "handler_jobs1" in services


def test_a_web_server_name_set_by_hand_twice_is_refused(tmp_path):
    gravity = dict(
        CLUSTER,
        hosts=dict(CLUSTER["hosts"], jobs1=dict(CLUSTER["hosts"]["jobs1"], services=["gunicorn"])),
        gunicorn={"environment": {"GALAXY_CONFIG_SERVER_NAME": "web"}},
    )
    with pytest.raises(GalaxyctlError, match="server name 'web' would be used on both web1 and jobs1"):
        share_services(write_config(str(tmp_path), gravity), "web1")


def test_static_handlers_run_where_a_share_names_them(tmp_path):
    galaxy = {"job_config": {"handling": {"processes": {"h_a": {}, "h_b": {}}}}}
    gravity = {"hosts": {"a": {"handlers": {"h_a": True}}, "b": {"handlers": {"h_b": 1}}}, "beat_host": "a"}
    path = write_config(str(tmp_path), gravity, galaxy)
    assert [n for n in share_services(path, "a")[0] if n.startswith("h_")] == ["h_a"]
    gravity["hosts"]["b"]["handlers"]["h_a"] = 1
    with pytest.raises(GalaxyctlError, match="server name 'h_a' would be used on both a and b"):
        share_services(write_config(str(tmp_path), gravity, galaxy), "a")
    gravity["hosts"] = {"a": {"handlers": {"h_a": 1}}, "b": {}}
    _, warnings = share_services(write_config(str(tmp_path), gravity, galaxy), "a")
    assert any("no host runs the job handler(s) h_b" in w for w in warnings)


@pytest.mark.parametrize(
    "gravity, message",
    [
        ({"hosts": {"a": {}}}, "gravity.beat_host: name the one host that runs celery-beat"),
        ({"beat_host": "a"}, "gravity.beat_host is set but gravity.hosts is not"),
        ({"hosts": {"a": {}}, "beat_host": "b"}, "no entry for host 'b'"),
        ({"hosts": {"a/b": {}}, "beat_host": "a"}, "expected a host name, a glob pattern or 'default'"),
        ({"hosts": {"a": {"services": ["nginx"]}}, "beat_host": "a"}, "unknown service 'nginx'"),
        ({"hosts": {"a": {"workers": 2}}, "beat_host": "a"}, "unknown key 'workers'"),
        ({"hosts": {"a": {"handlers": {"h": -1}}}, "beat_host": "a"}, "expected a number of processes"),
        ({"hosts": {"a": {"handlers": {"nope": 1}}}, "beat_host": "a"}, "no handler 'nope'"),
        ({"hosts": {"a": {"address": "x y"}}, "beat_host": "a"}, "address: expected a host name or an IP"),
    ],
)
def test_bad_host_settings_are_one_line_naming_the_key(tmp_path, gravity, message):
    with pytest.raises(GalaxyctlError) as caught:
        share_services(write_config(str(tmp_path), gravity), "a")
    assert message in caught.value.message
    assert "\n" not in caught.value.message


def test_host_keys_do_not_persist_once_removed(tmp_path):
    from galaxyctl_libs.core.config import merge_attribs

    merged = merge_attribs({"hosts": {"old": {}}, "beat_host": "old"}, {})
    assert "hosts" not in merged and "beat_host" not in merged


def test_celery_beat_runs_only_on_the_beat_host_holding_its_lock(tmp_path):
    path = write_config(str(tmp_path), CLUSTER)
    jobs, _ = share_services(path, "jobs1")
    argv = jobs["celery-beat"].argv
    lock = os.path.join(str(tmp_path), "data", "galaxyctl", "beat", "jobs1.lock")
    assert argv[1:5] == ("-m", "galaxyctl_libs.backends.beatlock", argv[3], "--")
    assert argv[3].endswith(os.path.join("galaxyctl", "beat", "jobs1.lock")), (argv, lock)
    assert "beat" in argv[5:] and "celery" not in share_services(path, "web1")[0]


def test_without_hosts_the_host_name_is_not_judged_unless_a_name_uses_it(tmp_path, monkeypatch):
    monkeypatch.setenv("GALAXYCTL_HOST", "odd name")
    path = write_config(str(tmp_path), {"handlers": {"handler": {"processes": 1}}})
    instance, _, _ = resolve(state.ConfigRecord(path=path), "/tmp/state", enforce_user=False)
    assert [h.server_name for h in instance.handlers] == ["handler_0"] and instance.host is None
    path = write_config(str(tmp_path), {"handlers": {"handler": {"name_template": "{name}_{hostname}"}}})
    with pytest.raises(GalaxyctlError, match="'handler_odd name' cannot be a job handler name"):
        resolve(state.ConfigRecord(path=path), "/tmp/state", enforce_user=False)


def test_a_pattern_of_web_hosts_with_one_server_name_by_hand_is_refused(tmp_path):
    gravity = {
        "hosts": {"web*": {"services": ["gunicorn"]}},
        "celery": {"enable_beat": False},
        "gunicorn": {"environment": {"GALAXY_CONFIG_SERVER_NAME": "web"}},
    }
    with pytest.raises(GalaxyctlError) as caught:
        share_services(write_config(str(tmp_path), gravity), "web1")
    assert "would all use the server name 'web' (web server): drop GALAXY_CONFIG_SERVER_NAME" in caught.value.message
    del gravity["gunicorn"]["environment"]
    services, _ = share_services(write_config(str(tmp_path), gravity), "web7")
    assert dict(services["gunicorn"].environment)["GALAXY_CONFIG_SERVER_NAME"] == "main_web7"


def test_one_celery_node_name_on_two_hosts_is_refused_and_percent_h_makes_it_the_hosts(tmp_path):
    """A fixed ``-n`` would give two hosts' workers one node name (one answers the ping for both);
    celery's %h makes it each host's."""
    gravity = dict(CLUSTER, celery={"extra_args": "-n worker@galaxy"})
    with pytest.raises(GalaxyctlError) as caught:
        share_services(write_config(str(tmp_path), gravity), "web1")
    assert "gravity.hosts.celery*: may be several hosts, which would all use the node name 'worker@galaxy'" in (
        caught.value.message
    )
    assert "%h" in caught.value.message and "\n" not in caught.value.message
    gravity["hosts"] = {k: v for k, v in CLUSTER["hosts"].items() if k != "celery*"}
    gravity["hosts"]["web1"] = dict(gravity["hosts"]["web1"], services=["gunicorn", "celery"])
    with pytest.raises(GalaxyctlError, match="node name 'worker@galaxy' would be used on both web1 and jobs1"):
        share_services(write_config(str(tmp_path), gravity), "jobs1")
    gravity["celery"] = {"extra_args": "--hostname=worker@%h --queues 'a,b'"}
    jobs, _ = share_services(write_config(str(tmp_path), gravity), "jobs1")
    # filled in with this host's name (which --host may set), the one the cluster check pings
    assert jobs["celery"].argv[-3:] == ("--hostname=worker@jobs1", "--queues", "a,b")


def test_worker_node_is_the_hosts_own():
    assert hosts.worker_node("", "jobs1") == "celery@jobs1"
    assert hosts.worker_node("--concurrency 2 -n w@%h", "jobs1.example.org") == "w@jobs1.example.org"
    assert hosts.worker_node("--hostname=w_%n@%d", "jobs1.example.org") == "w_jobs1@example.org"
