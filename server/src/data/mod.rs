//! Kinesis Data Streams behaviour on the shard engine, free of HTTP and wire encodings: how
//! partition keys map to shards, how shards and streams are named, and the tamper-proof tokens
//! (shard iterators, pagination tokens) handed to clients. The handlers in
//! `api/data_streams/` translate requests into these terms and call the store.

pub mod hashing;
pub mod lifecycle;
pub mod limits;
pub mod names;
pub mod tokens;

use self::names::Account;
use self::tokens::Tokens;

/// What the data streams handlers share: where streams live (for ARNs) and the token keys.
#[derive(Debug, Clone)]
pub struct Kinesis {
    pub account: Account,
    pub tokens: Tokens,
}

/// The name of the store secret that keys shard iterators and pagination tokens.
pub const TOKEN_SECRET: &str = "kinesis-tokens";
