//! SplitShard, MergeShards and UpdateShardCount. Each closes parent shards and opens children
//! in one durable step; parents stay readable until retention removes their data, and children
//! name their parents so consumers can keep per-key order.
//!
//! UpdateShardCount (UNIFORM_SCALING) reaches the even split of the target count the way Kinesis
//! does, through splits and merges, so every shard keeps at most a parent and an adjacent
//! parent: each open shard is split at every new boundary inside it (one binary split at a
//! time), then the pieces of each new range are merged pairwise. The intermediate shards are
//! created closed and never hold records.

use serde::{Deserialize, Serialize};
use timeshard_storage::{NewShard, ShardMeta};

use super::common::{
    Call, Empty, in_range, missing, require_active, shard, store_error, stream, stream_name,
    updating_for_a_while, validation,
};
use super::create_stream::MAX_SHARDS_PER_STREAM;
use super::wire;
use crate::api::{ApiError, ErrorKind, HandlerResult};
use crate::data::hashing::{even_ranges, parse_hash_key};
use crate::data::names::shard_id;

#[derive(Debug, Deserialize)]
struct SplitRequest {
    #[serde(rename = "StreamName")]
    stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    stream_arn: Option<String>,
    #[serde(rename = "ShardToSplit")]
    shard_to_split: Option<String>,
    #[serde(rename = "NewStartingHashKey")]
    new_starting_hash_key: Option<String>,
}

#[derive(Debug, Deserialize)]
struct MergeRequest {
    #[serde(rename = "StreamName")]
    stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    stream_arn: Option<String>,
    #[serde(rename = "ShardToMerge")]
    shard_to_merge: Option<String>,
    #[serde(rename = "AdjacentShardToMerge")]
    adjacent_shard_to_merge: Option<String>,
}

#[derive(Debug, Deserialize)]
struct UpdateCountRequest {
    #[serde(rename = "StreamName")]
    stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    stream_arn: Option<String>,
    #[serde(rename = "TargetShardCount")]
    target_shard_count: Option<i64>,
    #[serde(rename = "ScalingType")]
    scaling_type: Option<String>,
}

#[derive(Debug, Serialize)]
struct UpdateCountResponse {
    #[serde(rename = "StreamName")]
    stream_name: String,
    #[serde(rename = "CurrentShardCount")]
    current_shard_count: usize,
    #[serde(rename = "TargetShardCount")]
    target_shard_count: i64,
    #[serde(rename = "StreamARN")]
    stream_arn: String,
}

fn not_eligible(call: &Call<'_>, s: &ShardMeta, stream: &str) -> ApiError {
    ApiError::new(
        ErrorKind::ResourceInUse,
        format!(
            "Shard {} in stream {stream} under account {} has already been merged or split, and thus is not eligible for merging or splitting.",
            shard_id(s.index),
            call.state.kinesis().account.account_id
        ),
    )
}

fn child(start: u128, end: u128, parent: u32, adjacent: Option<u32>) -> NewShard {
    NewShard {
        hash_start: start,
        hash_end: end,
        parent: Some(parent),
        adjacent_parent: adjacent,
        closed: false,
    }
}

pub(crate) async fn split(call: &Call<'_>, body: &[u8]) -> HandlerResult {
    let req: SplitRequest = wire::decode(call.enc, body)?;
    let name = stream_name(call, req.stream_name.as_deref(), req.stream_arn.as_deref())?;
    let id = req.shard_to_split.ok_or_else(|| missing("shardToSplit"))?;
    let key_text = req
        .new_starting_hash_key
        .ok_or_else(|| missing("newStartingHashKey"))?;
    let key = parse_hash_key(&key_text).ok_or_else(|| {
        validation(
            "newStartingHashKey",
            &key_text,
            "Member must satisfy regular expression pattern: 0|([1-9]\\d{0,38})",
        )
    })?;
    let info = stream(call, &name)?;
    require_active(call, &info)?;
    let parent = shard(call, &info, &id)?;
    if !parent.is_open() {
        return Err(not_eligible(call, parent, &name));
    }
    if !(key > parent.hash_start.saturating_add(1) && key < parent.hash_end) {
        return Err(ApiError::invalid_argument(format!(
            "NewStartingHashKey {key} used in SplitShard() on shard {id} in stream {name} under account {} is not both greater than one plus the shard's StartingHashKey {} and less than the shard's EndingHashKey {}.",
            call.state.kinesis().account.account_id,
            parent.hash_start,
            parent.hash_end
        )));
    }
    let children = vec![
        child(parent.hash_start, key - 1, parent.index, None),
        child(key, parent.hash_end, parent.index, None),
    ];
    call.state
        .store()
        .reshard(&name, vec![parent.index], children)
        .await
        .map_err(|e| store_error(call, e))?;
    updating_for_a_while(call, &name).await?;
    Ok(wire::response(call.enc, &Empty {}))
}

pub(crate) async fn merge(call: &Call<'_>, body: &[u8]) -> HandlerResult {
    let req: MergeRequest = wire::decode(call.enc, body)?;
    let name = stream_name(call, req.stream_name.as_deref(), req.stream_arn.as_deref())?;
    let a_id = req.shard_to_merge.ok_or_else(|| missing("shardToMerge"))?;
    let b_id = req
        .adjacent_shard_to_merge
        .ok_or_else(|| missing("adjacentShardToMerge"))?;
    let info = stream(call, &name)?;
    require_active(call, &info)?;
    let (a, b) = (shard(call, &info, &a_id)?, shard(call, &info, &b_id)?);
    for s in [a, b] {
        if !s.is_open() {
            return Err(not_eligible(call, s, &name));
        }
    }
    let adjacent = a.hash_end.checked_add(1) == Some(b.hash_start)
        || b.hash_end.checked_add(1) == Some(a.hash_start);
    if !adjacent {
        return Err(ApiError::invalid_argument(format!(
            "Shards {a_id} and {b_id} in stream {name} under account {} are not an adjacent pair of shards eligible for merging",
            call.state.kinesis().account.account_id
        )));
    }
    let merged = child(
        a.hash_start.min(b.hash_start),
        a.hash_end.max(b.hash_end),
        a.index,
        Some(b.index),
    );
    call.state
        .store()
        .reshard(&name, vec![a.index, b.index], vec![merged])
        .await
        .map_err(|e| store_error(call, e))?;
    updating_for_a_while(call, &name).await?;
    Ok(wire::response(call.enc, &Empty {}))
}

/// What a uniform rescale closes and creates (children in index order from `first_index`).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    pub close: Vec<u32>,
    pub create: Vec<NewShard>,
}

/// Plans the splits and merges from `open` (the stream's open shards, covering the hash space)
/// to `target` evenly sized shards.
pub(crate) fn plan_uniform(open: &[ShardMeta], target: u32, first_index: u32) -> Plan {
    let mut open: Vec<&ShardMeta> = open.iter().collect();
    open.sort_by_key(|s| s.hash_start);
    let ranges = even_ranges(target);
    let boundaries: Vec<u128> = ranges.iter().skip(1).map(|r| r.0).collect();
    let mut plan = Plan {
        close: Vec::new(),
        create: Vec::new(),
    };
    let mut next = first_index;
    let mut create = |plan: &mut Plan, s: NewShard| {
        plan.create.push(s);
        next += 1;
        next - 1
    };
    // (start, end, index, is an untouched open shard)
    let mut pieces: Vec<(u128, u128, u32, bool)> = Vec::new();
    for s in open {
        let cuts: Vec<u128> = boundaries
            .iter()
            .copied()
            .filter(|b| *b > s.hash_start && *b <= s.hash_end)
            .collect();
        if cuts.is_empty() {
            pieces.push((s.hash_start, s.hash_end, s.index, true));
            continue;
        }
        plan.close.push(s.index);
        let (mut start, end, mut parent) = (s.hash_start, s.hash_end, s.index);
        for cut in cuts {
            let left = create(&mut plan, child(start, cut - 1, parent, None));
            let right = create(&mut plan, child(cut, end, parent, None));
            pieces.push((start, cut - 1, left, false));
            start = cut;
            parent = right;
        }
        pieces.push((start, end, parent, false));
    }
    // Pieces lie within exactly one target range; merge the pieces of each range in order.
    let mut finals: Vec<u32> = Vec::new();
    for (lo, hi) in ranges {
        let group: Vec<&(u128, u128, u32, bool)> =
            pieces.iter().filter(|p| p.0 >= lo && p.1 <= hi).collect();
        let Some((first, rest)) = group.split_first() else {
            continue;
        };
        if rest.is_empty() {
            finals.push(first.2);
            continue;
        }
        for p in &group {
            if p.3 {
                plan.close.push(p.2);
            }
        }
        let mut acc = (first.0, first.2);
        for p in rest {
            let merged = create(&mut plan, child(acc.0, p.1, acc.1, Some(p.2)));
            acc = (acc.0, merged);
        }
        finals.push(acc.1);
    }
    // Every created shard but the final ones is an intermediate step: born closed.
    for (i, s) in plan.create.iter_mut().enumerate() {
        s.closed = !finals.contains(&(first_index + i as u32));
    }
    plan
}

pub(crate) async fn update_count(call: &Call<'_>, body: &[u8]) -> HandlerResult {
    let req: UpdateCountRequest = wire::decode(call.enc, body)?;
    let name = stream_name(call, req.stream_name.as_deref(), req.stream_arn.as_deref())?;
    let target = in_range("targetShardCount", req.target_shard_count, 1, i64::MAX)?
        .ok_or_else(|| missing("targetShardCount"))?;
    match req.scaling_type.as_deref() {
        Some("UNIFORM_SCALING") => {}
        Some(other) => {
            return Err(validation(
                "scalingType",
                other,
                "Member must satisfy enum value set: [UNIFORM_SCALING]",
            ));
        }
        None => return Err(missing("scalingType")),
    }
    if target > MAX_SHARDS_PER_STREAM {
        return Err(ApiError::new(
            ErrorKind::LimitExceeded,
            format!(
                "This server allows at most {MAX_SHARDS_PER_STREAM} shards per stream; {target} were requested."
            ),
        ));
    }
    let info = stream(call, &name)?;
    require_active(call, &info)?;
    let open: Vec<ShardMeta> = info
        .shards
        .iter()
        .filter(|s| s.is_open())
        .cloned()
        .collect();
    let current = open.len();
    let first_index = info.shards.iter().map(|s| s.index + 1).max().unwrap_or(0);
    let plan = plan_uniform(&open, target as u32, first_index);
    if !plan.create.is_empty() {
        call.state
            .store()
            .reshard(&name, plan.close, plan.create)
            .await
            .map_err(|e| store_error(call, e))?;
        updating_for_a_while(call, &name).await?;
    }
    Ok(wire::response(
        call.enc,
        &UpdateCountResponse {
            stream_name: name.clone(),
            current_shard_count: current,
            target_shard_count: target,
            stream_arn: call.state.kinesis().account.stream_arn(&name),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use timeshard_storage::ShardUid;

    fn shards(n: u32) -> Vec<ShardMeta> {
        even_ranges(n)
            .into_iter()
            .enumerate()
            .map(|(i, (hash_start, hash_end))| ShardMeta {
                uid: ShardUid(i as u64 + 1),
                stream_id: 1,
                index: i as u32,
                hash_start,
                hash_end,
                parent: None,
                adjacent_parent: None,
                closed_at: None,
                closed_ms: None,
                trim_offset: 0,
                created_ms: 0,
            })
            .collect()
    }

    /// Applies a plan to a shard list the way the store would, and checks lineage rules.
    fn apply(mut all: Vec<ShardMeta>, plan: &Plan) -> Vec<ShardMeta> {
        let first = all.iter().map(|s| s.index + 1).max().unwrap_or(0);
        for s in all.iter_mut() {
            if plan.close.contains(&s.index) {
                s.closed_at = Some(0);
            }
        }
        for (i, c) in plan.create.iter().enumerate() {
            let index = first + i as u32;
            // Parents exist before their children, and cover the child's range together.
            let parents: Vec<&ShardMeta> = c
                .parent
                .iter()
                .chain(c.adjacent_parent.iter())
                .map(|p| all.iter().find(|s| s.index == *p).expect("parent exists"))
                .collect();
            assert!(!parents.is_empty());
            let lo = parents.iter().map(|p| p.hash_start).min().unwrap_or(0);
            let hi = parents.iter().map(|p| p.hash_end).max().unwrap_or(0);
            assert!(
                lo <= c.hash_start && c.hash_end <= hi,
                "child {index} outside its parents"
            );
            all.push(ShardMeta {
                uid: ShardUid(1000 + index as u64),
                index,
                hash_start: c.hash_start,
                hash_end: c.hash_end,
                parent: c.parent,
                adjacent_parent: c.adjacent_parent,
                closed_at: c.closed.then_some(0),
                ..all[0].clone()
            });
        }
        all
    }

    #[test]
    fn uniform_scaling_reaches_even_ranges_with_valid_lineage() {
        for (from, to) in [
            (1, 2),
            (2, 1),
            (2, 4),
            (4, 2),
            (3, 2),
            (5, 3),
            (3, 5),
            (4, 4),
            (7, 13),
            (10, 5),
        ] {
            let start = shards(from);
            let plan = plan_uniform(&start, to, from);
            let after = apply(start, &plan);
            let mut open: Vec<(u128, u128)> = after
                .iter()
                .filter(|s| s.is_open())
                .map(|s| (s.hash_start, s.hash_end))
                .collect();
            open.sort();
            assert_eq!(open, even_ranges(to), "{from} -> {to}");
            // Every closed intermediate has children; nothing is orphaned.
            for s in after.iter().filter(|s| !s.is_open() && s.index >= from) {
                assert!(
                    after
                        .iter()
                        .any(|c| c.parent == Some(s.index) || c.adjacent_parent == Some(s.index)),
                    "{from} -> {to}: {} has no child",
                    s.index
                );
            }
        }
        assert_eq!(
            plan_uniform(&shards(4), 4, 4),
            Plan {
                close: vec![],
                create: vec![]
            }
        );
    }
}
