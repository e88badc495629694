"""This run's config files, when named with -c, found in the environment or in gravity 1.x's
auto-load places (cli/run_configs.py finds them; core/state.py applies the precedence rule).

Its own small module so that recording them costs a cron ``status -c FILE`` nothing.
"""

import os

from galaxyctl_libs.records import Record

# Where this run's config files came from (RunConfigs.source): named with -c, from the environment,
# or found in gravity 1.x's auto-load places.
FROM_OPTION = "-c"
FROM_GRAVITY_ENV = "$GRAVITY_CONFIG_FILE"
FROM_GALAXY_ENV = "$GALAXY_CONFIG_FILE"
FROM_AUTO_LOAD = "auto-load"


class RunConfigs(Record):
    paths: tuple  # absolute
    source: str


_given = []  # [RunConfigs] while this run has configs of its own


def use_run_configs(paths, source):
    """Act on ``paths`` in this process, as if they were registered, without writing configstate.yaml.

    Precedence, for every state dir this process opens: configs named with -c are this run's; the
    state dir's registrations must then be the same files (or none): one supervisord serves one set,
    and -c must not silently drop registered instances from it.  The environment and auto-load only
    count when nothing is registered.  ``paths`` empty: back to the registered configs only."""
    _given.clear()
    if paths:
        _given.append(RunConfigs(tuple(os.path.abspath(p) for p in paths), source))


def run_configs():
    """This run's RunConfigs, or None."""
    return _given[0] if _given else None
