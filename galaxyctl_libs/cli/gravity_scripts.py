"""gravity's commands and galaxyctl's share two names: what to tell an admin who installed both.

galaxyctl installs ``galaxyctl`` and ``galaxy``, the names of gravity's console scripts.  Installed
into Galaxy's virtualenv (which has gravity: Galaxy depends on it), the two packages install the same
two files: the last one installed wins, a reinstall of gravity (a Galaxy upgrade) puts gravity's
back, and ``pip uninstall galaxyctl`` removes them, gravity's included.  ``notice`` says so once per
state dir (README.rst, "Installing beside gravity"), from what each package recorded it installed
(importlib.metadata: the RECORD files pip writes); no script is opened.  Only commands that start
or change things ask (cli/main.py's ``NOTE_COMMANDS``): ``status`` and ``check`` stay quiet and light for cron.
"""

import os
import sys

from galaxyctl_libs import fsutil
from galaxyctl_libs.errors import GalaxyctlError

SCRIPTS = ("galaxyctl", "galaxy")  # the console scripts both packages install
NOTED_FILE = "gravity-scripts.noted"  # in the state dir: the note last given there


def _installed_scripts(dist):
    """The files named like one of SCRIPTS in a ``bin`` directory among those ``dist`` installed,
    as resolved paths."""
    return {
        os.path.realpath(dist.locate_file(item))
        for item in dist.files or ()
        if item.name in SCRIPTS and item.parent.name == "bin"
    }


def shared_scripts(gravity="gravity", ours="galaxyctl", path=None):
    """``(gravity's version, the script files both packages installed)`` when gravity and galaxyctl
    are installed where this Python finds its packages (or in ``path``, a list of directories) and
    recorded installing the same files; else None."""
    from importlib import metadata  # ~20 ms: only for the commands that ask

    where = {} if path is None else {"path": path}
    found = {name: next(iter(metadata.distributions(name=name, **where)), None) for name in (gravity, ours)}
    if None in found.values():
        return None
    try:
        shared = _installed_scripts(found[gravity]) & _installed_scripts(found[ours])
    except (OSError, ValueError):  # an unreadable or malformed RECORD: nothing can be said
        return None
    return (found[gravity].version, tuple(sorted(shared))) if shared else None


def note_text(version, scripts):
    names = " and ".join(os.path.basename(script) for script in scripts)
    where = ", ".join(sorted({os.path.dirname(script) for script in scripts}))
    return (
        f"gravity {version} is installed in this environment too, and it and galaxyctl install the same "
        f"{names} commands (in {where}): the one installed last wins, a reinstall of gravity (a Galaxy upgrade) "
        "puts gravity's back, and 'pip uninstall galaxyctl' leaves neither "
        '(README.rst: "Installing beside gravity")'
    )


def notice(state_dir, stream=None, **where):
    """Print the note to ``stream`` (stderr) unless this state dir was given the same one before;
    remember it there when the state dir exists.  Returns the note, or None."""
    found = shared_scripts(**where)
    if found is None:
        return None
    note = note_text(*found)
    noted = os.path.join(os.fspath(state_dir), NOTED_FILE)
    try:
        if fsutil.read_text(noted, limit=4096) == note + "\n":
            return None
    except GalaxyctlError:
        pass  # unreadable: say it again
    print(f"galaxyctl: note: {note}", file=stream or sys.stderr)
    if os.path.isdir(os.fspath(state_dir)):
        try:
            fsutil.write_if_changed(noted, note + "\n")
        except GalaxyctlError:
            pass  # a state dir this user may not write: the note comes again next time
    return note
