"""Paths and constants every module of the bench shares, ``log`` and ``median``."""

import os
import statistics
import sys

BENCH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # bench/, where the venvs live
REPO = os.path.dirname(BENCH)
HANDLER_COUNTS = (1, 10, 100, 500)
CMD_TIMEOUT = 180
# (table label, instance name) of the graceful scenarios; "herder" is ours only
GRACEFUL_MODES = (
    ("preload false", "web"),
    ("preload true (Galaxy default)", "webpre"),
    ("unicornherder (ours)", "herder"),
)


def log(message):
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def secs(samples, key="seconds"):
    """The median of ``key`` over samples (``None`` values left out)."""
    return median([s.get(key) for s in samples])


def add_common_options(parser):
    """The options ``bench/run.py`` and ``bench/systemd.py`` share."""
    parser.add_argument("--runs", type=int, default=10, help="A/B runs per figure (default: %(default)s)")
    parser.add_argument("--graceful-runs", type=int, help="runs for start and graceful figures (default: --runs)")
    parser.add_argument("--json", metavar="OUT", help="write the results as JSON here")
    parser.add_argument("--profile", action="store_true", help="also profile ours' status (-X importtime, cProfile)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (for inspection)")
