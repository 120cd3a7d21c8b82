//! GetMedia and GetMediaForFragmentList output: each fragment as a standalone MKV document
//! (`shared/reference/aws-protocol.md` B):
//!
//! ```text
//! EBML header
//! Segment (unknown size)
//!   Info, Tracks                     the fragment's ingest session, as the producer sent them
//!   Tags  AWS_KINESISVIDEO_FRAGMENT_NUMBER, _SERVER_TIMESTAMP, _PRODUCER_TIMESTAMP
//!   Cluster (unknown size)
//!     Timecode                       absolute producer time in the session's timecode units
//!     SimpleBlock ...                frames, as soon as they are ingested when live
//!   Tags  producer tags of the fragment
//!   Tags  AWS_KINESISVIDEO_MILLIS_BEHIND_NOW, _CONTINUATION_TOKEN   (or _ERROR_CODE, _ERROR_ID)
//! ```
//!
//! The cluster has an unknown size because a live fragment is sent before its end is known; a
//! stored one is written the same way so readers see one shape. Timestamps in tags are epoch
//! seconds with millisecond precision (`1726677687.758`), as AWS writes them. The continuation
//! token is the fragment number: resuming from it starts after that fragment.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use timeshard_parser::mkv::{self, SimpleTag, TagValue};
use timeshard_storage::{
    FollowEvent, OpenRecordView, Position, ReadLimits, Record, SequenceNumber, ShardState,
    ShardUid, Store, StoreError,
};

use super::fragment::{
    FragmentKey, Malformed, Session, StoredTag, TRAILER_MARKER, TagData, Trailer, duration_ms,
    fragment_number,
};

/// Where documents go. `Err` means the reader went away: stop.
pub trait MediaSink: Send {
    fn send(&mut self, chunk: Bytes) -> impl std::future::Future<Output = Result<(), Gone>> + Send;
}

/// The reader of a media response went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone;

/// Why a media response ended.
#[derive(Debug)]
pub enum Ended {
    /// The reader went away.
    Gone,
    /// The stream was deleted.
    StreamDeleted,
    /// A storage error, reported to the reader with error tags before ending.
    Failed(String),
}

impl From<Gone> for Ended {
    fn from(_: Gone) -> Self {
        Ended::Gone
    }
}

/// Where GetMedia starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// At this offset (or the oldest stored fragment, if it is gone).
    At(u64),
    /// The fragment being ingested now, from its start, or else the next one.
    Now,
}

/// Which tag names to write: GetMediaForFragmentList documents also carry the names its
/// documentation uses (`_SERVER_SIDE_TIMESTAMP`, ...), since which ones AWS really sends there
/// is not known and parsers look for one or the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagStyle {
    GetMedia,
    FragmentList,
}

/// Reads one video stream's fragments as MKV documents.
#[derive(Debug)]
pub struct MediaReader {
    store: Store,
    shard: ShardUid,
    stream_id: u64,
    style: TagStyle,
    sessions: HashMap<u64, Arc<Session>>,
}

impl MediaReader {
    pub fn new(store: Store, stream_id: u64, shard: ShardUid, style: TagStyle) -> MediaReader {
        MediaReader {
            store,
            shard,
            stream_id,
            style,
            sessions: HashMap::new(),
        }
    }

    async fn session(&mut self, id: u64) -> Result<Arc<Session>, Ended> {
        if let Some(s) = self.sessions.get(&id) {
            return Ok(s.clone());
        }
        let store = self.store.clone();
        let stream_id = self.stream_id;
        let blob = tokio::task::spawn_blocking(move || store.blob_blocking(stream_id, id))
            .await
            .map_err(|e| Ended::Failed(format!("session lookup task: {e}")))?
            .map_err(|e| Ended::Failed(e.to_string()))?
            .ok_or_else(|| Ended::Failed(format!("ingest session {id} is missing")))?;
        let session = Arc::new(Session::decode(&blob).map_err(|e| Ended::Failed(e.to_string()))?);
        self.sessions.insert(id, session.clone());
        Ok(session)
    }

    /// The document start of a fragment, up to and including the cluster's Timecode. The
    /// cluster's size is known (`media_len`: its blocks) for a stored fragment, as in AWS's
    /// output; players (ffmpeg among them) lose their way in concatenated documents whose
    /// clusters have unknown sizes. A live fragment's size is not known yet.
    fn head(
        &self,
        session: &Session,
        number: SequenceNumber,
        server_ts_ms: i64,
        producer_ts_ms: i64,
        key: &FragmentKey,
        media_len: Option<usize>,
    ) -> Bytes {
        let mut out = Vec::with_capacity(512 + session.header_mkv.len());
        mkv::write::ebml_header(&mut out);
        mkv::write::segment_start_unknown(&mut out);
        out.extend_from_slice(&session.header_mkv);
        let number = number.to_string();
        let server = seconds(server_ts_ms);
        let producer = seconds(producer_ts_ms);
        let mut tags = vec![
            tag("AWS_KINESISVIDEO_FRAGMENT_NUMBER", &number),
            tag("AWS_KINESISVIDEO_SERVER_TIMESTAMP", &server),
            tag("AWS_KINESISVIDEO_PRODUCER_TIMESTAMP", &producer),
        ];
        if self.style == TagStyle::FragmentList {
            tags.push(tag("AWS_KINESISVIDEO_SERVER_SIDE_TIMESTAMP", &server));
            tags.push(tag("AWS_KINESISVIDEO_PRODUCER_SIDE_TIMESTAMP", &producer));
        }
        mkv::write::tags(&mut out, &tags);
        match media_len {
            None => mkv::write::cluster_start_unknown(&mut out, key.cluster_timecode),
            Some(len) => {
                let mut start = Vec::with_capacity(16);
                mkv::write::uint_element(&mut start, mkv::ids::TIMECODE, key.cluster_timecode);
                mkv::write::uint_element(&mut start, mkv::ids::POSITION, 0);
                let size = (start.len() + len) as u64;
                mkv::write::element_header(&mut out, mkv::ids::CLUSTER, Some(size));
                out.extend_from_slice(&start);
            }
        }
        Bytes::from(out)
    }

    /// The document end: the producer's tags, then how far behind now the reader is and where
    /// to resume.
    fn tail(&self, producer_tags: &[StoredTag], millis_behind: i64, token: &str) -> Bytes {
        let mut out = Vec::with_capacity(256);
        if !producer_tags.is_empty() {
            let tags: Vec<SimpleTag> = producer_tags
                .iter()
                .map(|t| SimpleTag {
                    name: t.name.clone(),
                    value: match &t.value {
                        TagData::String(s) => TagValue::String(s.clone()),
                        TagData::Binary(b) => TagValue::Binary(b.clone()),
                    },
                })
                .collect();
            mkv::write::tags(&mut out, &tags);
        }
        mkv::write::tags(
            &mut out,
            &[
                tag(
                    "AWS_KINESISVIDEO_MILLIS_BEHIND_NOW",
                    &millis_behind.max(0).to_string(),
                ),
                tag("AWS_KINESISVIDEO_CONTINUATION_TOKEN", token),
            ],
        );
        Bytes::from(out)
    }

    /// A stored fragment as one document.
    pub async fn send_record<S: MediaSink>(
        &mut self,
        r: &Record,
        sink: &mut S,
    ) -> Result<(), Ended> {
        let key = FragmentKey::decode(&r.key).map_err(failed)?;
        let (media, trailer) = Trailer::split(&r.payload).map_err(failed)?;
        let session = self.session(key.session).await?;
        let number = fragment_number(self.shard, r.offset, &key);
        let producer_ts_ms = r.producer_ts_ms.unwrap_or(r.server_ts_ms);
        let head = self.head(
            &session,
            number,
            r.server_ts_ms,
            producer_ts_ms,
            &key,
            Some(media.len()),
        );
        let behind = self.store.now_ms() - (r.server_ts_ms + key.duration_ms as i64);
        let tail = self.tail(&trailer.tags, behind, &number.to_string());
        sink.send(head).await?;
        sink.send(media).await?;
        sink.send(tail).await?;
        Ok(())
    }

    /// A fragment still being ingested, frame by frame as it arrives. Returns whether it was
    /// committed (`false`: it was dropped, or is live only).
    async fn follow<S: MediaSink>(
        &mut self,
        view: &Arc<OpenRecordView>,
        sink: &mut S,
    ) -> Result<bool, Ended> {
        let key = FragmentKey::decode(&view.key).map_err(failed)?;
        let session = self.session(key.session).await?;
        let number = fragment_number(self.shard, view.offset, &key);
        let producer_ts_ms = view.producer_ts_ms.unwrap_or(view.server_ts_ms);
        sink.send(self.head(
            &session,
            number,
            view.server_ts_ms,
            producer_ts_ms,
            &key,
            None,
        ))
        .await?;
        let mut follower = view.follow();
        let mut trailer: Option<Trailer> = None;
        loop {
            match follower.next().await {
                FollowEvent::Chunk(chunk) => {
                    if chunk.first() == Some(&TRAILER_MARKER) {
                        trailer = Some(Trailer::split(&chunk).map_err(failed)?.1);
                    } else {
                        sink.send(chunk).await?;
                    }
                }
                end @ (FollowEvent::Committed | FollowEvent::Aborted) => {
                    let committed = end == FollowEvent::Committed;
                    return match trailer {
                        // Complete: stored (committed) or live only (dropped after its end).
                        Some(t) => {
                            let duration = duration_ms(&t.frames, session.timecode_scale) as i64;
                            let behind = self.store.now_ms() - (view.server_ts_ms + duration);
                            sink.send(self.tail(&t.tags, behind, &number.to_string()))
                                .await?;
                            Ok(committed)
                        }
                        // Dropped mid-way by an ingest error: say so, and do not hand out a
                        // token for it (its number goes to the next fragment).
                        None => {
                            sink.send(error_tags("FRAGMENT_DROPPED", 4000)).await?;
                            Ok(false)
                        }
                    };
                }
            }
        }
    }

    /// GetMedia: every fragment from `start` on, live once caught up, until the reader goes
    /// away or the stream is deleted.
    pub async fn stream<S: MediaSink>(&mut self, start: Start, sink: &mut S) -> Result<(), Ended> {
        let result = self.stream_inner(start, sink).await;
        if let Err(Ended::Failed(why)) = &result {
            tracing::error!(stream = self.stream_id, error = %why, "GetMedia failed");
            let _ = sink.send(error_tags("INTERNAL_ERROR", 5000)).await;
        }
        result
    }

    async fn stream_inner<S: MediaSink>(
        &mut self,
        start: Start,
        sink: &mut S,
    ) -> Result<(), Ended> {
        let mut rx = self.store.watch(self.shard).map_err(store_failed)?;
        let mut next: Option<u64> = match start {
            Start::At(offset) => Some(offset),
            Start::Now => None,
        };
        // The last open record followed, so an aborted one is not followed twice.
        let mut followed: Option<Arc<OpenRecordView>> = None;
        loop {
            let tail = rx.borrow_and_update().clone();
            if tail.state == ShardState::Deleted {
                return Err(Ended::StreamDeleted);
            }
            let at = *next
                .get_or_insert_with(|| tail.open.as_ref().map_or(tail.next_offset, |o| o.offset));
            if at < tail.next_offset {
                let batch = self
                    .store
                    .read(self.shard, Position::At(at), ReadLimits::new(16, 16 << 20))
                    .await
                    .map_err(store_failed)?;
                for r in &batch.records {
                    self.send_record(r, sink).await?;
                }
                next = Some(batch.next_offset.max(at));
                if batch.records.is_empty() && batch.next_offset <= at {
                    // Nothing readable here yet (retention removed it meanwhile); wait.
                    rx.changed().await.map_err(|_| Ended::StreamDeleted)?;
                }
                continue;
            }
            if let Some(open) = tail.open.as_ref().filter(|o| o.offset == at)
                && !followed.as_ref().is_some_and(|f| Arc::ptr_eq(f, open))
            {
                followed = Some(open.clone());
                if self.follow(open, sink).await? {
                    next = Some(at + 1);
                }
                continue;
            }
            rx.changed().await.map_err(|_| Ended::StreamDeleted)?;
        }
    }

    /// GetMediaForFragmentList: the fragments named, in the order named. A fragment that does
    /// not exist (never did, or retention removed it) is a document with error tags.
    pub async fn fragments<S: MediaSink>(
        &mut self,
        numbers: &[SequenceNumber],
        sink: &mut S,
    ) -> Result<(), Ended> {
        for number in numbers {
            let found = match number.record_offset() {
                Some(offset) if number.shard == self.shard => self
                    .store
                    .read(
                        self.shard,
                        Position::At(offset),
                        ReadLimits::new(1, usize::MAX),
                    )
                    .await
                    .map_err(store_failed)?
                    .records
                    .into_iter()
                    .find(|r| r.offset == offset),
                _ => None,
            };
            match found {
                Some(r) => self.send_record(&r, sink).await?,
                None => {
                    let mut out = Vec::new();
                    mkv::write::ebml_header(&mut out);
                    mkv::write::segment_start_unknown(&mut out);
                    mkv::write::tags(
                        &mut out,
                        &[
                            tag("AWS_KINESISVIDEO_FRAGMENT_NUMBER", &number.to_string()),
                            tag("AWS_KINESISVIDEO_ERROR_CODE", "FRAGMENT_NOT_FOUND"),
                            tag("AWS_KINESISVIDEO_ERROR_ID", "4000"),
                            tag(
                                "AWS_KINESISVIDEO_EXCEPTION_ERROR_CODE",
                                "ResourceNotFoundException",
                            ),
                            tag(
                                "AWS_KINESISVIDEO_EXCEPTION_MESSAGE",
                                &format!("Fragment {number} was not found."),
                            ),
                        ],
                    );
                    sink.send(Bytes::from(out)).await?;
                }
            }
        }
        Ok(())
    }
}

fn tag(name: &str, value: &str) -> SimpleTag {
    SimpleTag {
        name: name.to_string(),
        value: TagValue::String(value.to_string()),
    }
}

/// A `Tags` element saying the response failed (`AWS_KINESISVIDEO_ERROR_CODE`/`_ERROR_ID`).
fn error_tags(code: &str, id: u32) -> Bytes {
    let mut out = Vec::new();
    mkv::write::tags(
        &mut out,
        &[
            tag("AWS_KINESISVIDEO_ERROR_CODE", code),
            tag("AWS_KINESISVIDEO_ERROR_ID", &id.to_string()),
        ],
    );
    Bytes::from(out)
}

/// Epoch ms as AWS's tags write time: seconds with three decimals.
pub fn seconds(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let abs = ms.unsigned_abs();
    format!("{sign}{}.{:03}", abs / 1000, abs % 1000)
}

fn failed(e: Malformed) -> Ended {
    Ended::Failed(e.to_string())
}

fn store_failed(e: StoreError) -> Ended {
    match e {
        StoreError::ShardNotFound(_) | StoreError::StreamNotFound(_) => Ended::StreamDeleted,
        e => Ended::Failed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_times_are_seconds_with_milliseconds() {
        assert_eq!(seconds(1_726_677_687_758), "1726677687.758");
        assert_eq!(seconds(5), "0.005");
        assert_eq!(seconds(-1_500), "-1.500");
    }
}
