#!/usr/bin/env python3
"""Medians and min-max of brokerbench results, as docs/BENCHMARKS.md gives them.

    summarize.py DIR                       # a table: one group of runs per name (NAME-N.json -> NAME)
    summarize.py DIR --half-durable-rate   # half the median durable-publish records/s (suite.sh's e2e-latency rate)
    summarize.py DIR --table LABEL [--recovery DIR2]
                                           # the rows of docs/BENCHMARKS.md's "Figures" table, one cell per row for
                                           # this suite (recovery's from DIR2 when given), as `| scenario | figure |
                                           # LABEL |`: the column a new suite adds there and to benchmarks/HISTORY.md
    summarize.py DIR --check               # the table, then exit 1 if any run counted errors or undelivered records,
                                           # measured no record, or (a spawned brokerd's publishing scenario) read
                                           # no publish stage from the broker's metrics, or an e2e-latency timeline
                                           # (of arrivals, or of acknowledgements) does not count every measured
                                           # record, or an e2e-latency run's durability floor failed

A group is every DIR/NAME-N.json with the same NAME (suite.sh writes SCENARIO-N.json, ab.sh LABEL-SCENARIO-N.json).
Each figure is printed as `median (min-max)` over the group's runs, with the number of runs.
"""
import argparse
import glob
import json
import os
import re
import statistics
import sys


def load(directory):
    groups = {}
    for path in sorted(glob.glob(os.path.join(directory, "*.json"))):
        match = re.fullmatch(r"(.+)-(\d+)\.json", os.path.basename(path))
        if not match:
            continue
        with open(path) as f:
            groups.setdefault(match.group(1), []).append(json.load(f))
    return groups


def figures(result):
    """The figures of one run, by name, in print order."""
    out = {"records/s": result["recordsPerSecond"], "errors": result["errors"]}
    latency = result.get("latencyMicros")
    if latency:
        for key in ("p50", "p90", "p99", "p999", "max"):
            out[f"latency {key} us"] = latency[key]
    for key, value in sorted(result.get("extra", {}).items()):
        out[key] = value
    broker = result.get("broker")
    if broker:
        out["broker CPU s"] = broker["cpuSeconds"]
        out["broker RSS MB"] = broker["rssBytes"] / 1048576
        out["broker peak RSS MB"] = broker["peakRssBytes"] / 1048576
    return out


def median_range(values, digits=0):
    """`median (min–max)` as the docs' tables give it; `—` when there is no run, `(1 run)` for one."""
    if not values:
        return "—"
    text = lambda v: f"{v:,.{digits}f}"
    if len(values) == 1:
        return f"{text(values[0])} (1 run)"
    return f"{text(statistics.median(values))} ({text(min(values))}–{text(max(values))})"


def suite_table(groups, recovery_groups):
    """The rows of docs/BENCHMARKS.md's "Figures" table: (scenario, figure, this suite's cell), in the table's order."""
    runs = lambda name, source=groups: source.get(name, [])
    extra = lambda name, key, source=groups: [r["extra"][key] for r in runs(name, source) if key in r["extra"]]
    latency = lambda name, key: [r["latencyMicros"][key] for r in runs(name) if r.get("latencyMicros")]
    rate = lambda name: [r["recordsPerSecond"] for r in runs(name)]
    e2e = runs("e2e-latency")
    asked = f"{e2e[0]['parameters']['rate']:,} / " if e2e else ""
    return [
        ("durable-publish", "records/s", median_range(rate("durable-publish"))),
        ("durable-publish", "ack p99 per 100-record PUBLISH, µs", median_range(latency("durable-publish", "p99"))),
        ("pipelined-single", "records/s", median_range(rate("pipelined-single"))),
        ("sync-latency", "ack p99, µs", median_range(latency("sync-latency", "p99"))),
        ("sync-latency", "fdatasync p99 (4 KiB, same run), µs",
         median_range(extra("sync-latency", "fdatasync_4k_p99_us"))),
        ("sync-latency", "ack p99 − fdatasync p99, µs",
         median_range(extra("sync-latency", "ack_p99_minus_fdatasync_p99_us"))),
        ("sync-latency", "ack p50 / fdatasync p50, µs", f"{median_range(latency('sync-latency', 'p50'))} / "
         f"{median_range(extra('sync-latency', 'fdatasync_4k_p50_us'))}"),
        ("e2e-latency", "rate asked (½ durable median) / achieved, records/s",
         asked + median_range(rate("e2e-latency"))),
        ("e2e-latency", "publish→deliver p50, µs", median_range(latency("e2e-latency", "p50"))),
        ("e2e-latency", "publish→deliver p99, µs", median_range(latency("e2e-latency", "p99"))),
        ("e2e-latency", "send→ack p99 per PUBLISH, µs", median_range(extra("e2e-latency", "publish_ack_p99_us"))),
        ("e2e-latency", "share of records later than 2 ms / of 100 ms windows holding one (timeline, since round 26)",
         f"{median_range(extra('e2e-latency', 'timeline_100ms_slow_records_ratio'), 3)} / "
         f"{median_range(extra('e2e-latency', 'timeline_100ms_windows_with_slow_ratio'), 2)}"),
        ("consume", "records/s (10 M records)", median_range(rate("consume"))),
        ("policy-overhead", "plain half, records/s", median_range(extra("policy-overhead", "plain_records_per_s"))),
        ("policy-overhead", "policy half, records/s", median_range(rate("policy-overhead"))),
        ("policy-overhead", "policy / plain", median_range(extra("policy-overhead", "policy_over_plain_ratio"), 3)),
        ("policy-overhead", "same records (the policy records' bytes, no check) / plain",
         median_range(extra("policy-overhead", "same_records_over_plain_ratio"), 3)),
        ("policy-overhead", "broker peak RSS, MB",
         median_range([r["broker"]["peakRssBytes"] / 1048576 for r in runs("policy-overhead") if r.get("broker")])),
        ("many-connections", "broker RSS with 10,000 connections, MB",
         median_range(extra("many-connections", "broker_rss_with_connections_mb"), 1)),
        ("many-connections", "broker bytes per connection",
         median_range(extra("many-connections", "broker_bytes_per_connection"))),
        ("many-connections", "broker RSS growth per stalled subscriber (8, credit 4,096 ≈ 1.6 MB each), bytes",
         median_range(extra("many-connections", "rss_growth_per_stalled_sub_bytes"))),
        ("many-connections",
         "memory in use (`brokerd_memory_allocated_bytes`) growth per stalled subscriber, bytes",
         median_range(extra("many-connections", "allocated_growth_per_stalled_sub_bytes"))),
        ("recovery", "restart after SIGKILL, 10 GiB log, s",
         median_range(extra("recovery", "restart_after_sigkill_s", recovery_groups), 3)),
        ("recovery", "restart after SIGTERM, 10 GiB log, s",
         median_range(extra("recovery", "restart_after_sigterm_s", recovery_groups), 3)),
    ]


def number(value):
    if abs(value) >= 100 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:.3f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", help="where the NAME-N.json results are")
    parser.add_argument("--half-durable-rate", action="store_true",
                        help="print half the median durable-publish records/s and nothing else")
    parser.add_argument("--check", action="store_true",
                        help="after the table, fail (exit 1) if any run counted errors or undelivered records, "
                        "measured no record, or (spawned, publishing) read no publish stage or log busy fraction "
                        "from the broker")
    parser.add_argument("--table", metavar="LABEL",
                        help="print the rows of docs/BENCHMARKS.md's Figures table for this suite and nothing else")
    parser.add_argument("--recovery", metavar="DIR2", help="with --table: where the suite's recovery run is")
    args = parser.parse_args()
    groups = load(args.directory)
    if not groups:
        sys.exit(f"no NAME-N.json results in {args.directory}")
    if args.table:
        recovery = load(args.recovery) if args.recovery else groups
        print(f"| scenario | figure | {args.table} |\n| --- | --- | ---: |")
        for scenario, figure, cell in suite_table(groups, recovery):
            print(f"| {scenario} | {figure} | {cell} |")
        return
    if args.half_durable_rate:
        runs = [r["recordsPerSecond"] for name, rs in groups.items() if name.endswith("durable-publish") for r in rs]
        if not runs:
            sys.exit("no durable-publish results in " + args.directory)
        print(int(statistics.median(runs) / 2))
        return
    for name, runs in groups.items():
        print(f"{name} ({len(runs)} run{'s' if len(runs) != 1 else ''})")
        table = [figures(r) for r in runs]
        for key in table[0]:
            values = [t[key] for t in table if key in t]
            median = statistics.median(values)
            print(f"  {key:<40} {number(median)} ({number(min(values))}-{number(max(values))})")
    if args.check:
        bad = sorted(name for name, runs in groups.items()
                     if any(r["errors"] or r.get("extra", {}).get("records_undelivered") for r in runs))
        if bad:
            sys.exit("errors or undelivered records in " + ", ".join(bad))
        # policy-overhead's figures are its policy half's; its other two parts must have measured records too.
        parts = ("plain_records_per_s", "same_records_records_per_s")
        empty = sorted(name for name, runs in groups.items()
                       if any(not r.get("records") or (r["scenario"] == "policy-overhead"
                                                       and not all(r.get("extra", {}).get(k) for k in parts))
                              for r in runs))
        if empty:
            sys.exit("no record measured in " + ", ".join(empty))
        # A spawned brokerd of a publishing scenario reports where its publishes spent their time (METRICS.md,
        # brokerd_publish_stage_seconds) and how busy the logs of the topics it published on were
        # (brokerd_log_append_duration_seconds); brokerbench reads both from the broker's metrics endpoint.
        publishing = ("durable-publish", "pipelined-single", "sync-latency", "e2e-latency", "policy-overhead")
        for key, what in (("broker_timed_requests", "broker publish stages"), ("log_busy", "log busy fraction")):
            missing = sorted(name for name, runs in groups.items()
                             if any(r["scenario"] in publishing and (r.get("broker") or {}).get("separateProcess")
                                    and not r.get("extra", {}).get(key) for r in runs))
            if missing:
                sys.exit(f"no {what} read in " + ", ".join(missing))
        # e2e-latency's timeline (round 26) counts every measured record in the window of its scheduled time.
        uncounted = sorted(name for name, runs in groups.items()
                           if any(r["scenario"] == "e2e-latency"
                                  and sum(w["records"] for w in (r.get("timeline") or {}).get("windows", []))
                                  != r["records"] for r in runs))
        if uncounted:
            sys.exit("e2e-latency timeline does not count every measured record in " + ", ".join(uncounted))
        # Its acknowledgement timeline (round 27) counts every measured record sent, once its PUBLISH is answered.
        unacked = sorted(name for name, runs in groups.items()
                         if any(r["scenario"] == "e2e-latency"
                                and sum(w["records"] for w in (r.get("ackTimeline") or {}).get("windows", []))
                                != r.get("extra", {}).get("records_sent_measured") for r in runs))
        if unacked:
            sys.exit("e2e-latency acknowledgement timeline does not count every measured record in "
                     + ", ".join(unacked))
        # Its durability floor (round 28): measured after the run (durability_floor_seconds > 0, with cycles and a
        # late share), or said to be left out (0: a remote broker, --floor-seconds 0); absent when it failed.
        def floor_missing(extra):
            seconds = extra.get("durability_floor_seconds")
            if seconds is None:
                return True
            return seconds > 0 and not (extra.get("durability_floor_cycles_per_s", 0) > 0
                                        and "durability_floor_late_ratio" in extra)
        nofloor = sorted(name for name, runs in groups.items()
                         if any(r["scenario"] == "e2e-latency" and floor_missing(r.get("extra", {})) for r in runs))
        if nofloor:
            sys.exit("e2e-latency durability floor not measured in " + ", ".join(nofloor))
        # Where the kernel keeps per-thread scheduler statistics, a run that read a spawned brokerd's CPU time also
        # read how long its threads waited for a core (/proc/PID/task/TID/schedstat).
        if os.path.exists("/proc/self/schedstat"):
            missing = sorted(name for name, runs in groups.items()
                             if any("cpu_broker_cores" in r.get("extra", {})
                                    and "cpu_broker_runq_wait_cores" not in r["extra"] for r in runs))
            if missing:
                sys.exit("no run-queue wait read in " + ", ".join(missing))


if __name__ == "__main__":
    main()
