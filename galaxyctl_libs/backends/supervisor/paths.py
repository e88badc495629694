"""Where supervisord's files live: what both the renderer and the client need.

Its own module so that ``status``, which only talks to supervisord, does not load the renderer.
"""

import os

from galaxyctl_libs.paths import StatePaths
from galaxyctl_libs.records import Record


class Paths(Record):
    """Where supervisord's files live for one state dir: ``STATE/supervisor``, or as root with a
    Galaxy user, that user's runtime dir (``run_dir``, StatePaths.runtime_dir: a tmpfs, which
    ``shutdown`` removes).  What must outlive a reboot, supervisord's own log, then goes in
    ``log_dir``: a persistent directory of the Galaxy user (render.render_files picks it)."""

    state_dir: str
    run_dir: str = None
    log_dir: str = None

    @property
    def root(self):
        return self.run_dir or StatePaths.of(self.state_dir).backend_dir("supervisor")

    @property
    def conf(self):
        return os.path.join(self.root, "supervisord.conf")

    @property
    def conf_dir(self):
        return os.path.join(self.root, "supervisord.conf.d")

    @property
    def socket(self):
        return os.path.join(self.root, "supervisor.sock")

    @property
    def pidfile(self):
        return os.path.join(self.root, "supervisord.pid")

    @property
    def log(self):
        return os.path.join(self.log_dir or self.root, "supervisord.log")


def remove_runtime_dir(paths, run_as):
    """Remove the Galaxy user's runtime dir once its supervisord is gone: left behind, one per state
    dir piles up in /run until a reboot.  Its entries are that user's, so they are removed with its
    ids, never following a link (gate.clear_dir); the dir itself by root, whose /run/galaxyctl holds
    it (fsutil: root's own directory).  Anything left (a file raced in) keeps it, silently: it is
    harmless, and shutdown has done its work.  Returns whether it is gone."""
    if not paths.run_dir:
        return False  # STATE/supervisor: the state dir's own, and no tmpfs
    from galaxyctl_libs import fsutil, gate
    from galaxyctl_libs.errors import GalaxyctlError

    if not gate.clear_dir(paths.run_dir, run_as):
        return False
    try:
        return fsutil.remove_empty_dir(paths.run_dir, sync_dir=False)  # a tmpfs: nothing to sync
    except GalaxyctlError:
        return False
