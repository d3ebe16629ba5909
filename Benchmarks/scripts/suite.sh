#!/usr/bin/env bash
# The brokerbench suite of docs/BENCHMARKS.md: every scenario ROUNDS times (default 3) against brokerd started by
# brokerbench (--spawn), one result per run in OUT: SCENARIO-N.json (the result), .svg (the latency plot), .txt
# (what brokerbench printed). Summarize with `summarize.py OUT`.
#
#   Benchmarks/scripts/suite.sh OUT [BROKERBENCH] [ROUNDS] [SCENARIO...]
#
# BROKERBENCH defaults to .build/release/brokerbench (its brokerd must be beside it: build both with
# `swift build -c release --product brokerd && swift build -c release --product brokerbench`). SCENARIO defaults to
# all but recovery (which fills 10 GiB; name it to run it). e2e-latency runs at half the median durable-publish rate
# of this suite, so durable-publish must come before it. Run nothing else on the machine meanwhile.
set -euo pipefail
out=${1:?usage: suite.sh OUT [BROKERBENCH] [ROUNDS] [SCENARIO...]}
bench=${2:-.build/release/brokerbench}
rounds=${3:-3}
shift $(($# < 3 ? $# : 3))
scenarios=("$@")
if [ ${#scenarios[@]} -eq 0 ]; then
    scenarios=(durable-publish pipelined-single sync-latency e2e-latency consume policy-overhead many-connections)
fi
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
for scenario in "${scenarios[@]}"; do
    extra=()
    case $scenario in
        consume) extra=(--records 10000000) ;;
        many-connections) extra=(--connections 10000) ;;
        recovery) extra=(--recovery-bytes 10G) ;;
        e2e-latency)
            rate=$(python3 "$here/summarize.py" "$out" --half-durable-rate)
            extra=(--rate "$rate") ;;
    esac
    for n in $(seq 1 "$rounds"); do
        echo "$(date +%H:%M:%S) $scenario $n ${extra[*]}"
        "$bench" run "$scenario" --spawn "${extra[@]}" --output "$out/$scenario-$n.json" --plot "$out/$scenario-$n.svg" \
            > "$out/$scenario-$n.txt" 2>&1 || echo "  failed: see $out/$scenario-$n.txt"
    done
done
