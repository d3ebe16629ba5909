#!/usr/bin/env python3
"""µs of brokerd's CPU per record, by function (inclusive), from a perf recording of one `--spawn` run.

    perf record -e cpu-clock -F 499 -a -g -o F -- .build/release/brokerbench run SCENARIO --spawn [...] > TXT
    Benchmarks/scripts/perfrecord.py F RECORDS_PER_S [--hz 499] [--top 60] [--from 3] [--to 11]

The window is from --from to --to seconds after brokerd's first sample (by default 3 to 11: the measured 10 s after
brokerbench's 2 s warm-up, less a second at each end). Samples in it divided by (hz x the window's seconds x
RECORDS_PER_S, the run's records/s from TXT) give µs of CPU per record. Printed: brokerd, the other processes and
idle, then brokerd's functions by their inclusive cost. (brokerd is the process whose stacks hold LogStore frames.)
"""
import argparse
import collections
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from perfhalves import demangle, samples, symbol  # noqa: E402  (pid, time, frames) per sample, as perfhalves.py reads them


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("recording")
    parser.add_argument("rate", type=float, help="the run's records/s")
    parser.add_argument("--hz", type=float, default=499)
    parser.add_argument("--top", type=int, default=60)
    parser.add_argument("--from", dest="start", type=float, default=3)
    parser.add_argument("--to", dest="end", type=float, default=11)
    args = parser.parse_args()
    every = list(samples(args.recording))
    broker = next(pid for pid, _, frames in every if any("8LogStore" in frame for frame in frames))
    first = min(time for pid, time, _ in every if pid == broker)
    window = [s for s in every if first + args.start <= s[1] < first + args.end]
    per_record = lambda n: n / args.hz / ((args.end - args.start) * args.rate) * 1e6
    processes = collections.Counter("brokerd" if pid == broker else "idle" if pid == 0 else "other"
                                    for pid, _, _ in window)
    print("  ".join(f"{name} {per_record(n):.3f}" for name, n in processes.most_common()))
    inclusive = collections.Counter()
    for pid, _, frames in window:
        if pid == broker:
            inclusive.update(set(symbol(frame) for frame in frames))
    top = inclusive.most_common(args.top)
    names = demangle([function for function, _ in top])
    for function, n in top:
        print(f"{per_record(n):7.3f}  {names[function]}")


if __name__ == "__main__":
    main()
