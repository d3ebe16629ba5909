#!/usr/bin/env bash
# Alternating A/B runs: for each round, each scenario runs once with A and once with B (brokerd --spawn'ed beside
# each brokerbench), so both see the same drift of this shared machine; A first in odd rounds, B first in even ones,
# because the run second in a pair can gain from the first (docs/benchmarks/HISTORY.md "Round 21", item 5: the second
# was faster in 7 of 9 pairs of policy-overhead, whichever build it was). Use an even ROUNDS. Results go to
# OUT/A-SCENARIO-N.json and OUT/B-SCENARIO-N.json (and .txt); compare with `summarize.py OUT`.
#
#   Benchmarks/scripts/ab.sh OUT A B ROUNDS SCENARIO... [-- ARGS...]
#
# A and B are commands that run brokerbench: the path of one build's brokerbench (two builds: copy each
# .build/release/{brokerd,brokerbench} to a directory of its own), or a command with its own arguments, word-split
# (e.g. "taskset -c 0 .build/release/brokerbench"). ARGS after `--` go to every run (e.g. --duration 5).
set -euo pipefail
out=${1:?usage: ab.sh OUT A B ROUNDS SCENARIO... [-- ARGS...]}
a=${2:?A}
b=${3:?B}
rounds=${4:?ROUNDS}
shift 4
scenarios=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do scenarios+=("$1"); shift; done
[ $# -gt 0 ] && shift
args=("$@")
mkdir -p "$out"
for n in $(seq 1 "$rounds"); do
    if [ $((n % 2)) -eq 1 ]; then order=(A B); else order=(B A); fi
    for scenario in "${scenarios[@]}"; do
        for label in "${order[@]}"; do
            if [ $label = A ]; then command=$a; else command=$b; fi
            echo "$(date +%H:%M:%S) round $n $scenario $label"
            # shellcheck disable=SC2086  # the command is word-split on purpose
            $command run "$scenario" --spawn "${args[@]}" --output "$out/$label-$scenario-$n.json" \
                --plot "$out/$label-$scenario-$n.svg" > "$out/$label-$scenario-$n.txt" 2>&1 \
                || echo "  failed: see $out/$label-$scenario-$n.txt"
        done
    done
done
