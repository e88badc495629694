"""Start order, start_stagger, the planned-action record and supervisord's unexpected exits (pure)."""

import os
import time

from galaxyctl_libs.backends import planned
from galaxyctl_libs.backends.record import Target
from galaxyctl_libs.backends.supervisor.client import parse_unexpected_exits
from galaxyctl_libs.core import kinds, order
from galaxyctl_libs.core.targets import Service


def target(name, kind, instance="_default_", role=None, stagger=0):
    service = Service(instance, kind, name, (), (), "/", start_stagger=stagger, role=role)
    return Target(service, name if instance == "_default_" else f"{instance}:{name}", f"/log/{name}.log")


def test_the_first_web_server_alone_then_handlers_schedulers_celery_beat_and_the_rest():
    everything = [
        target("tusd", "tusd"),
        target("celery-beat", "celery-beat"),
        target("celery", "celery"),
        target("gx-it-proxy", "gx-it-proxy"),
        target("scheduler_0", "standalone", role=kinds.ROLE_WORKFLOW_SCHEDULER),
        target("handler_0", "standalone", role=kinds.ROLE_JOB_HANDLER),
        target("gunicorn_0", "gunicorn"),
        target("gunicorn_1", "gunicorn"),
        target("reports", "reports"),
        target("handler_1", "standalone", role=kinds.ROLE_JOB_HANDLER),
    ]
    first, rest = order.start_stages(everything)
    assert [t.program for t in first] == ["gunicorn_0"]
    assert [t.program for t in rest] == [
        "gunicorn_1",
        "handler_0",
        "handler_1",
        "scheduler_0",
        "celery",
        "celery-beat",
        "reports",
        "gx-it-proxy",
        "tusd",
    ]


def test_one_first_web_server_per_instance_and_none_without_one():
    first, rest = order.start_stages(
        [target("handler", "standalone", "b"), target("gunicorn", "gunicorn", "a"), target("uwsgi", "uwsgi", "b")]
    )
    assert [t.program for t in first] == ["a:gunicorn", "b:uwsgi"] and [t.program for t in rest] == ["b:handler"]
    first, rest = order.start_stages([target("celery", "celery"), target("handler", "standalone")])
    assert first == [] and [t.program for t in rest] == ["handler", "celery"]


def test_stagger_applies_between_processes_of_one_kind_only():
    h0, h1 = target("handler_0", "standalone", stagger=2.5), target("handler_1", "standalone", stagger=2.5)
    celery = target("celery", "celery", stagger=4)
    assert order.stagger_before(None, h0) == 0
    assert order.stagger_before(h0, h1) == 2.5
    assert order.stagger_before(h1, celery) == 0


def test_planned_record_is_bounded_atomic_and_survives_damage(tmp_path):
    state = str(tmp_path)
    assert planned.load(state) == {}
    now = time.time()
    planned.record(state, [("gunicorn", now, 120, 0), ("handler_0", now, 20, 4242)], "start")
    loaded = planned.load(state)
    assert loaded["gunicorn"].action == "start" and loaded["gunicorn"].grace == 120
    assert loaded["gunicorn"].explains(now + 1, 7) and not loaded["gunicorn"].explains(now + 60, 7)
    assert loaded["handler_0"].explains(now + 60, 4242) and not loaded["handler_0"].explains(now, 4243)
    assert loaded["handler_0"].in_grace(now + 10) and not loaded["handler_0"].in_grace(now + 30)
    planned.record(state, [("handler_0", now + 5, 20, 0)], "graceful")
    assert planned.load(state)["handler_0"].action == "graceful" and planned.load(state)["gunicorn"].action == "start"
    planned.record(state, [(f"p{i}", now + i, 0, i) for i in range(planned.MAX_ENTRIES + 10)], "start")
    assert len(planned.load(state)) == planned.MAX_ENTRIES and "p0" not in planned.load(state)
    assert os.stat(planned.path_of(state)).st_size < planned.MAX_BYTES
    with open(planned.path_of(state), "w") as handle:
        handle.write("{not json")
    assert planned.load(state) == {}


def test_planned_record_is_never_read_through_a_symlink(tmp_path):
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text('{"programs": {"gunicorn": {"action": "start", "at": 1, "grace": 9}}}')
    state = tmp_path / "state"
    state.mkdir()
    os.symlink(elsewhere, state / planned.PLANNED_NAME)
    assert planned.load(str(state)) == {}


def test_unexpected_exits_from_supervisords_log():
    log = (
        "2026-11-30 12:00:00,100 INFO spawned: 'handler_1' with pid 10\n"
        "2026-11-30 12:00:05,250 WARN exited: handler_1 (terminated by SIGKILL; not expected)\n"
        "2026-11-30 12:00:06,000 INFO spawned: 'handler_1' with pid 11\n"
        "2026-11-30 12:00:07,000 INFO stopped: gunicorn (exit status 0)\n"
        "2026-11-30 12:00:08,000 INFO exited: celery (exit status 0; expected)\n"
        "2026-11-30 12:00:09,500 INFO exited: handler_1 (exit status 1; not expected)\n"
    )
    found = parse_unexpected_exits(log)
    assert list(found) == ["handler_1"] and len(found["handler_1"]) == 2
    expected = time.mktime(time.strptime("2026-11-30 12:00:05", "%Y-%m-%d %H:%M:%S")) + 0.25
    assert abs(found["handler_1"][0] - expected) < 0.001


def test_start_stagger_from_the_config(tmp_path):
    from test_command_lines import services_for, write_config

    from galaxyctl_libs.errors import GalaxyctlError

    config = write_config(
        str(tmp_path),
        {
            "start_stagger": 3,
            "celery": {"start_stagger": 0.5},
            "handlers": {"handler": {"processes": 2, "start_stagger": 7}, "other": {}},
        },
    )
    services, _, _ = services_for(config)
    assert services["handler_0"].start_stagger == 7 and services["handler_1"].start_stagger == 7
    other = next(service for name, service in services.items() if name.startswith("other"))
    assert other.start_stagger == 3 and services["gunicorn"].start_stagger == 3
    assert services["celery"].start_stagger == 0.5
    bad = write_config(str(tmp_path / "bad"), {"handlers": {"handler": {"start_stagger": "soon"}}})
    try:
        services_for(bad)
    except GalaxyctlError as exc:
        assert "start_stagger: expected a number of seconds, got 'soon'" in exc.message
    else:
        raise AssertionError("a start_stagger that is no number was accepted")
