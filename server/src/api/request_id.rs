//! Request ids: every response carries one (`x-amzn-RequestId`), and so does every log line about
//! the request, so an operator can match a client's error report to the server's log.
//!
//! Ids are formatted like version-4 UUIDs because AWS's are and some clients display them as
//! such. They need to be unique, not unpredictable, so they come from std's randomly keyed
//! SipHash over a process-wide counter instead of a random-number crate.

use std::fmt;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderMap, HeaderValue};

use crate::api::error::Protocol;

/// A request id, `xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx` in lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestId(String);

impl RequestId {
    /// A new id, distinct from every other id this process generated.
    pub fn generate() -> Self {
        static KEYS: OnceLock<RandomState> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let keys = KEYS.get_or_init(RandomState::new);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let half = |salt: u64| {
            let mut h = keys.build_hasher();
            h.write_u64(salt);
            h.write_u64(n);
            h.finish()
        };
        let (hi, lo) = (half(0x7469_6d65), half(0x7368_6172));
        // Version 4, variant 10xx, as a random UUID would have.
        let hi = (hi & !0xf000) | 0x4000;
        let lo = (lo & !(0xc << 60)) | (0x8 << 60);
        RequestId(format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            hi >> 32,
            (hi >> 16) & 0xffff,
            hi & 0xffff,
            lo >> 48,
            lo & 0xffff_ffff_ffff
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Adds the request id header(s) `protocol` expects. rest-json (video) gets both spellings
    /// because the KVS developer guide documents `x-amz-RequestId` for the media APIs.
    pub fn insert_headers(&self, protocol: Protocol, headers: &mut HeaderMap) {
        // Always valid: hex digits and dashes.
        let Ok(value) = HeaderValue::from_str(&self.0) else {
            return;
        };
        if protocol == Protocol::RestJson {
            headers.insert("x-amz-requestid", value.clone());
        }
        headers.insert("x-amzn-requestid", value);
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_look_like_uuid_v4_and_are_unique() {
        let mut seen = HashSet::new();
        for _ in 0..10_000 {
            let id = RequestId::generate();
            let s = id.as_str();
            assert_eq!(s.len(), 36, "{s}");
            let groups: Vec<&str> = s.split('-').collect();
            assert_eq!(
                groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
                [8, 4, 4, 4, 12]
            );
            assert!(
                s.chars()
                    .all(|c| c == '-' || c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            );
            assert!(groups[2].starts_with('4'), "{s}");
            assert!(
                matches!(groups[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'),
                "{s}"
            );
            assert!(seen.insert(id), "duplicate id");
        }
    }
}
