"""Memory limits under supervisord: the pure parts (sizes, the decision table, the watcher's
arguments and its program file read back by supervisor's own parser).  No process is started."""

import pytest

from galaxyctl_libs.backends import memlimits as ml
from galaxyctl_libs.backends import memwatch
from galaxyctl_libs.backends.base import MEMWATCH_MODULE, MEMWATCH_PROGRAM
from galaxyctl_libs.backends.supervisor import render as sup
from galaxyctl_libs.core.targets import Service
from galaxyctl_libs.errors import GalaxyctlError

GB, MB = ml.GB, ml.MB


@pytest.mark.parametrize(
    "gigabytes, expected", [(None, 0), (0, 0), (1, GB), (2.0, 2 * GB), (0.5, GB // 2), (1.25, 5 * GB // 4)]
)
def test_limit_bytes(gigabytes, expected):
    assert ml.limit_bytes(gigabytes) == expected


@pytest.mark.parametrize("bad", [-1, True, "2G", [1]])
def test_limit_bytes_refuses_what_is_not_a_size(bad):
    with pytest.raises(GalaxyctlError, match="gravity.memory_limit .*positive number of GB"):
        ml.limit_bytes(bad, "gravity.memory_limit")


def test_size_text():
    assert [ml.size_text(v) for v in (0, 5 * MB + 7, 1023 * MB, GB, 3 * GB // 2, 2 * GB + 1)] == [
        "0 MiB",
        "5 MiB",
        "1023 MiB",
        "1 GiB",
        "1.5 GiB",
        "2 GiB",
    ]


@pytest.mark.parametrize(
    "service_type, kind",
    [
        ("gunicorn", ml.WEB),
        ("reports", ml.WEB),
        ("celery", ml.CELERY),
        ("celery-beat", ml.CELERY),
        ("standalone", ml.HANDLER),
        ("uwsgi", ml.OTHER),
        ("tusd", ml.OTHER),
        ("gx-it-proxy", ml.OTHER),
    ],
)
def test_kinds(service_type, kind):
    assert ml.kind_of(service_type) == kind


def watch(kind, limit=0, high=0):
    return ml.Watch("p", kind, limit, high)


WORKERS = ((101, 300 * MB), (102, 700 * MB), (103, 200 * MB))


@pytest.mark.parametrize(
    "kind, rss, workers, jobs, expected",
    [
        # under both limits (and exactly at one): nothing
        (ml.WEB, 900 * MB, WORKERS, 0, None),
        (ml.WEB, GB, WORKERS, 0, None),
        # over memory_limit: every kind is restarted, busy or not
        (ml.WEB, 3 * GB, WORKERS, 0, (ml.RESTART, ml.MEMORY_LIMIT, None)),
        (ml.CELERY, 3 * GB, (), 0, (ml.RESTART, ml.MEMORY_LIMIT, None)),
        (ml.HANDLER, 3 * GB, (), 2, (ml.RESTART, ml.MEMORY_LIMIT, None)),
        (ml.OTHER, 3 * GB, (), 0, (ml.RESTART, ml.MEMORY_LIMIT, None)),
        # over memory_high: the gentle way for each kind
        (ml.WEB, GB + 1, WORKERS, 0, (ml.RECYCLE, ml.MEMORY_HIGH, 102)),  # the largest worker
        (ml.WEB, GB + 1, (), 0, (ml.REPORT, ml.MEMORY_HIGH, None)),  # no worker (a master still starting)
        (ml.CELERY, GB + 1, (), 0, (ml.RESTART, ml.MEMORY_HIGH, None)),  # warm shutdown
        (ml.HANDLER, GB + 1, (), 0, (ml.RESTART, ml.MEMORY_HIGH, None)),  # idle
        (ml.HANDLER, GB + 1, (), 1, (ml.REPORT, ml.MEMORY_HIGH, None)),  # a job runs: never cut
        (ml.OTHER, GB + 1, (), 0, (ml.REPORT, ml.MEMORY_HIGH, None)),
    ],
)
def test_decision_table(kind, rss, workers, jobs, expected):
    decision = ml.decide(watch(kind, limit=2 * GB, high=GB), rss, workers, jobs)
    got = None if decision is None else (decision.action, decision.level, decision.pid)
    assert got == expected
    if decision is not None:
        assert decision.threshold == (2 * GB if decision.level == ml.MEMORY_LIMIT else GB)


def test_only_one_limit_set():
    assert ml.decide(watch(ml.WEB, limit=GB), 2 * GB, WORKERS).action == ml.RESTART
    assert ml.decide(watch(ml.WEB, limit=GB), GB // 2, WORKERS) is None
    assert ml.decide(watch(ml.CELERY, high=GB), 10 * GB).level == ml.MEMORY_HIGH


def test_equal_workers_recycle_the_oldest():
    assert ml.decide(watch(ml.WEB, high=GB), 2 * GB, ((7, MB), (5, MB), (9, MB))).pid == 5


def service(name, service_type="standalone", instance="_default_", **fields):
    base = dict(instance_name=instance, service_type=service_type, service_name=name, argv=("/bin/true",))
    return Service(**{**base, "environment": (), "cwd": "/", **fields})


def test_watches_only_services_with_a_limit_and_round_trip_through_argv():
    targets = [
        (service("gunicorn", "gunicorn", memory_high=1.5), "gunicorn"),
        (service("handler0", memory_limit=2), "handler0"),
        (service("tusd", "tusd"), "tusd"),
    ]
    watches = ml.watches(targets)
    assert watches == [ml.Watch("gunicorn", ml.WEB, 0, 3 * GB // 2), ml.Watch("handler0", ml.HANDLER, 2 * GB, 0)]
    argv = ["--socket", "/s"] + [word for w in watches for word in w.argv()]
    assert memwatch.parse_args(argv).watch == watches


def test_watcher_arguments_are_checked():
    with pytest.raises(SystemExit):
        memwatch.parse_args(["--socket", "/s", "--watch", "p", "bogus", "0", "1"])
    with pytest.raises(SystemExit):
        memwatch.parse_args(["--socket", "/s", "--watch", "p", "web", "x", "1"])


def test_a_negative_limit_is_refused_naming_the_service(tmp_path):
    with pytest.raises(GalaxyctlError, match="_default_/gunicorn: memory_high -2"):
        ml.watches([(service("gunicorn", "gunicorn", memory_high=-2), "gunicorn")])


def test_the_watcher_is_rendered_only_when_a_limit_is_set(tmp_path):
    from test_render import parse_with_supervisor

    paths = sup.Paths(str(tmp_path / "state"))
    log_dir = str(tmp_path / "log")
    (tmp_path / "log").mkdir()
    plain = {"_default_": (service("h1"),)}
    files = sup.render_files(paths, plain, {"_default_": log_dir})
    assert not any(MEMWATCH_PROGRAM in path for path in files)

    limited = {"_default_": (service("h1", memory_limit=0.5), service("gunicorn", "gunicorn", memory_high=1))}
    files = sup.render_files(paths, limited, {"_default_": log_dir})
    [watcher_file] = [path for path in files if MEMWATCH_PROGRAM in path]
    options = parse_with_supervisor(files, paths.conf)
    [program] = [g.process_configs[0] for g in options.process_group_configs if g.name == MEMWATCH_PROGRAM]
    argv = program.command.split()
    assert argv[1:3] == ["-m", MEMWATCH_MODULE] and argv[argv.index("--socket") + 1] == paths.socket
    assert memwatch.parse_args(argv[3:]).watch == [
        ml.Watch("h1", ml.HANDLER, GB // 2, 0),
        ml.Watch("gunicorn", ml.WEB, 0, GB),
    ]
    assert program.stdout_logfile == f"{log_dir}/{MEMWATCH_PROGRAM}.log"
    assert dict(program.environment)["GALAXYCTL_SERVICE"] == f"galaxyctl/{MEMWATCH_PROGRAM}"


def test_grouped_instances_are_watched_by_their_rpc_names(tmp_path):
    paths = sup.Paths(str(tmp_path / "state"))
    services = {"a": (service("h1", instance="a", memory_high=1),), "b": (service("h1", instance="b"),)}
    watcher = sup.memwatch_service(paths, services, grouped=True)
    assert watcher.argv[watcher.argv.index("--watch") + 1] == "a:h1"
    assert watcher.argv.count("--watch") == 1


def test_a_service_named_like_the_watcher_is_refused(tmp_path):
    paths = sup.Paths(str(tmp_path / "state"))
    with pytest.raises(GalaxyctlError, match="memory watcher"):
        sup.memwatch_service(paths, {"_default_": (service(MEMWATCH_PROGRAM, memory_limit=1),)}, False)


def test_excess_as_status_shows_it():
    limited = service("h", memory_limit=2, memory_high=1)
    assert ml.excess(limited, GB) == ""
    assert ml.excess(limited, GB + 1) == "over memory_high 1 GiB"
    assert ml.excess(limited, 3 * GB) == "over memory_limit 2 GiB"
    assert ml.excess(service("h"), 100 * GB) == ""
    assert ml.excess(service("h", memory_high=-1), 100 * GB) == ""  # a damaged record: no verdict, no error
