"""The state of many units at once: one ``systemctl list-units`` and one pass over /proc.

``systemctl show`` fetches every property of each unit it is given, a D-Bus round trip (or more)
per unit: 2.2 s for 2,000 handler units, nearly all of a ``status`` (issue 26).  ``list-units``
answers for all of them in one call (their load, active and sub state); each unit's main process
and when it started come from /proc: the topmost process of the unit's cgroup, the one systemd
forked (what ``MainPID`` names).  ``show`` is still asked, in one call, about the few units that
need more: those failed or being restarted (their Result and exit status say why) and those
list-units does not know (not loaded).  The props returned read as ``show``'s do.
"""

import os
import time

from galaxyctl_libs.probes import procfs

# what show says beyond list-units' states, for a unit that failed or is being restarted
WHY_PROPERTIES = "Id,LoadState,ActiveState,SubState,Result,ExecMainStatus"


def unit_patterns(units):
    """Few list-units patterns that cover ``units``: a template's instances as ``name@*.service``
    (systemd matches every loaded unit against every pattern), other units by their own name."""
    patterns = {}
    for unit in units:
        prefix, at, rest = unit.partition("@")
        patterns[f"{prefix}@*.{rest.rpartition('.')[2]}" if at else unit] = None
    return list(patterns)


def parse_list_units(text, wanted):
    """``{unit: {LoadState, ActiveState, SubState}}`` from ``list-units --plain --no-legend --full``,
    for the units in ``wanted`` (a unit named in a pattern may list others of the same template)."""
    found = {}
    for line in text.splitlines():
        fields = line.split(None, 4)
        if len(fields) >= 4 and fields[0] in wanted:
            found[fields[0]] = {"LoadState": fields[1], "ActiveState": fields[2], "SubState": fields[3]}
    return found


def unit_of(cgroup_text, wanted):
    """The unit in ``wanted`` whose cgroup a process is in, from its /proc/PID/cgroup (the unified
    hierarchy's ``0::/...`` line, or v1's ``name=systemd`` one), else None."""
    for line in cgroup_text.splitlines():
        controllers, _, path = line.partition(":")[2].partition(":")
        if controllers in ("", "name=systemd"):
            for part in reversed(path.split("/")):
                if part in wanted:
                    return part
    return None


def main_processes(wanted):
    """``{unit: (main PID, start in seconds since boot)}`` for the units in ``wanted`` that have a
    process, from one pass over /proc: the process of the unit whose parent is not in the unit
    (the earliest, should there be several)."""
    members = {}  # unit -> {pid: (parent, start ticks)}
    for entry in os.listdir(procfs.PROC):
        if not entry.isdigit():
            continue
        unit = unit_of(procfs.cgroup(entry), wanted)  # "" when it ended meanwhile
        fields = procfs.stat_fields(entry) if unit else None
        if fields:
            members.setdefault(unit, {})[int(entry)] = (int(fields[1]), int(fields[19]))
    found = {}
    for unit, processes in members.items():
        tops = [(start, pid) for pid, (parent, start) in processes.items() if parent not in processes]
        if tops:
            start, pid = min(tops)
            found[unit] = (pid, start / procfs.CLOCK_TICKS)
    return found


def _needs_why(props):
    return props["ActiveState"] == "failed" or props["SubState"] == "auto-restart"


def since_boot():
    """Now on the clock /proc's start times count on (seconds since boot, suspend included)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def states(controller, units):
    """``{unit: props}`` for ``units`` as ``controller.show`` gives them (Id, LoadState,
    ActiveState, SubState, MainPID, ExecMainStartTimestampMonotonic in µs since boot; Result and
    ExecMainStatus where the unit failed or is being restarted), at a cost that does not grow with
    a D-Bus round trip per unit.  Pair with since_boot() for ``now``."""
    units = list(units)
    if not units:
        return {}
    wanted = set(units)
    listed = controller.systemctl(
        "list-units", "--all", "--plain", "--no-legend", "--full", "--", *unit_patterns(units)
    ).stdout
    shown = parse_list_units(listed, wanted)
    asked = [u for u in units if u not in shown or _needs_why(shown[u])]
    shown.update(controller.show(asked, WHY_PROPERTIES) if asked else {})
    found, now = main_processes(wanted), since_boot()
    for unit, props in shown.items():
        if props.get("ActiveState") in ("inactive", "failed") or not unit.endswith(".service"):
            continue
        # a service systemd calls up whose process /proc no longer has: it exited between the two
        # looks (one that dies at once and is restarted looks active between its deaths), so it
        # counts as just started, never as past its start timeout
        pid, start = found.get(unit, (0, now))
        props.update(MainPID=str(pid), ExecMainStartTimestampMonotonic=str(int(start * 1e6)))
    return {unit: dict(shown.get(unit, {}), Id=unit) for unit in units}
