#!/usr/bin/env python3
"""Medians and min-max of brokerbench results, as docs/BENCHMARKS.md gives them.

    summarize.py DIR                       # a table: one group of runs per name (NAME-N.json -> NAME)
    summarize.py DIR --half-durable-rate   # half the median durable-publish records/s (suite.sh's e2e-latency rate)
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
    args = parser.parse_args()
    groups = load(args.directory)
    if not groups:
        sys.exit(f"no NAME-N.json results in {args.directory}")
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
