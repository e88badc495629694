"""The service kinds: what each ``service_type`` means, in one table (plain data; no process manager).

A kind says which function of core/services.py builds its services, where it comes in the start
order (core/order.py), whether it is Galaxy's own web server, how ``graceful`` reloads it, what the
memory watcher does when it grows (backends/memlimits.py), which health probe looks at it beyond
its process state (actions/health.py, actions/monitoring.py), and the two hints the renderers need
(supervisord's ``stopasgroup``, systemd's ``KillMode=``).  Adding a kind is one entry here plus its
builder; tests/unit/test_kinds.py fails when a built service type has no entry, or an entry no builder.

What a single service is within its kind (a job handler or a workflow scheduler) is its ``role``
(core.targets.Service), set by its builder.
"""

from galaxyctl_libs.core.targets import GRACEFUL_HUP, GRACEFUL_NONE, GRACEFUL_RESTART
from galaxyctl_libs.records import Record

# memory behaviour (backends/memlimits.py's table; the words are the watcher's command line)
MEMORY_WEB = "web"  # over memory_high: recycle the largest gunicorn worker
MEMORY_CELERY = "celery"  # over memory_high: restart (warm shutdown)
MEMORY_HANDLER = "handler"  # over memory_high: restart while it runs no job
MEMORY_OTHER = "other"  # over memory_high: report only
MEMORY_BEHAVIOURS = (MEMORY_WEB, MEMORY_CELERY, MEMORY_HANDLER, MEMORY_OTHER)

# health probes beyond the process state
PROBE_HTTP = "http"  # the web server answers (probes/http.py; uWSGI: its stats server)
PROBE_HEARTBEAT = "heartbeat"  # its heartbeat in Galaxy's database (probes/heartbeat.py)
PROBE_PING = "ping"  # celery inspect ping through the broker (probes/celeryping.py)
PROBES = (PROBE_HTTP, PROBE_HEARTBEAT, PROBE_PING, None)

# how ``graceful`` steps through the running services of a kind (actions/rolling.py)
ROLL_RELOAD = "reload"  # each by its own ``graceful`` method: HUP, our herder, a restart, or left running
ROLL_WARM = "warm-restart"  # one at a time: stop (a warm shutdown: running tasks finish), start, wait
ROLL_DRAINED = "drained-batches"  # in batches: told to take no new job, drained, restarted, heartbeat awaited
ROLLS = (ROLL_RELOAD, ROLL_WARM, ROLL_DRAINED)

# roles a service may have within its kind (Service.role)
ROLE_JOB_HANDLER = "job-handler"
ROLE_WORKFLOW_SCHEDULER = "workflow-scheduler"
WORKFLOW_POOL = "workflow-schedulers"  # the job_conf pool whose handlers only schedule workflows


class Kind(Record):
    name: str  # the service_type
    builder: str  # the function of core/services.py that builds services of this kind
    rank: int  # start order after the first web server (lower starts earlier; core/order.py)
    web: bool = False  # Galaxy's own web server: creates and migrates the database, so it starts first
    reload: str = GRACEFUL_RESTART  # how ``graceful`` reloads it (a builder may choose per service)
    roll: str = ROLL_RELOAD  # how ``graceful`` steps through the kind's services
    memory: str = MEMORY_OTHER  # what the memory watcher does over memory_high
    probe: str = None  # its health probe beyond the process state
    stop_as_group: bool = True  # supervisord's stopasgroup: TERM its whole process group on stop
    kill_mode: str = None  # systemd's KillMode= (None: systemd's default, control-group)
    one_per_cluster: bool = False  # runs on one host of a cluster only (core/hosts.py): it holds a lock there


KINDS = {
    kind.name: kind
    for kind in (
        # gunicorn's master stops its own workers gracefully: TERM to it alone
        Kind("uwsgi", "uwsgi_services", 0, web=True, reload=GRACEFUL_HUP, probe=PROBE_HTTP),
        Kind(
            "gunicorn",
            "gunicorn_services",
            0,
            web=True,
            reload=GRACEFUL_HUP,  # GRACEFUL_HERDER when preloaded (the builder says)
            memory=MEMORY_WEB,
            probe=PROBE_HTTP,
            stop_as_group=False,
            kill_mode="mixed",
        ),
        Kind("celery", "celery_services", 3, roll=ROLL_WARM, memory=MEMORY_CELERY, probe=PROBE_PING),
        Kind("celery-beat", "celery_services", 4, memory=MEMORY_CELERY, one_per_cluster=True),
        Kind("gx-it-proxy", "gx_it_proxy_services", 6),
        Kind("tusd", "tusd_services", 7, reload=GRACEFUL_NONE),  # uploads must not be cut
        # reports is a gunicorn too, but its files have always had stopasgroup and the default
        # KillMode: kept as they are, so that existing deployments see no change (see ARCHITECTURE.md)
        Kind("reports", "reports_services", 5, memory=MEMORY_WEB, probe=PROBE_HTTP),
        # job handlers rank 1, workflow schedulers 2 (rank below)
        Kind(
            "standalone",
            "handler_services",
            1,
            roll=ROLL_DRAINED,
            memory=MEMORY_HANDLER,
            probe=PROBE_HEARTBEAT,
        ),
    )
}

# a service type without an entry (a record written by another version): after everything else
OTHER = Kind("", "", 8)


def kind_of(service_type):
    """The Kind of ``service_type`` (OTHER when it has no entry)."""
    return KINDS.get(service_type, OTHER)


def rank(service):
    """Where ``service`` comes in the start order: its kind's rank; workflow schedulers after the
    job handlers."""
    if service.role == ROLE_WORKFLOW_SCHEDULER:
        return kind_of(service.service_type).rank + 1
    return kind_of(service.service_type).rank


def role_of_pools(pools):
    """A handler's role from the pools it attaches to: only workflow-scheduler pools make it one."""
    if pools and all(str(pool).startswith(WORKFLOW_POOL) for pool in pools):
        return ROLE_WORKFLOW_SCHEDULER
    return ROLE_JOB_HANDLER
