"""Where everything of one state dir lives, derived in one place.

The CLI resolves the state dir once (``--state-dir``, ``$GRAVITY_STATE_DIR``, the XDG default) into
a ``StatePaths`` and passes it down; every layer asks it for a path instead of joining its own.
It is also a path itself (``os.fspath``, ``str``), so library callers may keep passing a string:
``StatePaths.of`` turns either into the object.
"""

import os

from galaxyctl_libs.records import Record

STATE_FILE = "configstate.yaml"
STATE_LOCK_FILE = ".configstate.lock"  # guards configstate.yaml read-modify-writes
PLANNED_FILE = "planned.json"  # what galaxyctl started and when (backends.planned)
OPERATION_LOCK_FILE = ".galaxyctl.lock"  # taken before the state lock, never after it: one order, no deadlock
RUNTIME_ROOT = "/run/galaxyctl"  # as root with a Galaxy user: that user's runtime dirs (rootpolicy, rule 3)


class StatePaths(Record):
    state_dir: str  # absolute

    @classmethod
    def of(cls, state_dir):
        """``state_dir`` as a StatePaths (a path string is made absolute; a StatePaths is returned as is).

        A path string comes from a library caller (the CLI resolves its own once, after
        rootpolicy.enter_state_dir): as root, one the Galaxy user can change is refused here, so every
        library verb keeps rule 1 (rootpolicy.refuse_foreign_state_dir)."""
        if isinstance(state_dir, StatePaths):
            return state_dir
        paths = cls(os.path.abspath(os.fspath(state_dir)))
        if os.geteuid() == 0:
            from galaxyctl_libs.rootpolicy import refuse_foreign_state_dir

            refuse_foreign_state_dir(paths.state_dir)
        return paths

    @classmethod
    def resolve(cls, given=None, environ=None):
        """The CLI's one resolution: ``given`` (``--state-dir``), else the default (fsutil.default_state_dir)."""
        from galaxyctl_libs.fsutil import default_state_dir

        return cls(os.path.abspath(given) if given else default_state_dir(environ))

    def __fspath__(self):
        return self.state_dir

    def __str__(self):
        return self.state_dir

    @property
    def configstate(self):
        return os.path.join(self.state_dir, STATE_FILE)

    @property
    def state_lock(self):
        return os.path.join(self.state_dir, STATE_LOCK_FILE)

    @property
    def operation_lock(self):
        return os.path.join(self.state_dir, OPERATION_LOCK_FILE)

    @property
    def planned(self):
        return os.path.join(self.state_dir, PLANNED_FILE)

    @property
    def log_dir(self):
        """The services' logs when neither ``log_dir`` nor a Galaxy user says otherwise."""
        return os.path.join(self.state_dir, "log")

    def backend_dir(self, name):
        """A process manager's own directory (its files and its record of what it applied)."""
        return os.path.join(self.state_dir, name)

    @property
    def state_id(self):
        """12 hex digits naming this state dir: the runtime dir's name and the services' marker."""
        import hashlib  # loads OpenSSL: only where an id is needed

        return hashlib.sha1(self.state_dir.encode()).hexdigest()[:12]

    @property
    def runtime_dir(self):
        """As root with a Galaxy user: the directory that user owns for supervisord and pid files."""
        return os.path.join(RUNTIME_ROOT, self.state_id)
