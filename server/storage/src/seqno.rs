//! Sequence numbers and fragment numbers as clients see them.
//!
//! A sequence number is a 41-digit decimal string: `1`, the shard uid in 20 digits, a position
//! in 20 digits. Fixed width and a leading `1` make string order equal numeric order, so numbers
//! compare correctly both as strings and as big integers; they increase strictly within a shard,
//! and the shard is recoverable from the number alone. Fragment numbers use the same form.
//!
//! Position 0 is the start of the shard, before any record (a shard's StartingSequenceNumber);
//! the record at offset `o` has position `o + 1`. So a client resuming "after" the start number,
//! as consumers do with a checkpoint, misses no record.

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
    /// 0 for the start of the shard; `offset + 1` for a record.
    pub position: u64,
}

pub const SEQUENCE_NUMBER_DIGITS: usize = 41;

impl SequenceNumber {
    /// The number before the shard's first record.
    pub fn shard_start(shard: ShardUid) -> Self {
        SequenceNumber { shard, position: 0 }
    }

    /// The number of the record at `offset`.
    pub fn of_record(shard: ShardUid, offset: u64) -> Self {
        SequenceNumber {
            shard,
            position: offset.saturating_add(1),
        }
    }

    /// The offset of the record this number names; `None` for the shard start.
    pub fn record_offset(&self) -> Option<u64> {
        self.position.checked_sub(1)
    }

    /// Where reading "at" this number starts (the shard start reads from the first record).
    pub fn at_offset(&self) -> u64 {
        self.position.saturating_sub(1)
    }

    /// Where reading "after" this number starts.
    pub fn after_offset(&self) -> u64 {
        self.position
    }
}

impl SequenceNumber {
    /// Appends the decimal form ([`fmt::Display`]'s) without the formatting machinery: hot
    /// paths write thousands of these per answer.
    pub fn write_digits(&self, out: &mut Vec<u8>) {
        out.push(b'1');
        push_padded(out, self.shard.0);
        push_padded(out, self.position);
    }
}

/// A u64 as exactly 20 decimal digits, zero-padded (u64::MAX has 20).
fn push_padded(out: &mut Vec<u8>, mut v: u64) {
    let mut digits = [b'0'; 20];
    let mut i = digits.len();
    while v > 0 {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out.extend_from_slice(&digits);
}

impl fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not `write!` with `{:020}`: GetRecords formats one per record, and padded integer
        // formatting was a few percent of a read benchmark.
        let mut out = Vec::with_capacity(SEQUENCE_NUMBER_DIGITS);
        self.write_digits(&mut out);
        f.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
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
        let position = s[21..].parse::<u64>().map_err(|_| bad())?;
        Ok(SequenceNumber {
            shard: ShardUid(shard),
            position,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_a_one_then_the_shard_and_position_padded_to_20() {
        for (shard, position) in [
            (0, 0),
            (1, 1),
            (7, 42),
            (u64::MAX, u64::MAX),
            (123, 10u64.pow(19)),
        ] {
            let n = SequenceNumber {
                shard: ShardUid(shard),
                position,
            };
            let expected = format!("1{shard:020}{position:020}");
            let mut out = Vec::new();
            n.write_digits(&mut out);
            assert_eq!(String::from_utf8(out).expect("ascii"), expected);
            assert_eq!(n.to_string(), expected);
        }
    }

    #[test]
    fn round_trip_and_order() {
        let a = SequenceNumber::of_record(ShardUid(3), 9);
        let b = SequenceNumber::of_record(ShardUid(3), 10);
        let (sa, sb) = (a.to_string(), b.to_string());
        assert_eq!(sa.len(), SEQUENCE_NUMBER_DIGITS);
        assert!(sa < sb);
        assert_eq!(sa.parse::<SequenceNumber>(), Ok(a));
        let max = SequenceNumber {
            shard: ShardUid(u64::MAX),
            position: u64::MAX,
        };
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

    #[test]
    fn the_shard_start_comes_before_every_record() {
        let shard = ShardUid(7);
        let start = SequenceNumber::shard_start(shard);
        let first = SequenceNumber::of_record(shard, 0);
        assert!(start < first && start.to_string() < first.to_string());
        assert_eq!(start.record_offset(), None);
        assert_eq!(first.record_offset(), Some(0));
        // Reading at or after the start begins with the first record; nothing is skipped.
        assert_eq!((start.at_offset(), start.after_offset()), (0, 0));
        assert_eq!((first.at_offset(), first.after_offset()), (0, 1));
        let r = SequenceNumber::of_record(shard, 41);
        assert_eq!((r.at_offset(), r.after_offset()), (41, 42));
    }
}
