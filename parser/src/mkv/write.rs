//! MKV writing into a `Vec<u8>`.
//!
//! Hand-written EBML: every function appends one element (or a fixed group of elements) to the
//! buffer. IDs are written as they appear on the wire and sizes with the fewest bytes that hold
//! them. The shapes follow what the KVS producer and GetMedia emit: an EBML header for
//! `matroska` version 2, an unknown-size Segment, Info and Tracks, unknown-size Clusters
//! (Timecode + Position 0) with SimpleBlocks, and level-1 Tags around clusters.
//!
//! A GetMedia document for one fragment is therefore:
//! ```
//! # use timeshard_parser::mkv::{write, SegmentInfo, SimpleTag, Frame};
//! # use bytes::Bytes;
//! let mut buf = Vec::new();
//! write::ebml_header(&mut buf);
//! write::segment_start_unknown(&mut buf);
//! write::info(&mut buf, &SegmentInfo::default());
//! write::tracks(&mut buf, &[]);
//! write::tags(&mut buf, &[SimpleTag::string("AWS_KINESISVIDEO_FRAGMENT_NUMBER", "1")]);
//! write::cluster_start_unknown(&mut buf, 1_000);
//! let frame = Frame { track: 1, timecode: 0, key: true, invisible: false, discardable: false,
//!                     data: Bytes::from_static(b"...") };
//! write::simple_block(&mut buf, &frame);
//! write::tags(&mut buf, &[SimpleTag::string("AWS_KINESISVIDEO_MILLIS_BEHIND_NOW", "0")]);
//! ```

use super::ids;
use super::{Frame, SegmentInfo, SimpleTag, TagValue, Track};

/// SimpleBlock flag bits (the byte after the relative timecode).
pub const FLAG_KEY: u8 = 0x80;
/// The frame is not to be displayed.
pub const FLAG_INVISIBLE: u8 = 0x08;
/// The frame may be dropped during playback.
pub const FLAG_DISCARDABLE: u8 = 0x01;

/// The 8-byte size field meaning "unknown size" (all value bits set).
pub const UNKNOWN_SIZE: [u8; 8] = [0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];

/// Largest size an 8-byte size field can hold (2^56 - 2; 2^56 - 1 means unknown).
pub const MAX_SIZE: u64 = (1 << 56) - 2;

/// Bytes of the shortest size field for `size`. A value with all bits set is reserved for
/// "unknown", so e.g. 127 takes 2 bytes.
pub fn size_len(size: u64) -> usize {
    let mut len = 1;
    while len < 8 && size >= (1u64 << (7 * len)) - 1 {
        len += 1;
    }
    len
}

/// Appends an EBML size field (`None` = unknown size, 8 bytes). Sizes above [`MAX_SIZE`] cannot
/// be represented and are clamped to it; nothing in memory is that large.
pub fn size(buf: &mut Vec<u8>, size: Option<u64>) {
    let Some(size) = size else {
        buf.extend_from_slice(&UNKNOWN_SIZE);
        return;
    };
    let size = size.min(MAX_SIZE);
    let len = size_len(size);
    // The length marker is a 1 bit in front of the value, at bit 8 * len - len.
    let marked = size | (1u64 << (7 * len));
    buf.extend_from_slice(&marked.to_be_bytes()[8 - len..]);
}

/// Bytes of an element ID (IDs keep their marker bits, so this is just the byte count).
pub fn id_len(id: u32) -> usize {
    (4 - id.leading_zeros() as usize / 8).max(1)
}

/// Appends an element ID.
pub fn id(buf: &mut Vec<u8>, id: u32) {
    buf.extend_from_slice(&id.to_be_bytes()[4 - id_len(id)..]);
}

/// Appends an element header: ID and size (`None` = unknown size).
pub fn element_header(buf: &mut Vec<u8>, element_id: u32, element_size: Option<u64>) {
    id(buf, element_id);
    size(buf, element_size);
}

/// Bytes of an element with this ID and payload length, header included.
pub fn element_len(element_id: u32, payload_len: usize) -> usize {
    id_len(element_id) + size_len(payload_len as u64) + payload_len
}

/// Appends an unsigned integer element, in the fewest bytes (at least one).
pub fn uint_element(buf: &mut Vec<u8>, element_id: u32, value: u64) {
    let len = (8 - value.leading_zeros() as usize / 8).max(1);
    element_header(buf, element_id, Some(len as u64));
    buf.extend_from_slice(&value.to_be_bytes()[8 - len..]);
}

/// Appends a float element as 8 bytes (big-endian IEEE 754).
pub fn float_element(buf: &mut Vec<u8>, element_id: u32, value: f64) {
    element_header(buf, element_id, Some(8));
    buf.extend_from_slice(&value.to_be_bytes());
}

/// Appends a UTF-8 string element.
pub fn string_element(buf: &mut Vec<u8>, element_id: u32, value: &str) {
    binary_element(buf, element_id, value.as_bytes());
}

/// Appends a binary element.
pub fn binary_element(buf: &mut Vec<u8>, element_id: u32, value: &[u8]) {
    element_header(buf, element_id, Some(value.len() as u64));
    buf.extend_from_slice(value);
}

/// Appends a master element of known size whose children `write_children` appends.
pub fn master_element(
    buf: &mut Vec<u8>,
    element_id: u32,
    write_children: impl FnOnce(&mut Vec<u8>),
) {
    let start = buf.len();
    write_children(buf);
    let children_len = (buf.len() - start) as u64;
    // The header's length depends on the children's; write it afterwards and move it in front.
    let mut header = Vec::with_capacity(12);
    element_header(&mut header, element_id, Some(children_len));
    buf.splice(start..start, header);
}

/// Appends a Void element of exactly `total_len` bytes (header included; at least 2).
pub fn void(buf: &mut Vec<u8>, total_len: usize) {
    let total_len = total_len.max(2);
    // 1 ID byte + size field + payload; the size field grows with the payload.
    let mut payload = total_len - 2;
    while 1 + size_len(payload as u64) + payload > total_len {
        payload -= 1;
    }
    // When shrinking the payload shortened the size field, pad the field instead (a longer size
    // field for the same value is valid EBML).
    let natural = size_len(payload as u64);
    let field_len = total_len - 1 - payload;
    id(buf, ids::VOID);
    let marked = (payload as u64) | (1u64 << (7 * field_len));
    debug_assert!(field_len >= natural && field_len <= 8);
    buf.extend_from_slice(&marked.to_be_bytes()[8 - field_len..]);
    buf.resize(buf.len() + payload, 0);
}

/// Appends an EBML header like the KVS producer's: EBML version 1, max ID length 4, max size
/// length 8, DocType `matroska`, DocTypeVersion 2, DocTypeReadVersion 2.
pub fn ebml_header(buf: &mut Vec<u8>) {
    master_element(buf, ids::EBML, |b| {
        uint_element(b, ids::EBML_VERSION, 1);
        uint_element(b, ids::EBML_READ_VERSION, 1);
        uint_element(b, ids::EBML_MAX_ID_LENGTH, 4);
        uint_element(b, ids::EBML_MAX_SIZE_LENGTH, 8);
        string_element(b, ids::DOC_TYPE, "matroska");
        uint_element(b, ids::DOC_TYPE_VERSION, 2);
        uint_element(b, ids::DOC_TYPE_READ_VERSION, 2);
    });
}

/// Appends a Segment header of unknown size: `18 53 80 67 01 FF FF FF FF FF FF FF`.
pub fn segment_start_unknown(buf: &mut Vec<u8>) {
    element_header(buf, ids::SEGMENT, None);
}

/// Appends an Info element. Absent optional fields are left out.
pub fn info(buf: &mut Vec<u8>, info: &SegmentInfo) {
    master_element(buf, ids::INFO, |b| {
        if let Some(uid) = &info.segment_uid {
            binary_element(b, ids::SEGMENT_UID, uid);
        }
        uint_element(b, ids::TIMECODE_SCALE, info.timecode_scale);
        if let Some(title) = &info.title {
            string_element(b, ids::TITLE, title);
        }
        if let Some(app) = &info.muxing_app {
            string_element(b, ids::MUXING_APP, app);
        }
        if let Some(app) = &info.writing_app {
            string_element(b, ids::WRITING_APP, app);
        }
        if let Some(duration) = info.duration {
            float_element(b, ids::DURATION, duration);
        }
    });
}

/// Appends a Tracks element with one TrackEntry per track.
pub fn tracks(buf: &mut Vec<u8>, tracks: &[Track]) {
    master_element(buf, ids::TRACKS, |b| {
        for track in tracks {
            master_element(b, ids::TRACK_ENTRY, |t| track_entry(t, track));
        }
    });
}

fn track_entry(b: &mut Vec<u8>, track: &Track) {
    uint_element(b, ids::TRACK_NUMBER, track.number);
    if let Some(uid) = track.uid {
        uint_element(b, ids::TRACK_UID, uid);
    }
    uint_element(b, ids::TRACK_TYPE, track.track_type);
    if let Some(name) = &track.name {
        string_element(b, ids::NAME, name);
    }
    string_element(b, ids::CODEC_ID, &track.codec_id);
    if let Some(private) = &track.codec_private {
        binary_element(b, ids::CODEC_PRIVATE, private);
    }
    if let Some(duration) = track.default_duration {
        uint_element(b, ids::DEFAULT_DURATION, duration);
    }
    if let Some(video) = &track.video {
        master_element(b, ids::VIDEO, |v| {
            uint_element(v, ids::PIXEL_WIDTH, video.pixel_width);
            uint_element(v, ids::PIXEL_HEIGHT, video.pixel_height);
        });
    }
    if let Some(audio) = &track.audio {
        master_element(b, ids::AUDIO, |a| {
            float_element(a, ids::SAMPLING_FREQUENCY, audio.sampling_frequency);
            uint_element(a, ids::CHANNELS, audio.channels);
            if let Some(depth) = audio.bit_depth {
                uint_element(a, ids::BIT_DEPTH, depth);
            }
        });
    }
}

/// Appends a Tags element: one Tag with empty Targets holding the SimpleTags in order. Writes
/// nothing for an empty slice (a Tag needs at least one SimpleTag).
pub fn tags(buf: &mut Vec<u8>, tags: &[SimpleTag]) {
    if tags.is_empty() {
        return;
    }
    master_element(buf, ids::TAGS, |b| {
        master_element(b, ids::TAG, |t| {
            element_header(t, ids::TARGETS, Some(0));
            for tag in tags {
                master_element(t, ids::SIMPLE_TAG, |s| {
                    string_element(s, ids::TAG_NAME, &tag.name);
                    match &tag.value {
                        TagValue::String(v) => string_element(s, ids::TAG_STRING, v),
                        TagValue::Binary(v) => binary_element(s, ids::TAG_BINARY, v),
                    }
                });
            }
        });
    });
}

/// Appends a Cluster header of unknown size, its Timecode and Position 0 (as the KVS producer
/// does). The Cluster ends at the next Cluster, Tags, EBML header or end of stream.
pub fn cluster_start_unknown(buf: &mut Vec<u8>, timecode: u64) {
    element_header(buf, ids::CLUSTER, None);
    uint_element(buf, ids::TIMECODE, timecode);
    uint_element(buf, ids::POSITION, 0);
}

/// The SimpleBlock flags byte for a frame (never laced).
pub fn simple_block_flags(frame: &Frame) -> u8 {
    let mut flags = 0;
    if frame.key {
        flags |= FLAG_KEY;
    }
    if frame.invisible {
        flags |= FLAG_INVISIBLE;
    }
    if frame.discardable {
        flags |= FLAG_DISCARDABLE;
    }
    flags
}

/// Bytes of a SimpleBlock's payload header: track number, relative timecode, flags.
fn block_header_len(track: u64) -> usize {
    size_len(track) + 3
}

/// Appends the header of a SimpleBlock whose `data_len` bytes of frame data the caller appends
/// (or sends) next: element ID and size, track number, relative timecode, flags. For output
/// assembled from stored frames without copying them.
pub fn simple_block_header(
    buf: &mut Vec<u8>,
    track: u64,
    timecode: i16,
    flags: u8,
    data_len: usize,
) {
    let payload_len = block_header_len(track) + data_len;
    element_header(buf, ids::SIMPLE_BLOCK, Some(payload_len as u64));
    size(buf, Some(track));
    buf.extend_from_slice(&timecode.to_be_bytes());
    buf.push(flags);
}

/// Bytes [`simple_block_header`] appends.
pub fn simple_block_header_len(track: u64, data_len: usize) -> usize {
    let payload_len = block_header_len(track) + data_len;
    element_len(ids::SIMPLE_BLOCK, payload_len) - data_len
}

/// Appends one SimpleBlock (known size, no lacing).
pub fn simple_block(buf: &mut Vec<u8>, frame: &Frame) {
    buf.reserve(simple_block_len(frame));
    simple_block_header(
        buf,
        frame.track,
        frame.timecode,
        simple_block_flags(frame),
        frame.data.len(),
    );
    buf.extend_from_slice(&frame.data);
}

/// The exact number of bytes [`simple_block`] appends for this frame.
pub fn simple_block_len(frame: &Frame) -> usize {
    element_len(
        ids::SIMPLE_BLOCK,
        block_header_len(frame.track) + frame.data.len(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn sized(v: Option<u64>) -> Vec<u8> {
        let mut b = Vec::new();
        size(&mut b, v);
        b
    }

    #[test]
    fn sizes_use_the_fewest_bytes_and_avoid_the_unknown_pattern() {
        assert_eq!(sized(Some(0)), [0x80]);
        assert_eq!(sized(Some(126)), [0xFE]);
        assert_eq!(sized(Some(127)), [0x40, 0x7F]);
        assert_eq!(sized(Some(0x3FFE)), [0x7F, 0xFE]);
        assert_eq!(sized(Some(0x3FFF)), [0x20, 0x3F, 0xFF]);
        assert_eq!(sized(None), UNKNOWN_SIZE);
        assert_eq!(sized(Some(MAX_SIZE)).len(), 8);
        for v in [
            0u64,
            1,
            126,
            127,
            128,
            16_382,
            16_383,
            1 << 20,
            1 << 40,
            MAX_SIZE,
        ] {
            assert_eq!(sized(Some(v)).len(), size_len(v), "{v}");
        }
    }

    #[test]
    fn ids_and_uints() {
        let mut b = Vec::new();
        id(&mut b, ids::SEGMENT);
        id(&mut b, ids::SIMPLE_BLOCK);
        id(&mut b, ids::TAG_NAME);
        id(&mut b, ids::TIMECODE_SCALE);
        assert_eq!(
            b,
            [0x18, 0x53, 0x80, 0x67, 0xA3, 0x45, 0xA3, 0x2A, 0xD7, 0xB1]
        );
        b.clear();
        uint_element(&mut b, ids::TIMECODE, 0);
        uint_element(&mut b, ids::TIMECODE, 0x1234);
        assert_eq!(b, [0xE7, 0x81, 0x00, 0xE7, 0x82, 0x12, 0x34]);
    }

    #[test]
    fn segment_and_cluster_headers() {
        let mut b = Vec::new();
        segment_start_unknown(&mut b);
        assert_eq!(
            b,
            [
                0x18, 0x53, 0x80, 0x67, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF
            ]
        );
        b.clear();
        cluster_start_unknown(&mut b, 5);
        assert_eq!(
            &b[..12],
            [
                0x1F, 0x43, 0xB6, 0x75, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF
            ]
        );
        assert_eq!(&b[12..], [0xE7, 0x81, 0x05, 0xA7, 0x81, 0x00]);
    }

    #[test]
    fn simple_block_bytes_and_length() {
        for (track, len) in [(1u64, 0usize), (2, 1), (127, 126), (300, 127), (1, 20_000)] {
            let frame = Frame {
                track,
                timecode: -2,
                key: true,
                invisible: false,
                discardable: true,
                data: Bytes::from(vec![7u8; len]),
            };
            let mut b = Vec::new();
            simple_block(&mut b, &frame);
            assert_eq!(b.len(), simple_block_len(&frame));
            assert_eq!(
                simple_block_header_len(track, len) + len,
                simple_block_len(&frame),
                "track {track}, {len} bytes"
            );
        }
        let frame = Frame {
            track: 1,
            timecode: 0x0102,
            key: true,
            invisible: true,
            discardable: false,
            data: Bytes::from_static(b"xy"),
        };
        let mut b = Vec::new();
        simple_block(&mut b, &frame);
        assert_eq!(b, [0xA3, 0x86, 0x81, 0x01, 0x02, 0x88, b'x', b'y']);
    }

    #[test]
    fn master_sizes_follow_children() {
        let mut b = vec![0xAA];
        master_element(&mut b, ids::TAGS, |c| {
            binary_element(c, ids::TAG_BINARY, &[1; 200])
        });
        // 0xAA, Tags ID (4), size 204 in 2 bytes, TagBinary ID (2), size 200 in 2 bytes, data.
        assert_eq!(b.len(), 1 + 4 + 2 + 2 + 2 + 200);
        assert_eq!(&b[1..7], [0x12, 0x54, 0xC3, 0x67, 0x40, 204]);
    }

    #[test]
    fn void_has_the_requested_length() {
        for n in [2usize, 3, 100, 127, 128, 129, 130, 16_384, 16_385, 16_386] {
            let mut b = Vec::new();
            void(&mut b, n);
            assert_eq!(b.len(), n, "{n}");
            assert_eq!(b[0], 0xEC);
        }
    }
}
