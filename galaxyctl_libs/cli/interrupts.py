"""Ctrl+C and a service manager's SIGTERM for ``start --foreground``, with no child left behind.

Python raises ``KeyboardInterrupt`` wherever the main thread happens to be.  Raised inside
``subprocess.Popen`` after the fork, it leaves a child nobody knows of: ``tail -F`` following the
logs would then outlive the shutdown (and hold galaxyctl's output open).  ``install`` makes SIGTERM
and SIGINT raise it; inside ``holding()`` (while a child starts) an interrupt waits, and is raised
when the block ends, once the caller knows the child and can end it.
"""

import signal

_state = {"held": False, "pending": False}


def install():
    """SIGTERM and SIGINT raise KeyboardInterrupt (held back inside ``holding()``)."""
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)


def _interrupt(signum, frame):
    if _state["held"]:
        _state["pending"] = True
        return
    raise KeyboardInterrupt()


class holding:  # noqa: N801 - used as a function: ``with holding():``
    """Hold interrupts back for the block; one that came meanwhile is raised at its end."""

    def __enter__(self):
        _state["held"] = True
        return self

    def __exit__(self, exc_type, exc, traceback):
        _state["held"] = False
        if _state["pending"]:
            _state["pending"] = False
            if exc_type is None:
                raise KeyboardInterrupt()
        return False
