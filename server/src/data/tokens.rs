//! Tamper-proof, expiring tokens handed to clients: shard iterators and pagination tokens.
//!
//! A token is `base64(kind, issue time, fields, MAC)`, where the MAC is the first 16 bytes of
//! HMAC-SHA256 under a key kept in the data directory (so tokens survive a restart). The server
//! needs no state per token, a changed byte is detected, and a token of one kind cannot pass for
//! another.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use timeshard_storage::ShardUid;

/// Shard iterators and ListShards tokens expire after 5 minutes, as Kinesis's do.
pub const TOKEN_TTL_MS: i64 = 300_000;

const MAC_LEN: usize = 16;
const KIND_SHARD_ITERATOR: u8 = 1;
const KIND_LIST_SHARDS: u8 = 2;
const KIND_LIST_STREAMS: u8 = 3;
const KIND_LIST_CONSUMERS: u8 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Not a token of ours, of another kind, or altered.
    Invalid,
    /// Ours, but older than its lifetime.
    Expired,
}

/// A position in a shard, as a shard iterator names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardIterator {
    pub stream_id: u64,
    pub shard: ShardUid,
    pub offset: u64,
    pub issued_ms: i64,
}

/// Where a ListShards listing continues: after the shard with this index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardPage {
    pub stream_id: u64,
    pub after_index: u32,
    /// The page size of the listing the token came from.
    pub max_results: u32,
    pub issued_ms: i64,
}

#[derive(Clone)]
pub struct Tokens {
    key: [u8; 32],
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens(<key>)")
    }
}

impl Tokens {
    pub fn new(key: [u8; 32]) -> Self {
        Tokens { key }
    }

    fn mac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes keys of any length")
    }

    fn seal(&self, kind: u8, issued_ms: i64, fields: &[u8]) -> String {
        let mut bytes = Vec::with_capacity(9 + fields.len() + MAC_LEN);
        bytes.push(kind);
        bytes.extend_from_slice(&issued_ms.to_be_bytes());
        bytes.extend_from_slice(fields);
        let mut mac = self.mac();
        mac.update(&bytes);
        bytes.extend_from_slice(&mac.finalize().into_bytes()[..MAC_LEN]);
        STANDARD.encode(bytes)
    }

    /// Checks a token's kind, MAC and age; returns its issue time and fields.
    fn open(&self, kind: u8, token: &str, now_ms: i64) -> Result<(i64, Vec<u8>), TokenError> {
        let bytes = STANDARD
            .decode(token.trim())
            .map_err(|_| TokenError::Invalid)?;
        if bytes.len() < 9 + MAC_LEN {
            return Err(TokenError::Invalid);
        }
        let (body, tag) = bytes.split_at(bytes.len() - MAC_LEN);
        let mut mac = self.mac();
        mac.update(body);
        mac.verify_truncated_left(tag)
            .map_err(|_| TokenError::Invalid)?;
        if body[0] != kind {
            return Err(TokenError::Invalid);
        }
        let issued_ms = i64::from_be_bytes(body[1..9].try_into().map_err(|_| TokenError::Invalid)?);
        if now_ms.saturating_sub(issued_ms) > TOKEN_TTL_MS {
            return Err(TokenError::Expired);
        }
        Ok((issued_ms, body[9..].to_vec()))
    }

    pub fn shard_iterator(&self, it: &ShardIterator) -> String {
        let mut fields = Vec::with_capacity(24);
        fields.extend_from_slice(&it.stream_id.to_be_bytes());
        fields.extend_from_slice(&it.shard.0.to_be_bytes());
        fields.extend_from_slice(&it.offset.to_be_bytes());
        self.seal(KIND_SHARD_ITERATOR, it.issued_ms, &fields)
    }

    pub fn parse_shard_iterator(
        &self,
        token: &str,
        now_ms: i64,
    ) -> Result<ShardIterator, TokenError> {
        let (issued_ms, f) = self.open(KIND_SHARD_ITERATOR, token, now_ms)?;
        let [stream_id, shard, offset] = u64s(&f)?;
        Ok(ShardIterator {
            stream_id,
            shard: ShardUid(shard),
            offset,
            issued_ms,
        })
    }

    pub fn shard_page(&self, page: &ShardPage) -> String {
        let mut fields = Vec::with_capacity(24);
        fields.extend_from_slice(&page.stream_id.to_be_bytes());
        fields.extend_from_slice(&u64::from(page.after_index).to_be_bytes());
        fields.extend_from_slice(&u64::from(page.max_results).to_be_bytes());
        self.seal(KIND_LIST_SHARDS, page.issued_ms, &fields)
    }

    pub fn parse_shard_page(&self, token: &str, now_ms: i64) -> Result<ShardPage, TokenError> {
        let (issued_ms, f) = self.open(KIND_LIST_SHARDS, token, now_ms)?;
        let [stream_id, after, max] = u64s(&f)?;
        Ok(ShardPage {
            stream_id,
            after_index: u32::try_from(after).map_err(|_| TokenError::Invalid)?,
            max_results: u32::try_from(max).map_err(|_| TokenError::Invalid)?,
            issued_ms,
        })
    }

    /// ListStreams continues after the stream with this name.
    pub fn stream_page(&self, after_name: &str, issued_ms: i64) -> String {
        self.seal(KIND_LIST_STREAMS, issued_ms, after_name.as_bytes())
    }

    pub fn parse_stream_page(&self, token: &str, now_ms: i64) -> Result<String, TokenError> {
        let (_, f) = self.open(KIND_LIST_STREAMS, token, now_ms)?;
        String::from_utf8(f).map_err(|_| TokenError::Invalid)
    }

    /// ListStreamConsumers continues after the consumer with this name, in this stream.
    pub fn consumer_page(&self, stream_id: u64, after_name: &str, issued_ms: i64) -> String {
        let mut fields = stream_id.to_be_bytes().to_vec();
        fields.extend_from_slice(after_name.as_bytes());
        self.seal(KIND_LIST_CONSUMERS, issued_ms, &fields)
    }

    /// The stream id and consumer name of a ListStreamConsumers token.
    pub fn parse_consumer_page(
        &self,
        token: &str,
        now_ms: i64,
    ) -> Result<(u64, String), TokenError> {
        let (_, f) = self.open(KIND_LIST_CONSUMERS, token, now_ms)?;
        if f.len() < 8 {
            return Err(TokenError::Invalid);
        }
        let (id, name) = f.split_at(8);
        let id = u64::from_be_bytes(id.try_into().map_err(|_| TokenError::Invalid)?);
        Ok((
            id,
            String::from_utf8(name.to_vec()).map_err(|_| TokenError::Invalid)?,
        ))
    }
}

fn u64s<const N: usize>(f: &[u8]) -> Result<[u64; N], TokenError> {
    if f.len() != N * 8 {
        return Err(TokenError::Invalid);
    }
    let mut out = [0u64; N];
    for (i, chunk) in f.chunks_exact(8).enumerate() {
        out[i] = u64::from_be_bytes(chunk.try_into().map_err(|_| TokenError::Invalid)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iterators_round_trip_and_resist_tampering() {
        let t = Tokens::new([7; 32]);
        let it = ShardIterator {
            stream_id: 4,
            shard: ShardUid(9),
            offset: 123,
            issued_ms: 1_000_000,
        };
        let s = t.shard_iterator(&it);
        assert!(s.len() <= 512);
        assert_eq!(t.parse_shard_iterator(&s, 1_000_000 + TOKEN_TTL_MS), Ok(it));
        assert_eq!(
            t.parse_shard_iterator(&s, 1_000_001 + TOKEN_TTL_MS),
            Err(TokenError::Expired)
        );
        // Every single-character change is caught.
        let bytes = s.as_bytes();
        for i in 0..bytes.len() {
            let mut b = bytes.to_vec();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            let changed = String::from_utf8(b).unwrap_or_default();
            if changed != s {
                assert!(
                    t.parse_shard_iterator(&changed, 1_000_000).is_err(),
                    "change at {i}"
                );
            }
        }
        // Another server's key, another kind, garbage.
        assert_eq!(
            Tokens::new([8; 32]).parse_shard_iterator(&s, 1_000_000),
            Err(TokenError::Invalid)
        );
        assert_eq!(t.parse_stream_page(&s, 1_000_000), Err(TokenError::Invalid));
        assert_eq!(
            t.parse_shard_iterator("not base64!", 0),
            Err(TokenError::Invalid)
        );
        assert_eq!(t.parse_shard_iterator("", 0), Err(TokenError::Invalid));
    }

    #[test]
    fn pages_round_trip() {
        let t = Tokens::new([1; 32]);
        let p = ShardPage {
            stream_id: 2,
            after_index: 17,
            max_results: 5,
            issued_ms: 10,
        };
        assert_eq!(t.parse_shard_page(&t.shard_page(&p), 10), Ok(p));
        assert_eq!(
            t.parse_stream_page(&t.stream_page("abc", 10), 10),
            Ok("abc".to_string())
        );
        assert_eq!(
            t.parse_shard_page(&t.shard_page(&p), 10 + TOKEN_TTL_MS + 1),
            Err(TokenError::Expired)
        );
    }
}
