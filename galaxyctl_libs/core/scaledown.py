"""Scale-down without stranding jobs: ``update`` (and start, restart, graceful, which update first)
refuses to remove a job handler while unfinished jobs are assigned to its name.

Galaxy hands a job to a handler by server name (``job.handler``); a handler removed from a host (or
a host removed from the config) leaves its jobs waiting for a process that will never come back.
Which names go away: this host's handlers of the last update that the new config no longer runs
here, and, under ``gravity.hosts``, every handler heartbeating in Galaxy's database (any host's) that
no host of the new config runs.  Their unfinished jobs are read from Galaxy's database; any there is
a one-line refusal naming them.  A database that cannot be read is a warning, not a refusal (a
first install has none yet).
"""

import os

from galaxyctl_libs.errors import GalaxyctlError
from galaxyctl_libs.probes import clusterdb, heartbeat

IGNORE_HINT = "let them finish (or reassign them) first, or run update with --ignore-jobs"


def refuse_stranded_jobs(instances, services, previous, run_as=(None, None), timeout=10.0):
    """Raise (one line) when handlers that go away hold unfinished jobs; returns warnings.
    ``services``: {instance name: new services}; ``previous``: the services of the last update."""
    new = {s.service_name for group in services.values() for s in group if s.heartbeat_db}
    gone = {s.service_name: "this host" for s in previous if s.heartbeat_db and s.service_name not in new}
    clustered = [i for i in instances if i.host is not None]
    if not gone and not clustered:
        return []
    reader = next((s for group in services.values() for s in group if s.heartbeat_db), None)
    reader = reader or next((s for s in previous if s.heartbeat_db), None)
    if reader is None:
        return []  # no handler before nor now: no job can be assigned to one by name
    sqlite = heartbeat.sqlite_path(reader.heartbeat_db)
    if sqlite and not os.path.exists(sqlite):
        return []  # no database yet: no job at all
    python = heartbeat.interpreter(reader.argv)
    from galaxyctl_libs.rootpolicy import as_user, subprocess_credentials

    try:
        with as_user(*run_as):  # rootpolicy: the Galaxy user's database is read with its ids
            credentials = subprocess_credentials(*run_as)
            if clustered:
                beats = clusterdb.all_beats(reader.heartbeat_db, python, credentials, timeout)
                gone.update(_gone_from_cluster(clustered, beats, gone))
            held = clusterdb.job_ids(reader.heartbeat_db, gone, python, credentials, timeout) if gone else {}
    except GalaxyctlError as exc:
        names = ", ".join(sorted(gone)) or "none here"
        return [f"cannot check for unfinished jobs on handlers that go away ({names}): {exc.message}"]
    if held:
        listed = "; ".join(
            f"{name} ({gone[name]}): job{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))}"
            for name, ids in sorted(held.items())
        )
        raise GalaxyctlError(
            f"refusing to remove job handlers that still hold unfinished jobs: {listed}; {IGNORE_HINT}"
        )
    return []


def _gone_from_cluster(instances, beats, gone):
    """{server name: its host} of heartbeating handlers no host of the new config runs."""
    found = {}
    for instance in instances:
        on_host = instance.host
        expected = set()
        for host in sorted({b.hostname for b in beats} | set(on_host.cluster.named_hosts())):
            expected |= set(on_host.names_of(host, instance.galaxy, instance.config_path, instance.name))
        for beat in beats:
            if beat.server_name not in expected and beat.server_name not in gone:
                found[beat.server_name] = f"on {beat.hostname}"  # web workers too: jobs are rarely theirs
    return found
