"""check's verdicts on synthetic observations: no supervisord, no process, no socket (pure)."""

from galaxyctl_libs import exitcodes
from galaxyctl_libs.actions.checks import render_prometheus, verdict
from galaxyctl_libs.actions.monitoring import ServiceStatus, StatusReport, WebWorkers
from galaxyctl_libs.probes.http import ProbeResult
from galaxyctl_libs.probes.workers import WorkerInfo


def row(program, state="RUNNING", uptime=3600, pid=10, **kwargs):
    return ServiceStatus("_default_", program, program, state, pid, uptime, "", **kwargs)


def report(*rows, running=True, code=exitcodes.LSB_RUNNING, **kwargs):
    return StatusReport(
        running, 1 if running else None, tuple(rows), code, supervisord_state="RUNNING" if running else "DOWN", **kwargs
    )


def worker(status):
    return WorkerInfo(
        pid=20,
        status=status,
        connections=1 if status == "busy" else 0,
        requests=None,
        rss_bytes=0,
        cpu_seconds=0.0,
        server="gunicorn",
    )


OK_PROBE = ("gunicorn", ProbeResult(True, 200, 12.4))


def test_everything_up_and_answering_is_ok_with_perfdata():
    result = verdict(
        report(row("gunicorn"), row("celery")),
        (OK_PROBE,),
        (WebWorkers("gunicorn", "gunicorn", 10, (worker("idle"), worker("busy"))),),
    )
    assert result.code == exitcodes.NAGIOS_OK
    assert result.line() == (
        "GALAXY OK - 2/2 services running, web 12 ms | services_running=2;;;0;2 web_ms=12ms workers_busy=1;;;0;2"
    )
    assert "galaxy_web_up 1" in render_prometheus(result)


def test_a_stopped_service_or_a_silent_web_server_is_critical():
    result = verdict(
        report(row("gunicorn"), row("celery", "FATAL"), code=exitcodes.LSB_NOT_RUNNING),
        (("gunicorn", ProbeResult(False, None, 5000.0, "timed out")),),
    )
    assert result.code == exitcodes.NAGIOS_CRITICAL
    assert result.problems == ("celery FATAL", "gunicorn web not answering (timed out)")
    assert "galaxy_web_up 0" in render_prometheus(result)


def test_unplanned_restarts_unexpected_starts_and_all_workers_busy_warn():
    result = verdict(
        report(row("gunicorn", uptime=30, unplanned_restarts=2), row("celery", "STARTING", uptime=0)),
        (OK_PROBE,),
        (WebWorkers("gunicorn", "gunicorn", 10, (worker("busy"),)),),
    )
    assert result.code == exitcodes.NAGIOS_WARNING
    assert result.problems == (
        "gunicorn restarted 2 times in the last 5 min, not by galaxyctl",
        "celery starting",
        "all 1 web workers busy",
    )
    once = verdict(report(row("handler", unplanned_restarts=1)), (OK_PROBE,), restart_window=600)
    assert once.problems == ("handler restarted once in the last 10 min, not by galaxyctl",)


def test_a_planned_start_is_ok_while_its_services_are_starting():
    """Right after galaxyctl start: a recent uptime is no problem, nor a service still starting (or
    a web server not answering yet) within its start timeout."""
    assert verdict(report(row("gunicorn", uptime=30)), (OK_PROBE,)).code == exitcodes.NAGIOS_OK
    result = verdict(
        report(row("gunicorn", "STARTING", uptime=0, in_grace=True), row("celery", "STARTING", in_grace=True)),
        (("gunicorn", ProbeResult(False, None, 3.0, "connection refused")),),
    )
    assert result.code == exitcodes.NAGIOS_OK, result.line()
    assert result.summary == "2/2 services running (2 starting)"
    late = verdict(report(row("gunicorn", "STARTING")), (("gunicorn", ProbeResult(False, None, 3.0, "refused")),))
    assert late.code == exitcodes.NAGIOS_CRITICAL and late.problems[0] == "gunicorn web not answering (refused)"


def test_supervisord_down_hung_unknown_and_storage():
    down = verdict(report(row("gunicorn", "STOPPED"), running=False, code=exitcodes.LSB_NOT_RUNNING))
    assert down.code == exitcodes.NAGIOS_CRITICAL and down.problems == ("supervisord is not running",)
    hung = StatusReport(False, 42, (row("gunicorn"),), exitcodes.LSB_UNKNOWN, supervisord_state="NOT_ANSWERING")
    assert verdict(hung).summary == "supervisord (pid 42) is not answering" and verdict(hung).code == 2
    unknown = verdict(StatusReport(False, None, (), exitcodes.LSB_UNKNOWN, "corrupt record"))
    assert unknown.code == exitcodes.NAGIOS_UNKNOWN and unknown.summary == "corrupt record"
    storage = verdict(report(row("gunicorn"), storage_missing=("/data",)), (OK_PROBE,))
    assert storage.code == exitcodes.NAGIOS_CRITICAL and "required storage /data not mounted" in storage.problems


def test_under_systemd_the_messages_name_systemd():
    down = verdict(report(row("galaxy-gunicorn.service", "STOPPED"), running=False, manager="systemd"))
    assert down.problems == ("systemd is not running",)
    hung = StatusReport(
        False, None, (row("g"),), exitcodes.LSB_UNKNOWN, supervisord_state="NOT_ANSWERING", manager="systemd"
    )
    assert verdict(hung).summary == "systemd is not answering"


def test_status_without_the_manager_names_it(tmp_path):
    from galaxyctl_libs.actions import monitoring
    from galaxyctl_libs.backends.base import MANAGER_DOWN, Survey
    from galaxyctl_libs.backends.record import Target
    from galaxyctl_libs.core.targets import Service

    target = Target(Service("_default_", "gunicorn", "gunicorn", (), (), "/"), "galaxy-gunicorn.service", None)
    found = monitoring._status_without_manager(str(tmp_path), [target], Survey(MANAGER_DOWN), (), "systemd")
    assert found.message.startswith("systemd is not running") and found.manager == "systemd"
    assert [r.description for r in found.services] == ["systemd is not running"]


def test_a_service_over_a_memory_limit_is_a_warning_naming_it():
    from galaxyctl_libs.records import replace

    over = replace(row("handler_0"), rss_bytes=3 << 30, memory="over memory_high 2 GiB")
    result = verdict(report(row("gunicorn"), over), (OK_PROBE,))
    assert result.code == exitcodes.NAGIOS_WARNING
    assert result.problems == ("handler_0 over memory_high 2 GiB",)
