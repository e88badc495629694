"""One sample of one tool: the HTTP probe, ``start`` to ready, ``graceful`` under load, a profile.

- ``start`` is timed from stopped (supervisord not running) to the first HTTP 200 on
  ``/api/version`` and to the tool's own exit (its "ready" report; gravity does not wait);
- ``graceful`` runs inside a request loop (>= 300 requests, one every ~10 ms): failed requests, the
  worst latency, the longest outage, and when the new workers first answered;
- ``--profile`` adds ``-X importtime`` and cProfile summaries of ours' ``status``.
"""

import http.client
import json
import os
import re
import threading
import time

READY_PATH = "/api/version"


# ---------------------------------------------------------------- HTTP


def get(port, timeout=5.0):
    """(ok, status-or-error, worker pid or None, seconds)."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", READY_PATH)
        response = conn.getresponse()
        body = response.read()
        pid = None
        if response.status == 200:
            try:
                pid = json.loads(body).get("pid")
            except ValueError:
                pass
        return response.status == 200, response.status, pid, time.perf_counter() - started
    except (OSError, http.client.HTTPException) as exc:
        return False, type(exc).__name__, None, time.perf_counter() - started
    finally:
        conn.close()


def wait_http(port, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if get(port, timeout=2.0)[0]:
            return True
        time.sleep(0.05)
    return False


# ---------------------------------------------------------------- start and graceful


def measure_start(tool, instance):
    """From stopped (supervisord not running): → seconds to first HTTP 200 and to the tool's exit."""
    tool.shutdown(instance)
    if get(instance.port, timeout=0.5)[0]:
        raise RuntimeError(f"port {instance.port} still answers after shutdown")
    first = {}
    stop = threading.Event()
    t0 = time.perf_counter()

    def poll():
        while not stop.is_set() and time.perf_counter() - t0 < 120:
            if get(instance.port, timeout=2.0)[0]:
                first["seconds"] = time.perf_counter() - t0
                return
            time.sleep(0.005)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    result = tool.run(instance, "start")  # the Runner's clock starts a hair after t0: same for both tools
    exit_seconds = time.perf_counter() - t0
    poller.join(timeout=120)
    stop.set()
    tool.remember(instance)
    return {
        "seconds": exit_seconds,
        "exit_seconds": exit_seconds,
        "first_200": first.get("seconds"),
        "rc": result["rc"],
        "maxrss_kib": result["maxrss_kib"],
    }


def measure_graceful(tool, instance, min_requests=300, interval=0.01, tail_seconds=1.0, cap_seconds=120):
    """A bounded request loop across ``graceful``: failures, worst latency, whether new workers answered."""
    if not wait_http(instance.port, 60):
        raise RuntimeError(f"{tool.label} {instance.name}: not answering before graceful")
    records = []  # (t, ok, status, pid, latency)
    stop = threading.Event()
    t0 = time.perf_counter()

    def loop():
        while not stop.is_set() and time.perf_counter() - t0 < cap_seconds:
            ok, status, pid, latency = get(instance.port, timeout=10.0)
            records.append((time.perf_counter() - t0, ok, status, pid, latency))
            time.sleep(interval)

    worker = threading.Thread(target=loop, daemon=True)
    worker.start()
    deadline = time.monotonic() + 30
    while len(records) < 50 and time.monotonic() < deadline:
        time.sleep(0.01)
    before = {r[3] for r in records if r[1]}
    launched = time.perf_counter() - t0
    result = tool.run(instance, "graceful")
    returned = time.perf_counter() - t0
    new_seen = None
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        fresh = [r for r in records if r[0] > launched and r[1] and r[3] not in before]
        if fresh:
            new_seen = fresh[0][0] - launched
            break
        time.sleep(0.02)
    # a tail after the reload, and at least min_requests in all (bounded by cap_seconds)
    tail_until = time.perf_counter() + tail_seconds
    while (time.perf_counter() < tail_until or len(records) < min_requests) and time.perf_counter() - t0 < cap_seconds:
        time.sleep(0.02)
    stop.set()
    worker.join(timeout=15)
    tool.remember(instance)
    failed = [r for r in records if not r[1]]
    return {
        "longest_outage": _longest_outage(records),
        "seconds": returned - launched,
        "rc": result["rc"],
        "maxrss_kib": result["maxrss_kib"],
        "requests": len(records),
        "failed": len(failed),
        "worst_latency": max((r[4] for r in records), default=None),
        "new_workers_after": new_seen,
        "failure_kinds": sorted({str(r[2]) for r in failed}),
    }


def _longest_outage(records):
    """The longest span from a failed request's start to the next good one's start (or the loop's end)."""
    outage, down_since = 0.0, None
    for done, ok, _, _, latency in records:
        began = done - latency
        if not ok and down_since is None:
            down_since = began
        elif ok and down_since is not None:
            outage, down_since = max(outage, began - down_since), None
    if down_since is not None:
        outage = max(outage, records[-1][0] - down_since)
    return outage


def settle(instance, seconds=1.0):
    wait_http(instance.port, 60)
    time.sleep(seconds)


# ---------------------------------------------------------------- profiling (ours)


def profile_ours(tool, instance):
    """``-X importtime`` and cProfile of ``status`` (``tool.argv`` starts with the venv's python)."""
    out = os.path.join(tool.home, "status.prof")
    runner = tool.runner
    python, *argv = tool.argv(instance, "status")
    imports = runner.run([python, "-X", "importtime", *argv], home=tool.home)
    rows = []
    for line in imports["err"].splitlines():
        found = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if found:
            rows.append((int(found.group(2)), int(found.group(1)), len(found.group(3)) // 2, found.group(4)))
    total = sum(r[1] for r in rows)
    top = sorted((r for r in rows if r[2] <= 2), reverse=True)[:15]
    runner.run([python, "-m", "cProfile", "-o", out, *argv], home=tool.home)
    stats = runner.run(
        [
            tool.python,
            "-c",
            "import pstats, sys; pstats.Stats(sys.argv[1]).sort_stats('cumulative').print_stats(25)",
            out,
        ],
        home=tool.home,
    )
    return {
        "import_total_us": total,
        "top_imports": [{"cumulative_us": c, "self_us": s, "module": m} for c, s, _, m in top],
        "cprofile": stats["out"],
    }
