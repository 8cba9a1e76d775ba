//! Uploading a local store to object storage while it is written.
//!
//! A pass reads the local root metadata first (the commit: `steps` committed rows), then
//! uploads the files that changed since the last pass (the shards of the per-step arrays as
//! [`tails`](super::tails) says), and last a root that commits what the uploaded shards hold. Rows are only ever appended to the local shard files and committed
//! rows are never rewritten, so every file read after the root holds every row that root
//! commits: the remote copy is a consistent store at every moment, committed up to the last
//! root that arrived. A killed pass leaves the previous root in place; a shard object being
//! replaced is read whole, old or new, and both hold the committed rows at the same offsets.
//!
//! A new [`Mirror`] cannot know what an earlier one uploaded (or whether the remote holds
//! another run), so its first pass removes the remote root before uploading anything: until
//! that pass commits, the remote store does not open, and it never mixes two runs.

use super::Remote;
use super::tails::{Lanes, worth_sending};
use crate::atomic::TEMP_SUFFIX;
use crate::layout::root_metadata;
use crate::{RunAttributes, StoreError};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// The root metadata's key: uploaded last, it is the commit.
const ROOT: &str = "zarr.json";

/// What a file held when it was read for upload: its length and modification time.
type Stamp = (u64, SystemTime);

/// An uploaded file: what it held, and for a shard, the rows committed when it was read
/// (the end of them; the uploaded bytes hold every row before it).
#[derive(Clone, Copy, Debug)]
struct Sent {
    stamp: Stamp,
    rows: u64,
}

/// Copies a local store to a [`Remote`], pass by pass.
#[derive(Debug)]
pub struct Mirror {
    local: PathBuf,
    remote: Remote,
    /// Every uploaded file, by key.
    sent: HashMap<String, Sent>,
    /// The per-step arrays' shard geometry, read at the first pass.
    lanes: Option<Lanes>,
    /// The attributes of the last root uploaded; `None` before the first pass commits.
    committed: Option<RunAttributes>,
}

impl Mirror {
    /// Mirrors the store at `local` to `remote`; nothing is uploaded before [`Mirror::sync`].
    pub fn new(local: &Path, remote: Remote) -> Self {
        Mirror {
            local: local.to_path_buf(),
            remote,
            sent: HashMap::new(),
            lanes: None,
            committed: None,
        }
    }

    /// Where the store is uploaded to.
    pub fn remote(&self) -> &Remote {
        &self.remote
    }

    /// The attributes the remote copy last committed in this mirror's passes.
    pub fn committed(&self) -> Option<&RunAttributes> {
        self.committed.as_ref()
    }

    /// One pass: uploads what changed (the tail shards of the per-step arrays only when small
    /// or doubled since last sent, sealed ones always) and then a root that commits the steps the uploaded
    /// shards hold, and returns the attributes the remote copy now commits (its `steps`,
    /// whether the run is `finished`).
    pub fn sync(&mut self) -> Result<&RunAttributes, StoreError> {
        let root_file = self.local.join(ROOT);
        let root = std::fs::read(&root_file)
            .map_err(StoreError::io(&root_file, "cannot read the root metadata"))?;
        let attrs = crate::open::parse_root(&root_file, &root)?;
        if self.committed.is_none() && self.sent.is_empty() {
            self.remote.delete(ROOT)?;
        }
        if self.lanes.is_none() {
            self.lanes = Some(Lanes::of(&self.local)?);
        }
        let files = self.files()?;
        for (key, &stamp) in &files {
            if self.sent.get(key).is_some_and(|s| s.stamp == stamp) {
                continue;
            }
            let lanes = self.lanes.as_ref().expect("read above");
            let shard = lanes.shard_of(key);
            if let Some(at) = shard {
                let before = self.sent.get(key).map(|s| s.stamp.0);
                if !worth_sending(lanes, at, stamp.0, before, attrs.steps, attrs.finished) {
                    continue;
                }
            }
            let rows = shard.map_or(0, |(l, j)| lanes.committed(l, j, attrs.steps).1);
            let file = self.local.join(key);
            let bytes = std::fs::read(&file).map_err(StoreError::io(&file, "cannot read"))?;
            self.remote.put(key, bytes)?;
            self.sent.insert(key.clone(), Sent { stamp, rows });
        }
        let reach = self.reach(&files, attrs.steps);
        if reach == attrs.steps {
            self.remote.put(ROOT, root)?;
            return Ok(self.committed.insert(attrs));
        }
        let mut partial = attrs;
        partial.steps = reach;
        partial.finished = false;
        partial.faults.retain(|f| f.step < reach);
        let json = serde_json::to_value(&partial)
            .and_then(|epk| serde_json::to_vec_pretty(&root_metadata(epk)))
            .map_err(|e| StoreError::zarr(&root_file, "cannot serialise attributes", e))?;
        self.remote.put(ROOT, json)?;
        Ok(self.committed.insert(partial))
    }

    /// The committed steps whose rows the uploaded shards hold, of the `steps` committed
    /// locally. A shard unchanged since it was read holds every row committed since.
    fn reach(&self, files: &BTreeMap<String, Stamp>, steps: usize) -> usize {
        let lanes = self.lanes.as_ref().expect("read in sync");
        (0..lanes.len())
            .map(|lane| {
                let mut rows = 0;
                for shard in 0.. {
                    let key = lanes.key(lane, shard);
                    let (first, end) = lanes.committed(lane, shard, steps);
                    let Some(sent) = self.sent.get(&key).filter(|_| first < end) else {
                        break;
                    };
                    rows = if files.get(&key) == Some(&sent.stamp) {
                        end
                    } else {
                        sent.rows
                    };
                    if !lanes.sealed(lane, shard, steps) || rows < end {
                        break;
                    }
                }
                lanes.steps_of(lane, rows)
            })
            .fold(steps, usize::min)
    }

    /// Every file of the store but the root and temporary files, by key, with the length and
    /// time it has now.
    fn files(&self) -> Result<BTreeMap<String, Stamp>, StoreError> {
        let mut files = BTreeMap::new();
        let mut dirs = vec![self.local.clone()];
        while let Some(dir) = dirs.pop() {
            let list = "cannot list the store";
            for entry in std::fs::read_dir(&dir).map_err(StoreError::io(&dir, list))? {
                let entry = entry.map_err(StoreError::io(&dir, list))?;
                let path = entry.path();
                let meta = entry.metadata().map_err(StoreError::io(&path, list))?;
                if meta.is_dir() {
                    dirs.push(path);
                    continue;
                }
                let Some(key) = self.key(&path) else { continue };
                if key == ROOT || key.ends_with(TEMP_SUFFIX) {
                    continue;
                }
                let time = meta.modified().map_err(StoreError::io(&path, list))?;
                files.insert(key, (meta.len(), time));
            }
        }
        Ok(files)
    }

    /// A local file's key in the store (`weights/c/0/0`), `/`-separated.
    fn key(&self, path: &Path) -> Option<String> {
        let rel = path.strip_prefix(&self.local).ok()?;
        let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
        Some(parts?.join("/"))
    }
}

/// A [`Mirror`] on its own thread, so that training never waits for the network: each
/// [`Uploader::committed`] asks for a pass, passes are at least an interval apart, and
/// [`Uploader::finish`] makes the last one.
#[derive(Debug)]
pub struct Uploader {
    wake: Option<SyncSender<()>>,
    thread: Option<JoinHandle<Result<RunAttributes, StoreError>>>,
}

impl Uploader {
    /// Starts uploading with `mirror`, at most one pass per `interval`.
    pub fn start(mirror: Mirror, interval: Duration) -> Self {
        let (wake, rx) = sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("epk-upload".into())
            .spawn(move || run(mirror, &rx, interval))
            .expect("spawning the upload thread");
        Uploader {
            wake: Some(wake),
            thread: Some(thread),
        }
    }

    /// Asks for a pass: new steps are committed locally. Never blocks; requests made while
    /// a pass runs are folded into the next one.
    pub fn committed(&self) {
        if let Some(wake) = &self.wake {
            let _ = wake.try_send(());
        }
    }

    /// Makes a last pass of the store as it is now (finished, if the writer finished it)
    /// and returns what the remote copy commits, or the error of that pass.
    pub fn finish(mut self) -> Result<RunAttributes, StoreError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<RunAttributes, StoreError> {
        self.wake = None;
        let thread = self.thread.take().expect("stopped once");
        thread.join().unwrap_or_else(|_| {
            Err(StoreError::Gone {
                path: PathBuf::from("epk-upload"),
                message: "the upload thread panicked".into(),
            })
        })
    }
}

impl Drop for Uploader {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.stop();
        }
    }
}

/// The upload thread: a pass per request, at most one per `interval`, and a last one when
/// the writer lets go. A failed pass is reported and retried at the next request: the local
/// store is complete whatever the network does.
fn run(
    mut mirror: Mirror,
    wake: &Receiver<()>,
    interval: Duration,
) -> Result<RunAttributes, StoreError> {
    let mut last: Option<Instant> = None;
    let mut failing = false;
    while wake.recv().is_ok() {
        // Requests that arrive before the interval is over join this pass.
        while let Some(left) =
            last.map(|t| (t + interval).saturating_duration_since(Instant::now()))
            && !left.is_zero()
        {
            if let Err(RecvTimeoutError::Disconnected) = wake.recv_timeout(left) {
                return mirror.sync().cloned();
            }
        }
        last = Some(Instant::now());
        // Say a failure once, and when uploads go through again, not at every commit.
        let url = mirror.remote.url().to_string();
        match mirror.sync() {
            Err(e) if !failing => {
                eprintln!("epk: upload to {url} failed, retried at each commit: {e}");
                failing = true;
            }
            Ok(attrs) if failing => {
                eprintln!(
                    "epk: upload to {url} works again ({} steps committed)",
                    attrs.steps
                );
                failing = false;
            }
            _ => {}
        }
    }
    mirror.sync().cloned()
}
