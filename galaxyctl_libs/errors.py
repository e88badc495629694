"""The one error type for problems a user can fix.

The CLI catches it once, prints ``galaxyctl: error: <message>`` on one line and exits with
``exit_code``.  Anything else is a bug and keeps its traceback.
"""

from galaxyctl_libs import exitcodes


class GalaxyctlError(Exception):
    """A user-facing failure: bad config, missing file, a service that would not start."""

    def __init__(self, message, exit_code=exitcodes.FAILURE, details=()):
        message = " ".join(line.strip() for line in str(message).splitlines())  # always one line
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.details = tuple(details)  # extra lines shown after the error line (e.g. a log tail)

    def __str__(self):
        return self.message


class NotReadyError(GalaxyctlError):
    """A service was started but never answered: ``startup`` retries on this one, not on bad config."""
