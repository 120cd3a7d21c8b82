//! PutMedia acks: parsing the response lines and deciding what each error means for the producer
//! (`shared/reference/aws-protocol.md` A.4).

use serde::Deserialize;

use crate::error::Error;

/// One ack line.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Ack {
    #[serde(rename = "EventType")]
    pub event: String,
    #[serde(rename = "FragmentTimecode", default)]
    pub timecode: Option<i64>,
    #[serde(rename = "FragmentNumber", default)]
    pub fragment_number: Option<String>,
    #[serde(rename = "ErrorId", default)]
    pub error_id: Option<u32>,
}

impl Ack {
    pub fn parse(line: &str) -> Result<Ack, Error> {
        serde_json::from_str(line)
            .map_err(|e| Error::protocol(format!("PutMedia ack {line:?}"), &e))
    }
}

/// What an ERROR ack means for the upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorAction {
    /// The connection or the service failed: reconnect and resend from the first fragment not
    /// persisted.
    Reconnect,
    /// This fragment can never be accepted (too big, too long, invalid): drop it, report it, and
    /// carry on with the next on a new connection.
    DropFragment,
    /// The stream cannot take data (not active, deleted, encryption key unusable): stop.
    Fatal,
}

/// The meaning and action of a PutMedia `ErrorId`.
pub fn classify(error_id: u32) -> (&'static str, ErrorAction) {
    use ErrorAction::*;
    match error_id {
        4000 => ("stream read error or connection replaced", Reconnect),
        4001 => ("fragment larger than the size limit", DropFragment),
        4002 => ("fragment longer than the duration limit", DropFragment),
        4003 => ("connection reached its time limit", Reconnect),
        4004 => (
            "fragment timecode lower than the previous fragment's",
            DropFragment,
        ),
        4005 => ("more than one track (deprecated)", DropFragment),
        4006 => ("invalid MKV data", DropFragment),
        4007 => ("invalid producer timestamp", DropFragment),
        4008 => ("stream not active", Fatal),
        4009 => ("fragment metadata limit reached", DropFragment),
        4010 => ("a block's track is not declared in Tracks", DropFragment),
        4011 => ("a declared track has no frames", DropFragment),
        4012 => ("more tracks than allowed", Fatal),
        4500 => ("KMS access denied", Fatal),
        4501 => ("KMS key disabled", Fatal),
        4502 => ("KMS validation error", Fatal),
        4503 => ("KMS unavailable", Reconnect),
        4504 => ("KMS invalid key usage", Fatal),
        4505 => ("KMS invalid key state", Fatal),
        4506 => ("KMS key not found", Fatal),
        4507 => ("stream deleted", Fatal),
        5000 => ("internal service error", Reconnect),
        5001 => ("persistence (archival) failure", Reconnect),
        _ => ("unknown error", Reconnect),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_shapes() {
        let a = Ack::parse(
            r#"{"EventType":"PERSISTED","FragmentTimecode":1663277247152,"FragmentNumber":"9134"}"#,
        )
        .expect("ok");
        assert_eq!(a.event, "PERSISTED");
        assert_eq!(a.timecode, Some(1_663_277_247_152));
        assert_eq!(a.fragment_number.as_deref(), Some("9134"));
        let a =
            Ack::parse(r#"{"EventType":"ERROR","FragmentTimecode":5,"ErrorId":4004}"#).expect("ok");
        assert_eq!(a.error_id, Some(4004));
        assert_eq!(classify(4004).1, ErrorAction::DropFragment);
        let a = Ack::parse(r#"{"EventType":"IDLE"}"#).expect("ok");
        assert_eq!(a.timecode, None);
        assert!(Ack::parse("{nope").is_err());
    }
}
