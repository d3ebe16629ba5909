#!/usr/bin/env python3
"""µs of CPU per record, plain half against policy half (and the same-records part between them), from a perf
recording of `brokerbench run policy-overhead`.

    perf record -e cpu-clock -F 499 -a -g -o F -- .build/release/brokerbench run policy-overhead --spawn \\
        --output J > TXT
    Benchmarks/scripts/perfhalves.py F TXT [--hz 499] [--top 40] [--process brokerd|brokerbench] [PATTERN...]

The policy half starts at brokerd's first sample under `DigestTable` (only records with dedupe keys touch it), the
plain half at brokerd's first sample under `ConnectionHandler.publish`; the same-records part (the policy records'
bytes on the plain topics, no checks) runs as long as the plain half, so it is taken to start halfway between
those two. Each part's window is from 8 s to 1 s before the next part's start (the policy half: from 3 s to 10 s
after its start). Samples in a window divided by (hz x the window's seconds x the part's records/s, from TXT) give
µs of CPU per record. Printed: per process (brokerd, brokerbench, other), then the functions of one process
(brokerd unless `--process` says otherwise) by their inclusive cost, largest policy-minus-plain difference first
(or only the functions matching a PATTERN).
"""
import argparse
import collections
import re
import subprocess
import sys

HEADER = re.compile(r"^\s*(\S.*?)\s+(\d+)/(\d+)\s+\[\d+\]\s+([\d.]+):")


def samples(path):
    text = subprocess.run(["perf", "script", "-i", path, "-F", "comm,pid,tid,cpu,time,ip,sym,dso"],
                          capture_output=True, text=True, check=True).stdout
    current = None
    for line in text.splitlines():
        match = HEADER.match(line)
        if match:
            if current:
                yield current
            current = (int(match.group(2)), float(match.group(4)), [])
        elif current and line.strip():
            parts = line.strip().split(None, 1)
            if len(parts) == 2:
                current[2].append(parts[1])
    if current:
        yield current


def symbol(frame):
    name = re.sub(r"\+0x[0-9a-f]+", "", frame.rsplit(" (", 1)[0])
    return name


def demangle(names):
    """Swift names as `swift demangle --simplified` prints them (the mangled name when that fails)."""
    try:
        out = subprocess.run(["swift", "demangle", "--simplified", "--compact"], input="\n".join(names),
                             capture_output=True, text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        out = []
    return dict(zip(names, out)) if len(out) == len(names) else {n: n for n in names}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("perf_data", help="the perf recording (perf record -o F)")
    parser.add_argument("printout", help="what brokerbench printed (its plain and policy records/s)")
    parser.add_argument("patterns", nargs="*", help="show only functions whose name contains one of these")
    parser.add_argument("--hz", type=float, default=499.0, help="perf's sampling frequency (-F)")
    parser.add_argument("--top", type=int, default=40, help="how many functions to print")
    parser.add_argument("--process", default="brokerd", choices=["brokerd", "brokerbench"],
                        help="whose functions to print")
    args = parser.parse_intermixed_args()  # patterns may follow the options
    perf_path, txt_path, patterns = args.perf_data, args.printout, args.patterns
    hz, top, process = args.hz, args.top, args.process
    rates = {}
    for line in open(txt_path):
        for half, key in (("plain", "plain_records_per_s"), ("same", "same_records_records_per_s"),
                          ("policy", "policy_records_per_s")):
            if line.startswith(key + " "):
                rates[half] = float(line.split()[-1])
    all_samples = list(samples(perf_path))
    kind = {}
    for pid, _, frames in all_samples:
        for frame in frames:
            if frame.endswith("/brokerd)"):
                kind[pid] = "brokerd"
            elif frame.endswith("/brokerbench)"):
                kind.setdefault(pid, "brokerbench")
    def first(marker):
        return min(t for pid, t, frames in all_samples
                   if kind.get(pid) == "brokerd" and any(marker in f for f in frames))
    start = first("DigestTable")
    same = first("ConnectionHandlerC7publish") + (start - first("ConnectionHandlerC7publish")) / 2
    windows = {"plain": (same - 8, same - 1), "same": (start - 8, start - 1), "policy": (start + 3, start + 10)}
    readable = demangle(sorted({symbol(f) for pid, _, frames in all_samples if kind.get(pid) == process
                                for f in frames}))
    per_process = {h: collections.Counter() for h in windows}
    inclusive = {h: collections.Counter() for h in windows}
    for pid, t, frames in all_samples:
        for half, (lo, hi) in windows.items():
            if lo <= t < hi:
                who = kind.get(pid, "other" if pid else "idle")
                per_process[half][who] += 1
                if who == process:
                    # Each function once per sample, however often it is on the stack (inclusive cost).
                    for name in {readable[symbol(f)] for f in frames}:
                        inclusive[half][name] += 1

    def micros(half, count):
        lo, hi = windows[half]
        return count / (hz * (hi - lo) * rates[half]) * 1e6

    print(f"records/s: plain {rates['plain']:,.0f}, same records {rates['same']:,.0f}, policy {rates['policy']:,.0f}")
    print(f"{'µs of CPU per record':<60} {'plain':>8} {'same':>8} {'policy':>8}")
    for who in ("brokerd", "brokerbench", "other", "idle"):
        print(f"{who:<60} " + " ".join(f"{micros(h, per_process[h][who]):8.3f}" for h in windows))
    names = set(inclusive["plain"]) | set(inclusive["same"]) | set(inclusive["policy"])
    if patterns:
        names = [n for n in names if any(p in n for p in patterns)]
    rows = sorted(names, key=lambda n: -(micros("policy", inclusive["policy"][n]) - micros("plain", inclusive["plain"][n])))
    print(f"\n{process}, inclusive{' (matching ' + ', '.join(patterns) + ')' if patterns else ', largest difference first'}")
    print(f"  {'':<100} {'plain':>8} {'same':>8} {'policy':>8} {'pol-pla':>8}")
    for name in rows[:top]:
        a, m, b = (micros(h, inclusive[h][name]) for h in ("plain", "same", "policy"))
        print(f"  {name[:100]:<100} {a:8.3f} {m:8.3f} {b:8.3f} {b - a:+8.3f}")


if __name__ == "__main__":
    main()
