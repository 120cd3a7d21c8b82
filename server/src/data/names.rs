//! Names clients see: stream names, stream ARNs, shard ids.

use std::fmt;

/// `shardId-` and the shard's index in 12 digits, as Kinesis names shards.
pub fn shard_id(index: u32) -> String {
    format!("shardId-{index:012}")
}

/// The index in a shard id. Accepts `shardId-` followed by 1 to 12 digits.
pub fn parse_shard_id(id: &str) -> Option<u32> {
    let digits = id.strip_prefix("shardId-")?;
    if digits.is_empty() || digits.len() > 12 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Why a stream name or ARN is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadName(pub String);

impl fmt::Display for BadName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Stream names: 1 to 128 of `[a-zA-Z0-9_.-]`.
pub fn check_stream_name(name: &str) -> Result<(), BadName> {
    if name.is_empty()
        || name.len() > 128
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(BadName(format!(
            "Value '{name}' at 'streamName' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+ and have length between 1 and 128"
        )));
    }
    Ok(())
}

/// Where the server says its streams live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub region: String,
    pub account_id: String,
}

impl Account {
    pub fn stream_arn(&self, name: &str) -> String {
        format!(
            "arn:aws:kinesis:{}:{}:stream/{name}",
            self.region, self.account_id
        )
    }

    /// The stream name in one of our stream ARNs.
    pub fn stream_name_from_arn<'a>(&self, arn: &'a str) -> Result<&'a str, BadName> {
        let bad = || {
            BadName(format!(
                "Invalid StreamARN {arn:?}: expected arn:aws:kinesis:{}:{}:stream/<name>",
                self.region, self.account_id
            ))
        };
        let rest = arn.strip_prefix("arn:").ok_or_else(bad)?;
        let mut parts = rest.splitn(5, ':');
        let (partition, service, region, account, resource) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        );
        let (Some(partition), Some("kinesis"), Some(region), Some(account), Some(resource)) =
            (partition, service, region, account, resource)
        else {
            return Err(bad());
        };
        if !partition.starts_with("aws") || region != self.region || account != self.account_id {
            return Err(bad());
        }
        let name = resource.strip_prefix("stream/").ok_or_else(bad)?;
        // A consumer ARN continues with /consumer/...; the stream part is before it.
        let name = name.split('/').next().unwrap_or(name);
        check_stream_name(name)?;
        Ok(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_ids() {
        assert_eq!(shard_id(3), "shardId-000000000003");
        assert_eq!(parse_shard_id("shardId-000000000003"), Some(3));
        assert_eq!(parse_shard_id("shardId-3"), Some(3));
        for bad in ["shardId-", "shard-1", "shardId-x", "shardId-0000000000001"] {
            assert_eq!(parse_shard_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn arns_round_trip_and_must_be_ours() {
        let a = Account {
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
        };
        let arn = a.stream_arn("s1");
        assert_eq!(arn, "arn:aws:kinesis:us-east-1:000000000000:stream/s1");
        assert_eq!(a.stream_name_from_arn(&arn), Ok("s1"));
        assert_eq!(
            a.stream_name_from_arn("arn:aws:kinesis:us-east-1:000000000000:stream/s1/consumer/c:1"),
            Ok("s1")
        );
        for bad in [
            "s1",
            "arn:aws:kinesis:eu-west-1:000000000000:stream/s1",
            "arn:aws:kinesis:us-east-1:111111111111:stream/s1",
            "arn:aws:kinesisvideo:us-east-1:000000000000:stream/s1",
            "arn:aws:kinesis:us-east-1:000000000000:table/s1",
            "arn:aws:kinesis:us-east-1:000000000000:stream/",
        ] {
            assert!(a.stream_name_from_arn(bad).is_err(), "{bad}");
        }
        assert!(check_stream_name("ok_name-1.2").is_ok());
        assert!(check_stream_name("bad name").is_err());
        assert!(check_stream_name(&"x".repeat(129)).is_err());
    }
}
