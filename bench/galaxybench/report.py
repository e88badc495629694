"""Raw results → one table (figure, gravity, ours, ratio = gravity / ours: above 1 means ours is
better) and issue 7's targets for ours, printed; everything (raw samples included) as JSON."""

import json

from .common import GRACEFUL_MODES, HANDLER_COUNTS, log, median, secs

MIB = 1024.0  # ru_maxrss is KiB on Linux


# ---------------------------------------------------------------- the table


class Table:
    def __init__(self):
        self.rows = []

    def add(self, figure, gravity, ours, unit="s", note="", ratio=True):
        if ratio and isinstance(gravity, (int, float)) and isinstance(ours, (int, float)) and ours > 0:
            value = gravity / ours
        else:
            value = None
        self.rows.append(
            {"figure": figure, "unit": unit, "gravity": gravity, "ours": ours, "ratio": value, "note": note}
        )

    @staticmethod
    def fmt(value, unit):
        if value is None:
            return "n/a"
        if isinstance(value, str):
            return value
        if unit == "s":
            return f"{value:.3f} s"
        if unit == "ms":
            return f"{value:.1f} ms"
        if unit == "MiB":
            return f"{value:.1f} MiB"
        if isinstance(value, float):
            return f"{value:.2f}"
        return str(value)

    def render(self):
        lines = []
        width = max(len(r["figure"]) for r in self.rows) + 2
        lines.append(f"{'figure':<{width}}{'gravity':>14}{'ours':>14}{'ratio':>9}  note")
        lines.append("-" * (width + 14 + 14 + 9 + 8))
        for row in self.rows:
            ratio = f"{row['ratio']:.1f}x" if row["ratio"] is not None else ""
            lines.append(
                f"{row['figure']:<{width}}{self.fmt(row['gravity'], row['unit']):>14}"
                f"{self.fmt(row['ours'], row['unit']):>14}{ratio:>9}  {row['note']}"
            )
        return "\n".join(lines)


def rss_mib(samples):
    value = median([s["maxrss_kib"] for s in samples])
    return value / MIB if value is not None else None


def build_table(results):
    """The rows in the order the scenarios run: CLI, update scaling and peak RSS, start, graceful."""
    raw = results.raw
    table = Table()
    _cli_rows(table, raw)
    _scaling_rows(table, results)
    _rss_rows(table, raw)
    start_rows(table, raw["start"]["gravity"], raw["start"]["ours"])
    for label, name in GRACEFUL_MODES:
        graceful_rows(table, label, name, raw["graceful"][label])
    return table


def _cli_rows(table, raw):
    g, o = raw["python -c pass"]["gravity"], raw["python -c pass"]["ours"]
    table.add("python -c pass (venv floor)", secs(g), secs(o))
    table.add("--help", secs(raw["--help"]["gravity"]), secs(raw["--help"]["ours"]))
    status_rows = raw["status_output"]
    procs = {k: v["processes_rendered"] for k, v in status_rows.items()}
    table.add(
        "status, supervisord up, 4 services",
        secs(raw["status"]["gravity"]),
        secs(raw["status"]["ours"]),
        note=f"processes rendered: gravity {procs['gravity']}, ours {procs['ours']}; "
        f"exit codes {status_rows['gravity']['rc']}/{status_rows['ours']['rc']}",
    )
    table.add("update no-op, supervisord up", secs(raw["update no-op"]["gravity"]), secs(raw["update no-op"]["ours"]))
    for label, name in (("--help", "--help"), ("status", "status"), ("update no-op", "update no-op")):
        table.add(
            f"{label} / own python -c pass",
            secs(raw[name]["gravity"]) / secs(g),
            secs(raw[name]["ours"]) / secs(o),
            unit="x",
            ratio=False,
        )


def _scaling_rows(table, results):
    scaling, gr = results.raw["update_handlers"], results.raw["growth"]
    for count in HANDLER_COUNTS:
        rendered = {key: results.handlers_rendered[(key, count)] for key in ("gravity", "ours")}
        table.add(
            f"update no-op, {count} handler processes",
            secs(scaling[str(count)]["gravity"]),
            secs(scaling[str(count)]["ours"]),
            note=f"handler processes rendered: gravity {rendered['gravity']}, ours {rendered['ours']}",
        )
    table.add(
        "update: ms per 100 handlers (1->500)",
        gr["gravity"]["ms_per_100_handlers"],
        gr["ours"]["ms_per_100_handlers"],
        unit="ms",
    )
    table.add(
        "update: (t500-t1)/(t100-t1), linear ~5",
        gr["gravity"]["growth_500_vs_100"],
        gr["ours"]["growth_500_vs_100"],
        unit="x",
        ratio=False,
        note=""
        if None not in (gr["gravity"]["growth_500_vs_100"], gr["ours"]["growth_500_vs_100"])
        else "n/a: t100 - t1 below timer noise",
    )
    table.add(
        "first update (writes files), 500 handlers",
        results.first_update[("gravity", "h500")],
        results.first_update[("ours", "h500")],
        note="single run; ours includes register",
    )


def _rss_rows(table, raw):
    for name in ("--help", "status", "update no-op"):
        table.add(f"peak RSS {name}", rss_mib(raw[name]["gravity"]), rss_mib(raw[name]["ours"]), unit="MiB")
    h500 = raw["update_handlers"]["500"]
    table.add("peak RSS update, 500 handlers", rss_mib(h500["gravity"]), rss_mib(h500["ours"]), unit="MiB")
    table.add(
        "peak RSS python -c pass",
        rss_mib(raw["python -c pass"]["gravity"]),
        rss_mib(raw["python -c pass"]["ours"]),
        unit="MiB",
    )


def start_rows(table, sg, so, label=""):
    """start -> first 200, -> the tool's exit, their difference, peak RSS; ``label`` names the case."""
    suffix = f", {label}" if label else ""
    table.add(f"start -> first HTTP 200{suffix}", secs(sg, "first_200"), secs(so, "first_200"))
    table.add(f"start -> tool exits (its 'ready'){suffix}", secs(sg, "exit_seconds"), secs(so, "exit_seconds"))
    table.add(
        f"tool exit - first 200 (<0: exits unready){suffix}",
        secs(sg, "exit_minus_first_200"),
        secs(so, "exit_minus_first_200"),
        ratio=False,
        note="gravity does not wait for HTTP" if (secs(sg, "exit_minus_first_200") or 0) < 0 else "",
    )
    table.add(f"peak RSS start{suffix}", rss_mib(sg), rss_mib(so), unit="MiB")


def graceful_rows(table, label, name, samples):
    if "skipped" in samples:
        table.add(
            f"graceful {label}: failed requests",
            "n/a",
            "n/a",
            unit="",
            note="ours renders no herder yet (plain gunicorn); gravity: unicornherder not installable",
        )
        return
    note = "gravity: unicornherder not installable" if name == "herder" else ""
    gs, os_ = samples.get("gravity"), samples.get("ours")

    def total(s, key):
        return sum(x[key] for x in s) if s else None

    def worst(s):
        return max(x["worst_latency"] for x in s) * 1000 if s else None

    reloaded = {k: sum(1 for x in v if x["new_workers_after"] is not None) for k, v in samples.items()}
    table.add(
        f"graceful {label}: failed / requests",
        f"{total(gs, 'failed')}/{total(gs, 'requests')}" if gs else "n/a",
        f"{total(os_, 'failed')}/{total(os_, 'requests')}",
        unit="",
        ratio=False,
        note=(note + "; " if note else "")
        + "reloads seen: "
        + ", ".join(f"{k} {v}/{len(samples[k])}" for k, v in reloaded.items()),
    )
    table.add(f"graceful {label}: worst latency", worst(gs), worst(os_), unit="ms")
    table.add(
        f"graceful {label}: longest outage",
        max(x["longest_outage"] for x in gs) if gs else None,
        max(x["longest_outage"] for x in os_),
        ratio=False,
        note="failed requests back to back",
    )
    table.add(
        f"graceful {label}: median worst latency",
        median([x["worst_latency"] * 1000 for x in gs]) if gs else None,
        median([x["worst_latency"] * 1000 for x in os_]),
        unit="ms",
    )
    table.add(f"graceful {label}: command time", secs(gs) if gs else None, secs(os_))
    table.add(
        f"graceful {label}: -> new workers answer",
        secs(gs, "new_workers_after") if gs else None,
        secs(os_, "new_workers_after"),
    )


# ---------------------------------------------------------------- targets (issue 7)


def check_targets(results):
    """→ [(target, met)] for ours."""
    raw = results.raw
    st, sf = secs(raw["status"]["ours"]), secs(raw["python -c pass"]["ours"])
    so = raw["start"]["ours"]
    targets = [
        ("status >= 10x faster than gravity", secs(raw["status"]["gravity"]) / st >= 10),
        ("status <= 3x own python -c pass", st / sf <= 3),
        ("--help <= 3x own python -c pass", secs(raw["--help"]["ours"]) / sf <= 3),
        (
            "peak RSS of status/--help/update <= 20 MiB",
            max(rss_mib(raw[n]["ours"]) for n in ("--help", "status", "update no-op")) <= 20,
        ),
        ("update no-op, 500 handlers <= 0.3 s", secs(raw["update_handlers"]["500"]["ours"]) <= 0.3),
        ("start -> first 200 <= 0.5 s", (secs(so, "first_200") or 99) <= 0.5),
        ("ready reported <= 0.3 s after first 200", 0 <= (secs(so, "exit_minus_first_200") or 99) <= 0.3),
    ]
    for label, _ in GRACEFUL_MODES:
        samples = raw["graceful"].get(label, {})
        if isinstance(samples, dict) and samples.get("ours"):
            targets.append((f"0 failed requests, graceful {label}", sum(x["failed"] for x in samples["ours"]) == 0))
    if not any("herder" in c for c in results.herder_commands):
        targets.append(("unicornherder mode measured", False))
    handlers_rendered = results.handlers_rendered[("ours", 500)]
    if handlers_rendered != 500:
        targets.append((f"ours renders 500 handler processes (got {handlers_rendered})", False))
    return targets


# ---------------------------------------------------------------- output


def print_report(meta, table, targets):
    print()
    print(
        f"galaxyctl vs gravity {meta['gravity_venv'].get('gravity')} — medians of {meta['runs']} A/B runs "
        f"({meta['long_runs']} for start/graceful); {meta['cpus']} CPUs; tools run as {meta['run_as']}; "
        f"gunicorn {meta['ours_venv'].get('gunicorn')}; python {meta['ours_venv'].get('python')}"
    )
    print(table.render())
    print()
    print("issue 7 targets (ours):")
    for label, ok in targets:
        print(f"  [{'ok' if ok else 'MISS'}] {label}")


def print_profile(prof):
    print(f"\nours: 'status' imports (Galaxy up, 4 services), total {prof['import_total_us'] / 1000:.1f} ms; top:")
    for row in prof["top_imports"]:
        print(f"  {row['cumulative_us'] / 1000:7.1f} ms  {row['module']}")
    print("\nours: cProfile of 'status' (cumulative):")
    print("\n".join(prof["cprofile"].splitlines()[:45]))


def as_json(meta, table, targets, results):
    result = {
        "meta": meta,
        "rows": table.rows,
        "targets": [{"target": t, "met": ok} for t, ok in targets],
        "raw": results.raw,
    }
    if results.profile:
        result["profile_ours_status"] = results.profile
    return result


def write_json(path, result):
    with open(path, "w") as handle:
        json.dump(result, handle, indent=2, default=str)
    log(f"wrote {path}")
