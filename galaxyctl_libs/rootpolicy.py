"""Who Galaxy runs as when galaxyctl is root: never root by accident (DESIGN: rules for root use).

Kept apart from operations.py so that ``--allow-root`` costs the light commands no config imports.
"""

import os
import pwd

from galaxyctl_libs.errors import GalaxyctlError

ALLOW_ROOT_ENV = "GALAXYCTL_ALLOW_ROOT"  # "1": the admin explicitly accepts running Galaxy as root


def run_as(settings, config_path, environ=None):
    """Who Galaxy's processes run as: never root by accident.  (None, None) means "as galaxyctl".

    As root: ``galaxy_user`` if set, else the config file's owner if not root, else refuse, unless
    the admin set ``GALAXYCTL_ALLOW_ROOT=1`` (``galaxyctl --allow-root``).
    """
    environ = os.environ if environ is None else environ
    if os.geteuid() != 0:
        return None, None
    if settings.galaxy_user:
        try:
            entry = pwd.getpwnam(settings.galaxy_user)
        except KeyError:
            raise GalaxyctlError(f"{config_path}: gravity.galaxy_user: no such user {settings.galaxy_user!r}") from None
        if entry.pw_uid == 0:
            raise GalaxyctlError(f"{config_path}: gravity.galaxy_user: refusing to run Galaxy as root")
        return settings.galaxy_user, settings.galaxy_group
    owner = os.stat(config_path).st_uid
    if owner != 0:
        return pwd.getpwuid(owner).pw_name, settings.galaxy_group
    if environ.get(ALLOW_ROOT_ENV) == "1":
        return None, None
    raise GalaxyctlError(
        f"refusing to run Galaxy as root: set gravity.galaxy_user in {config_path}, "
        "or run galaxyctl as the Galaxy user (--allow-root overrides)"
    )
