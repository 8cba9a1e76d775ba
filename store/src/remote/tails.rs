//! Which shards of the per-step arrays an upload pass sends, and how far the uploaded ones
//! reach.
//!
//! A shard that holds only committed rows (sealed) is uploaded once. The shard still being
//! appended to (the tail) has to be sent whole each time, since an object cannot be
//! appended to: sending it at every pass would cost a 64 MiB shard filled over a hundred
//! passes fifty times its size. So a tail goes when it is small (at most [`SMALL_TAIL`]) or
//! has at least doubled since it last went, which bounds what a shard costs before it is
//! sealed by twice its size; and the root the pass uploads commits only the steps whose rows
//! every array's uploaded shards hold. The remote copy then trails the local one by at most
//! half a shard of steps, and by nothing once the run is finished.

use crate::open::OpenStore;
use crate::{ArrayName, StoreError};
use std::path::Path;

/// Tails up to this size are sent at every pass.
pub(super) const SMALL_TAIL: u64 = 64 << 10;

/// The shard geometry of the per-step arrays.
#[derive(Debug)]
pub(super) struct Lanes {
    lanes: Vec<Lane>,
}

#[derive(Debug)]
struct Lane {
    /// The shards' key prefix, `weights/c/`.
    prefix: String,
    /// Steps (rows) per shard.
    steps: u64,
    /// Dimensions after the first: shard keys end in one `/0` each.
    trailing: usize,
    /// The weights have a row more than steps (the state before the first step).
    extra_row: bool,
}

impl Lanes {
    /// The geometry of the local store at `root`, as its metadata describes it.
    pub(super) fn of(root: &Path) -> Result<Self, StoreError> {
        let open = OpenStore::open(root)?;
        let lanes = ArrayName::PER_STEP
            .iter()
            .map(|&name| {
                let files = open.shard_files(name);
                Lane {
                    prefix: format!("{}/c/", name.path()),
                    steps: files.steps(),
                    trailing: files.rank() - 1,
                    extra_row: name == ArrayName::Weights,
                }
            })
            .collect();
        Ok(Lanes { lanes })
    }

    /// The lane and shard of a per-step array's shard key (`weights/c/3/0`), if it is one.
    pub(super) fn shard_of(&self, key: &str) -> Option<(usize, u64)> {
        self.lanes.iter().enumerate().find_map(|(i, lane)| {
            let mut parts = key.strip_prefix(&lane.prefix)?.split('/');
            let shard = parts.next()?.parse().ok()?;
            let zeros = parts.by_ref().take_while(|p| *p == "0").count();
            (zeros == lane.trailing && parts.next().is_none()).then_some((i, shard))
        })
    }

    /// The key of `shard` in `lane`.
    pub(super) fn key(&self, lane: usize, shard: u64) -> String {
        let lane = &self.lanes[lane];
        format!("{}{shard}{}", lane.prefix, "/0".repeat(lane.trailing))
    }

    /// The rows of `shard` in `lane` that `steps` committed steps fill: a range within the
    /// shard, empty when the shard holds no committed row.
    pub(super) fn committed(&self, lane: usize, shard: u64, steps: usize) -> (u64, u64) {
        let lane = &self.lanes[lane];
        let rows = steps as u64 + u64::from(lane.extra_row);
        let first = shard * lane.steps;
        (first, rows.clamp(first, first + lane.steps))
    }

    /// Whether `shard` holds every row it can hold once `steps` are committed (sealed).
    pub(super) fn sealed(&self, lane: usize, shard: u64, steps: usize) -> bool {
        let (first, end) = self.committed(lane, shard, steps);
        end == first + self.lanes[lane].steps
    }

    /// The steps a lane whose shards hold rows `0..rows` covers.
    pub(super) fn steps_of(&self, lane: usize, rows: u64) -> usize {
        rows.saturating_sub(u64::from(self.lanes[lane].extra_row)) as usize
    }

    /// How many lanes there are.
    pub(super) fn len(&self) -> usize {
        self.lanes.len()
    }
}

/// Whether a pass sends a shard now: not when it holds no committed row; always once it is
/// sealed or the run is finished; for a tail, when it is small or has doubled since `sent`.
pub(super) fn worth_sending(
    lanes: &Lanes,
    (lane, shard): (usize, u64),
    size: u64,
    sent: Option<u64>,
    steps: usize,
    finished: bool,
) -> bool {
    let (first, end) = lanes.committed(lane, shard, steps);
    if first == end {
        return false;
    }
    finished
        || lanes.sealed(lane, shard, steps)
        || size <= SMALL_TAIL
        || sent.is_none_or(|before| size >= 2 * before)
}
