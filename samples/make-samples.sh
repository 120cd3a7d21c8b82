#!/usr/bin/env bash
# Makes the small media fixtures in this directory with ffmpeg (Debian's ffmpeg 5.1 was used for
# the committed files). Run from anywhere: bash samples/make-samples.sh
#
# Every file is synthetic (lavfi testsrc / sine), a few seconds long and a few hundred KB at most.
# -threads 1 and the bitexact flags keep the output identical from run to run on one ffmpeg
# version (no encoder version strings, no random Segment UID).
set -euo pipefail
cd "$(dirname "$0")"

command -v ffmpeg >/dev/null || { echo "ffmpeg is required (apt-get install ffmpeg)" >&2; exit 1; }

exact=(-threads 1 -fflags +bitexact -flags:v +bitexact -flags:a +bitexact -flags:s +bitexact)
video=(-f lavfi -i "testsrc=size=320x240:rate=25")
x264=(-c:v libx264 -preset veryfast -pix_fmt yuv420p -g 25 -keyint_min 25 -sc_threshold 0)

# 5 s of H.264, a key frame every second, no B-frames, written the way ffmpeg writes to a pipe
# (`-f matroska -`): unknown-size Segment, known-size Clusters, no Cues. This is what
# `ffmpeg ... -f matroska - | curl -T - .../putMedia` uploads.
ffmpeg -v error -y "${video[@]}" -t 5 "${x264[@]}" -bf 0 "${exact[@]}" \
    -f matroska - > h264-320x240-25fps-1s-gop.mkv

# The same picture with AAC audio (48 kHz mono sine) and x264's default B-frames, pipe style.
ffmpeg -v error -y "${video[@]}" -f lavfi -i "sine=frequency=440:sample_rate=48000" -t 5 \
    "${x264[@]}" -c:a aac -b:a 64k -ac 1 "${exact[@]}" \
    -f matroska - > h264-aac-320x240.mkv

# A seekable file (known-size Segment, SeekHead, Cues), 2 s, with an SRT subtitle track:
# ffmpeg writes subtitles as BlockGroups (Block + BlockDuration) rather than SimpleBlocks.
subs="$(mktemp --suffix=.srt)"
trap 'rm -f "$subs"' EXIT
printf '1\n00:00:00,000 --> 00:00:01,000\nhello\n\n2\n00:00:01,000 --> 00:00:02,000\nworld\n' > "$subs"
ffmpeg -v error -y "${video[@]}" -i "$subs" -t 2 "${x264[@]}" -bf 0 -c:s srt "${exact[@]}" \
    -map 0:v -map 1:s h264-srt-320x240-file.mkv

ls -l ./*.mkv
