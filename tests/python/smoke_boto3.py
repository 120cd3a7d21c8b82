"""boto3 smoke test for timeshard's Kinesis Data Streams and Kinesis Video Streams APIs.

Drives a running server the way a Python application would: create a stream, wait for it with
boto3's own `stream_exists` waiter, put records (PutRecords and PutRecord), read every shard
back with GetShardIterator + GetRecords, list the shards, delete the stream and wait until it is
gone. Then the video control plane (`kinesisvideo`): create a video stream, describe it, ask for
its data endpoint, list it, delete it. Every response is checked against AWS's documented
behaviour; the first mismatch stops the run with a message and exit status 1.

Usage: smoke_boto3.py ENDPOINT_URL
Credentials and region come from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_DEFAULT_REGION), as for any boto3 program. tests/python/run.sh sets all of this up.
"""

import datetime
import hashlib
import sys
import time

import boto3
from botocore.config import Config

STREAM = "boto3-smoke"
VIDEO_STREAM = "boto3-smoke-video"
SHARDS = 3
MAX_HASH_KEY = 2**128 - 1

checks = 0


def check(condition, message):
    global checks
    if not condition:
        print(f"FAIL: {message}", file=sys.stderr)
        sys.exit(1)
    checks += 1


def hash_key(partition_key):
    """MD5 of the UTF-8 partition key as an unsigned big-endian 128-bit integer."""
    return int.from_bytes(hashlib.md5(partition_key.encode("utf-8")).digest(), "big")


def shard_for(shards, hash_value):
    owners = [
        s["ShardId"]
        for s in shards
        if int(s["HashKeyRange"]["StartingHashKey"])
        <= hash_value
        <= int(s["HashKeyRange"]["EndingHashKey"])
    ]
    check(len(owners) == 1, f"hash key {hash_value} is in shards {owners}")
    return owners[0]


def payload(i):
    """Record data: every byte value appears, and the lengths differ."""
    return bytes((i * 31 + j * 7) % 256 for j in range(1 + i * 17))


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    endpoint_url = sys.argv[1]
    client = boto3.client(
        "kinesis",
        endpoint_url=endpoint_url,
        config=Config(
            connect_timeout=5,
            read_timeout=30,
            retries={"mode": "standard", "max_attempts": 3},
        ),
    )
    started = datetime.datetime.now(datetime.timezone.utc)

    # CreateStream, then boto3's waiter (DescribeStream until ACTIVE). The model's delay is 10 s
    # between polls; 1 s keeps the smoke test quick if the stream is not ACTIVE at once.
    client.create_stream(StreamName=STREAM, ShardCount=SHARDS)
    client.get_waiter("stream_exists").wait(
        StreamName=STREAM, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
    )
    summary = client.describe_stream_summary(StreamName=STREAM)["StreamDescriptionSummary"]
    check(summary["StreamName"] == STREAM, f"StreamName {summary['StreamName']!r}")
    check(summary["StreamStatus"] == "ACTIVE", f"StreamStatus {summary['StreamStatus']}")
    check(summary["OpenShardCount"] == SHARDS, f"OpenShardCount {summary['OpenShardCount']}")
    check(summary["RetentionPeriodHours"] == 24, f"RetentionPeriodHours {summary['RetentionPeriodHours']}")
    check(
        summary["StreamARN"].startswith("arn:aws:kinesis:")
        and summary["StreamARN"].endswith(f":stream/{STREAM}"),
        f"StreamARN {summary['StreamARN']}",
    )

    # ListShards: ids, even hash ranges, open shards.
    shards = client.list_shards(StreamName=STREAM)["Shards"]
    check(
        [s["ShardId"] for s in shards] == [f"shardId-{i:012d}" for i in range(SHARDS)],
        f"shard ids {[s['ShardId'] for s in shards]}",
    )
    width = 2**128 // SHARDS
    for i, s in enumerate(shards):
        start = int(s["HashKeyRange"]["StartingHashKey"])
        end = int(s["HashKeyRange"]["EndingHashKey"])
        want_end = MAX_HASH_KEY if i == SHARDS - 1 else width * (i + 1) - 1
        check((start, end) == (width * i, want_end), f"{s['ShardId']} hash range {start}..{end}")
        check("StartingSequenceNumber" in s["SequenceNumberRange"], f"{s['ShardId']} StartingSequenceNumber")
        check("EndingSequenceNumber" not in s["SequenceNumberRange"], f"{s['ShardId']} is open")
    paged = client.list_shards(StreamName=STREAM, MaxResults=2)
    check(len(paged["Shards"]) == 2 and "NextToken" in paged, "ListShards MaxResults=2 pages")
    rest = client.list_shards(NextToken=paged["NextToken"])
    check(
        [s["ShardId"] for s in rest["Shards"]] == [f"shardId-{SHARDS - 1:012d}"],
        f"ListShards NextToken page {[s['ShardId'] for s in rest['Shards']]}",
    )

    # PutRecords: 50 records, one with an ExplicitHashKey; then one PutRecord.
    entries = [{"Data": payload(i), "PartitionKey": f"pk-{i}"} for i in range(50)]
    entries[7]["ExplicitHashKey"] = str(MAX_HASH_KEY)
    out = client.put_records(StreamName=STREAM, Records=entries)
    check(out.get("FailedRecordCount") == 0, f"FailedRecordCount {out.get('FailedRecordCount')}")
    check(len(out["Records"]) == len(entries), f"{len(out['Records'])} results for {len(entries)} entries")
    puts = []  # (shard id, sequence number, partition key, data)
    for i, (entry, result) in enumerate(zip(entries, out["Records"])):
        check("ErrorCode" not in result, f"entry {i} failed: {result}")
        hash_value = int(entry.get("ExplicitHashKey", hash_key(entry["PartitionKey"])))
        want = shard_for(shards, hash_value)
        check(result["ShardId"] == want, f"entry {i} went to {result['ShardId']}, not {want}")
        puts.append((result["ShardId"], result["SequenceNumber"], entry["PartitionKey"], entry["Data"]))
    check(puts[7][0] == f"shardId-{SHARDS - 1:012d}", "ExplicitHashKey 2^128-1 is in the last shard")
    single = client.put_record(StreamName=STREAM, PartitionKey="single", Data=b"\x00one\xff")
    check(single["ShardId"] == shard_for(shards, hash_key("single")), f"PutRecord went to {single['ShardId']}")
    puts.append((single["ShardId"], single["SequenceNumber"], "single", b"\x00one\xff"))
    finished = datetime.datetime.now(datetime.timezone.utc)

    # GetShardIterator TRIM_HORIZON + GetRecords on every shard: every record, byte-identical,
    # in sequence-number order.
    for s in shards:
        shard_id = s["ShardId"]
        want = sorted((p for p in puts if p[0] == shard_id), key=lambda p: int(p[1]))
        iterator = client.get_shard_iterator(
            StreamName=STREAM, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        got = []
        for _ in range(50):
            page = client.get_records(ShardIterator=iterator, Limit=10)
            check("MillisBehindLatest" in page, f"{shard_id}: GetRecords without MillisBehindLatest")
            check(page.get("NextShardIterator"), f"{shard_id}: open shard without NextShardIterator")
            got.extend(page["Records"])
            iterator = page["NextShardIterator"]
            if len(got) >= len(want) and not page["Records"]:
                break
        check(len(got) == len(want), f"{shard_id}: read {len(got)} records, put {len(want)}")
        for record, (_, seq, key, data) in zip(got, want):
            check(record["SequenceNumber"] == seq, f"{shard_id}: sequence {record['SequenceNumber']} != {seq}")
            check(record["PartitionKey"] == key, f"{shard_id} {seq}: partition key {record['PartitionKey']!r}")
            check(record["Data"] == data, f"{shard_id} {seq}: data differs ({len(record['Data'])} vs {len(data)} bytes)")
            arrived = record["ApproximateArrivalTimestamp"]
            check(
                started - datetime.timedelta(seconds=2) <= arrived <= finished + datetime.timedelta(seconds=2),
                f"{shard_id} {seq}: ApproximateArrivalTimestamp {arrived}",
            )

    # DeleteStream, then boto3's stream_not_exists waiter; the name is gone from ListStreams.
    client.delete_stream(StreamName=STREAM)
    client.get_waiter("stream_not_exists").wait(
        StreamName=STREAM, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
    )
    try:
        client.describe_stream_summary(StreamName=STREAM)
        gone = False
    except client.exceptions.ResourceNotFoundException:
        gone = True
    check(gone, "DescribeStreamSummary after DeleteStream is not ResourceNotFoundException")
    check(STREAM not in client.list_streams()["StreamNames"], "ListStreams still lists the deleted stream")

    video_control_plane(endpoint_url)

    print(f"boto3 smoke: {checks} checks passed against {endpoint_url}")


def video_control_plane(endpoint_url):
    """CreateStream, DescribeStream, GetDataEndpoint, ListStreams, DeleteStream (rest-json)."""
    kvs = boto3.client(
        "kinesisvideo",
        endpoint_url=endpoint_url,
        config=Config(
            connect_timeout=5,
            read_timeout=30,
            retries={"mode": "standard", "max_attempts": 3},
        ),
    )
    arn = kvs.create_stream(
        StreamName=VIDEO_STREAM, MediaType="video/h264", DataRetentionInHours=2
    )["StreamARN"]
    check(
        arn.startswith("arn:aws:kinesisvideo:") and f":stream/{VIDEO_STREAM}/" in arn,
        f"video StreamARN {arn}",
    )
    info = kvs.describe_stream(StreamName=VIDEO_STREAM)["StreamInfo"]
    check(info["StreamARN"] == arn, f"DescribeStream StreamARN {info['StreamARN']}")
    check(info["Status"] == "ACTIVE", f"video Status {info['Status']}")
    check(info["MediaType"] == "video/h264", f"MediaType {info.get('MediaType')}")
    check(info["DataRetentionInHours"] == 2, f"DataRetentionInHours {info['DataRetentionInHours']}")
    check(isinstance(info["CreationTime"], datetime.datetime), f"CreationTime {info['CreationTime']!r}")
    endpoint = kvs.get_data_endpoint(StreamARN=arn, APIName="PUT_MEDIA")["DataEndpoint"]
    check(endpoint == endpoint_url.rstrip("/"), f"DataEndpoint {endpoint}")
    listed = kvs.list_streams(
        StreamNameCondition={"ComparisonOperator": "BEGINS_WITH", "ComparisonValue": "boto3-"}
    )["StreamInfoList"]
    check([s["StreamName"] for s in listed] == [VIDEO_STREAM], f"video ListStreams {listed}")
    kvs.delete_stream(StreamARN=arn, CurrentVersion=info["Version"])
    try:
        kvs.describe_stream(StreamName=VIDEO_STREAM)
        status = None
    except kvs.exceptions.ResourceNotFoundException as e:
        status = e.response["ResponseMetadata"]["HTTPStatusCode"]
    check(status == 404, f"DescribeStream after DeleteStream: status {status}, not 404")


if __name__ == "__main__":
    start = time.monotonic()
    main()
    print(f"boto3 smoke: done in {time.monotonic() - start:.1f}s")
