//! The push reader: bytes in, [`MkvEvent`]s out.
//!
//! Parsing is ebml-iterable's `TagDecoder`: incremental, it keeps a partial element in our
//! buffer until the rest arrives and closes unknown-size masters at the next sibling or parent.
//! Every master is streamed (Start ... End), never assembled whole by the decoder, so each element
//! passes through here one at a time. Around the decoder this module adds what a server facing
//! the internet needs and the decoder does not do:
//!
//! - **Size bombs.** The decoder waits until a whole non-master element is buffered (its only cap
//!   is a fixed 4 GB), so an element that declares 1 TB would make it wait, and us buffer, forever. Before every decode step we
//!   read the header at the front of the buffer ourselves and reject a non-master element larger
//!   than [`ReaderLimits::max_element_bytes`] at once. The elements we assemble into one event
//!   (EBML header, Info, Tracks, Tags) count against the same limit as a whole.
//! - **Structure.** Every document must start with an EBML header for `matroska` or `webm`, so
//!   garbage is rejected at its first byte instead of being skipped as unknown elements. The
//!   element hierarchy is checked here, against the decoder's own picture of which masters are
//!   open (we replay its rules for closing them), so that a nested SimpleTag is accepted and an
//!   unknown size the decoder would mis-nest is refused. Unknown sizes are accepted for Segment,
//!   Cluster and level-1 elements.
//! - **Matroska meaning.** A Cluster is announced once its Timecode is known; blocks become
//!   [`Frame`]s (lacing undone, payloads as `Bytes` slices of the block, no second copy); a block
//!   before the Timecode is an error.
//!
//! Unknown element IDs are allowed and skipped, as ffmpeg does, because producers add their own.
//!
//! Copies: `push` copies the caller's bytes into our buffer, and the decoder copies each element's
//! payload into a `Vec` once more; a frame's `Bytes` then takes that `Vec` over without a copy.
//! Frame data is thus copied twice, which still reads large frames at several GB/s
//! (`benches/mkv.rs`).

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
    /// size of the elements read into one event (EBML header, Info, Tracks, Tags). Default
    /// 64 MiB: a KVS fragment is at most 50 MB, so no single frame can be larger.
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

/// A master the decoder has open.
#[derive(Debug, Clone, Copy)]
struct OpenMaster {
    id: u32,
    /// Offset just past the element, when its size is known.
    end: Option<u64>,
}

/// An element being read into one event.
#[derive(Debug)]
enum Assembly {
    Header(EbmlHeader),
    Info(SegmentInfo),
    /// The tracks so far, and the TrackEntry being read (with its offset).
    Tracks(Vec<Track>, Option<(u64, Track)>),
    /// The SimpleTags so far, and the indexes of the open (possibly nested) SimpleTags.
    Tags(Vec<SimpleTag>, Vec<usize>),
}

/// Deepest nesting of masters accepted. Matroska needs about 8 levels; the bound keeps the
/// per-element work (ours and the decoder's, both linear in the depth) small.
const MAX_DEPTH: usize = 32;

/// Bounds on what one Tags or Tracks element may expand to: an empty SimpleTag takes 3 bytes
/// in the input and about 60 in memory, so the byte limit alone would allow a 20x expansion.
const MAX_SIMPLE_TAGS: usize = 100_000;
const MAX_TRACK_ENTRIES: usize = 1_000;

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
    /// The masters the decoder has open, outermost first (it reports no sizes, so we keep them).
    open: Vec<OpenMaster>,
    /// The size of the master header last seen at the front of the buffer: (offset, size).
    front_master: Option<(u64, Option<u64>)>,
    /// The element being read into one event, its ID and offset.
    assembly: Option<(u32, u64, Assembly)>,
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
        let mut decoder = TagDecoder::new(&[]);
        // Unknown IDs are skipped like ffmpeg does. The hierarchy is checked in `check_front`,
        // which also knows Matroska's recursive SimpleTag.
        decoder.allow_errors(&[
            AllowableErrors::InvalidTagIds,
            AllowableErrors::HierarchyProblems,
        ]);
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
            front_master: None,
            assembly: None,
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
                    // A safety net: the element checks above already bound the buffer.
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

    /// Checks the element header at the front of the buffer before the decoder sees it. The
    /// decoder handles one element per step outside assembled masters and we assemble none, so
    /// every element header passes through here.
    fn check_front(&mut self) -> Result<(), MkvError> {
        let pos = self.decoder.position() as u64;
        // Which masters will still be open when the decoder reads the next element: it first
        // closes the known-size masters that have ended, then the unknown-size ones this
        // element ends.
        let mut depth = self
            .open
            .iter()
            .position(|m| m.end.is_some_and(|end| pos >= end))
            .unwrap_or(self.open.len());
        if depth < self.open.len() {
            // The decoder's next step only closes these (it reads no header before it has
            // handed out their ends), and closing may itself be an error that comes first.
            return Ok(());
        }
        // At a document start, garbage is recognizable from its first byte.
        if depth == 0 && self.doc_after_closing(depth) == DocState::ExpectHeader {
            let magic = ids::EBML.to_be_bytes();
            let n = self.buf.len().min(4);
            if self.buf[..n] != magic[..n] {
                return Err(self.not_a_header(pos));
            }
        }
        let header = match peek_header(&self.buf) {
            Ok(Some(h)) => h,
            Ok(None) => return Ok(()),
            Err(message) => {
                return Err(self.error_in(MkvErrorKind::Invalid, pos, depth, None, message));
            }
        };
        let id = header.id;
        let data_type = MatroskaSpec::get_tag_data_type(u64::from(id));
        let is_master = data_type == Some(TagDataType::Master);
        let known_depth = depth;
        while depth > 0 && self.open[depth - 1].end.is_none() && ends(self.open[depth - 1].id, id) {
            depth -= 1;
        }
        if data_type.is_none() && depth < known_depth {
            // The decoder takes an unknown element for a sibling of an unknown-size Segment and
            // would close the Segment; refuse that instead of misreading what follows.
            let message = format!(
                "unknown element 0x{id:X} directly in an unknown-size {} is not supported",
                element_name(self.open[depth].id)
            );
            return Err(self.error_in(MkvErrorKind::Invalid, pos, known_depth, None, message));
        }
        let parents = &self.open[..depth];
        if is_master && depth >= MAX_DEPTH {
            let message = format!("masters nested more than {MAX_DEPTH} deep");
            return Err(self.error_at_depth(MkvErrorKind::Invalid, pos, depth, id, message));
        }

        if depth == 0 {
            self.check_document_shape(pos, id, self.doc_after_closing(0))?;
        }
        if data_type.is_some() && !allowed_in(id, parents) {
            let parent = parents
                .last()
                .map_or("the top level".to_owned(), |p| element_name(p.id));
            let message = format!("{} is not allowed in {parent}", element_name(id));
            return Err(self.error_at_depth(MkvErrorKind::Invalid, pos, depth, id, message));
        }

        let max = self.limits.max_element_bytes;
        match header.size {
            None if !is_master => {
                let message = format!(
                    "{} has an unknown size; only master elements may",
                    element_name(id)
                );
                return Err(self.error_at_depth(MkvErrorKind::Invalid, pos, depth, id, message));
            }
            None if !(id == ids::SEGMENT || id == ids::CLUSTER || is_level1(id)) => {
                let message = format!(
                    "{} has an unknown size; only Segment, Cluster and level-1 elements may",
                    element_name(id)
                );
                return Err(self.error_at_depth(MkvErrorKind::Invalid, pos, depth, id, message));
            }
            Some(size) if !is_master && size > max => {
                let message = format!(
                    "{} of {} exceeds the {} element limit",
                    element_name(id),
                    human_bytes(size),
                    human_bytes(max)
                );
                return Err(self.error_at_depth(MkvErrorKind::TooLarge, pos, depth, id, message));
            }
            _ => {}
        }
        if is_master {
            self.front_master = Some((pos, header.size));
        }

        // Elements read into one event are bounded as a whole.
        let reach = pos
            .saturating_add(header.len)
            .saturating_add(header.size.unwrap_or(0));
        let assembly = match &self.assembly {
            // The element is inside the one being assembled if that one stays open.
            Some((root, start, _)) if parents.iter().any(|m| m.id == *root) => {
                Some((*root, *start))
            }
            _ if is_assembled(id) => Some((id, pos)),
            _ => None,
        };
        if let Some((root, start)) = assembly
            && reach - start > max
        {
            let name = element_name(root);
            let message = if start == pos {
                let size = human_bytes(header.size.unwrap_or(0));
                format!(
                    "{name} of {size} exceeds the {} element limit",
                    human_bytes(max)
                )
            } else {
                let unknown_size = parents.iter().any(|m| m.id == root && m.end.is_none());
                let of = if unknown_size { " of unknown size" } else { "" };
                format!(
                    "{name}{of} grows past the {} element limit",
                    human_bytes(max)
                )
            };
            let root_depth = parents.iter().position(|m| m.id == root).unwrap_or(depth);
            return Err(self.error_at_depth(
                MkvErrorKind::TooLarge,
                start,
                root_depth,
                root,
                message,
            ));
        }
        Ok(())
    }

    /// The document state once the decoder has closed the masters above `depth` (closing the
    /// EBML header or the Segment changes it).
    fn doc_after_closing(&self, depth: usize) -> DocState {
        let mut doc = self.doc;
        for m in self.open[depth..].iter().rev() {
            match m.id {
                ids::EBML => doc = DocState::ExpectSegment,
                ids::SEGMENT => doc = DocState::AfterSegment,
                _ => {}
            }
        }
        doc
    }

    /// Outside a Segment only an EBML header, a Segment or a Void may come.
    fn check_document_shape(&self, pos: u64, id: u32, doc: DocState) -> Result<(), MkvError> {
        let allowed = match doc {
            DocState::ExpectHeader => id == ids::EBML,
            DocState::ExpectSegment | DocState::AfterSegment => {
                matches!(id, ids::EBML | ids::SEGMENT | ids::VOID)
            }
            DocState::InSegment => true,
        };
        if allowed {
            return Ok(());
        }
        if doc == DocState::ExpectHeader {
            return Err(self.not_a_header(pos));
        }
        let what = if doc == DocState::ExpectSegment {
            "after the EBML header"
        } else {
            "after the Segment"
        };
        Err(self.error_at_depth(
            MkvErrorKind::Invalid,
            pos,
            0,
            id,
            format!("expected a Segment {what}, found {}", element_name(id)),
        ))
    }

    fn not_a_header(&self, pos: u64) -> MkvError {
        let shown: Vec<String> = self
            .buf
            .iter()
            .take(8)
            .map(|b| format!("{b:02X}"))
            .collect();
        let what = if pos == 0 { "the input" } else { "a document" };
        self.error(
            MkvErrorKind::Invalid,
            pos,
            None,
            format!(
                "{what} must start with an EBML header (1A 45 DF A3), found bytes {}",
                shown.join(" ")
            ),
        )
    }

    fn handle(&mut self, positioned: PositionedTag<MatroskaSpec>) -> Result<(), MkvError> {
        let offset = positioned.offset as u64;
        let end = self.decoder.position() as u64;
        let tag = positioned.tag;
        let id = tag.get_id() as u32;
        match tag.as_master() {
            Some(Master::Start) => {
                let size = match self.front_master {
                    Some((at, size)) if at == offset => size,
                    _ => None,
                };
                let end = size.map(|s| end.saturating_add(s));
                self.open.push(OpenMaster { id, end });
                return self.master_start(id, offset);
            }
            Some(Master::End) => {
                let result = self.master_end(id, end);
                self.open.pop();
                return result;
            }
            Some(Master::Full(_)) => return Ok(()), // Never requested.
            None => {}
        }
        match tag {
            MatroskaSpec::SimpleBlock(data) => {
                self.check_block_allowed(offset, id)?;
                self.push_frames(offset, end, id, data, None)?;
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
            MatroskaSpec::Timestamp(timecode) => {
                let Some(cluster) = self.cluster.as_mut() else {
                    return Ok(()); // Only allowed inside a Cluster.
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
            other => self.assembled_value(offset, id, &other)?,
        }
        Ok(())
    }

    fn master_start(&mut self, id: u32, offset: u64) -> Result<(), MkvError> {
        let end = self.decoder.position() as u64;
        match id {
            ids::EBML => {
                let header = EbmlHeader {
                    doc_type: "matroska".to_owned(),
                    doc_type_version: 1,
                    doc_type_read_version: 1,
                };
                self.assembly = Some((id, offset, Assembly::Header(header)));
            }
            ids::SEGMENT => {
                let size = match self.front_master {
                    Some((at, size)) if at == offset => size,
                    _ => None,
                };
                self.doc = DocState::InSegment;
                self.events
                    .push_back((MkvEvent::SegmentStart { size }, end));
            }
            ids::INFO => self.assembly = Some((id, offset, Assembly::Info(SegmentInfo::default()))),
            ids::TRACKS => self.assembly = Some((id, offset, Assembly::Tracks(Vec::new(), None))),
            ids::TAGS => self.assembly = Some((id, offset, Assembly::Tags(Vec::new(), Vec::new()))),
            ids::TRACK_ENTRY => {
                if let Some((_, _, Assembly::Tracks(tracks, entry))) = &mut self.assembly {
                    if tracks.len() >= MAX_TRACK_ENTRIES {
                        let message =
                            format!("Tracks holds more than {MAX_TRACK_ENTRIES} TrackEntries");
                        return Err(self.error(MkvErrorKind::TooLarge, offset, None, message));
                    }
                    *entry = Some((offset, empty_track()));
                }
            }
            ids::VIDEO | ids::AUDIO => {
                if let Some((_, _, Assembly::Tracks(_, Some((_, track))))) = &mut self.assembly {
                    if id == ids::VIDEO {
                        track.video = Some(VideoSettings {
                            pixel_width: 0,
                            pixel_height: 0,
                        });
                    } else {
                        track.audio = Some(AudioSettings {
                            sampling_frequency: 8000.0,
                            channels: 1,
                            bit_depth: None,
                        });
                    }
                }
            }
            ids::SIMPLE_TAG => {
                if let Some((_, _, Assembly::Tags(tags, open))) = &mut self.assembly {
                    if tags.len() >= MAX_SIMPLE_TAGS {
                        let message = format!("Tags holds more than {MAX_SIMPLE_TAGS} SimpleTags");
                        return Err(self.error(MkvErrorKind::TooLarge, offset, None, message));
                    }
                    // Placed now, filled in as its children arrive: nested tags follow it.
                    open.push(tags.len());
                    tags.push(SimpleTag::string("", ""));
                }
            }
            ids::CLUSTER => {
                self.cluster = Some(ClusterState {
                    offset,
                    timecode: None,
                })
            }
            ids::BLOCK_GROUP => {
                self.group = Some(GroupState {
                    offset,
                    block: None,
                    referenced: false,
                });
            }
            _ => {}
        }
        Ok(())
    }

    fn master_end(&mut self, id: u32, end: u64) -> Result<(), MkvError> {
        match id {
            ids::EBML | ids::INFO | ids::TRACKS | ids::TAGS => {
                let Some((_, offset, assembly)) = self.assembly.take() else {
                    return Ok(());
                };
                let event = match assembly {
                    Assembly::Header(header) => {
                        if header.doc_type != "matroska" && header.doc_type != "webm" {
                            return Err(self.error(
                                MkvErrorKind::Invalid,
                                offset,
                                None,
                                format!(
                                    "DocType {:?} is neither \"matroska\" nor \"webm\"",
                                    header.doc_type
                                ),
                            ));
                        }
                        self.doc = DocState::ExpectSegment;
                        MkvEvent::Header(header)
                    }
                    Assembly::Info(info) => MkvEvent::Info(info),
                    Assembly::Tracks(tracks, _) => MkvEvent::Tracks(tracks),
                    Assembly::Tags(tags, _) => MkvEvent::Tags(tags),
                };
                self.events.push_back((event, end));
            }
            ids::TRACK_ENTRY => {
                let Some((_, _, Assembly::Tracks(tracks, entry))) = &mut self.assembly else {
                    return Ok(());
                };
                if let Some((offset, track)) = entry.take() {
                    if track.number == 0 {
                        return Err(self.error(
                            MkvErrorKind::Invalid,
                            offset,
                            None,
                            "TrackEntry has no TrackNumber (or TrackNumber 0)",
                        ));
                    }
                    tracks.push(track);
                }
            }
            ids::SIMPLE_TAG => {
                if let Some((_, _, Assembly::Tags(_, open))) = &mut self.assembly {
                    open.pop();
                }
            }
            ids::SEGMENT => {
                self.doc = DocState::AfterSegment;
                self.events.push_back((MkvEvent::SegmentEnd, end));
            }
            ids::CLUSTER => {
                if let Some(ClusterState {
                    offset,
                    timecode: None,
                }) = self.cluster.take()
                {
                    return Err(self.error(
                        MkvErrorKind::Invalid,
                        offset,
                        None,
                        "Cluster has no Timecode",
                    ));
                }
                self.events.push_back((MkvEvent::ClusterEnd, end));
            }
            ids::BLOCK_GROUP => {
                let Some(group) = self.group.take() else {
                    return Ok(());
                };
                let Some((block_offset, data)) = group.block else {
                    return Err(self.error(
                        MkvErrorKind::Invalid,
                        group.offset,
                        None,
                        "BlockGroup has no Block",
                    ));
                };
                self.push_frames(block_offset, end, ids::BLOCK, data, Some(!group.referenced))?;
            }
            _ => {}
        }
        Ok(())
    }

    /// A value inside the EBML header, Info, Tracks or Tags: stored in the element being read.
    fn assembled_value(
        &mut self,
        offset: u64,
        id: u32,
        tag: &MatroskaSpec,
    ) -> Result<(), MkvError> {
        let Some((_, _, assembly)) = &mut self.assembly else {
            return Ok(());
        };
        store_value(assembly, id, tag)
            .map_err(|message| self.error(MkvErrorKind::Invalid, offset, Some(id), message))
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
        // The decoder hands us the block in its own Vec: `Bytes` takes it over without a copy,
        // and every frame is a slice of it.
        let data = Bytes::from(data);
        let in_group = key.is_some();
        let bad = |this: &Self, message: String| {
            // A Block's error path runs through its BlockGroup, which is still open.
            let element = if in_group { Some(ids::BLOCK) } else { Some(id) };
            this.error(MkvErrorKind::Invalid, offset, element, message)
        };
        let header = block::parse_header(&data).map_err(|m| bad(self, m))?;
        let frames = block::frames(&data, &header).map_err(|m| bad(self, m))?;
        let template = Frame {
            track: header.track,
            timecode: header.timecode,
            key: key.unwrap_or(header.flags & FLAG_KEY != 0),
            invisible: header.flags & FLAG_INVISIBLE != 0,
            discardable: !in_group && header.flags & FLAG_DISCARDABLE != 0,
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
        self.error_in(kind, offset, self.open.len(), element, message)
    }

    /// An error about an element read ahead, whose parents are the first `depth` open masters.
    fn error_at_depth(
        &self,
        kind: MkvErrorKind,
        offset: u64,
        depth: usize,
        element: u32,
        message: impl Into<String>,
    ) -> MkvError {
        self.error_in(kind, offset, depth, Some(element), message)
    }

    fn error_in(
        &self,
        kind: MkvErrorKind,
        offset: u64,
        depth: usize,
        element: Option<u32>,
        message: impl Into<String>,
    ) -> MkvError {
        let mut parts: Vec<String> = self
            .open
            .iter()
            .take(depth)
            .map(|m| element_name(m.id))
            .collect();
        if let Some(id) = element {
            parts.push(element_name(id));
        }
        MkvError::new(kind, offset, parts.join("/"), message)
    }
}

/// Stores a value of the EBML header, Info, Tracks or Tags in the element being read; `Err` is
/// the reason the value is refused.
fn store_value(assembly: &mut Assembly, id: u32, tag: &MatroskaSpec) -> Result<(), String> {
    let uint = tag.as_unsigned_int().copied();
    let text = || clean_string(tag.as_utf8().unwrap_or_default());
    let binary = || tag.as_binary().map(Bytes::copy_from_slice);
    let unsupported = |what: String| Err(what);
    match assembly {
        Assembly::Header(header) => match (id, uint) {
            (ids::DOC_TYPE, _) => header.doc_type = text(),
            (ids::DOC_TYPE_VERSION, Some(v)) => header.doc_type_version = v,
            (ids::DOC_TYPE_READ_VERSION, Some(v)) => header.doc_type_read_version = v,
            (ids::EBML_READ_VERSION, Some(v)) if v > 1 => {
                return unsupported(format!("EBMLReadVersion {v} is not supported (only 1)"));
            }
            (ids::EBML_MAX_ID_LENGTH, Some(v)) if v > 4 => {
                return unsupported(format!("EBMLMaxIDLength {v} is not supported (at most 4)"));
            }
            (ids::EBML_MAX_SIZE_LENGTH, Some(v)) if v > 8 => {
                return unsupported(format!(
                    "EBMLMaxSizeLength {v} is not supported (at most 8)"
                ));
            }
            _ => {}
        },
        Assembly::Info(info) => match id {
            ids::TIMECODE_SCALE => {
                let scale = uint.unwrap_or_default();
                if scale == 0 {
                    return unsupported("TimecodeScale is 0".to_owned());
                }
                info.timecode_scale = scale;
            }
            ids::SEGMENT_UID => info.segment_uid = binary(),
            ids::TITLE => info.title = Some(text()),
            ids::MUXING_APP => info.muxing_app = Some(text()),
            ids::WRITING_APP => info.writing_app = Some(text()),
            ids::DURATION => info.duration = tag.as_float().copied(),
            _ => {}
        },
        Assembly::Tracks(_, Some((_, track))) => match id {
            ids::TRACK_NUMBER => track.number = uint.unwrap_or_default(),
            ids::TRACK_UID => track.uid = uint,
            ids::TRACK_TYPE => track.track_type = uint.unwrap_or_default(),
            ids::CODEC_ID => track.codec_id = text(),
            ids::CODEC_PRIVATE => track.codec_private = binary(),
            ids::NAME => track.name = Some(text()),
            ids::DEFAULT_DURATION => track.default_duration = uint,
            ids::PIXEL_WIDTH | ids::PIXEL_HEIGHT => {
                if let Some(video) = track.video.as_mut() {
                    let v = uint.unwrap_or_default();
                    if id == ids::PIXEL_WIDTH {
                        video.pixel_width = v;
                    } else {
                        video.pixel_height = v;
                    }
                }
            }
            ids::SAMPLING_FREQUENCY | ids::CHANNELS | ids::BIT_DEPTH => {
                if let Some(audio) = track.audio.as_mut() {
                    match id {
                        ids::SAMPLING_FREQUENCY => {
                            audio.sampling_frequency = tag.as_float().copied().unwrap_or(8000.0);
                        }
                        ids::CHANNELS => audio.channels = uint.unwrap_or(1),
                        _ => audio.bit_depth = uint,
                    }
                }
            }
            _ => {}
        },
        Assembly::Tracks(_, None) => {}
        Assembly::Tags(tags, open) => {
            let Some(simple) = open.last().and_then(|&i| tags.get_mut(i)) else {
                return Ok(());
            };
            match id {
                ids::TAG_NAME => simple.name = text(),
                ids::TAG_STRING => simple.value = TagValue::String(text()),
                ids::TAG_BINARY => {
                    simple.value = TagValue::Binary(binary().unwrap_or_default());
                }
                _ => {}
            }
        }
    }
    Ok(())
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

/// Whether the decoder closes an unknown-size master `current` when element `next` comes:
/// `next` is its parent or sibling, or a top-level element (ebml-iterable's rule, which we
/// replay to know which masters will be open).
fn ends(current: u32, next: u32) -> bool {
    let current_path = MatroskaSpec::get_path_by_id(u64::from(current));
    let next64 = u64::from(next);
    let next_path = MatroskaSpec::get_path_by_id(next64);
    current_path.contains(&PathPart::Id(next64))
        || current_path == next_path
        || (MatroskaSpec::get_tag_data_type(next64).is_some() && next_path.is_empty())
}

/// Whether a known element may sit in these masters. Global elements (Void, CRC-32) may sit
/// anywhere; SimpleTag may also sit in a SimpleTag (Matroska allows nesting them, the
/// specification in webm-iterable does not).
fn allowed_in(id: u32, parents: &[OpenMaster]) -> bool {
    let path = MatroskaSpec::get_path_by_id(u64::from(id));
    if path.iter().any(|p| matches!(p, PathPart::Global(_))) {
        return true;
    }
    // The parents with nested SimpleTags counted as one, without allocating: this runs for
    // every element, every SimpleBlock included.
    let chain = parents
        .iter()
        .enumerate()
        .filter(|&(i, m)| {
            !(m.id == ids::SIMPLE_TAG && i > 0 && parents[i - 1].id == ids::SIMPLE_TAG)
        })
        .map(|(_, m)| m.id);
    let mut len = chain.clone().count();
    if id == ids::SIMPLE_TAG && parents.last().is_some_and(|m| m.id == ids::SIMPLE_TAG) {
        len -= 1;
    }
    path.len() == len
        && path
            .iter()
            .zip(chain)
            .all(|(p, m)| *p == PathPart::Id(u64::from(m)))
}

/// A child of Segment.
fn is_level1(id: u32) -> bool {
    MatroskaSpec::get_path_by_id(u64::from(id)) == [PathPart::Id(u64::from(ids::SEGMENT))]
}

/// The elements read into one event, bounded by `max_element_bytes` as a whole.
fn is_assembled(id: u32) -> bool {
    matches!(id, ids::EBML | ids::INFO | ids::TRACKS | ids::TAGS)
}

fn empty_track() -> Track {
    Track {
        number: 0,
        uid: None,
        track_type: 0,
        codec_id: String::new(),
        codec_private: None,
        name: None,
        default_duration: None,
        video: None,
        audio: None,
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
