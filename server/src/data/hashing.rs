//! Hash keys: a record goes to the open shard whose inclusive hash-key range contains the MD5 of
//! its partition key, read as an unsigned 128-bit big-endian integer (or its ExplicitHashKey).

use md5::{Digest, Md5};

/// The hash key of a partition key.
pub fn partition_key_hash(partition_key: &str) -> u128 {
    u128::from_be_bytes(Md5::digest(partition_key.as_bytes()).into())
}

/// `n` contiguous ranges covering every hash key, as Kinesis creates them: range `i` starts at
/// `floor(2^128 / n) * i` and the last one ends at `2^128 - 1`.
pub fn even_ranges(n: u32) -> Vec<(u128, u128)> {
    let n = n.max(1);
    // floor(2^128 / n) without 2^128: it equals floor((2^128 - 1) / n) unless n divides 2^128.
    let step = if n.is_power_of_two() {
        (u128::MAX >> n.trailing_zeros()).wrapping_add(1)
    } else {
        u128::MAX / u128::from(n)
    };
    let starts: Vec<u128> = (0..n).map(|i| step.wrapping_mul(u128::from(i))).collect();
    starts
        .iter()
        .enumerate()
        .map(|(i, &start)| {
            let end = starts.get(i + 1).map_or(u128::MAX, |next| next - 1);
            (start, end)
        })
        .collect()
}

/// Parses a decimal hash key (`0` to `2^128 - 1`, no sign, no leading zeros), as
/// ExplicitHashKey, NewStartingHashKey and the like carry it.
pub fn parse_hash_key(s: &str) -> Option<u128> {
    let ok_shape = s == "0"
        || (!s.is_empty()
            && !s.starts_with('0')
            && s.len() <= 39
            && s.bytes().all(|b| b.is_ascii_digit()));
    if !ok_shape {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_match_kinesis() {
        assert_eq!(even_ranges(1), vec![(0, u128::MAX)]);
        let two = even_ranges(2);
        assert_eq!(
            two[0].1.to_string(),
            "170141183460469231731687303715884105727"
        );
        assert_eq!(two[1], (1u128 << 127, u128::MAX));
        for n in [3u32, 5, 7, 8, 100] {
            let r = even_ranges(n);
            assert_eq!(r.len(), n as usize);
            assert_eq!(r[0].0, 0);
            assert_eq!(r[n as usize - 1].1, u128::MAX);
            assert!(r.windows(2).all(|w| w[0].1 + 1 == w[1].0), "{n}");
        }
        // Non powers of two: floor(2^128 / 3) = 113427455640312821154458202477256070485.
        assert_eq!(
            even_ranges(3)[1].0.to_string(),
            "113427455640312821154458202477256070485"
        );
    }

    #[test]
    fn md5_routing() {
        // MD5("a") = 0cc175b9c0f1b6a831c399e269772661
        assert_eq!(partition_key_hash("a"), 0x0cc175b9c0f1b6a831c399e269772661);
    }

    #[test]
    fn hash_keys_parse_strictly() {
        assert_eq!(parse_hash_key("0"), Some(0));
        assert_eq!(parse_hash_key(&u128::MAX.to_string()), Some(u128::MAX));
        for bad in [
            "",
            "01",
            "-1",
            "1.0",
            "340282366920938463463374607431768211456",
            "abc",
        ] {
            assert_eq!(parse_hash_key(bad), None, "{bad}");
        }
    }
}
