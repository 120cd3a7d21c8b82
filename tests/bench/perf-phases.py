#!/usr/bin/env python3
"""Where the CPU of a `timeshard-bench records` phase goes, from `perf script` output.

Reads `perf script -F comm,tid,ip,sym` (call graphs, leaf first) on stdin and puts every sample
in the first bucket one of whose patterns matches a frame of its stack, then prints a Markdown
table: share of all samples per bucket, server threads apart from client threads (the bench's
client runs on threads named `bench-client`, the in-process server's on `timeshard*`).

The buckets follow the request path (docs/ARCHITECTURE.md): body buffering, decoding, routing,
append, the storage writer, storage reads, response encoding, HTTP and the kernel's TCP.
Used by tests/bench/profile-records.sh.
"""

import collections
import re
import sys

BUCKETS = [
    ("storage writer: write() into the page cache", r"StoreFile>::append"),
    ("storage writer: other (staging, freeing records, publishing)", r"timeshard_storage::writer::"),
    ("fsync threads", r"sync_data|fdatasync"),
    ("request body buffering (copy, growth)", r"buffered_request|read_capped"),
    ("request decoding: JSON + base64 (wire::decode)", r"wire::decode"),
    ("response encoding: JSON, base64, sequence numbers (wire::response)",
     r"wire::response|SequenceNumber as core::fmt::Display"),
    ("shard id formatting per record (names::shard_id)", r"names::shard_id"),
    ("routing: MD5 of partition keys", r"put_records::route|partition_key_hash"),
    ("Store::append: CRC32C of records, channel to the writer", r"Store::append|RecordBody"),
    ("storage read (positional reads, CRC check)", r"timeshard_storage::read::|Cursor|Store::read"),
    ("dropping requests and records (free)", r"drop_in_place"),
    ("handlers: other (validation, bookkeeping)", r"timeshard_server::api::"),
    ("bench client: response scanning", r"scan_get_records|failed_record_count|memchr::"),
    ("HTTP (hyper) and kernel TCP", r"hyper::|tcp_|sock_|__sys_recvfrom|__sys_sendto|do_writev|do_readv"),
    ("scheduling, wake-ups, idle", r"tokio::runtime|futex|schedule"),
]
COMPILED = [(name, re.compile(rx)) for name, rx in BUCKETS]


def samples(lines):
    comm, frames = None, []
    for line in lines:
        if not line.strip():
            if comm is not None:
                yield comm, frames
            comm, frames = None, []
        elif not line[0].isspace():
            comm, frames = line.split()[0], []
        else:
            parts = line.strip().split(None, 1)
            frames.append(parts[1] if len(parts) > 1 else parts[0])
    if comm is not None:
        yield comm, frames


def bucket(frames):
    for name, rx in COMPILED:
        if any(rx.search(f) for f in frames):
            return name
    return "other"


def main():
    server, client = collections.Counter(), collections.Counter()
    for comm, frames in samples(sys.stdin):
        (client if comm.startswith("bench-client") else server)[bucket(frames)] += 1
    total = sum(server.values()) + sum(client.values())
    if total == 0:
        sys.exit("no samples")
    print(f"{total} samples; server threads {100 * sum(server.values()) / total:.1f}%, "
          f"client threads {100 * sum(client.values()) / total:.1f}%\n")
    print("| where | server threads | client threads |")
    print("|---|---|---|")
    names = [n for n, _ in BUCKETS] + ["other"]
    for name in sorted(names, key=lambda n: -(server[n] + client[n])):
        if server[name] + client[name] == 0:
            continue
        s = f"{100 * server[name] / total:.1f}%" if server[name] else ""
        c = f"{100 * client[name] / total:.1f}%" if client[name] else ""
        print(f"| {name} | {s} | {c} |")


if __name__ == "__main__":
    main()
