//! The push reader: bytes in, [`MkvEvent`]s out.
//!
//! Parsing is ebml-iterable's `TagDecoder` (incremental, keeps a partial element in our buffer
//! until the rest arrives, closes unknown-size masters on the next sibling or parent). Around it,
//! this module adds what a server facing the internet needs and the decoder does not do:
//!
//! - **Size bombs.** The decoder waits until a whole non-master element is buffered, so an element
//!   that declares 1 TB would make it wait (and us buffer) forever. Before every decode step we
//!   read the header at the front of the buffer ourselves and reject a non-master element larger
//!   than [`ReaderLimits::max_element_bytes`] at once. The few masters we ask the decoder to
//!   assemble whole (EBML header, Info, Tracks, Tags) count against the same limit.
//! - **Document shape.** Every document must start with an EBML header for `matroska` or `webm`,
//!   so garbage is rejected at its first byte instead of being skipped as unknown elements.
//! - **Matroska meaning.** A Cluster is announced once its Timecode is known; blocks become
//!   [`Frame`]s (lacing undone, payloads as `Bytes` slices, no copy); a block before the Timecode
//!   is an error.
//!
//! Unknown element IDs are allowed and skipped, as ffmpeg does, because producers add their own.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use ebml_iterable::error::{CorruptedFileError, TagIteratorError, ToolError};
use ebml_iterable::iterator::AllowableErrors;
use ebml_iterable::specs::{EbmlSpecification, EbmlTag, Master, PathPart, TagDataType};
use ebml_iterable::{PositionedTag, TagDecoder};
use webm_iterable::matroska_spec::MatroskaSpec;

use super::block::{self, FLAG_DISCARDABLE, FLAG_INVISIBLE, FLAG_KEY, Frames};
use super::error::{MkvError, MkvErrorKind, human_bytes};
use super::ids;
use super::{
    AudioSettings, EbmlHeader, Frame, MkvEvent, SegmentInfo, SimpleTag, TagValue, Track,
    VideoSettings,
};

/// Memory bounds of one reader. Both are checked as soon as an element's header is readable, so
/// a reader never holds more than about `max_buffered_bytes` plus the caller's last chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReaderLimits {
    /// Largest payload of a non-master element (a SimpleBlock, a CodecPrivate, ...), and largest
    /// size of the masters read whole (EBML header, Info, Tracks, Tags). Default 64 MiB: a KVS
    /// fragment is at most 50 MB, so no single frame can be larger.
    pub max_element_bytes: u64,
    /// Most bytes buffered while waiting for the rest of an element. Default 80 MiB.
    pub max_buffered_bytes: u64,
}

impl Default for ReaderLimits {
    fn default() -> Self {
        ReaderLimits {
            max_element_bytes: 64 << 20,
            max_buffered_bytes: 80 << 20,
        }
    }
}

/// Where we are in the current document, for the checks the decoder does not make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DocState {
    /// At the start of the input or after a document ended: only an EBML header may come.
    ExpectHeader,
    /// After the EBML header: a Segment.
    ExpectSegment,
    InSegment,
    /// After a Segment closed: another Segment, or a new document.
    AfterSegment,
}

/// A master the decoder assembles whole (`Master::Full`); bounded by `max_element_bytes`.
#[derive(Debug, Clone, Copy)]
struct Capture {
    id: u32,
    start: u64,
    /// Offset just past the element, when its size is known.
    end: Option<u64>,
}

#[derive(Debug)]
struct ClusterState {
    offset: u64,
    timecode: Option<u64>,
}

#[derive(Debug)]
struct GroupState {
    offset: u64,
    block: Option<(u64, Vec<u8>)>,
    referenced: bool,
}

/// The masters we ask the decoder to assemble whole: small, and wanted as a unit.
const CAPTURED: [u32; 4] = [ids::EBML, ids::INFO, ids::TRACKS, ids::TAGS];

/// A sans-I/O MKV reader: [`push`](Self::push) bytes as they arrive, pull events with
/// [`next_event`](Self::next_event) until it returns `Ok(None)` (it needs more bytes), and at the
/// end of the input drain it with [`finish`](Self::finish).
///
/// Errors are final: once an error is returned, every later call returns it again.
pub struct MkvReader {
    decoder: TagDecoder<MatroskaSpec>,
    /// Unconsumed input; its first byte is at `decoder.position()`.
    buf: BytesMut,
    limits: ReaderLimits,
    /// Events ready to hand out, each with the input position just past what produced it.
    events: VecDeque<(MkvEvent, u64)>,
    position: u64,
    doc: DocState,
    /// IDs of the open masters the decoder streams (Segment, Cluster, BlockGroup, Cues, ...).
    open: Vec<u32>,
    capture: Option<Capture>,
    /// The size of the master header last seen at the front of the buffer: (offset, size).
    /// `TagDecoder` does not report sizes, and SegmentStart carries it.
    front_master: Option<(u64, Option<u64>)>,
    cluster: Option<ClusterState>,
    group: Option<GroupState>,
    /// `finish` was called: no more input will come.
    ended: bool,
    /// `decode_eof` has closed everything.
    drained: bool,
    failed: Option<MkvError>,
}

impl std::fmt::Debug for MkvReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MkvReader")
            .field("position", &self.position)
            .field("buffered", &self.buf.len())
            .field("limits", &self.limits)
            .field("doc", &self.doc)
            .field("open", &self.open)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl Default for MkvReader {
    fn default() -> Self {
        Self::new()
    }
}

impl MkvReader {
    /// A reader with the default [`ReaderLimits`].
    pub fn new() -> Self {
        Self::with_limits(ReaderLimits::default())
    }

    pub fn with_limits(limits: ReaderLimits) -> Self {
        let captured: Vec<MatroskaSpec> = CAPTURED
            .iter()
            .filter_map(|&id| MatroskaSpec::get_master_tag(u64::from(id), Master::Start))
            .collect();
        let mut decoder = TagDecoder::new(&captured);
        decoder.allow_errors(&[AllowableErrors::InvalidTagIds]);
        // Our own header checks bound what gets buffered; the decoder's fixed 4 GB cap would
        // only reject legitimately large known-size Segments of seekable files.
        decoder.set_max_allowable_tag_size(None);
        MkvReader {
            decoder,
            buf: BytesMut::new(),
            limits,
            events: VecDeque::new(),
            position: 0,
            doc: DocState::ExpectHeader,
            open: Vec::new(),
            capture: None,
            front_master: None,
            cluster: None,
            group: None,
            ended: false,
            drained: false,
            failed: None,
        }
    }

    pub fn limits(&self) -> ReaderLimits {
        self.limits
    }

    /// Appends input. Cheap; parsing happens in [`next_event`](Self::next_event).
    pub fn push(&mut self, data: &[u8]) {
        if data.is_empty() || self.failed.is_some() {
            return;
        }
        if self.ended {
            let at = self.decoder.position() as u64 + self.buf.len() as u64;
            self.failed = Some(MkvError::new(
                MkvErrorKind::Invalid,
                at,
                "",
                "bytes pushed after finish() (the reader was told the input had ended)",
            ));
            return;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next event, or `Ok(None)` when more bytes are needed.
    pub fn next_event(&mut self) -> Result<Option<MkvEvent>, MkvError> {
        let eof = self.ended;
        self.pull(eof)
    }

    /// Call after the last [`push`](Self::push), repeatedly until `Ok(None)`: returns the
    /// remaining events, closing an open unknown-size Cluster and Segment with
    /// [`MkvEvent::ClusterEnd`] and [`MkvEvent::SegmentEnd`]. Input that ends inside an element
    /// is a [`MkvErrorKind::Truncated`] error.
    pub fn finish(&mut self) -> Result<Option<MkvEvent>, MkvError> {
        self.ended = true;
        self.pull(true)
    }

    /// Bytes of input fully consumed by the events returned so far (skipped elements included).
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Bytes pushed but not yet consumed.
    pub fn buffered_len(&self) -> usize {
        self.buf.len()
    }

    fn pull(&mut self, eof: bool) -> Result<Option<MkvEvent>, MkvError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let result = self.pull_inner(eof);
        if let Err(e) = &result {
            self.failed = Some(e.clone());
        }
        result
    }

    fn pull_inner(&mut self, eof: bool) -> Result<Option<MkvEvent>, MkvError> {
        loop {
            if let Some((event, position)) = self.events.pop_front() {
                self.position = position;
                return Ok(Some(event));
            }
            if self.drained {
                return Ok(None);
            }
            self.check_front()?;
            let decoded = if eof {
                self.decoder.decode_eof(&mut self.buf)
            } else {
                self.decoder.decode(&mut self.buf)
            };
            match decoded {
                Ok(Some(tag)) => self.handle(tag)?,
                Ok(None) if eof => {
                    self.drained = true;
                    self.position = self.decoder.position() as u64;
                }
                Ok(None) => {
                    // The decoder may have consumed elements inside a captured master before
                    // stopping at an incomplete one: check the new front before waiting.
                    self.check_front()?;
                    if self.buf.len() as u64 > self.limits.max_buffered_bytes {
                        return Err(self.error(
                            MkvErrorKind::TooLarge,
                            self.decoder.position() as u64,
                            None,
                            format!(
                                "{} buffered without a complete element exceeds the {} limit",
                                human_bytes(self.buf.len() as u64),
                                human_bytes(self.limits.max_buffered_bytes)
                            ),
                        ));
                    }
                    return Ok(None);
                }
                Err(e) => return Err(self.decoder_error(e)),
            }
        }
    }

    /// Checks the element header at the front of the buffer before the decoder sees it.
    fn check_front(&mut self) -> Result<(), MkvError> {
        let pos = self.decoder.position() as u64;
        let header = match peek_header(&self.buf) {
            Ok(Some(h)) => h,
            Ok(None) => {
                // Not a whole header yet; at a document start, garbage is still recognizable.
                if self.doc == DocState::ExpectHeader && !self.buf.is_empty() {
                    let magic = ids::EBML.to_be_bytes();
                    let n = self.buf.len().min(4);
                    if self.buf[..n] != magic[..n] {
                        return Err(self.not_a_header(pos, None));
                    }
                }
                return Ok(());
            }
            Err(message) => return Err(self.error(MkvErrorKind::Invalid, pos, None, message)),
        };
        let id = header.id;
        let allowed = match self.doc {
            DocState::ExpectHeader => id == ids::EBML,
            DocState::ExpectSegment | DocState::AfterSegment => {
                matches!(id, ids::EBML | ids::SEGMENT | ids::VOID)
            }
            DocState::InSegment => true,
        };
        if !allowed {
            return Err(if self.doc == DocState::ExpectHeader {
                self.not_a_header(pos, Some(id))
            } else {
                let what = if self.doc == DocState::ExpectSegment {
                    "after the EBML header"
                } else {
                    "after the Segment"
                };
                self.error(
                    MkvErrorKind::Invalid,
                    pos,
                    Some(id),
                    format!("expected a Segment {what}, found {}", element_name(id)),
                )
            });
        }

        let data_type = MatroskaSpec::get_tag_data_type(u64::from(id));
        let is_master = data_type == Some(TagDataType::Master);
        let max = self.limits.max_element_bytes;
        if is_master {
            self.front_master = Some((pos, header.size));
        } else {
            match header.size {
                None => {
                    return Err(self.error(
                        MkvErrorKind::Invalid,
                        pos,
                        Some(id),
                        format!(
                            "{} has an unknown size; only master elements may",
                            element_name(id)
                        ),
                    ));
                }
                Some(size) if size > max => {
                    return Err(self.error(
                        MkvErrorKind::TooLarge,
                        pos,
                        Some(id),
                        format!(
                            "{} of {} exceeds the {} element limit",
                            element_name(id),
                            human_bytes(size),
                            human_bytes(max)
                        ),
                    ));
                }
                Some(_) => {}
            }
        }

        // Masters read whole: their total size is bounded too.
        if let Some(c) = self.capture {
            let closed = match c.end {
                Some(end) => pos >= end,
                // An unknown-size captured master ends at the next top- or level-1 element.
                None => pos > c.start && ends_unknown_level1(id),
            };
            if closed {
                self.capture = None;
            }
        }
        if self.capture.is_none() && CAPTURED.contains(&id) {
            let end = header
                .size
                .map(|s| pos.saturating_add(header.len).saturating_add(s));
            self.capture = Some(Capture {
                id,
                start: pos,
                end,
            });
        }
        if let Some(c) = self.capture {
            let reach = match c.end {
                Some(end) => end,
                None => pos
                    .saturating_add(header.len)
                    .saturating_add(header.size.unwrap_or(0)),
            };
            let span = reach - c.start;
            if span > max {
                let name = element_name(c.id);
                return Err(self.error(
                    MkvErrorKind::TooLarge,
                    c.start,
                    None,
                    match c.end {
                        Some(_) => format!(
                            "{name} of {} exceeds the {} element limit",
                            human_bytes(span),
                            human_bytes(max)
                        ),
                        None => format!(
                            "{name} of unknown size grows past the {} element limit",
                            human_bytes(max)
                        ),
                    },
                ));
            }
        }
        Ok(())
    }

    fn not_a_header(&self, pos: u64, found: Option<u32>) -> MkvError {
        let shown: Vec<String> = self
            .buf
            .iter()
            .take(8)
            .map(|b| format!("{b:02X}"))
            .collect();
        let what = if pos == 0 { "the input" } else { "a document" };
        let found = match found {
            Some(id) => format!("{} ({})", element_name(id), shown.join(" ")),
            None => format!("bytes {}", shown.join(" ")),
        };
        self.error(
            MkvErrorKind::Invalid,
            pos,
            None,
            format!("{what} must start with an EBML header (1A 45 DF A3), found {found}"),
        )
    }

    fn handle(&mut self, positioned: PositionedTag<MatroskaSpec>) -> Result<(), MkvError> {
        let offset = positioned.offset as u64;
        let end = self.decoder.position() as u64;
        let tag = positioned.tag;
        let id = tag.get_id() as u32;
        match tag {
            MatroskaSpec::Ebml(Master::Full(children)) => {
                self.capture = None;
                let header = self.ebml_header(offset, &children)?;
                self.doc = DocState::ExpectSegment;
                self.events.push_back((MkvEvent::Header(header), end));
            }
            MatroskaSpec::Segment(Master::Start) => {
                let size = match self.front_master {
                    Some((at, size)) if at == offset => size,
                    _ => None,
                };
                self.open.push(id);
                self.doc = DocState::InSegment;
                self.events
                    .push_back((MkvEvent::SegmentStart { size }, end));
            }
            MatroskaSpec::Segment(Master::End) => {
                self.open.pop();
                self.doc = DocState::AfterSegment;
                self.events.push_back((MkvEvent::SegmentEnd, end));
            }
            MatroskaSpec::Info(Master::Full(children)) => {
                self.capture = None;
                let info = self.segment_info(offset, &children)?;
                self.events.push_back((MkvEvent::Info(info), end));
            }
            MatroskaSpec::Tracks(Master::Full(children)) => {
                self.capture = None;
                let mut tracks = Vec::new();
                for child in &children {
                    if let Some(entry) = full_children(child, ids::TRACK_ENTRY) {
                        tracks.push(self.track(offset, entry)?);
                    }
                }
                self.events.push_back((MkvEvent::Tracks(tracks), end));
            }
            MatroskaSpec::Tags(Master::Full(children)) => {
                self.capture = None;
                let mut tags = Vec::new();
                for child in &children {
                    if let Some(tag) = full_children(child, ids::TAG) {
                        for simple in tag {
                            if let Some(simple) = full_children(simple, ids::SIMPLE_TAG) {
                                collect_simple_tag(simple, &mut tags);
                            }
                        }
                    }
                }
                self.events.push_back((MkvEvent::Tags(tags), end));
            }
            MatroskaSpec::Cluster(Master::Start) => {
                self.open.push(id);
                self.cluster = Some(ClusterState {
                    offset,
                    timecode: None,
                });
            }
            MatroskaSpec::Cluster(Master::End) => {
                self.open.pop();
                let cluster = self.cluster.take();
                if let Some(ClusterState {
                    offset,
                    timecode: None,
                }) = cluster
                {
                    return Err(self.error(
                        MkvErrorKind::Invalid,
                        offset,
                        Some(ids::CLUSTER),
                        "Cluster has no Timecode",
                    ));
                }
                self.events.push_back((MkvEvent::ClusterEnd, end));
            }
            MatroskaSpec::Timestamp(timecode) => {
                let Some(cluster) = self.cluster.as_mut() else {
                    return Ok(()); // The decoder only lets it appear inside a Cluster.
                };
                if cluster.timecode.is_some() {
                    return Err(self.error(
                        MkvErrorKind::Invalid,
                        offset,
                        Some(id),
                        "second Timecode in one Cluster",
                    ));
                }
                cluster.timecode = Some(timecode);
                self.events
                    .push_back((MkvEvent::ClusterStart { timecode }, end));
            }
            MatroskaSpec::SimpleBlock(data) => {
                self.check_block_allowed(offset, id)?;
                self.push_frames(offset, end, id, data, None)?;
            }
            MatroskaSpec::BlockGroup(Master::Start) => {
                self.open.push(id);
                self.group = Some(GroupState {
                    offset,
                    block: None,
                    referenced: false,
                });
            }
            MatroskaSpec::Block(data) => {
                self.check_block_allowed(offset, id)?;
                if let Some(group) = self.group.as_mut() {
                    group.block = Some((offset, data));
                }
            }
            MatroskaSpec::ReferenceBlock(_) => {
                if let Some(group) = self.group.as_mut() {
                    group.referenced = true;
                }
            }
            MatroskaSpec::BlockGroup(Master::End) => {
                self.open.pop();
                let Some(group) = self.group.take() else {
                    return Ok(());
                };
                let Some((block_offset, data)) = group.block else {
                    return Err(self.error(
                        MkvErrorKind::Invalid,
                        group.offset,
                        Some(id),
                        "BlockGroup has no Block",
                    ));
                };
                self.push_frames(block_offset, end, ids::BLOCK, data, Some(!group.referenced))?;
            }
            other => match other.as_master() {
                Some(Master::Start) => self.open.push(id),
                Some(Master::End) => {
                    self.open.pop();
                }
                // Everything else (SeekHead, Cues, Void, Position, unknown IDs, ...) is skipped.
                _ => {}
            },
        }
        Ok(())
    }

    fn check_block_allowed(&self, offset: u64, id: u32) -> Result<(), MkvError> {
        match &self.cluster {
            Some(ClusterState {
                timecode: Some(_), ..
            }) => Ok(()),
            _ => Err(self.error(
                MkvErrorKind::Invalid,
                offset,
                Some(id),
                format!("{} before the Cluster's Timecode", element_name(id)),
            )),
        }
    }

    /// Queues the frames of a SimpleBlock (`key` = None: from its flags) or a Block.
    fn push_frames(
        &mut self,
        offset: u64,
        end: u64,
        id: u32,
        data: Vec<u8>,
        key: Option<bool>,
    ) -> Result<(), MkvError> {
        let data = Bytes::from(data);
        let bad = |this: &Self, message: String| {
            this.error(MkvErrorKind::Invalid, offset, Some(id), message)
        };
        let header = block::parse_header(&data).map_err(|m| bad(self, m))?;
        let frames = block::frames(&data, &header).map_err(|m| bad(self, m))?;
        let simple = key.is_none();
        let template = Frame {
            track: header.track,
            timecode: header.timecode,
            key: key.unwrap_or(header.flags & FLAG_KEY != 0),
            invisible: header.flags & FLAG_INVISIBLE != 0,
            discardable: simple && header.flags & FLAG_DISCARDABLE != 0,
            data: Bytes::new(),
        };
        match frames {
            Frames::One(data) => {
                self.events
                    .push_back((MkvEvent::Frame(Frame { data, ..template }), end));
            }
            Frames::Laced(list) => {
                let last = list.len().saturating_sub(1);
                for (i, data) in list.into_iter().enumerate() {
                    // Until its last frame is out, the block is not fully consumed.
                    let position = if i == last { end } else { offset };
                    let frame = Frame {
                        data,
                        ..template.clone()
                    };
                    self.events.push_back((MkvEvent::Frame(frame), position));
                }
            }
        }
        Ok(())
    }

    fn ebml_header(&self, offset: u64, children: &[MatroskaSpec]) -> Result<EbmlHeader, MkvError> {
        let mut header = EbmlHeader {
            doc_type: "matroska".to_owned(),
            doc_type_version: 1,
            doc_type_read_version: 1,
        };
        for child in children {
            let id = child.get_id() as u32;
            let uint = child.as_unsigned_int().copied();
            match (id, uint) {
                (ids::DOC_TYPE, _) => {
                    header.doc_type = clean_string(child.as_utf8().unwrap_or_default());
                }
                (ids::DOC_TYPE_VERSION, Some(v)) => header.doc_type_version = v,
                (ids::DOC_TYPE_READ_VERSION, Some(v)) => header.doc_type_read_version = v,
                (ids::EBML_READ_VERSION, Some(v)) if v > 1 => {
                    return Err(self.error(
                        MkvErrorKind::Invalid,
                        offset,
                        Some(ids::EBML),
                        format!("EBMLReadVersion {v} is not supported (only 1)"),
                    ));
                }
                (ids::EBML_MAX_ID_LENGTH, Some(v)) if v > 4 => {
                    return Err(self.error(
                        MkvErrorKind::Invalid,
                        offset,
                        Some(ids::EBML),
                        format!("EBMLMaxIDLength {v} is not supported (at most 4)"),
                    ));
                }
                (ids::EBML_MAX_SIZE_LENGTH, Some(v)) if v > 8 => {
                    return Err(self.error(
                        MkvErrorKind::Invalid,
                        offset,
                        Some(ids::EBML),
                        format!("EBMLMaxSizeLength {v} is not supported (at most 8)"),
                    ));
                }
                _ => {}
            }
        }
        if header.doc_type != "matroska" && header.doc_type != "webm" {
            return Err(self.error(
                MkvErrorKind::Invalid,
                offset,
                Some(ids::EBML),
                format!(
                    "DocType {:?} is neither \"matroska\" nor \"webm\"",
                    header.doc_type
                ),
            ));
        }
        Ok(header)
    }

    fn segment_info(
        &self,
        offset: u64,
        children: &[MatroskaSpec],
    ) -> Result<SegmentInfo, MkvError> {
        let mut info = SegmentInfo::default();
        for child in children {
            match child.get_id() as u32 {
                ids::TIMECODE_SCALE => {
                    let scale = child.as_unsigned_int().copied().unwrap_or_default();
                    if scale == 0 {
                        return Err(self.error(
                            MkvErrorKind::Invalid,
                            offset,
                            Some(ids::INFO),
                            "TimecodeScale is 0",
                        ));
                    }
                    info.timecode_scale = scale;
                }
                ids::SEGMENT_UID => {
                    info.segment_uid = child.as_binary().map(Bytes::copy_from_slice)
                }
                ids::TITLE => info.title = child.as_utf8().map(clean_string),
                ids::MUXING_APP => info.muxing_app = child.as_utf8().map(clean_string),
                ids::WRITING_APP => info.writing_app = child.as_utf8().map(clean_string),
                ids::DURATION => info.duration = child.as_float().copied(),
                _ => {}
            }
        }
        Ok(info)
    }

    fn track(&self, offset: u64, children: &[MatroskaSpec]) -> Result<Track, MkvError> {
        let mut track = Track {
            number: 0,
            uid: None,
            track_type: 0,
            codec_id: String::new(),
            codec_private: None,
            name: None,
            default_duration: None,
            video: None,
            audio: None,
        };
        for child in children {
            let uint = child.as_unsigned_int().copied();
            match child.get_id() as u32 {
                ids::TRACK_NUMBER => track.number = uint.unwrap_or_default(),
                ids::TRACK_UID => track.uid = uint,
                ids::TRACK_TYPE => track.track_type = uint.unwrap_or_default(),
                ids::CODEC_ID => track.codec_id = clean_string(child.as_utf8().unwrap_or_default()),
                ids::CODEC_PRIVATE => {
                    track.codec_private = child.as_binary().map(Bytes::copy_from_slice);
                }
                ids::NAME => track.name = child.as_utf8().map(clean_string),
                ids::DEFAULT_DURATION => track.default_duration = uint,
                ids::VIDEO => {
                    let mut video = VideoSettings {
                        pixel_width: 0,
                        pixel_height: 0,
                    };
                    for v in full_children(child, ids::VIDEO).unwrap_or_default() {
                        let value = v.as_unsigned_int().copied().unwrap_or_default();
                        match v.get_id() as u32 {
                            ids::PIXEL_WIDTH => video.pixel_width = value,
                            ids::PIXEL_HEIGHT => video.pixel_height = value,
                            _ => {}
                        }
                    }
                    track.video = Some(video);
                }
                ids::AUDIO => {
                    let mut audio = AudioSettings {
                        sampling_frequency: 8000.0,
                        channels: 1,
                        bit_depth: None,
                    };
                    for a in full_children(child, ids::AUDIO).unwrap_or_default() {
                        match a.get_id() as u32 {
                            ids::SAMPLING_FREQUENCY => {
                                audio.sampling_frequency = a.as_float().copied().unwrap_or(8000.0);
                            }
                            ids::CHANNELS => {
                                audio.channels = a.as_unsigned_int().copied().unwrap_or(1)
                            }
                            ids::BIT_DEPTH => audio.bit_depth = a.as_unsigned_int().copied(),
                            _ => {}
                        }
                    }
                    track.audio = Some(audio);
                }
                _ => {}
            }
        }
        if track.number == 0 {
            return Err(self.error(
                MkvErrorKind::Invalid,
                offset,
                Some(ids::TRACK_ENTRY),
                "TrackEntry has no TrackNumber (or TrackNumber 0)",
            ));
        }
        Ok(track)
    }

    fn decoder_error(&self, e: TagIteratorError) -> MkvError {
        let pos = self.decoder.position() as u64;
        match e {
            TagIteratorError::CorruptedFileData(c) => match c {
                CorruptedFileError::InvalidTagId { position, tag_id } => self.error(
                    MkvErrorKind::Invalid,
                    position as u64,
                    None,
                    format!("unknown element ID 0x{tag_id:X}"),
                ),
                CorruptedFileError::InvalidTagData { position, tag_id } => {
                    let id = tag_id as u32;
                    self.error(
                        MkvErrorKind::Invalid,
                        position as u64,
                        Some(id),
                        format!("{} has an invalid size", element_name(id)),
                    )
                }
                CorruptedFileError::HierarchyError {
                    found_tag_id,
                    current_parent_id,
                } => {
                    let id = found_tag_id as u32;
                    let parent = match current_parent_id {
                        Some(p) => element_name(p as u32),
                        None => "the top level".to_owned(),
                    };
                    self.error(
                        MkvErrorKind::Invalid,
                        pos,
                        Some(id),
                        format!("{} is not allowed in {parent}", element_name(id)),
                    )
                }
                CorruptedFileError::OversizedChildElement {
                    position,
                    tag_id,
                    size,
                } => {
                    let id = tag_id as u32;
                    self.error(
                        MkvErrorKind::Invalid,
                        position as u64,
                        Some(id),
                        format!(
                            "{} of {} runs past the end of its parent",
                            element_name(id),
                            human_bytes(size as u64)
                        ),
                    )
                }
                CorruptedFileError::InvalidTagSize {
                    position,
                    tag_id,
                    size,
                } => {
                    let id = tag_id as u32;
                    self.error(
                        MkvErrorKind::TooLarge,
                        position as u64,
                        Some(id),
                        format!(
                            "{} of {} is too large",
                            element_name(id),
                            human_bytes(size as u64)
                        ),
                    )
                }
            },
            TagIteratorError::UnexpectedEOF {
                tag_start,
                tag_id,
                tag_size,
                partial_data,
            } => {
                let partial_data_present = partial_data.is_some();
                let id = tag_id.map(|id| id as u32);
                let name = id.map_or_else(|| "an element header".to_owned(), element_name);
                let message = match tag_size {
                    Some(size) => format!(
                        "the input ends inside {name}, which declares {} ({} present)",
                        human_bytes(size as u64),
                        human_bytes(partial_data.map_or(0, |d| d.len() as u64)),
                    ),
                    None => format!("the input ends inside {name}"),
                };
                // Without partial data the decoder is naming an unfinished known-size master
                // (already on the open path); otherwise the partial element at the end.
                let element = if partial_data_present { id } else { None };
                self.error(MkvErrorKind::Truncated, tag_start as u64, element, message)
            }
            TagIteratorError::CorruptedTagData { tag_id, problem } => {
                let id = tag_id as u32;
                let why = match problem {
                    ToolError::FromUtf8Error(..) => "is not valid UTF-8".to_owned(),
                    ToolError::ReadF64Mismatch(data) => {
                        format!("is a float of {} bytes (must be 4 or 8)", data.len())
                    }
                    ToolError::ReadU64Overflow(_) | ToolError::ReadI64Overflow(_) => {
                        "is an integer longer than 8 bytes".to_owned()
                    }
                    other => format!("cannot be read: {other}"),
                };
                self.error(
                    MkvErrorKind::Invalid,
                    pos,
                    Some(id),
                    format!("{} {why}", element_name(id)),
                )
            }
            TagIteratorError::ReadError { source } => self.error(
                MkvErrorKind::Truncated,
                pos,
                None,
                format!("read error: {source}"),
            ),
        }
    }

    /// An error at `offset`, with the path of open masters (plus `element`, when given).
    fn error(
        &self,
        kind: MkvErrorKind,
        offset: u64,
        element: Option<u32>,
        message: impl Into<String>,
    ) -> MkvError {
        let mut parts: Vec<String> = self.open.iter().map(|&id| element_name(id)).collect();
        if let Some(c) = self.capture
            && element != Some(c.id)
        {
            parts.push(element_name(c.id));
        }
        if let Some(id) = element {
            parts.push(element_name(id));
        }
        MkvError::new(kind, offset, parts.join("/"), message)
    }
}

/// An element header read ahead of the decoder.
#[derive(Debug, Clone, Copy)]
struct PeekedHeader {
    id: u32,
    /// `None` for the reserved "unknown size" value.
    size: Option<u64>,
    /// ID plus size bytes.
    len: u64,
}

/// Reads the element header at the front of `buf`: `Ok(None)` if it is not complete yet.
fn peek_header(buf: &[u8]) -> Result<Option<PeekedHeader>, String> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    // Matroska limits IDs to 4 bytes (EBMLMaxIDLength); the length is the leading zeros + 1.
    if first < 0x10 {
        return Err(format!(
            "0x{first:02X} cannot start an element ID (IDs are 1 to 4 bytes)"
        ));
    }
    let id_len = first.leading_zeros() as usize + 1;
    if buf.len() < id_len {
        return Ok(None);
    }
    let id = buf[..id_len]
        .iter()
        .fold(0u32, |v, &b| (v << 8) | u32::from(b));
    let (size, size_len) = match block::read_vint(&buf[id_len..]) {
        Ok(Some(v)) => v,
        Ok(None) => return Ok(None),
        Err(_) => {
            return Err(format!(
                "{} has an invalid size field (0x00 starts no size)",
                element_name(id)
            ));
        }
    };
    // All value bits set means "unknown size".
    let unknown = size == (1u64 << (7 * size_len)) - 1;
    Ok(Some(PeekedHeader {
        id,
        size: if unknown { None } else { Some(size) },
        len: (id_len + size_len) as u64,
    }))
}

/// Whether an element with this ID closes an unknown-size level-1 master (a sibling or parent:
/// a known element at the top level or directly under Segment).
fn ends_unknown_level1(id: u32) -> bool {
    let id = u64::from(id);
    MatroskaSpec::get_tag_data_type(id).is_some()
        && MatroskaSpec::get_path_by_id(id)
            .iter()
            .all(|p| matches!(p, PathPart::Id(_)))
        && MatroskaSpec::get_path_by_id(id).len() <= 1
}

/// The children of a `Master::Full` element with this ID.
fn full_children(tag: &MatroskaSpec, id: u32) -> Option<&[MatroskaSpec]> {
    if tag.get_id() != u64::from(id) {
        return None;
    }
    match tag.as_master() {
        Some(Master::Full(children)) => Some(children),
        _ => None,
    }
}

/// Appends a SimpleTag, then the SimpleTags nested in it, in document order.
fn collect_simple_tag(children: &[MatroskaSpec], out: &mut Vec<SimpleTag>) {
    let mut name = String::new();
    let mut value = None;
    for child in children {
        match child.get_id() as u32 {
            ids::TAG_NAME => name = clean_string(child.as_utf8().unwrap_or_default()),
            ids::TAG_STRING => {
                value = Some(TagValue::String(clean_string(
                    child.as_utf8().unwrap_or_default(),
                )));
            }
            ids::TAG_BINARY => {
                value = child
                    .as_binary()
                    .map(|b| TagValue::Binary(Bytes::copy_from_slice(b)));
            }
            _ => {}
        }
    }
    out.push(SimpleTag {
        name,
        value: value.unwrap_or(TagValue::String(String::new())),
    });
    for child in children {
        if let Some(nested) = full_children(child, ids::SIMPLE_TAG) {
            collect_simple_tag(nested, out);
        }
    }
}

/// EBML strings may be padded with zero bytes (the KVS producer writes `matroska\0`).
fn clean_string(s: &str) -> String {
    s.trim_end_matches('\0').to_owned()
}

/// The Matroska name of an element, for messages (`SimpleBlock`, `Cluster`, `element 0x5A5A`).
pub(crate) fn element_name(id: u32) -> String {
    let id64 = u64::from(id);
    let tag = match MatroskaSpec::get_tag_data_type(id64) {
        Some(TagDataType::Master) => MatroskaSpec::get_master_tag(id64, Master::Start),
        Some(TagDataType::UnsignedInt) => MatroskaSpec::get_unsigned_int_tag(id64, 0),
        Some(TagDataType::Integer) => MatroskaSpec::get_signed_int_tag(id64, 0),
        Some(TagDataType::Utf8) => MatroskaSpec::get_utf8_tag(id64, String::new()),
        Some(TagDataType::Binary) => MatroskaSpec::get_binary_tag(id64, &[]),
        Some(TagDataType::Float) => MatroskaSpec::get_float_tag(id64, 0.0),
        None => None,
    };
    let Some(tag) = tag else {
        return format!("element 0x{id:X}");
    };
    let debug = format!("{tag:?}");
    let name = debug.split('(').next().unwrap_or(&debug);
    // KVS documents use the Matroska v2 names.
    match name {
        "Timestamp" => "Timecode".to_owned(),
        "TimestampScale" => "TimecodeScale".to_owned(),
        "Ebml" => "EBML".to_owned(),
        other => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(element_name(ids::SIMPLE_BLOCK), "SimpleBlock");
        assert_eq!(element_name(ids::CLUSTER), "Cluster");
        assert_eq!(element_name(ids::TIMECODE), "Timecode");
        assert_eq!(element_name(ids::EBML), "EBML");
        assert_eq!(element_name(0x5A5A), "element 0x5A5A");
    }

    #[test]
    fn peek() {
        let h = peek_header(&[
            0x1F, 0x43, 0xB6, 0x75, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        ])
        .expect("valid")
        .expect("complete");
        assert_eq!((h.id, h.size, h.len), (ids::CLUSTER, None, 12));
        let h = peek_header(&[0xA3, 0x42, 0x00])
            .expect("valid")
            .expect("complete");
        assert_eq!((h.id, h.size, h.len), (ids::SIMPLE_BLOCK, Some(0x200), 3));
        assert!(peek_header(&[0xA3, 0x42]).expect("valid").is_none());
        assert!(peek_header(&[0x1A, 0x45]).expect("valid").is_none());
        assert!(peek_header(&[0x00]).is_err());
        assert!(peek_header(&[0xA3, 0x00]).is_err());
    }
}
