"""probes/poll.py, the one deadline/back-off helper: checked on a fake clock (fast and exact), and
once on the real one."""

import ast
import time

import pytest

from galaxyctl_libs.probes import poll


class FakeClock:
    """Stands in for the ``time`` module inside poll.py: sleeping only moves the clock on."""

    def __init__(self):
        self.now = 1000.0
        self.sleeps = []

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(round(seconds, 6))
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(poll, "time", fake)
    return fake


def counter(true_from=None, value="done"):
    """A condition that is false until its ``true_from``-th call (never, for None)."""
    calls = []

    def condition():
        calls.append(1)
        return value if true_from is not None and len(calls) >= true_from else None

    return condition, calls


def test_deadline_left_and_expiry(clock):
    deadline = poll.Deadline(2)
    assert deadline.left() == 2 and not deadline.expired()
    clock.now += 1.5
    assert deadline.left() == pytest.approx(0.5) and not deadline.expired()
    clock.now += 1
    assert deadline.left() == 0 and deadline.expired()
    assert poll.Deadline(-5).expired()  # a negative timeout is an expired deadline, not an error


def test_a_true_condition_returns_its_value_at_once(clock):
    condition, calls = counter(true_from=1, value={"pid": 7})
    assert poll.wait_until(condition, 10) == {"pid": 7}
    assert len(calls) == 1 and clock.sleeps == []


def test_timeout_returns_the_last_false_value_after_the_deadline(clock):
    values = iter([None, 0, "", False] + [[]] * 100)
    started = clock.now
    assert poll.wait_until(lambda: next(values), 1.0) == []
    assert clock.now - started == pytest.approx(1.0)


def test_back_off_doubles_up_to_the_maximum_and_the_last_sleep_stops_at_the_deadline(clock):
    condition, _ = counter()
    poll.wait_until(condition, 1.0)
    assert clock.sleeps[:5] == [0.05, 0.1, 0.2, 0.25, 0.25]
    assert sum(clock.sleeps) == pytest.approx(1.0) and clock.sleeps[-1] <= 0.25
    clock.sleeps.clear()
    poll.wait_until(condition, 3.0, interval=0.1, max_interval=1.0)
    assert clock.sleeps[:5] == [0.1, 0.2, 0.4, 0.8, 1.0]


def test_progress_is_called_between_checks_with_the_seconds_left(clock):
    condition, calls = counter(true_from=4)
    lefts = []
    assert poll.wait_until(condition, 10, progress=lefts.append) == "done"
    assert len(calls) == 4 and len(lefts) == 3  # between checks: not after the one that succeeded
    assert lefts == pytest.approx([10, 9.95, 9.85])
    lefts.clear()
    poll.wait_until(counter()[0], 0.3, progress=lefts.append)
    assert lefts and all(left > 0 for left in lefts)  # none once the deadline has passed


def test_early_exit_value_ends_the_wait_and_comes_back(clock):
    """A condition stops the wait for another reason by returning a true value that says so."""
    reasons = iter([None, None, "the process died"])
    assert poll.wait_until(lambda: next(reasons), 60) == "the process died"
    assert clock.sleeps == [0.05, 0.1]


def test_a_shared_deadline_bounds_several_waits(clock):
    deadline = poll.Deadline(1.0)
    poll.wait_until(counter()[0], deadline)
    condition, calls = counter()
    assert poll.wait_until(condition, deadline) is None
    assert len(calls) == 1  # the deadline had passed: one check, no sleep
    assert clock.now - 1000.0 == pytest.approx(1.0)


def test_real_clock_timeout_is_kept():
    started = time.monotonic()
    assert poll.wait_until(lambda: False, 0.1) is False
    assert 0.1 <= time.monotonic() - started < 0.3


def test_poll_imports_only_time():
    """status loads it: it must stay free of heavy imports."""
    tree = ast.parse(open(poll.__file__, encoding="utf-8").read())
    names = {
        alias.name for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names
    }
    assert names == {"time"}


def test_pace_spaces_costly_checks_by_a_multiple_of_what_they_took(clock):
    """A check that takes 0.3 s (supervisord's answer about 2,000 processes) is followed by a
    pause of 4 x 0.3 s; cheap checks keep the usual back-off."""
    costs = iter([0.3, 0.3] + [0.001] * 100)

    def costly():
        clock.now += next(costs)
        return None

    poll.wait_until(costly, 10, interval=0.05, max_interval=0.5, pace=4)
    assert clock.sleeps[:4] == [1.2, 1.2, 0.2, 0.4]
