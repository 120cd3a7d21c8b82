//! The server runs retention by itself: data past a stream's retention disappears within a
//! retention interval, with the clock moved instead of waited for.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use timeshard_server::config::Config;
use timeshard_storage::clock::ManualClock;
use timeshard_storage::options::SyncPolicy;
use timeshard_storage::{NewRecord, NewShard, NewStream, StreamKind};

#[tokio::test]
async fn expired_data_is_removed_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let config = Config {
        data_dir: dir.path().join("data"),
        listen: "127.0.0.1:0".parse().unwrap(),
        sync: SyncPolicy::Never,
        retention_interval: Duration::from_secs(1),
        ..Config::default()
    };
    let server = timeshard_server::start_with_clock(config, clock.clone())
        .await
        .unwrap();
    let store = server.state().store().clone();
    let info = store
        .create_stream(NewStream::new(
            "r",
            StreamKind::Data,
            3_600_000,
            vec![NewShard::whole_key_range()],
        ))
        .await
        .unwrap();
    let shard = info.shards[0].uid;
    store
        .append(
            shard,
            vec![NewRecord {
                payload: Bytes::from_static(b"old"),
                ..Default::default()
            }],
        )
        .await
        .unwrap();
    assert_eq!(store.shard_stats(shard).unwrap().trim_horizon, 0);

    clock.advance_ms(2 * 3_600_000);
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.shard_stats(shard).unwrap().trim_horizon == 0 {
        assert!(
            Instant::now() < deadline,
            "retention did not run within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(store.shard_stats(shard).unwrap().segments, 0);
    server.shutdown().await;
}
