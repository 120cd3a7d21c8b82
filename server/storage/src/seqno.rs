//! Sequence numbers and fragment numbers as clients see them.
//!
//! A sequence number is a 41-digit decimal string: `1`, the shard uid in 20 digits, the record
//! offset in 20 digits. Fixed width and a leading `1` make string order equal numeric order, so
//! numbers compare correctly both as strings and as big integers; they increase strictly within a
//! shard, and the shard is recoverable from the number alone. Fragment numbers use the same form.

use std::fmt;
use std::str::FromStr;

/// A shard's store-wide unique id. Never reused, even after the stream is deleted.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct ShardUid(pub u64);

impl fmt::Display for ShardUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SequenceNumber {
    pub shard: ShardUid,
    pub offset: u64,
}

pub const SEQUENCE_NUMBER_DIGITS: usize = 41;

impl SequenceNumber {
    pub fn new(shard: ShardUid, offset: u64) -> Self {
        SequenceNumber { shard, offset }
    }
}

impl fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "1{:020}{:020}", self.shard.0, self.offset)
    }
}

/// Why a string is not one of our sequence numbers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a valid sequence number")]
pub struct BadSequenceNumber(pub String);

impl FromStr for SequenceNumber {
    type Err = BadSequenceNumber;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadSequenceNumber(s.to_string());
        if s.len() != SEQUENCE_NUMBER_DIGITS
            || !s.starts_with('1')
            || !s.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let shard = s[1..21].parse::<u64>().map_err(|_| bad())?;
        let offset = s[21..].parse::<u64>().map_err(|_| bad())?;
        Ok(SequenceNumber {
            shard: ShardUid(shard),
            offset,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_order() {
        let a = SequenceNumber::new(ShardUid(3), 9);
        let b = SequenceNumber::new(ShardUid(3), 10);
        let (sa, sb) = (a.to_string(), b.to_string());
        assert_eq!(sa.len(), SEQUENCE_NUMBER_DIGITS);
        assert!(sa < sb);
        assert_eq!(sa.parse::<SequenceNumber>(), Ok(a));
        let max = SequenceNumber::new(ShardUid(u64::MAX), u64::MAX);
        assert_eq!(max.to_string().parse::<SequenceNumber>(), Ok(max));
        for bad in [
            "",
            "0",
            "2000",
            "1x",
            &sa[1..],
            &format!("{sa}0"),
            &sa.replacen('1', "2", 1),
        ] {
            assert!(bad.parse::<SequenceNumber>().is_err(), "{bad}");
        }
        // 99999999999999999999 > u64::MAX: rejected, not wrapped
        let overflow = format!("1{}{:020}", "9".repeat(20), 0);
        assert!(overflow.parse::<SequenceNumber>().is_err());
    }
}
