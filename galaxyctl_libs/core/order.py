"""In which order Galaxy's services start (plain data; no process manager here).

On an empty or outdated database, whichever Galaxy process starts first creates or checks the
tables, and one that starts beside it sees them half made (``NoVersionTableError``) and exits.
So the web server starts first, alone, and the rest only once it answers HTTP (it has created or
verified the database by then): job handlers, workflow schedulers, celery and beat, reports,
gx-it-proxy, tusd.  Services of one kind may be spread out by ``start_stagger`` seconds.
"""

from galaxyctl_libs.core import kinds


def is_galaxy_web(service):
    """Galaxy's own web server (gunicorn or uWSGI), which creates and migrates the database."""
    return kinds.kind_of(service.service_type).web


def rank(service):
    """Where a service's kind (and role) comes in the start order (core/kinds.py)."""
    return kinds.rank(service)


def start_stages(targets):
    """``targets`` as (first, rest): ``first`` are the first Galaxy web server of each instance
    (started alone and waited for), ``rest`` everything else in start order (stable within a kind).
    Without a web server, ``first`` is empty and ``rest`` holds all of them in order."""
    first, seen = [], set()
    for target in targets:
        if is_galaxy_web(target.service) and target.service.instance_name not in seen:
            seen.add(target.service.instance_name)
            first.append(target)
    chosen = {id(t) for t in first}
    rest = sorted((t for t in targets if id(t) not in chosen), key=lambda t: rank(t.service))
    return first, rest


def stagger_before(previous, target):
    """Seconds to wait before starting ``target`` right after ``previous``: its ``start_stagger``
    when both are of the same kind, else none."""
    if previous is None or previous.service.service_type != target.service.service_type:
        return 0.0
    return float(target.service.start_stagger or 0)
