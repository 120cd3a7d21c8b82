//! The one error type of MKV reading: where (byte offset and element path), what kind, and a
//! sentence a producer can act on. The server turns it into an ERROR ack (invalid MKV, 4006) or
//! an InvalidArgument response; tests match on `kind`.

use std::fmt;

/// Why a document was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MkvErrorKind {
    /// Not valid Matroska: bad element IDs or sizes, elements where they may not be, a block
    /// before its Cluster's Timecode, a malformed block, bad values.
    Invalid,
    /// An element declares more bytes than the reader's limits allow ([`super::ReaderLimits`]).
    TooLarge,
    /// The input ended inside an element (or a read from the source failed part way).
    Truncated,
}

impl fmt::Display for MkvErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MkvErrorKind::Invalid => "invalid",
            MkvErrorKind::TooLarge => "too large",
            MkvErrorKind::Truncated => "truncated",
        })
    }
}

/// A rejected MKV input, e.g. `invalid MKV at byte 1234 (Segment/Cluster/SimpleBlock):
/// SimpleBlock of 2 GiB exceeds the 64 MiB element limit`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MKV at byte {offset}{}: {message}", path_suffix(.path))]
pub struct MkvError {
    /// Byte offset in the input where the offending element starts (or where the input ended).
    pub offset: u64,
    pub kind: MkvErrorKind,
    /// Element path of the offending element, e.g. `Segment/Cluster/SimpleBlock`; may be empty.
    pub path: String,
    /// What is wrong, in words.
    pub message: String,
}

impl MkvError {
    pub(crate) fn new(
        kind: MkvErrorKind,
        offset: u64,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        MkvError {
            offset,
            kind,
            path: path.into(),
            message: message.into(),
        }
    }
}

fn path_suffix(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!(" ({path})")
    }
}

/// `1000 bytes`, `64 MiB`, `931.3 GiB`: sizes in messages.
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [(u64, &str); 5] = [
        (1 << 50, "PiB"),
        (1 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ];
    for (unit, name) in UNITS {
        if n >= unit {
            return if n.is_multiple_of(unit) {
                format!("{} {name}", n / unit)
            } else {
                format!("{:.1} {name}", n as f64 / unit as f64)
            };
        }
    }
    if n == 1 {
        "1 byte".to_owned()
    } else {
        format!("{n} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_offset_path_and_reason() {
        let e = MkvError::new(
            MkvErrorKind::TooLarge,
            1234,
            "Segment/Cluster/SimpleBlock",
            "SimpleBlock of 2 GiB exceeds the 64 MiB element limit",
        );
        assert_eq!(
            e.to_string(),
            "invalid MKV at byte 1234 (Segment/Cluster/SimpleBlock): SimpleBlock of 2 GiB exceeds \
             the 64 MiB element limit"
        );
        let e = MkvError::new(MkvErrorKind::Invalid, 0, "", "no EBML header");
        assert_eq!(e.to_string(), "invalid MKV at byte 0: no EBML header");
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(1), "1 byte");
        assert_eq!(human_bytes(1000), "1000 bytes");
        assert_eq!(human_bytes(64 << 20), "64 MiB");
        assert_eq!(human_bytes(2 << 30), "2 GiB");
        assert_eq!(human_bytes(1_000_000_000_000), "931.3 GiB");
    }
}
