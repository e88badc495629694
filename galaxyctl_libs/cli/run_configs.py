"""gravity 1.x's global options and where a run's config files come from (-c, environment, auto-load).

Which configs a run acts on, first match wins:

1. ``-c/--config-file FILE`` (repeatable): these files, for this run only.  The state dir's
   registrations must be the same files, or none (one supervisord serves one set of configs).
2. Registered configs (configstate.yaml).
3. ``$GRAVITY_CONFIG_FILE`` (paths separated by ':'), else ``$GALAXY_CONFIG_FILE`` (one path),
   when nothing is registered: registered configs win over the environment.
4. Auto-load, when nothing is registered: as root every one of /etc/galaxy/gravity.yml,
   /etc/galaxy/galaxy.yml and /etc/galaxy/gravity.d/*.yml|*.yaml that exists; as another user the
   first of config/galaxy.yml, galaxy.yml, config/galaxy.yml.sample in the current directory.

Configs of 1, 3 and 4 are never written to configstate.yaml; the supervisord files still live in
the state dir.  core/state.py applies the rule (core/given.py holds them); this module only finds the files.
"""

import os

from galaxyctl_libs.cli.options import Option
from galaxyctl_libs.errors import GalaxyctlError

ROOT_CONFIG_DIR = "/etc/galaxy"
CWD_CONFIGS = ("config/galaxy.yml", "galaxy.yml", "config/galaxy.yml.sample")

# Commands that edit the registrations: they take config files as arguments, never from -c.
REGISTRATION_COMMANDS = ("register", "deregister", "rename")
# Commands a cron runs often and that read what supervisord was given, not configs: auto-load
# (a glob under /etc as root) is not worth its imports there.
LIGHT_COMMANDS = ("status", "check", "workers")

PRECEDENCE_HELP = (
    "Which config files a command acts on: those named with -c (the state dir's registrations, if any, "
    "must be the same files); else the registered ones; else $GRAVITY_CONFIG_FILE (':'-separated) or "
    "$GALAXY_CONFIG_FILE; else gravity 1.x's auto-load (as root /etc/galaxy/gravity.yml, "
    "/etc/galaxy/galaxy.yml and /etc/galaxy/gravity.d/*.yml; otherwise the first of config/galaxy.yml, "
    "galaxy.yml, config/galaxy.yml.sample here). Only 'register' writes them down."
)


# gravity 1.x's global options (--version, an action of argparse's, is added by add_global_options)
GLOBAL_OPTIONS = (
    Option(
        "-d",
        "--debug",
        dest="debug",
        action="store_true",
        help="on an error, print the full traceback (galaxyctl's own one-line errors included)",
    ),
    Option(
        "-c",
        "--config-file",
        dest="config_files",
        action="append",
        metavar="FILE",
        help="Galaxy or gravity config file to act on, for this run only (repeatable; "
        "default: $GRAVITY_CONFIG_FILE, $GALAXY_CONFIG_FILE; see below)",
    ),
    Option(
        "--user",
        dest="user_mode",
        action="store_true",
        default=None,
        help="systemd user mode (systemctl --user); only matters with process_manager: systemd",
    ),
    Option("--no-user", dest="user_mode", action="store_false", help="systemd system mode"),
)


def add_global_options(parser):
    from galaxyctl_libs.cli import options
    from galaxyctl_libs.cli.parser import Version

    parser.add_argument("--version", action=Version)
    options.add(parser, GLOBAL_OPTIONS)


def find_configs(args, environ=None, cwd=None, is_root=None):
    """(paths, source) of this run's configs, or None (then registered configs only)."""
    from galaxyctl_libs.core import given as statemod

    environ = os.environ if environ is None else environ
    if args.config_files:
        return _existing(args.config_files, "-c"), statemod.FROM_OPTION
    if args.command in REGISTRATION_COMMANDS:
        return None
    if environ.get("GRAVITY_CONFIG_FILE"):
        paths = [p for p in environ["GRAVITY_CONFIG_FILE"].split(":") if p]
        return _existing(paths, "$GRAVITY_CONFIG_FILE"), statemod.FROM_GRAVITY_ENV
    if environ.get("GALAXY_CONFIG_FILE"):
        return _existing([environ["GALAXY_CONFIG_FILE"]], "$GALAXY_CONFIG_FILE"), statemod.FROM_GALAXY_ENV
    if args.command in LIGHT_COMMANDS:
        return None
    paths = auto_load(os.geteuid() == 0 if is_root is None else is_root, cwd or os.getcwd())
    return (paths, statemod.FROM_AUTO_LOAD) if paths else None


def auto_load(is_root, cwd):
    """gravity 1.x's well-known places: as root all that exist, as another user the first here."""
    if is_root:
        import glob

        candidates = [os.path.join(ROOT_CONFIG_DIR, name) for name in ("gravity.yml", "galaxy.yml")]
        for pattern in ("*.yml", "*.yaml"):
            candidates += sorted(glob.glob(os.path.join(ROOT_CONFIG_DIR, "gravity.d", pattern)))
        return [path for path in candidates if os.path.isfile(path)]
    for name in CWD_CONFIGS:
        path = os.path.join(cwd, name)
        if os.path.isfile(path):
            return [path]
    return []


def _existing(paths, where):
    for path in paths:
        if not os.path.isfile(path):
            raise GalaxyctlError(f"{where}: no such config file: {path}")
    return [os.path.abspath(p) for p in paths]


def apply(args):
    """Find this run's configs and hand them to core/given.py (imported only when there are some)."""
    if args.config_files and args.command in REGISTRATION_COMMANDS:
        raise GalaxyctlError(f"-c does not apply to '{args.command}': it takes the config files as arguments")
    found = _maybe_find(args)
    if found:
        from galaxyctl_libs.core import given as statemod

        statemod.use_run_configs(*found)


def _maybe_find(args):
    """find_configs, not even looked for when nothing can be found (a cron status without -c)."""
    if args.config_files or (
        args.command not in REGISTRATION_COMMANDS
        and (
            os.environ.get("GRAVITY_CONFIG_FILE")
            or os.environ.get("GALAXY_CONFIG_FILE")
            or args.command not in LIGHT_COMMANDS
        )
    ):
        return find_configs(args)
    return None
