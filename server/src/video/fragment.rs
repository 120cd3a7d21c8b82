//! How a video fragment is stored: one storage record per fragment, in the stream's only shard.
//!
//! A fragment is one MKV cluster as the producer sent it. GetMedia sends it back as a standalone
//! MKV document (EBML header, Segment, Info, Tracks, tags, the cluster), so the record keeps the
//! cluster's blocks already encoded as MKV, and everything else by reference or in a summary:
//!
//! - **Record key** ([`FragmentKey`], fixed size): the ingest session the fragment belongs to,
//!   the cluster timecode, the duration and the media size. The time index keeps record keys, so
//!   ListFragments answers from the index without reading a single fragment.
//! - **Record payload**: the cluster's frames as MKV `SimpleBlock` elements, back to back, then
//!   the trailer ([`Trailer`]): a frame table and the producer's tags. The payload is pushed to
//!   the open record frame by frame (live readers follow it), the trailer last, in one chunk of
//!   its own that starts with a zero byte (no EBML element id starts with one), so a follower
//!   knows where the blocks end.
//! - **Session** ([`Session`]): the segment's Info and Tracks, encoded as MKV, plus the timecode
//!   scale. Stored once per PutMedia session as a stream blob (`Store::put_blob`); fragments refer
//!   to it by id.
//!
//! Every layout here carries a version byte; readers refuse versions they do not know rather
//! than misread them. All integers are little-endian.

use bytes::{Buf, BufMut, Bytes};
use timeshard_storage::{SequenceNumber, ShardUid};

/// Why stored fragment bytes could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stored fragment data is malformed: {0}")]
pub struct Malformed(pub &'static str);

/// The first byte of the trailer chunk.
pub const TRAILER_MARKER: u8 = 0;

const KEY_VERSION: u8 = 1;
const TRAILER_VERSION: u8 = 1;
const SESSION_VERSION: u8 = 1;

/// What the time index keeps of a fragment (the storage record's key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentKey {
    /// The stream blob holding the fragment's [`Session`].
    pub session: u64,
    /// The cluster timecode on the absolute scale, in the session's timecode-scale units: for a
    /// RELATIVE producer the start timestamp is already added. GetMedia writes it as the
    /// cluster's `Timecode`.
    pub cluster_timecode: u64,
    /// From the first frame's start to the last frame's (ms), the fragment's length.
    pub duration_ms: u64,
    /// Bytes of MKV blocks (the payload without the trailer).
    pub media_bytes: u64,
    /// Frames in the fragment.
    pub frames: u32,
    /// For a live-only stream (retention 0), the fragment's number, which no offset gives (see
    /// [`fragment_number`]); 0 for a stored fragment.
    pub live_number: u64,
}

/// Live-only fragment numbers start here, above any record offset.
pub const LIVE_NUMBER_BASE: u64 = 10_000_000_000_000_000_000;

/// A fragment's number: the sequence number of its record, the same scheme as data-stream
/// sequence numbers (decimal, increasing per shard, naming the shard).
///
/// A live-only fragment is never stored: its record is dropped once live readers have it, so
/// the next fragment gets the same offset. Its number is therefore `LIVE_NUMBER_BASE` plus a
/// counter the upload keeps (seeded from the clock in microseconds, so it keeps increasing
/// across uploads and restarts).
pub fn fragment_number(shard: ShardUid, offset: u64, key: &FragmentKey) -> SequenceNumber {
    if key.live_number == 0 {
        SequenceNumber::of_record(shard, offset)
    } else {
        SequenceNumber {
            shard,
            position: LIVE_NUMBER_BASE.saturating_add(key.live_number),
        }
    }
}

impl FragmentKey {
    pub const LEN: usize = 1 + 8 + 8 + 8 + 8 + 4 + 8;

    pub fn encode(&self) -> Bytes {
        let mut b = Vec::with_capacity(Self::LEN);
        b.put_u8(KEY_VERSION);
        b.put_u64_le(self.session);
        b.put_u64_le(self.cluster_timecode);
        b.put_u64_le(self.duration_ms);
        b.put_u64_le(self.media_bytes);
        b.put_u32_le(self.frames);
        b.put_u64_le(self.live_number);
        Bytes::from(b)
    }

    pub fn decode(mut b: &[u8]) -> Result<FragmentKey, Malformed> {
        if b.len() != Self::LEN {
            return Err(Malformed("fragment key has the wrong length"));
        }
        if b.get_u8() != KEY_VERSION {
            return Err(Malformed("fragment key has an unknown version"));
        }
        Ok(FragmentKey {
            session: b.get_u64_le(),
            cluster_timecode: b.get_u64_le(),
            duration_ms: b.get_u64_le(),
            media_bytes: b.get_u64_le(),
            frames: b.get_u32_le(),
            live_number: b.get_u64_le(),
        })
    }
}

/// One frame in a fragment's frame table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameEntry {
    /// Where its `SimpleBlock` element starts in the payload.
    pub offset: u32,
    /// The element's length, header included.
    pub len: u32,
    pub track: u64,
    /// Relative to the cluster timecode, in timecode-scale units.
    pub timecode: i16,
    pub key: bool,
}

const FRAME_ENTRY_LEN: usize = 4 + 4 + 8 + 2 + 1;

/// A producer tag kept with its fragment (`SimpleTag` name and value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTag {
    pub name: String,
    pub value: TagData,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagData {
    String(String),
    Binary(Bytes),
}

/// The end of a fragment's payload: its frame table and tags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trailer {
    pub frames: Vec<FrameEntry>,
    pub tags: Vec<StoredTag>,
}

impl Trailer {
    /// The trailer chunk: marker, version, frame table, tags, and finally its own length (u32),
    /// so a reader of the whole payload finds it from the end.
    pub fn encode(&self) -> Bytes {
        let mut b = Vec::with_capacity(16 + self.frames.len() * FRAME_ENTRY_LEN);
        b.put_u8(TRAILER_MARKER);
        b.put_u8(TRAILER_VERSION);
        b.put_u32_le(self.frames.len() as u32);
        for f in &self.frames {
            b.put_u32_le(f.offset);
            b.put_u32_le(f.len);
            b.put_u64_le(f.track);
            b.put_i16_le(f.timecode);
            b.put_u8(u8::from(f.key));
        }
        b.put_u16_le(self.tags.len() as u16);
        for t in &self.tags {
            b.put_u16_le(t.name.len() as u16);
            b.put_slice(t.name.as_bytes());
            let (kind, value) = match &t.value {
                TagData::String(s) => (0u8, s.as_bytes()),
                TagData::Binary(v) => (1u8, &v[..]),
            };
            b.put_u8(kind);
            b.put_u32_le(value.len() as u32);
            b.put_slice(value);
        }
        let len = b.len() as u32;
        b.put_u32_le(len);
        Bytes::from(b)
    }

    /// Splits a stored payload into its MKV blocks and its trailer.
    pub fn split(payload: &Bytes) -> Result<(Bytes, Trailer), Malformed> {
        let n = payload.len();
        if n < 4 {
            return Err(Malformed("payload too short for a trailer"));
        }
        let len = u32::from_le_bytes([
            payload[n - 4],
            payload[n - 3],
            payload[n - 2],
            payload[n - 1],
        ]) as usize;
        if len + 4 > n {
            return Err(Malformed("trailer length exceeds the payload"));
        }
        let start = n - 4 - len;
        let trailer = Trailer::decode(&payload[start..n - 4])?;
        Ok((payload.slice(..start), trailer))
    }

    fn decode(mut b: &[u8]) -> Result<Trailer, Malformed> {
        let short = Malformed("trailer is truncated");
        if b.remaining() < 6 || b.get_u8() != TRAILER_MARKER {
            return Err(Malformed("trailer marker missing"));
        }
        if b.get_u8() != TRAILER_VERSION {
            return Err(Malformed("trailer has an unknown version"));
        }
        let count = b.get_u32_le() as usize;
        if b.remaining() < count.saturating_mul(FRAME_ENTRY_LEN) {
            return Err(short);
        }
        let mut frames = Vec::with_capacity(count);
        for _ in 0..count {
            frames.push(FrameEntry {
                offset: b.get_u32_le(),
                len: b.get_u32_le(),
                track: b.get_u64_le(),
                timecode: b.get_i16_le(),
                key: b.get_u8() != 0,
            });
        }
        if b.remaining() < 2 {
            return Err(short);
        }
        let tag_count = b.get_u16_le();
        let mut tags = Vec::with_capacity(usize::from(tag_count));
        for _ in 0..tag_count {
            if b.remaining() < 2 {
                return Err(short);
            }
            let name_len = usize::from(b.get_u16_le());
            if b.remaining() < name_len + 5 {
                return Err(short);
            }
            let name = String::from_utf8(b[..name_len].to_vec())
                .map_err(|_| Malformed("tag name is not UTF-8"))?;
            b.advance(name_len);
            let kind = b.get_u8();
            let value_len = b.get_u32_le() as usize;
            if b.remaining() < value_len {
                return Err(short);
            }
            let raw = &b[..value_len];
            let value = match kind {
                0 => TagData::String(
                    String::from_utf8(raw.to_vec())
                        .map_err(|_| Malformed("tag value is not UTF-8"))?,
                ),
                1 => TagData::Binary(Bytes::copy_from_slice(raw)),
                _ => return Err(Malformed("tag value has an unknown kind")),
            };
            b.advance(value_len);
            tags.push(StoredTag { name, value });
        }
        if b.has_remaining() {
            return Err(Malformed("trailer has trailing bytes"));
        }
        Ok(Trailer { frames, tags })
    }
}

/// An ingest session's segment header: what every fragment of the session shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Nanoseconds per timecode unit (`TimecodeScale`).
    pub timecode_scale: u64,
    /// The session's `Info` and `Tracks` elements, encoded as MKV, ready to send.
    pub header_mkv: Bytes,
}

impl Session {
    pub fn encode(&self) -> Bytes {
        let mut b = Vec::with_capacity(9 + self.header_mkv.len());
        b.put_u8(SESSION_VERSION);
        b.put_u64_le(self.timecode_scale);
        b.put_slice(&self.header_mkv);
        Bytes::from(b)
    }

    pub fn decode(blob: &Bytes) -> Result<Session, Malformed> {
        if blob.len() < 9 {
            return Err(Malformed("session blob too short"));
        }
        if blob[0] != SESSION_VERSION {
            return Err(Malformed("session blob has an unknown version"));
        }
        let mut scale = [0u8; 8];
        scale.copy_from_slice(&blob[1..9]);
        let timecode_scale = u64::from_le_bytes(scale);
        if timecode_scale == 0 {
            return Err(Malformed("session timecode scale is zero"));
        }
        Ok(Session {
            timecode_scale,
            header_mkv: blob.slice(9..),
        })
    }

    /// Timecode units to milliseconds (rounded towards zero).
    pub fn units_to_ms(&self, units: i128) -> i64 {
        units_to_ms(units, self.timecode_scale)
    }
}

/// Timecode units (of `scale` ns each) to milliseconds, rounded towards zero.
pub fn units_to_ms(units: i128, scale: u64) -> i64 {
    (units * i128::from(scale) / 1_000_000) as i64
}

/// A fragment's length: from its earliest frame to its latest, plus one frame interval of the
/// track with the most frames (the last frame lasts too; MKV blocks carry no duration).
pub fn duration_ms(frames: &[FrameEntry], scale: u64) -> u64 {
    let (Some(min), Some(max)) = (
        frames.iter().map(|f| f.timecode).min(),
        frames.iter().map(|f| f.timecode).max(),
    ) else {
        return 0;
    };
    let span = i128::from(max) - i128::from(min);
    let mut counts: Vec<(u64, usize)> = Vec::new();
    for f in frames {
        match counts.iter_mut().find(|(t, _)| *t == f.track) {
            Some((_, n)) => *n += 1,
            None => counts.push((f.track, 1)),
        }
    }
    let most = counts.iter().map(|(_, n)| *n).max().unwrap_or(1);
    let interval = if most > 1 {
        span / (most as i128 - 1)
    } else {
        0
    };
    units_to_ms(span + interval, scale).max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_round_trips_and_rejects_other_versions() {
        let key = FragmentKey {
            session: 7,
            cluster_timecode: 1_726_677_688_724,
            duration_ms: 1_960,
            media_bytes: 512_345,
            frames: 50,
            live_number: 0,
        };
        let b = key.encode();
        assert_eq!(b.len(), FragmentKey::LEN);
        assert_eq!(FragmentKey::decode(&b), Ok(key));
        let mut other = b.to_vec();
        other[0] = 9;
        assert!(FragmentKey::decode(&other).is_err());
        assert!(FragmentKey::decode(&b[..10]).is_err());
    }

    #[test]
    fn trailer_is_found_from_the_end_of_a_payload() {
        let trailer = Trailer {
            frames: vec![
                FrameEntry {
                    offset: 0,
                    len: 100,
                    track: 1,
                    timecode: 0,
                    key: true,
                },
                FrameEntry {
                    offset: 100,
                    len: 20,
                    track: 2,
                    timecode: -3,
                    key: false,
                },
            ],
            tags: vec![
                StoredTag {
                    name: "CAMERA".into(),
                    value: TagData::String("front door".into()),
                },
                StoredTag {
                    name: "RAW".into(),
                    value: TagData::Binary(Bytes::from_static(&[0, 1, 2])),
                },
            ],
        };
        let blocks = vec![0xA3u8; 120];
        let mut payload = blocks.clone();
        let chunk = trailer.encode();
        assert_eq!(chunk[0], TRAILER_MARKER);
        payload.extend_from_slice(&chunk);
        let (media, back) = Trailer::split(&Bytes::from(payload.clone())).expect("splits");
        assert_eq!(&media[..], &blocks[..]);
        assert_eq!(back, trailer);
        // Any cut short of the whole payload is refused, never misread.
        for cut in 0..payload.len() {
            let short = Bytes::copy_from_slice(&payload[..cut]);
            if let Ok((_, t)) = Trailer::split(&short) {
                panic!("a payload cut at {cut} was read as {t:?}");
            }
        }
    }

    #[test]
    fn session_round_trips() {
        let s = Session {
            timecode_scale: 1_000_000,
            header_mkv: Bytes::from_static(b"\x15\x49\xa9\x66..."),
        };
        let back = Session::decode(&s.encode()).expect("decodes");
        assert_eq!(back, s);
        assert_eq!(back.units_to_ms(1_500), 1_500);
        let fine = Session {
            timecode_scale: 100,
            header_mkv: Bytes::new(),
        };
        assert_eq!(fine.units_to_ms(123_456), 12);
    }
}
