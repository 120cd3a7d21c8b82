#!/usr/bin/env bash
# Producer: issue 5's producer figures (docs/BENCHMARKS.md, section "Producer").
#
# 1. Builds `timeshard` and `timeshard-put` in release mode; makes (once, cached in
#    target/bench-media) a CLIP_SECONDS clip of 1280x720 H.264 at BITRATE (4 Mbit/s), 25 fps, a
#    key frame every 2 s, with ffmpeg.
# 2. CPU per stream, live: ffmpeg sends the clip in real time (`-re -c copy`) into
#    `timeshard-put` through a pipe; `/usr/bin/time` reports the CPU time of timeshard-put alone.
#    CPU % of one core = (user + sys) / clip length.
# 3. CPU per stream, as fast as possible: timeshard-put uploads the clip file at full speed; the
#    same CPU figure, per second of video, without the idle waits of the live run.
# 4. Backlog catch-up: with the server down, `timeshard-put --buffer-dir` reads the whole clip
#    into its buffer directory and gives up (`--give-up-after 2`), leaving every fragment on
#    disk. The server starts, and a second `timeshard-put --buffer-dir` with empty input uploads
#    the backlog. Speed = clip length / wall time of that second run (process start, stream
#    check and every PERSISTED ack included). Target: >= 20x real time.
#
# Each measurement runs ROUNDS times (default 3); the script prints every round and the median.
# Settings (environment): ROUNDS (3), CLIP_SECONDS (60), BITRATE (4M).
set -euo pipefail

cd "$(dirname "$0")/../.."
repo=$(pwd)
ROUNDS=${ROUNDS:-3}
CLIP_SECONDS=${CLIP_SECONDS:-60}
BITRATE=${BITRATE:-4M}
target_dir=${CARGO_TARGET_DIR:-$repo/target}
work=$(mktemp -d "${TMPDIR:-/tmp}/producer-bench.XXXXXX")
server_pid=""
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

command -v ffmpeg >/dev/null || { echo "ffmpeg is needed" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "/usr/bin/time is needed (apt-get install time)" >&2; exit 1; }

echo "== machine: $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== building timeshard and timeshard-put (release)" >&2
cargo build --release -p timeshard-server -p timeshard-producer >&2
server=$target_dir/release/timeshard
put=$target_dir/release/timeshard-put

media=$target_dir/bench-media
mkdir -p "$media"
clip=$media/720p-${BITRATE}-${CLIP_SECONDS}s.mkv
if [ ! -s "$clip" ]; then
    echo "== making $clip" >&2
    ffmpeg -hide_banner -loglevel error -y -f lavfi -i "testsrc2=size=1280x720:rate=25" \
        -t "$CLIP_SECONDS" -pix_fmt yuv420p -c:v libx264 -preset veryfast \
        -b:v "$BITRATE" -maxrate "$BITRATE" -bufsize 8M -g 50 -keyint_min 50 -sc_threshold 0 \
        -f matroska "$clip"
fi
echo "clip: $(stat -c %s "$clip") bytes, ${CLIP_SECONDS} s ($(( $(stat -c %s "$clip") * 8 / CLIP_SECONDS / 1000 )) kbit/s)"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
endpoint=http://127.0.0.1:$port
start_server() {
    "$server" serve --listen "127.0.0.1:$port" --data-dir "$work/data" >"$work/server.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 200); do
        curl -s -o /dev/null "$endpoint/health" && return 0
        sleep 0.05
    done
    echo "the server did not start" >&2
    exit 1
}
stop_server() {
    kill "$server_pid"
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

live=() fast=() catchup=()
for round in $(seq "$ROUNDS"); do
    rm -rf "$work/data" "$work/buffer"
    start_server

    ffmpeg -hide_banner -loglevel error -re -i "$clip" -c copy -f matroska - |
        /usr/bin/time -f "%U %S %e" -o "$work/time" \
            "$put" --quiet --endpoint "$endpoint" --stream "live-$round" -
    read -r user sys wall <"$work/time"
    pct=$(awk -v u="$user" -v s="$sys" -v d="$CLIP_SECONDS" 'BEGIN {printf "%.2f", (u + s) / d * 100}')
    live+=("$pct")
    echo "round $round live: cpu ${user}s user ${sys}s sys over ${wall}s -> ${pct}% of a core"

    /usr/bin/time -f "%U %S %e" -o "$work/time" \
        "$put" --quiet --endpoint "$endpoint" --stream "fast-$round" "$clip"
    read -r user sys wall <"$work/time"
    pct=$(awk -v u="$user" -v s="$sys" -v d="$CLIP_SECONDS" 'BEGIN {printf "%.3f", (u + s) / d * 100}')
    fast+=("$pct")
    echo "round $round full speed: cpu ${user}s user ${sys}s sys, wall ${wall}s -> ${pct}% of a core per stream"

    stop_server
    # The server is down: the whole clip goes to the buffer directory.
    "$put" --quiet --endpoint "$endpoint" --stream "backlog-$round" \
        --buffer-dir "$work/buffer" --give-up-after 2 "$clip" 2>/dev/null || true
    files=$(find "$work/buffer/fragments" -name '*.frag' | wc -l)
    bytes=$(du -sb "$work/buffer/fragments" | cut -f1)
    start_server
    /usr/bin/time -f "%U %S %e" -o "$work/time" \
        "$put" --quiet --endpoint "$endpoint" --stream "backlog-$round" \
        --buffer-dir "$work/buffer" /dev/null
    read -r user sys wall <"$work/time"
    left=$(find "$work/buffer/fragments" -name '*.frag' | wc -l)
    speed=$(awk -v w="$wall" -v d="$CLIP_SECONDS" 'BEGIN {printf "%.1f", d / w}')
    catchup+=("$speed")
    echo "round $round backlog: $files fragments ($bytes bytes) uploaded in ${wall}s -> ${speed}x real time; $left left in the buffer"
    stop_server
done

echo
echo "== medians over $ROUNDS rounds"
echo "producer CPU, live 4 Mbit/s stream: $(printf '%s\n' "${live[@]}" | median)% of a core (rounds: ${live[*]})"
echo "producer CPU, full speed, per second of video: $(printf '%s\n' "${fast[@]}" | median)% of a core (rounds: ${fast[*]})"
echo "backlog catch-up: $(printf '%s\n' "${catchup[@]}" | median)x real time (rounds: ${catchup[*]}; target >= 20x)"
