"""The one error type for problems a user can fix.

The CLI catches it once, prints ``galaxyctl: error: <message>`` on one line and exits with
``exit_code``.  Anything else is a bug and keeps its traceback.
"""

from galaxyctl_libs import exitcodes

# C0 controls but tab, DEL and C1 controls, shown escaped: an error may quote what the Galaxy user
# wrote (a log line, a command line, a fault string), and a terminal must not obey its escapes
_CONTROLS = {code: f"\\x{code:02x}" for code in (*range(0, 9), *range(10, 32), *range(127, 160))}


def printable(text):
    """``text`` with terminal control characters escaped (``\\x1b``), so it shows as it is."""
    return str(text).translate(_CONTROLS)


class GalaxyctlError(Exception):
    """A user-facing failure: bad config, missing file, a service that would not start."""

    def __init__(self, message, exit_code=exitcodes.FAILURE, details=()):
        message = " ".join(printable(line.strip()) for line in str(message).splitlines())  # always one line
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.details = tuple(printable(line) for line in details)  # extra lines after it (e.g. a log tail)
        self.warnings = ()  # the config's warnings, when it failed after loading one (see carrying)

    def __str__(self):
        return self.message


# what every command says when no Galaxy config is registered (nor named with -c or the environment)
NOTHING_CONFIGURED = (
    "no Galaxy config is registered: run 'galaxyctl register /path/to/galaxy.yml', name one with -c, "
    "or run 'galaxyctl start' from the root of a Galaxy source tree"
)


class NothingConfigured(GalaxyctlError):
    """No Galaxy config to act on: the same line, and a non-zero exit, from every command."""

    def __init__(self, exit_code=exitcodes.FAILURE):
        super().__init__(NOTHING_CONFIGURED, exit_code)


class carrying:  # lower case: used as a function, ``with carrying(warnings):``
    """A GalaxyctlError raised inside carries ``warnings`` (a loaded config's): the CLI prints them
    before the error, since a typo they point at may be why a start failed.  (A class, not
    contextlib's decorator: this module is on status's path, which imports no contextlib.)"""

    def __init__(self, warnings):
        self.warnings = tuple(warnings)

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, traceback):
        if isinstance(exc, GalaxyctlError):
            exc.warnings = self.warnings + tuple(exc.warnings)
        return False


class NotReadyError(GalaxyctlError):
    """A service was started but never answered: ``startup`` retries on this one, not on bad config."""
