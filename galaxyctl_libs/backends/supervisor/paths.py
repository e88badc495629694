"""Where supervisord's files live: what both the renderer and the client need.

Its own module so that ``status``, which only talks to supervisord, does not load the renderer.
"""

import os

from galaxyctl_libs.paths import StatePaths
from galaxyctl_libs.records import Record


class Paths(Record):
    """Where supervisord's files live for one state dir: ``STATE/supervisor``, or as root with a
    Galaxy user, that user's runtime dir (``run_dir``; see services.runtime_dir)."""

    state_dir: str
    run_dir: str = None

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
        return os.path.join(self.root, "supervisord.log")
