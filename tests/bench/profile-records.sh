#!/usr/bin/env bash
# Where the time of `timeshard-bench records` goes (docs/BENCHMARKS.md, "Data streams"): runs the
# bench against timeshard in-process and attaches `perf record` to the put phase and then to the
# read phase, so the two are profiled apart. For each phase prints the top symbols by thread
# (`perf report --no-children`) and the share of samples per step of the request path
# (tests/bench/perf-phases.py).
#
# Needs perf (and permission to attach to the bench: root, or kernel.perf_event_paranoid <= 1)
# and python3. perf slows the server down: the bench's own figures from this run are not the
# benchmark's.
#
# Settings (environment): DURATION (15 s of puts, so the read phase outlasts PERF_SECONDS),
# PERF_SECONDS (4), OUT (target/bench-profile). Extra arguments go to timeshard-bench.
set -euo pipefail

cd "$(dirname "$0")/../.."
DURATION=${DURATION:-15}
PERF_SECONDS=${PERF_SECONDS:-4}
OUT=${OUT:-target/bench-profile}
bench=${CARGO_TARGET_DIR:-target}/release/timeshard-bench

cargo build --release -p timeshard-tests --bin timeshard-bench >&2
mkdir -p "$OUT"
echo "== load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

"$bench" records --duration "$DURATION" "$@" >"$OUT/bench.out" 2>"$OUT/bench.err" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' EXIT

record() { # record <phase>
    # DWARF call graphs: the release build keeps line tables but no frame pointers.
    perf record -q -F 499 --call-graph dwarf,32768 -p "$pid" -o "$OUT/$1.data" -- sleep "$PERF_SECONDS" >&2
}
sleep 3
record put
until grep -q "reading back" "$OUT/bench.err"; do
    kill -0 "$pid" 2>/dev/null || { cat "$OUT/bench.err" >&2; exit 1; }
    sleep 0.2
done
record read
wait "$pid"
trap - EXIT
cat "$OUT/bench.out"

for phase in put read; do
    echo
    echo "== $phase phase: top symbols (self time, all threads)"
    perf report -i "$OUT/$phase.data" --no-children --stdio --sort comm,dso,symbol -g none 2>/dev/null \
        | grep -v '^#' | grep -v '^$' | sed -n '1,25p' | cut -c1-150
    echo
    echo "== $phase phase: samples by step of the request path"
    perf script -i "$OUT/$phase.data" -F comm,tid,ip,sym --no-inline 2>/dev/null \
        | python3 tests/bench/perf-phases.py
done
echo "== load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
