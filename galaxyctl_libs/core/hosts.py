"""Many hosts, one galaxy.yml: which share of Galaxy's services each host runs.

``gravity.hosts`` maps host names, glob patterns (``galaxy-web*``) and ``default`` to a share:
the service sections the host runs (``services``), the job handlers it runs and how many processes
of each (``handlers``), and how other hosts reach it (``address``, for the cluster check).
``gravity.beat_host`` names the one host that runs celery-beat.  gravity 1.x ignores both keys
(its settings model drops unknown keys), so the same file still loads there.

Which host this is: ``--host`` (the CLI puts it in $GALAXYCTL_HOST), else $GALAXYCTL_HOST, else
the machine's name (what Galaxy records in ``worker_process.hostname``).  A host's share turns into
plain settings (``settings_for``): the sections it does not run are disabled, its gunicorns get a
server name of their own, its celery worker a node name of its own, and ``gravity.handlers`` holds
only its handlers, named for it.  ``check_names`` expands every host the config names, so any host's
``update`` refuses a config that gives two hosts the same server name.
"""

import fnmatch
import os
import re
import string
import sys
from dataclasses import replace

from galaxyctl_libs.core import jobconf
from galaxyctl_libs.core.kinds import kind_of
from galaxyctl_libs.core.values import describe, str_list
from galaxyctl_libs.errors import GalaxyctlError
from galaxyctl_libs.records import Record
from galaxyctl_libs.records import replace as replace_record

HOST_ENV = "GALAXYCTL_HOST"
DEFAULT = "default"  # the share of a host no name or pattern matches
HOSTNAME_FIELD = "hostname"
SHARED_TEMPLATE = "{name}_{hostname}_{process}"  # a handler entry several hosts run, unless it names its own
SECTIONS = ("gunicorn", "celery", "tusd", "gx_it_proxy", "reports")  # the gravity sections a share may run
SERVER_NAME_ENV = "GALAXY_CONFIG_SERVER_NAME"  # Galaxy's server_name for a web server's processes
DEFAULT_SERVER_NAME = "main"  # Galaxy's default server_name
MAX_HOSTS = 1000
_SHARE_KEYS = ("services", "handlers", "address")
_HOST_NAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]{0,62})\Z")  # a name Galaxy and celery carry as is
_PATTERN = re.compile(r"[A-Za-z0-9_.*?\[\]!-]{1,128}\Z")


class Share(Record):
    key: str  # as written: a host name, a pattern or ``default``
    services: tuple = ()  # gravity section names (SECTIONS)
    handlers: tuple = ()  # ((handler entry or job conf id, processes or None: the entry's own), ...)
    address: str = None  # how other hosts reach it (default: its name)

    @property
    def many(self):
        """Whether the share may be several hosts' (a pattern or the default)."""
        return self.key == DEFAULT or is_pattern(self.key)


class OnHost(Record):
    """An instance resolved for one host of a cluster: which, and the whole cluster's config (to
    expand any host's share: the scale-down check, core/scaledown.py)."""

    name: str
    cluster: object  # Cluster
    settings: object  # the gravity settings of the shared file, before any host's share
    static: tuple = ()  # jobconf.Handler of Galaxy's job configuration

    def names_of(self, host, galaxy, where, instance_name):
        """{server name: what} ``host`` runs under this config (no share: none)."""
        try:
            share = share_of(self.cluster, host, where)
        except GalaxyctlError:
            return {}
        return expand(self.cluster, share, self.settings, galaxy, host, where, instance_name, self.static)


class Cluster(Record):
    shares: tuple  # Share, in the config's order
    beat_host: str = None

    def named_hosts(self):
        """The hosts the config names exactly, the beat's host included, in order."""
        names = [s.key for s in self.shares if not s.many]
        return tuple(dict.fromkeys(names + ([self.beat_host] if self.beat_host else [])))


def is_pattern(key):
    return any(char in key for char in "*?[")


def this_host(environ=None, checked=True):
    """The host this galaxyctl acts for: $GALAXYCTL_HOST (``--host``), else the machine's name;
    ``checked``: refuse one that is no host name (else jobconf judges the names made from it)."""
    value = (os.environ if environ is None else environ).get(HOST_ENV) or os.uname().nodename
    if not checked:
        return value
    return check_host(value, f"${HOST_ENV}" if value != os.uname().nodename else "this machine's name")


def check_host(value, where):
    if not isinstance(value, str) or not _HOST_NAME.match(value):
        raise GalaxyctlError(
            f"{where}: {describe(value)} is not a host name (letters, digits, '_', '-', '.'; at most 63)"
        )
    return value


def parse(settings, where):
    """The Cluster ``gravity.hosts`` describes, or None without it; raises naming the bad key."""
    raw = settings.hosts
    if not raw:
        if settings.beat_host:
            raise GalaxyctlError(f"{where}: gravity.beat_host is set but gravity.hosts is not")
        return None
    if len(raw) > MAX_HOSTS:
        raise GalaxyctlError(f"{where}: gravity.hosts: {len(raw)} entries; at most {MAX_HOSTS}")
    shares = tuple(_share(key, value, where) for key, value in raw.items())
    beat = settings.beat_host
    if beat is not None:
        check_host(beat, f"{where}: gravity.beat_host")
    elif settings.celery.enable_beat:
        raise GalaxyctlError(
            f"{where}: gravity.beat_host: name the one host that runs celery-beat (or set "
            "gravity.celery.enable_beat: false)"
        )
    cluster = Cluster(shares, beat)
    if beat is not None:
        share_of(cluster, beat, where)  # the beat's host must be one of the cluster's
    return cluster


def _share(key, value, where):
    here = f"{where}: gravity.hosts.{describe(key)[:80]}"
    if not isinstance(key, str) or not _PATTERN.match(key) or (not is_pattern(key) and not _HOST_NAME.match(key)):
        raise GalaxyctlError(f"{here}: expected a host name, a glob pattern or '{DEFAULT}'")
    value = {} if value is None else value
    if not isinstance(value, dict):
        raise GalaxyctlError(f"{here}: expected a mapping ({', '.join(_SHARE_KEYS)})")
    unknown = [k for k in value if k not in _SHARE_KEYS]
    if unknown:
        raise GalaxyctlError(f"{here}: unknown key {describe(unknown[0])} (known: {', '.join(_SHARE_KEYS)})")
    services = str_list(value.get("services"), where, f"gravity.hosts.{key}.services")
    wrong = [s for s in services if s not in SECTIONS]
    if wrong:
        raise GalaxyctlError(f"{here}.services: unknown service {describe(wrong[0])} (known: {', '.join(SECTIONS)})")
    handlers = value.get("handlers") or {}
    if not isinstance(handlers, dict):
        raise GalaxyctlError(f"{here}.handlers: expected a mapping of handler names to process counts")
    counts = []
    for name, count in handlers.items():
        if count is True:
            count = None  # the entry's own processes
        elif count is False or not isinstance(count, int) or not 0 <= count <= 1000:
            raise GalaxyctlError(f"{here}.handlers.{name}: expected a number of processes (0 to 1000) or true")
        counts.append((str(name), count))
    address = value.get("address")
    if address is not None and (not isinstance(address, str) or not re.match(r"[A-Za-z0-9_.:\[\]-]{1,255}\Z", address)):
        raise GalaxyctlError(f"{here}.address: expected a host name or an IP address")
    return Share(key, tuple(dict.fromkeys(services)), tuple(counts), address)


def share_of(cluster, host, where):
    """The share of ``host``: its own entry, else the first pattern matching it, else ``default``."""
    for share in cluster.shares:
        if share.key == host:
            return share
    for share in cluster.shares:
        if share.key != DEFAULT and is_pattern(share.key) and fnmatch.fnmatchcase(host, share.key):
            return share
    for share in cluster.shares:
        if share.key == DEFAULT:
            return share
    raise GalaxyctlError(
        f"{where}: gravity.hosts: no entry for host {host!r} and no '{DEFAULT}' (use --host NAME, or add {host} "
        "or a pattern matching it)"
    )


def with_hostname(template, host):
    """``template`` with ``{hostname}`` replaced by ``host`` and every other field left to jobconf's
    expansion (a template str.format cannot read is left as it is: jobconf names its error)."""
    try:
        pieces = list(string.Formatter().parse(template))
    except ValueError:
        return template
    out = []
    for literal, field, spec, conversion in pieces:
        out.append(literal.replace("{", "{{").replace("}", "}}"))
        if field == HOSTNAME_FIELD:
            out.append(host)
        elif field is not None:
            out.append("{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}")
    return "".join(out)


def shared_entries(cluster):
    """Handler entries more than one host runs: named in two shares, or in a pattern's or the default's."""
    seen = {}
    for share in cluster.shares:
        for name, _ in share.handlers:
            seen[name] = seen.get(name, 0) + (2 if share.many else 1)
    return frozenset(name for name, count in seen.items() if count > 1)


def handler_entries(gravity_handlers, host, cluster=None, share=None):
    """``gravity.handlers`` as ``host`` runs them: ``{hostname}`` filled in; with a cluster, only the
    share's entries, with the share's process counts, and an entry several hosts run named with
    SHARED_TEMPLATE unless it has a name_template of its own."""
    if not isinstance(gravity_handlers, dict):
        return gravity_handlers  # jobconf names the error
    wanted = dict(share.handlers) if share is not None else None
    shared = shared_entries(cluster) if cluster is not None else frozenset()
    entries = {}
    for name, settings in gravity_handlers.items():
        if wanted is not None and name not in wanted:
            continue
        settings = dict(settings or {}) if isinstance(settings, dict) or settings is None else settings
        if isinstance(settings, dict):
            template = settings.get("name_template")
            if template is None and name in shared:
                template = SHARED_TEMPLATE
            if isinstance(template, str):
                settings["name_template"] = with_hostname(template, host)
            if wanted is not None and wanted[name] is not None:
                settings["processes"] = wanted[name]
        entries[name] = settings
    return entries


def keep_handlers(handlers, share):
    """This host's handlers: the dynamic ones (already its own) and the job conf's it names."""
    if share is None:
        return handlers
    named = {name for name, _ in share.handlers}
    return tuple(h for h in handlers if h.dynamic or h.server_name in named)


def web_server_name(galaxy, host, index, count, section):
    """The server_name a host's gunicorn gives Galaxy: its section's own GALAXY_CONFIG_SERVER_NAME,
    else Galaxy's server_name (``main``) with the host (and the section's number, of several)."""
    own = section.environment.get(SERVER_NAME_ENV)
    if own:
        return own
    base = str(galaxy.get("server_name") or DEFAULT_SERVER_NAME)
    return f"{base}_{host}" if count == 1 else f"{base}_{host}_{index}"


def celery_node(host):
    """The celery worker's node name on ``host`` (celery's own default, ``celery@%h``, made explicit so
    that --host names it too)."""
    return f"celery@{host}"


def _has_node_option(extra_args):
    import shlex

    return any(arg in ("-n", "--hostname") or arg.startswith("--hostname=") for arg in shlex.split(extra_args))


def worker_node(extra_args, host):
    """The node name ``host``'s celery worker gets: its own ``-n/--hostname`` in ``extra_args`` with
    celery's %h, %n and %d filled in for ``host``, else ours (``celery_node``)."""
    import shlex

    from galaxyctl_libs.probes.celeryping import node_name

    return node_name(shlex.split(extra_args), host) if _has_node_option(extra_args) else celery_node(host)


def _with_node(extra_args, node):
    """``extra_args`` with the value of each ``-n/--hostname`` made ``node`` (celery would fill %h from
    the machine's name, and this host's name, ``--host`` or $GALAXYCTL_HOST, is the one the cluster
    check pings and the name check compared), else with ``--hostname node`` added."""
    import shlex

    if not _has_node_option(extra_args):
        return f"{extra_args} --hostname {node}".strip()
    words = shlex.split(extra_args)
    for index, word in enumerate(words):
        if word in ("-n", "--hostname") and index + 1 < len(words):
            words[index + 1] = node
        elif word.startswith("--hostname="):
            words[index] = f"--hostname={node}"
    return shlex.join(words)


def settings_for(settings, galaxy, share, host, beat_host):
    """``settings`` as ``host`` runs them: only the share's sections enabled, celery-beat only on the
    beat's host, server and node names of the host's own (handlers: see handler_entries)."""
    on = set(share.services)
    count = len(settings.gunicorn)
    gunicorn = tuple(
        replace(
            g,
            enable=g.enable and "gunicorn" in on,
            environment={**g.environment, SERVER_NAME_ENV: web_server_name(galaxy, host, i, count, g)},
        )
        for i, g in enumerate(settings.gunicorn)
    )
    celery = settings.celery
    extra = celery.extra_args
    if "celery" in on:
        extra = _with_node(extra, worker_node(extra, host))
    celery = replace(
        celery,
        enable=celery.enable and "celery" in on,
        enable_beat=celery.enable_beat and host == beat_host,
        extra_args=extra,
    )
    tusd = tuple(replace(t, enable=t.enable and "tusd" in on) for t in settings.tusd)
    return replace(
        settings,
        gunicorn=gunicorn,
        celery=celery,
        tusd=tusd,
        gx_it_proxy=replace(settings.gx_it_proxy, enable=settings.gx_it_proxy.enable and "gx_it_proxy" in on),
        reports=replace(settings.reports, enable=settings.reports.enable and "reports" in on),
    )


BEAT_LOCK_MODULE = "galaxyctl_libs.backends.beatlock"
BEAT_LOCK_DIR = os.path.join("galaxyctl", "beat")  # under Galaxy's data dir, which the hosts share


def beat_lock_dir(data_dir):
    """Where each host's celery-beat keeps its lock: the cluster check counts the held ones."""
    return os.path.join(data_dir, BEAT_LOCK_DIR)


def beat_lock_path(data_dir, host):
    return os.path.join(beat_lock_dir(data_dir), f"{host}.lock")


def lock_beat(services, data_dir, host):
    """``services`` with celery-beat run under our lock holder (backends/beatlock.py): it takes an
    exclusive lock on ``DATA_DIR/galaxyctl/beat/HOST.lock`` and execs the beat, which holds it while
    it runs; a beat already holding it on this host makes a second one fail to start."""
    lock = beat_lock_path(data_dir, host)
    holder = (sys.executable, "-m", BEAT_LOCK_MODULE, lock, "--")
    return tuple(
        replace_record(s, argv=holder + tuple(s.argv)) if kind_of(s.service_type).one_per_cluster else s
        for s in services
    )


def expand(cluster, share, settings, galaxy, host, where, instance_name, static=()):
    """{server name: what it is} of every process ``host`` runs under ``share`` that carries a name
    the cluster must not see twice: its handlers (the job conf's ``static`` ids the share names, and
    its dynamic ones), its gunicorns (server names) and its celery worker (a node name: two workers
    of one name answer one ping and share one's control messages)."""
    names = {h.server_name: "job handler" for h in keep_handlers(static, share)}
    entries = handler_entries(settings.handlers, host, cluster, share)
    for handler in jobconf.dynamic_handlers(entries, where, instance_name):
        names[handler.server_name] = "job handler"
    if "gunicorn" in share.services:
        count = len(settings.gunicorn)
        for index, section in enumerate(settings.gunicorn):
            if section.enable:
                names[web_server_name(galaxy, host, index, count, section)] = "web server"
    if "celery" in share.services and settings.celery.enable:
        names[worker_node(settings.celery.extra_args, host)] = "celery worker"
    return names


_ADVICE = {
    "job handler": "put {hostname} in the name_template, or name the handler on one host only",
    "web server": f"drop {SERVER_NAME_ENV} from the gunicorn environment (galaxyctl names each host's own)",
    "celery worker": "put %h in -n/--hostname in celery.extra_args, or leave it out (galaxyctl names each "
    "host's worker celery@HOST)",
}
_NAME_OF = {"celery worker": "node name"}  # what the name is called; else a server name
_PROBES = ("probe-host-a", "probe-host-b")  # two hosts a pattern or the default may stand for


def check_names(cluster, settings, galaxy, where, instance_name, static=()):
    """Refuse (one line) a config under which two hosts would run a process of the same server name,
    or a share names a handler that does not exist: every named host is expanded; a share that may
    be several hosts' (a pattern, the default) must make each of its names from the host's
    (``{hostname}``)."""
    known = set(settings.handlers) | {h.server_name for h in static}
    for share in cluster.shares:
        missing = [name for name, _ in share.handlers if name not in known]
        if missing:
            raise GalaxyctlError(
                f"{where}: gravity.hosts.{share.key}.handlers: no handler {missing[0]!r} in gravity.handlers "
                "nor in the job configuration"
            )
    owner = {}
    for host in cluster.named_hosts():
        share = share_of(cluster, host, where)
        for name, what in expand(cluster, share, settings, galaxy, host, where, instance_name, static).items():
            if name in owner and owner[name][0] != host:
                raise GalaxyctlError(
                    f"{where}: gravity.hosts: {_NAME_OF.get(what, 'server name')} {name!r} would be used on both "
                    f"{owner[name][0]} and "
                    f"{host} ({owner[name][1]}, {what}); each process needs a name of its own across the "
                    f"cluster: {_ADVICE[what]}"
                )
            owner[name] = (host, what)
    for share in (s for s in cluster.shares if s.many):
        one, two = (expand(cluster, share, settings, galaxy, h, where, instance_name, static) for h in _PROBES)
        same = sorted(set(one) & set(two))
        if same:
            what = one[same[0]]
            raise GalaxyctlError(
                f"{where}: gravity.hosts.{share.key}: may be several hosts, which would all use the "
                f"{_NAME_OF.get(what, 'server name')} {same[0]!r} ({what}): {_ADVICE[what]}, or name the hosts "
                "one by one"
            )


def unassigned(cluster, settings, static=()):
    """Handlers (gravity.handlers entries, job conf ids) no share names: they run on no host."""
    named = {name for share in cluster.shares for name, _ in share.handlers}
    return [name for name in list(settings.handlers) + [h.server_name for h in static] if name not in named]
