//! A kill at every request of an upload pass. The remote side is object_store's in-memory
//! store behind a wrapper that refuses every write after a budget, which is what a killed
//! uploader leaves: the first k requests of the pass done, none after. At every k the remote
//! store must open and hold the committed prefix of the local one, row for row. (The same
//! against a real S3 server, with real kills, is `tests/s3.rs`.)

use super::{Mirror, Remote};
use crate::{
    RunAttributes, Samples, StepRecord, StoreError, StoreOptions, StoreReader, StoreWriter,
};
use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// An in-memory bucket that takes at most `budget` more writes (puts and deletes), and
/// counts the bytes put under `weights/`.
#[derive(Debug)]
struct Cut {
    inner: InMemory,
    budget: AtomicUsize,
    weight_bytes: AtomicUsize,
    /// Reads (GETs and HEADs).
    gets: AtomicUsize,
}

impl Cut {
    fn new() -> Arc<Self> {
        Arc::new(Cut {
            inner: InMemory::new(),
            budget: AtomicUsize::new(usize::MAX),
            weight_bytes: AtomicUsize::new(0),
            gets: AtomicUsize::new(0),
        })
    }

    fn spend(&self) -> Result<()> {
        self.budget
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(1))
            .map(|_| ())
            .map_err(|_| object_store::Error::Generic {
                store: "cut",
                source: "the uploader was killed".into(),
            })
    }
}

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cut({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for Cut {
    async fn put_opts(&self, at: &Path, payload: PutPayload, o: PutOptions) -> Result<PutResult> {
        self.spend()?;
        if at.as_ref().starts_with("weights/") {
            self.weight_bytes
                .fetch_add(payload.content_length(), Ordering::SeqCst);
        }
        self.inner.put_opts(at, payload, o).await
    }
    async fn put_multipart_opts(
        &self,
        at: &Path,
        o: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.spend()?;
        self.inner.put_multipart_opts(at, o).await
    }
    async fn get_opts(&self, at: &Path, o: GetOptions) -> Result<GetResult> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.inner.get_opts(at, o).await
    }
    fn delete_stream(
        &self,
        at: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        match self.spend() {
            Ok(()) => self.inner.delete_stream(at),
            Err(e) => Box::pin(futures::stream::once(async { Err(e) })),
        }
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(&self, from: &Path, to: &Path, o: CopyOptions) -> Result<()> {
        self.spend()?;
        self.inner.copy_opts(from, to, o).await
    }
}

/// Step `s` of a made-up run of 3 parameters, 2 outputs and batches of 2.
fn step(s: usize) -> StepRecord {
    let x = s as f64;
    StepRecord {
        lr: 0.1 / (1.0 + x),
        indices: vec![s % 4, (s + 1) % 4],
        dloss: vec![x, -x, 0.5 * x, 1.0],
        weights_after: vec![x.sin(), x.cos(), x / 7.0],
    }
}

/// A local store with `steps` committed steps, 2 steps per shard.
fn local(dir: &std::path::Path, steps: usize) -> StoreWriter {
    let train = Samples::new((0..8).map(f64::from).collect(), vec![2], vec![0, 1, 0, 1]).unwrap();
    let options = StoreOptions {
        steps_per_shard: Some(2),
        ..StoreOptions::default()
    };
    let path = dir.join("run.zarr");
    let mut writer = StoreWriter::create_with(
        &path,
        RunAttributes::example(3, 2, 2),
        &train,
        None,
        &[0.0; 3],
        options,
    )
    .unwrap();
    for s in 0..steps {
        writer.append_step(&step(s)).unwrap();
    }
    writer
}

/// The remote store opens and holds a committed prefix of the local one, row for row; its
/// committed steps, or `None` when it does not open because no root is there.
fn check(objects: &Arc<Cut>, local: &StoreReader) -> Option<usize> {
    let remote = Remote::from_object_store("mem://run.zarr", objects.clone()).unwrap();
    let reader = match StoreReader::open_remote(remote) {
        Err(StoreError::NotEpk { .. }) => return None,
        other => other.unwrap(),
    };
    let steps = reader.steps();
    assert!(steps <= local.steps());
    for s in 0..steps {
        assert_eq!(
            reader.weights(s).unwrap(),
            local.weights(s).unwrap(),
            "weights {s}"
        );
        assert_eq!(reader.lr(s).unwrap(), local.lr(s).unwrap(), "lr {s}");
        assert_eq!(
            reader.batch(s).unwrap(),
            local.batch(s).unwrap(),
            "batch {s}"
        );
    }
    assert_eq!(
        reader.weights(steps).unwrap(),
        local.weights(steps).unwrap()
    );
    assert_eq!(reader.train().unwrap(), local.train().unwrap());
    Some(steps)
}

#[test]
fn a_pass_killed_at_any_request_leaves_the_last_committed_prefix() {
    let mut full_pass = None;
    for k in 0.. {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = local(dir.path(), 3);
        let objects = Cut::new();
        let remote = Remote::from_object_store("mem://run.zarr", objects.clone()).unwrap();
        let mut mirror = Mirror::new(writer.path(), remote);
        assert_eq!(mirror.sync().unwrap().steps, 3);
        // Five more steps: a shard grows, three are new, the shapes grow.
        for s in 3..8 {
            writer.append_step(&step(s)).unwrap();
        }
        objects.budget.store(k, Ordering::SeqCst);
        let done = mirror.sync().is_ok();
        let local = StoreReader::open(writer.path()).unwrap();
        let steps = check(&objects, &local);
        if done {
            assert_eq!(steps, Some(8));
            full_pass = Some(k);
            break;
        }
        assert_eq!(steps, Some(3), "killed after {k} writes");
    }
    // The second pass uploads the grown shard, the new ones, the metadata and the root.
    assert!(full_pass.unwrap() >= 8, "{full_pass:?}");
}

#[test]
fn a_new_mirror_never_mixes_two_runs() {
    // The bucket holds a finished run; another run is uploaded over it and killed at every
    // request: the remote store either does not open or is the new run's.
    for k in 0.. {
        let objects = Cut::new();
        let old = tempfile::tempdir().unwrap();
        let mut writer = local(old.path(), 6);
        writer.finish().unwrap();
        let remote = Remote::from_object_store("mem://run.zarr", objects.clone()).unwrap();
        Mirror::new(writer.path(), remote).sync().unwrap();
        let old_run = StoreReader::open(writer.path()).unwrap();
        drop(writer);

        let new = tempfile::tempdir().unwrap();
        let train = Samples::new(vec![9.0; 8], vec![2], vec![1, 0, 1, 0]).unwrap();
        let options = StoreOptions {
            steps_per_shard: Some(2),
            ..StoreOptions::default()
        };
        let path = new.path().join("run.zarr");
        let mut other = StoreWriter::create_with(
            &path,
            RunAttributes::example(3, 2, 2),
            &train,
            None,
            &[1.0; 3],
            options,
        )
        .unwrap();
        for s in 0..4 {
            let mut record = step(s);
            record.weights_after[0] += 100.0;
            other.append_step(&record).unwrap();
        }
        objects.budget.store(k, Ordering::SeqCst);
        let remote = Remote::from_object_store("mem://run.zarr", objects.clone()).unwrap();
        let done = Mirror::new(&path, remote).sync().is_ok();
        let new_run = StoreReader::open(&path).unwrap();
        if k == 0 {
            // Killed before its first request: the old run is whole.
            assert_eq!(check(&objects, &old_run), Some(6));
            continue;
        }
        match check(&objects, &new_run) {
            Some(steps) => assert_eq!(steps, 4, "killed after {k} writes"),
            None => assert!(!done, "the old root goes first, the new one last"),
        }
        if done {
            break;
        }
    }
}

#[test]
fn a_growing_tail_costs_at_most_twice_its_size_and_the_root_commits_what_arrived() {
    // Rows of 64 KiB, 64 steps a shard: a shard grows to 4 MiB, past the small tails that go
    // at every pass, and a pass after every step.
    let dir = tempfile::tempdir().unwrap();
    let train = Samples::new((0..8).map(f64::from).collect(), vec![2], vec![0, 1, 0, 1]).unwrap();
    let options = StoreOptions {
        steps_per_shard: Some(64),
        ..StoreOptions::default()
    };
    let (p, steps) = (8192, 200);
    let attrs = RunAttributes::example(p, 2, 2);
    let path = dir.path().join("run.zarr");
    let mut writer =
        StoreWriter::create_with(&path, attrs, &train, None, &vec![0.0; p], options).unwrap();
    let objects = Cut::new();
    let remote = Remote::from_object_store("mem://run.zarr", objects.clone()).unwrap();
    let mut mirror = Mirror::new(&path, remote);
    let mut most_behind = 0;
    for s in 0..steps {
        let mut record = step(s);
        record.weights_after = (0..p).map(|i| (i * s) as f64).collect();
        writer.append_step(&record).unwrap();
        let reached = mirror.sync().unwrap().steps;
        assert!(reached <= s + 1);
        most_behind = most_behind.max(s + 1 - reached);
        if s % 50 == 0 {
            check(&objects, &StoreReader::open(&path).unwrap());
        }
    }
    writer.finish().unwrap();
    let last = mirror.sync().unwrap();
    assert!(last.finished && last.steps == steps);
    check(&objects, &StoreReader::open(&path).unwrap());
    let local: u64 = std::fs::read_dir(path.join("weights/c"))
        .unwrap()
        .map(|shard| {
            std::fs::metadata(shard.unwrap().path().join("0"))
                .unwrap()
                .len()
        })
        .sum();
    let uploaded = objects.weight_bytes.load(Ordering::SeqCst) as u64;
    eprintln!("weights: {uploaded} bytes sent for {local}, at most {most_behind} steps behind");
    // Sending every tail at every pass would cost about 33 times the shards.
    assert!(uploaded <= 3 * local, "{uploaded} bytes sent for {local}");
    // A tail goes when it has doubled: the remote trails by at most half a shard.
    assert!(most_behind <= 33, "{most_behind} steps behind");
    assert!(most_behind >= 2, "tails were held back: {most_behind}");
}

#[test]
fn rows_of_a_large_shard_are_read_a_window_at_a_time() {
    use crate::shard::ShardBytes;
    let objects = Cut::new();
    let remote = Remote::from_object_store("mem://run.zarr", objects.clone()).unwrap();
    let bytes: Vec<u8> = (0..10_000_123u32).map(|i| (i % 251) as u8).collect();
    remote.put("weights/c/0/0", bytes.clone()).unwrap();
    let (shard, size) = remote.shard("weights/c/0/0").unwrap().unwrap();
    assert_eq!(size, bytes.len() as u64);
    let row = 53_272;
    let starts: Vec<usize> = (0..bytes.len() - row).step_by(row).collect();
    let reads = |order: &mut dyn Iterator<Item = &usize>| {
        let before = objects.gets.load(Ordering::SeqCst);
        for &at in order {
            let got = shard.read(at as u64, row, "row").unwrap();
            assert_eq!(got, bytes[at..at + row], "row at {at}");
        }
        objects.gets.load(Ordering::SeqCst) - before
    };
    // 187 rows forward, then backward (the adjoint's walk): a request per 4 MiB, not per row.
    let forward = reads(&mut starts.iter());
    let backward = reads(&mut starts.iter().rev());
    assert!(
        forward <= 3 && backward <= 4,
        "{forward} and {backward} requests"
    );
}
