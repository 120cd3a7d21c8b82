//! Helpers shared by the storage integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use timeshard_storage::clock::ManualClock;
use timeshard_storage::fs::Fs;
use timeshard_storage::options::{StoreOptions, SyncPolicy};
use timeshard_storage::{NewShard, NewStream, Store, StreamInfo, StreamKind};

pub fn options(clock: &Arc<ManualClock>) -> StoreOptions {
    StoreOptions {
        clock: clock.clone(),
        sync: SyncPolicy::Always,
        ..StoreOptions::default()
    }
}

pub fn small_segments(clock: &Arc<ManualClock>, fs: Option<Arc<dyn Fs>>) -> StoreOptions {
    let mut o = options(clock);
    o.segment_max_bytes = 4096;
    o.index_interval_bytes = 512;
    if let Some(fs) = fs {
        o.fs = fs;
    }
    o
}

pub fn open(dir: &Path, opts: StoreOptions) -> Store {
    Store::open(dir, opts).unwrap()
}

pub fn new_stream(name: &str, kind: StreamKind, shards: usize, retention_ms: u64) -> NewStream {
    let step = u128::MAX / shards as u128;
    let shards = (0..shards)
        .map(|i| NewShard {
            hash_start: step * i as u128,
            hash_end: if i + 1 == shards {
                u128::MAX
            } else {
                step * (i as u128 + 1) - 1
            },
            parent: None,
            adjacent_parent: None,
            closed: false,
        })
        .collect();
    NewStream::new(name, kind, retention_ms, shards)
}

pub async fn create(store: &Store, name: &str, shards: usize) -> StreamInfo {
    store
        .create_stream(new_stream(name, StreamKind::Data, shards, 24 * 3600 * 1000))
        .await
        .unwrap()
}

pub fn payload(seed: u64, len: usize) -> Bytes {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

/// SplitMix64: a seeded generator for reproducible random tests.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}
