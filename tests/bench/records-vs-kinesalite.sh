#!/usr/bin/env bash
# Data streams load, timeshard against kinesalite, in one run (docs/BENCHMARKS.md, section
# "Data streams").
#
# 1. Builds `timeshard-bench` in release mode.
# 2. Installs kinesalite from npm into target/kinesalite (needs node and npm).
# 3. Starts kinesalite on a free loopback port, in memory (its kindest setting: no LevelDB) with
#    streams ACTIVE at once.
# 4. ROUNDS times, alternating: `timeshard-bench records` against timeshard started in-process
#    (fresh data directory under target/bench-data, sync policy `always`), then against
#    kinesalite, with the same batch, record size, connections and shards. Alternating rounds
#    and medians because this machine class varies run to run (disk, and fresh guest pages:
#    see docs/BENCHMARKS.md).
# 5. Prints every result table, the medians and ranges, and the ratios of the medians (put
#    records/s, read MB/s).
#
# kinesalite is stopped on the way out, whatever happened.
#
# Settings (environment): ROUNDS (3), CONNECTIONS (8), DURATION (10 s, timeshard),
# KINESALITE_DURATION (default: DURATION), BATCH (500), RECORD_BYTES (1024), SHARDS (4),
# KINESALITE_VERSION (latest). Extra arguments are passed to every run of timeshard-bench.
set -euo pipefail

cd "$(dirname "$0")/../.."
repo=$(pwd)

ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-8}
DURATION=${DURATION:-10}
KINESALITE_DURATION=${KINESALITE_DURATION:-$DURATION}
BATCH=${BATCH:-500}
RECORD_BYTES=${RECORD_BYTES:-1024}
SHARDS=${SHARDS:-4}
KINESALITE_VERSION=${KINESALITE_VERSION:-latest}

target_dir=${CARGO_TARGET_DIR:-$repo/target}
bench=$target_dir/release/timeshard-bench
kinesalite_dir=$repo/target/kinesalite
out_dir=$(mktemp -d "${TMPDIR:-/tmp}/records-vs-kinesalite.XXXXXX")
kinesalite_pid=

cleanup() {
    if [[ -n $kinesalite_pid ]] && kill -0 "$kinesalite_pid" 2>/dev/null; then
        kill "$kinesalite_pid" 2>/dev/null || true
        wait "$kinesalite_pid" 2>/dev/null || true
    fi
    rm -rf "$out_dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== machine: $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"

echo "== building timeshard-bench (release)" >&2
cargo build --release -p timeshard-tests --bin timeshard-bench >&2

echo "== installing kinesalite@$KINESALITE_VERSION into $kinesalite_dir (node $(node --version))" >&2
mkdir -p "$kinesalite_dir"
npm install --prefix "$kinesalite_dir" --no-audit --no-fund --loglevel=error \
    "kinesalite@$KINESALITE_VERSION" >&2
kinesalite_pkg=$kinesalite_dir/node_modules/kinesalite
kinesalite_version=$(node -p "require('$kinesalite_pkg/package.json').version")

# A free loopback port: bind port 0, read it, let it go. kinesalite's own command line listens
# on every interface, so it is started through its module API on 127.0.0.1 instead, with the
# options its command line would take: in memory (no --path), streams ACTIVE at once, and a
# shard limit that never gets in the way.
port=$(node -e 'const s = require("net").createServer(); s.listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })')
node -e "
const kinesalite = require(process.argv[1]);
const server = kinesalite({ createStreamMs: 0, deleteStreamMs: 0, updateStreamMs: 0, shardLimit: 10000 });
server.listen(+process.argv[2], '127.0.0.1', () => console.error('kinesalite listening on 127.0.0.1:' + process.argv[2]));
" "$kinesalite_pkg" "$port" &
kinesalite_pid=$!
for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
    kill -0 "$kinesalite_pid" 2>/dev/null || { echo "kinesalite exited" >&2; exit 1; }
    sleep 0.1
done

common=(--connections "$CONNECTIONS" --batch "$BATCH" --record-bytes "$RECORD_BYTES" --shards "$SHARDS")
# A run with failed calls or missing records still prints its table, then exits non-zero: note
# it, carry on, and fail at the end.
failed=0
for round in $(seq "$ROUNDS"); do
    echo
    echo "== round $round/$ROUNDS: timeshard (in-process), ${DURATION} s"
    "$bench" records "${common[@]}" --duration "$DURATION" --label timeshard "$@" \
        | tee "$out_dir/timeshard.$round" || failed=1
    echo
    echo "== round $round/$ROUNDS: kinesalite $kinesalite_version (in memory, pid $kinesalite_pid), ${KINESALITE_DURATION} s"
    # The bench deletes its stream from an external server afterwards, so kinesalite's memory
    # does not grow from round to round.
    "$bench" records "${common[@]}" --duration "$KINESALITE_DURATION" \
        --label "kinesalite $kinesalite_version" --endpoint "http://127.0.0.1:$port" --fake-auth \
        --server-pid "$kinesalite_pid" "$@" \
        | tee "$out_dir/kinesalite.$round" || failed=1
done

# values <server> <key>: a `result` field of every round, sorted; median and range of them.
values() {
    sed -n "s/^result .* $2=\([0-9.]*\).*/\1/p" "$out_dir/$1".* | sort -g
}
median() {
    values "$1" "$2" | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
range() {
    values "$1" "$2" | awk 'NR == 1 { lo = $1 } { hi = $1 } END { print lo "-" hi }'
}
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1fx", a / b }'
}
ts_put=$(median timeshard put_records_per_s)
kl_put=$(median kinesalite put_records_per_s)
ts_read=$(median timeshard read_mb_per_s)
kl_read=$(median kinesalite read_mb_per_s)
echo
echo "== medians of $ROUNDS rounds (ranges in parentheses)"
echo "timeshard:  put $ts_put records/s ($(range timeshard put_records_per_s)), $(median timeshard put_mb_per_s) MB/s; read $ts_read MB/s ($(range timeshard read_mb_per_s)), $(median timeshard read_records_per_s) records/s"
echo "kinesalite: put $kl_put records/s ($(range kinesalite put_records_per_s)), $(median kinesalite put_mb_per_s) MB/s; read $kl_read MB/s ($(range kinesalite read_mb_per_s)), $(median kinesalite read_records_per_s) records/s"
echo "== ratio timeshard / kinesalite $kinesalite_version: put records/s $(ratio "$ts_put" "$kl_put") (goal >= 15x); read MB/s $(ratio "$ts_read" "$kl_read")"
echo "== load average after the run: $(cut -d' ' -f1-3 /proc/loadavg)"
if [[ $failed != 0 ]]; then
    echo "== at least one run reported problems (see above)" >&2
    exit 1
fi
