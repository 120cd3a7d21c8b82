//! The on-disk formats, byte by byte (mirrored in `docs/storage-format.md`). All integers are
//! little-endian. Every structure that can be torn by a crash carries a CRC32C.

use bytes::Bytes;

use crate::error::StoreError;

/// Version of the segment, index and catalog formats. Bumped on any incompatible change.
pub const FORMAT_VERSION: u32 = 1;

pub const SEGMENT_MAGIC: [u8; 8] = *b"TSHDSEG\0";
pub const INDEX_MAGIC: [u8; 8] = *b"TSHDIDX\0";
pub const SEGMENT_HEADER_LEN: u64 = 64;
pub const INDEX_HEADER_LEN: u64 = 16;
pub const RECORD_HEADER_LEN: usize = 48;
pub const INDEX_ENTRY_LEN: usize = 32;

/// Engine flag: the record carries a producer timestamp (and is in the time index).
pub const FLAG_HAS_PRODUCER_TS: u16 = 1;

/// The fixed header at the start of every segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub shard_uid: u64,
    pub base_offset: u64,
    pub created_ms: i64,
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN as usize] {
        let mut b = [0u8; SEGMENT_HEADER_LEN as usize];
        b[0..8].copy_from_slice(&SEGMENT_MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(SEGMENT_HEADER_LEN as u32).to_le_bytes());
        b[16..24].copy_from_slice(&self.shard_uid.to_le_bytes());
        b[24..32].copy_from_slice(&self.base_offset.to_le_bytes());
        b[32..40].copy_from_slice(&self.created_ms.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<SegmentHeader, String> {
        if b.len() < SEGMENT_HEADER_LEN as usize {
            return Err(format!(
                "segment header is {} bytes, expected {SEGMENT_HEADER_LEN}",
                b.len()
            ));
        }
        if b[0..8] != SEGMENT_MAGIC {
            return Err("not a timeshard segment (bad magic)".into());
        }
        let crc = u32_at(b, 60);
        if crc != crc32c::crc32c(&b[0..60]) {
            return Err("segment header checksum mismatch".into());
        }
        let version = u32_at(b, 8);
        if version != FORMAT_VERSION {
            return Err(format!(
                "segment format version {version}, this build reads {FORMAT_VERSION}"
            ));
        }
        Ok(SegmentHeader {
            shard_uid: u64_at(b, 16),
            base_offset: u64_at(b, 24),
            created_ms: i64_at(b, 32),
        })
    }
}

/// The fixed part of a record in a segment. It is followed by `key_len` key bytes and then the
/// payload; `len` counts all three. Two checksums: the header's own, checked before `len` is
/// trusted, and the body's, computed by the appender on its own thread so the single writer
/// thread checksums only headers.
///
/// ```text
/// 0  u32 len           header + key + payload
/// 4  u32 header crc32c over bytes 0..4 then 8..48 (everything but itself)
/// 8  u64 offset        position of the record in its shard (dense, from 0)
/// 16 i64 server_ts_ms
/// 24 i64 producer_ts_ms (meaningful only with FLAG_HAS_PRODUCER_TS)
/// 32 u16 engine flags
/// 34 u16 user flags
/// 36 u16 key_len
/// 38 u16 reserved, zero
/// 40 u32 body crc32c   over the key and payload
/// 44 u32 reserved, zero
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub len: u32,
    pub offset: u64,
    pub server_ts_ms: i64,
    pub producer_ts_ms: Option<i64>,
    pub user_flags: u16,
    pub key_len: u16,
    pub body_crc: u32,
}

impl RecordHeader {
    /// Builds the header for a record whose body the appender has checksummed.
    pub fn build(
        offset: u64,
        server_ts_ms: i64,
        producer_ts_ms: Option<i64>,
        user_flags: u16,
        body: &RecordBody,
    ) -> [u8; RECORD_HEADER_LEN] {
        let len = RECORD_HEADER_LEN + body.len;
        let mut b = [0u8; RECORD_HEADER_LEN];
        b[0..4].copy_from_slice(&(len as u32).to_le_bytes());
        b[8..16].copy_from_slice(&offset.to_le_bytes());
        b[16..24].copy_from_slice(&server_ts_ms.to_le_bytes());
        let engine_flags = if producer_ts_ms.is_some() {
            FLAG_HAS_PRODUCER_TS
        } else {
            0
        };
        b[24..32].copy_from_slice(&producer_ts_ms.unwrap_or(0).to_le_bytes());
        b[32..34].copy_from_slice(&engine_flags.to_le_bytes());
        b[34..36].copy_from_slice(&user_flags.to_le_bytes());
        b[36..38].copy_from_slice(&(body.key.len() as u16).to_le_bytes());
        b[40..44].copy_from_slice(&body.crc.to_le_bytes());
        let crc = header_crc(&b);
        b[4..8].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes a header; `None` if the bytes cannot be a record header (a torn or zeroed tail):
    /// a bad header checksum, impossible lengths or non-zero reserved bits.
    pub fn decode(b: &[u8]) -> Option<RecordHeader> {
        if b.len() < RECORD_HEADER_LEN || header_crc(b) != u32_at(b, 4) {
            return None;
        }
        let len = u32_at(b, 0);
        let key_len = u16_at(b, 36);
        let engine_flags = u16_at(b, 32);
        if (len as usize) < RECORD_HEADER_LEN + key_len as usize
            || engine_flags & !FLAG_HAS_PRODUCER_TS != 0
            || u16_at(b, 38) != 0
            || u32_at(b, 44) != 0
        {
            return None;
        }
        let producer_ts_ms = (engine_flags & FLAG_HAS_PRODUCER_TS != 0).then(|| i64_at(b, 24));
        Some(RecordHeader {
            len,
            offset: u64_at(b, 8),
            server_ts_ms: i64_at(b, 16),
            producer_ts_ms,
            user_flags: u16_at(b, 34),
            key_len,
            body_crc: u32_at(b, 40),
        })
    }

    /// Checks a whole record's body checksum (`rec` = header + key + payload).
    pub fn body_ok(&self, rec: &[u8]) -> bool {
        rec.len() == self.len as usize && crc32c::crc32c(&rec[RECORD_HEADER_LEN..]) == self.body_crc
    }

    pub fn payload_len(&self) -> usize {
        self.len as usize - RECORD_HEADER_LEN - self.key_len as usize
    }
}

/// A record's key and payload with the CRC32C of the two (the record's body checksum), computed
/// where the record is handed to the store, on the appender's thread.
#[derive(Debug, Clone)]
pub struct RecordBody {
    pub key: Bytes,
    pub payload: Vec<Bytes>,
    /// Key plus payload bytes.
    pub len: usize,
    pub crc: u32,
}

impl RecordBody {
    pub fn new(key: Bytes, payload: Vec<Bytes>) -> Self {
        let crc = payload
            .iter()
            .fold(crc32c::crc32c(&key), |crc, p| crc32c::crc32c_append(crc, p));
        let len = key.len() + payload.iter().map(Bytes::len).sum::<usize>();
        RecordBody {
            key,
            payload,
            len,
            crc,
        }
    }

    pub fn payload_len(&self) -> usize {
        self.len - self.key.len()
    }
}

/// The checksum of a record header: every header byte except the checksum field itself.
fn header_crc(b: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&b[0..4]), &b[8..RECORD_HEADER_LEN])
}

/// One entry of a segment's sparse position index (`.idx` file, after a 16-byte header of
/// magic + version + reserved).
///
/// ```text
/// 0  u64 offset
/// 8  u64 position      byte position of the record in the segment file
/// 16 i64 server_ts_ms
/// 24 u32 reserved, zero
/// 28 u32 crc32c        over bytes 0..28
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub offset: u64,
    pub pos: u64,
    pub server_ts_ms: i64,
}

impl IndexEntry {
    pub fn encode(&self) -> [u8; INDEX_ENTRY_LEN] {
        let mut b = [0u8; INDEX_ENTRY_LEN];
        b[0..8].copy_from_slice(&self.offset.to_le_bytes());
        b[8..16].copy_from_slice(&self.pos.to_le_bytes());
        b[16..24].copy_from_slice(&self.server_ts_ms.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..28]);
        b[28..32].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<IndexEntry> {
        if b.len() < INDEX_ENTRY_LEN || crc32c::crc32c(&b[0..28]) != u32_at(b, 28) {
            return None;
        }
        Some(IndexEntry {
            offset: u64_at(b, 0),
            pos: u64_at(b, 8),
            server_ts_ms: i64_at(b, 16),
        })
    }
}

pub fn index_file_header() -> [u8; INDEX_HEADER_LEN as usize] {
    let mut b = [0u8; INDEX_HEADER_LEN as usize];
    b[0..8].copy_from_slice(&INDEX_MAGIC);
    b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    b
}

/// The value stored for a record in the time index tables (redb).
///
/// ```text
/// 0  i64 server_ts_ms
/// 8  i64 producer_ts_ms
/// 16 u32 payload_len
/// 20 u16 user flags
/// 22 u16 key_len, then key bytes
/// ```
pub fn encode_time_entry(
    server_ts_ms: i64,
    producer_ts_ms: i64,
    payload_len: u32,
    user_flags: u16,
    key: &[u8],
) -> Vec<u8> {
    let mut v = Vec::with_capacity(24 + key.len());
    v.extend_from_slice(&server_ts_ms.to_le_bytes());
    v.extend_from_slice(&producer_ts_ms.to_le_bytes());
    v.extend_from_slice(&payload_len.to_le_bytes());
    v.extend_from_slice(&user_flags.to_le_bytes());
    v.extend_from_slice(&(key.len() as u16).to_le_bytes());
    v.extend_from_slice(key);
    v
}

/// A record as the time index knows it: everything but the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedRecord {
    pub offset: u64,
    pub server_ts_ms: i64,
    pub producer_ts_ms: i64,
    pub payload_len: u32,
    pub flags: u16,
    pub key: Bytes,
}

pub fn decode_time_entry(offset: u64, b: &[u8]) -> Result<IndexedRecord, StoreError> {
    let bad = || StoreError::Catalog(format!("time index entry for offset {offset} is malformed"));
    if b.len() < 24 {
        return Err(bad());
    }
    let key_len = u16_at(b, 22) as usize;
    let key = b.get(24..24 + key_len).ok_or_else(bad)?;
    Ok(IndexedRecord {
        offset,
        server_ts_ms: i64_at(b, 0),
        producer_ts_ms: i64_at(b, 8),
        payload_len: u32_at(b, 16),
        flags: u16_at(b, 20),
        key: Bytes::copy_from_slice(key),
    })
}

/// The row kept in the catalog for each segment file. Sealed rows are trusted at open; active
/// rows are a high-water mark from which recovery re-validates the file.
///
/// ```text
/// 0  u8  state          0 active, 1 sealed
/// 1  u64 end_offset     offset after the last record covered
/// 9  u64 end_pos        file length covered
/// 17 i64 first_ts_ms    server time of the first record (i64::MAX if none)
/// 25 i64 last_ts_ms     server time of the last record (i64::MIN if none)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentRow {
    pub sealed: bool,
    pub end_offset: u64,
    pub end_pos: u64,
    pub first_ts_ms: i64,
    pub last_ts_ms: i64,
}

impl SegmentRow {
    pub fn encode(&self) -> [u8; 33] {
        let mut b = [0u8; 33];
        b[0] = u8::from(self.sealed);
        b[1..9].copy_from_slice(&self.end_offset.to_le_bytes());
        b[9..17].copy_from_slice(&self.end_pos.to_le_bytes());
        b[17..25].copy_from_slice(&self.first_ts_ms.to_le_bytes());
        b[25..33].copy_from_slice(&self.last_ts_ms.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<SegmentRow> {
        if b.len() != 33 || b[0] > 1 {
            return None;
        }
        Some(SegmentRow {
            sealed: b[0] == 1,
            end_offset: u64_at(b, 1),
            end_pos: u64_at(b, 9),
            first_ts_ms: i64_at(b, 17),
            last_ts_ms: i64_at(b, 25),
        })
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn i64_at(b: &[u8], at: usize) -> i64 {
    u64_at(b, at) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_header_round_trips_and_detects_damage() {
        let payload = vec![Bytes::from_static(b"hello "), Bytes::from_static(b"world")];
        let body = RecordBody::new(Bytes::from_static(b"key"), payload);
        let h = RecordHeader::build(7, 1000, Some(-5), 3, &body);
        let mut rec = h.to_vec();
        rec.extend_from_slice(b"key");
        rec.extend_from_slice(b"hello world");
        let d = RecordHeader::decode(&rec).expect("decodes");
        assert_eq!(d.offset, 7);
        assert_eq!(d.server_ts_ms, 1000);
        assert_eq!(d.producer_ts_ms, Some(-5));
        assert_eq!(d.user_flags, 3);
        assert_eq!(d.payload_len(), 11);
        assert!(d.body_ok(&rec));
        let last = rec.len() - 1;
        rec[last] ^= 1;
        assert!(!d.body_ok(&rec));
        assert_eq!(RecordHeader::decode(&[0u8; RECORD_HEADER_LEN]), None);
        // A damaged header is refused before its length is believed.
        rec[0] ^= 0x40;
        assert_eq!(RecordHeader::decode(&rec), None);
    }

    #[test]
    fn segment_header_and_index_entry_round_trip() {
        let h = SegmentHeader {
            shard_uid: 9,
            base_offset: 1234,
            created_ms: 55,
        };
        assert_eq!(SegmentHeader::decode(&h.encode()), Ok(h));
        let mut bad = h.encode();
        bad[20] ^= 0xff;
        assert!(SegmentHeader::decode(&bad).is_err());
        let e = IndexEntry {
            offset: 1,
            pos: 64,
            server_ts_ms: 99,
        };
        assert_eq!(IndexEntry::decode(&e.encode()), Some(e));
        assert_eq!(IndexEntry::decode(&[0u8; INDEX_ENTRY_LEN]), None);
        let row = SegmentRow {
            sealed: true,
            end_offset: 5,
            end_pos: 500,
            first_ts_ms: 1,
            last_ts_ms: 2,
        };
        assert_eq!(SegmentRow::decode(&row.encode()), Some(row));
    }

    #[test]
    fn time_entry_round_trips() {
        let v = encode_time_entry(10, 20, 30, 4, b"k1");
        let r = decode_time_entry(77, &v).expect("decodes");
        assert_eq!(
            (
                r.offset,
                r.server_ts_ms,
                r.producer_ts_ms,
                r.payload_len,
                r.flags
            ),
            (77, 10, 20, 30, 4)
        );
        assert_eq!(&r.key[..], b"k1");
        assert!(decode_time_entry(1, &v[..10]).is_err());
    }
}
