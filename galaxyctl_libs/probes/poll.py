"""The one way galaxyctl waits: poll a condition until it holds or a deadline passes.

Every bounded wait (readiness, a reload, supervisord starting or ending, processes exiting) goes
through ``wait_until``, so each has a deadline and the same back-off: quick at first (a fast answer
is reported at once), slower later (a slow start is not hammered).
"""

import time

FIRST_INTERVAL = 0.05  # seconds between the first checks
MAX_INTERVAL = 0.25  # the interval doubles up to this


class Deadline:
    """A point in time ``seconds`` from now (monotonic clock)."""

    __slots__ = ("end",)

    def __init__(self, seconds):
        self.end = time.monotonic() + max(0.0, seconds)

    def left(self):
        return max(0.0, self.end - time.monotonic())

    def expired(self):
        return time.monotonic() >= self.end


def wait_until(condition, timeout, interval=FIRST_INTERVAL, max_interval=MAX_INTERVAL, progress=None, pace=0):
    """Call ``condition()`` until it returns something true or ``timeout`` seconds have passed;
    returns its last value (false on timeout).  ``progress(seconds_left)`` is called between checks.
    ``timeout`` may also be a Deadline shared by several waits.

    ``pace``: the pause after a check is at least ``pace`` times what the check took.  A check that
    costs the one being waited for real work (supervisord's answer about 2,000 processes) then
    takes at most a ``1 / (1 + pace)`` share of its time, however big it grows.

    To stop early for another reason (the process being waited for died, a stop signal), the
    condition returns a true value that says so, and the caller tells it from success: one way out
    of the wait, so no second mechanism is needed."""
    deadline = timeout if isinstance(timeout, Deadline) else Deadline(timeout)
    delay = interval
    while True:
        began = time.monotonic()
        value = condition()
        spent = time.monotonic() - began
        if value or deadline.expired():
            return value
        if progress is not None:
            progress(deadline.left())
        pause = max(delay, pace * spent)
        time.sleep(min(pause, max(0.001, deadline.left())))
        delay = min(max_interval, delay * 2)
