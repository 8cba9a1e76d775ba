//! Stores on S3-compatible object storage (feature `s3`), named by URL: `s3://bucket/path`.
//!
//! Object stores have no partial writes and no rename, so a store is never *written* there:
//! the recorder writes to local disk as always and [`Mirror`] uploads it, each file whole and
//! the root metadata last. The root metadata holds the committed step count, so the remote
//! copy is a store on its own, committed up to the last root that arrived. A reader opens it
//! like a local store ([`StoreReader::open`](crate::StoreReader::open) with the URL): a shard's
//! index and first rows come with one ranged GET, and the rows after them 4 MiB at a time in
//! the direction the reads go, so walking the steps costs a request per 4 MiB, not per row.
//!
//! Where the server is and who signs the requests comes from the standard AWS variables:
//! `AWS_ENDPOINT_URL` (for Garage, MinIO, Ceph …), `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, and `AWS_ALLOW_HTTP=true` for a plain-HTTP endpoint. Transient
//! failures (timeouts, 5xx, refused connections) are retried with exponential backoff for at
//! most [`RETRY_TIMEOUT`], then reported.
//!
//! ```
//! use epk_store::remote::{Mirror, Remote};
//! use epk_store::{RunAttributes, Samples, StepRecord, StoreReader, StoreWriter};
//! use std::sync::Arc;
//! # let dir = tempfile::tempdir().unwrap();
//! # let path = dir.path().join("run.zarr");
//! let train = Samples::new(vec![1.0, 2.0, 3.0, 4.0], vec![2], vec![0, 1]).unwrap();
//! let attrs = RunAttributes::example(2, 1, 2);
//! let mut writer = StoreWriter::create(&path, attrs, &train, None, &[0.0, 0.0]).unwrap();
//! let step = StepRecord {
//!     lr: 0.5,
//!     indices: vec![0, 1],
//!     dloss: vec![0.25, -0.25],
//!     weights_after: vec![0.1, -0.1],
//! };
//! writer.append_step(&step).unwrap();
//!
//! // `Remote::new("s3://bucket/run.zarr")` in real use; here object_store's in-memory bucket.
//! let bucket = Arc::new(object_store::memory::InMemory::new());
//! let remote = Remote::from_object_store("mem://run.zarr", bucket).unwrap();
//! let mut mirror = Mirror::new(&path, remote.clone());
//! assert_eq!(mirror.sync().unwrap().steps, 1);
//!
//! let reader = StoreReader::open_remote(remote).unwrap();
//! assert_eq!(reader.weights(1).unwrap(), vec![0.1, -0.1]);
//! ```

mod mirror;
mod tails;
#[cfg(test)]
mod tests;

pub use mirror::{Mirror, Uploader};

use crate::StoreError;
use crate::shard::ShardBytes;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig};
use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use zarrs::storage::ReadableStorageTraits;
use zarrs_object_store::AsyncObjectStore;
use zarrs_storage::storage_adapter::async_to_sync::{
    AsyncToSyncBlockOn, AsyncToSyncStorageAdapter,
};

/// The URL scheme of a store on S3-compatible object storage.
pub const SCHEME: &str = "s3://";

/// Longest time one request is retried for before its error is reported, unless
/// `EPK_S3_RETRY_TIMEOUT` (seconds) says otherwise.
pub const RETRY_TIMEOUT: Duration = Duration::from_secs(30);

/// [`RETRY_TIMEOUT`], or the environment's `EPK_S3_RETRY_TIMEOUT` seconds.
fn retry_timeout() -> Result<Duration, String> {
    match std::env::var("EPK_S3_RETRY_TIMEOUT") {
        Err(_) => Ok(RETRY_TIMEOUT),
        Ok(v) => v
            .parse::<f64>()
            .ok()
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .ok_or_else(|| format!("EPK_S3_RETRY_TIMEOUT={v:?} is not a number of seconds")),
    }
}

/// A store's location on S3-compatible object storage: the bucket, the store's prefix in it,
/// and the client that reaches them.
#[derive(Clone, Debug)]
pub struct Remote {
    /// `s3://bucket/path`, without a trailing slash: the store's name in errors.
    url: String,
    /// The bucket, seen from the store's prefix: keys are store keys (`weights/c/0/0`).
    objects: Arc<dyn ObjectStore>,
    /// Runs the client's requests for the synchronous reader and the uploader.
    runtime: Arc<tokio::runtime::Runtime>,
    /// The shards read last with their windows, so that walking rows costs a request per
    /// 4 MiB, not three per row.
    cache: Arc<Mutex<ShardCache>>,
}

impl Remote {
    /// The store at `url` (`s3://bucket/path`), reached with the AWS variables of the
    /// environment. Nothing is requested yet.
    pub fn new(url: &str) -> Result<Self, StoreError> {
        let url = url.trim_end_matches('/').to_string();
        let bad = |m: String| StoreError::invalid(&url, m);
        let rest = url.strip_prefix(SCHEME).ok_or_else(|| {
            bad(format!(
                "not an object-store URL (expected {SCHEME}bucket/path)"
            ))
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() || prefix.is_empty() {
            return Err(bad(format!(
                "name a bucket and a path inside it: {SCHEME}bucket/run.zarr"
            )));
        }
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(5),
                base: 2.0,
            },
            max_retries: 8,
            retry_timeout: retry_timeout().map_err(bad)?,
        };
        let client = ClientOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(120));
        // The environment's AWS_* settings, as `AmazonS3Builder::from_env` reads them, on top
        // of our client options (which `with_client_options` would otherwise replace).
        let mut builder = AmazonS3Builder::new()
            .with_client_options(client)
            .with_retry(retry);
        for (key, value) in std::env::vars() {
            if key.starts_with("AWS_")
                && let Ok(key) = key.to_ascii_lowercase().parse::<AmazonS3ConfigKey>()
            {
                builder = builder.with_config(key, value);
            }
        }
        let bucket_store = builder
            .with_bucket_name(bucket)
            .build()
            .map_err(|e| bad(format!("cannot set up the S3 client: {e}")))?;
        let prefix =
            ObjectPath::parse(prefix).map_err(|e| bad(format!("not a valid object path: {e}")))?;
        Self::from_object_store(&url, Arc::new(PrefixStore::new(bucket_store, prefix)))
    }

    /// The store held by `objects`, any [`ObjectStore`] (Google Cloud Storage, Azure, a
    /// client set up by hand …) whose keys are the store's keys (`zarr.json`,
    /// `weights/c/0/0`); `url` names it in errors.
    pub fn from_object_store(url: &str, objects: Arc<dyn ObjectStore>) -> Result<Self, StoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("epk-s3")
            .enable_all()
            .build()
            .map_err(|e| StoreError::io(Path::new(url), "cannot start the S3 client")(e))?;
        Ok(Remote {
            url: url.trim_end_matches('/').to_string(),
            objects,
            runtime: Arc::new(runtime),
            cache: Arc::default(),
        })
    }

    /// The store's URL, as a path for errors and for [`StoreReader::path`](crate::StoreReader::path).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `key` (`weights/c/0/0`) as shown in errors: the store's URL and the key.
    pub(crate) fn display(&self, key: &str) -> PathBuf {
        PathBuf::from(format!("{}/{key}", self.url))
    }

    fn path(key: &str) -> Result<ObjectPath, object_store::path::Error> {
        ObjectPath::parse(key)
    }

    /// The object at `key`, or `None` when there is none.
    pub(crate) fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let err = |e: &dyn Error| failed(&self.display(key), "cannot read", e);
        let path = Self::path(key).map_err(|e| err(&e))?;
        let got = self.runtime.block_on(async {
            match self.objects.get(&path).await {
                Ok(r) => r.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        });
        got.map(|b| b.map(|b| b.to_vec())).map_err(|e| err(&e))
    }

    /// Replaces the object at `key` with `bytes`, atomically (a reader sees the old object
    /// or the new one).
    pub(crate) fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        let err = |e: &dyn Error| failed(&self.display(key), "cannot upload", e);
        let path = Self::path(key).map_err(|e| err(&e))?;
        self.runtime
            .block_on(self.objects.put(&path, bytes.into()))
            .map(|_| ())
            .map_err(|e| err(&e))
    }

    /// Removes the object at `key`, if there is one.
    pub(crate) fn delete(&self, key: &str) -> Result<(), StoreError> {
        let err = |e: &dyn Error| failed(&self.display(key), "cannot remove", e);
        let path = Self::path(key).map_err(|e| err(&e))?;
        match self.runtime.block_on(self.objects.delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(err(&e)),
        }
    }

    /// The size of the object at `key`, or `None` when there is none.
    fn size(&self, key: &str) -> Result<Option<u64>, StoreError> {
        let err = |e: &dyn Error| failed(&self.display(key), "cannot read", e);
        let path = Self::path(key).map_err(|e| err(&e))?;
        match self.runtime.block_on(self.objects.head(&path)) {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(err(&e)),
        }
    }

    /// The store as zarrs storage, for opening arrays and reading whole chunks.
    pub(crate) fn storage(&self) -> Arc<dyn ReadableStorageTraits> {
        let store = Arc::new(AsyncObjectStore::new(self.objects.clone()));
        Arc::new(AsyncToSyncStorageAdapter::new(
            store,
            BlockOn(self.runtime.clone()),
        ))
    }

    /// The shard object at `key` and its size, or `None` when there is none. Its first bytes
    /// (its index, or all of a small shard) are fetched once and kept: a reader only reads
    /// rows its root commits, and those sit at the same offsets in every later upload of the
    /// shard, so what is kept stays right while the run goes on uploading.
    pub(crate) fn shard(&self, key: &str) -> Result<Option<(RemoteShard<'_>, u64)>, StoreError> {
        let cached = self.cache.lock().expect("cache lock").get(key);
        let head = match cached {
            Some(head) => head,
            None => {
                let Some(size) = self.size(key)? else {
                    return Ok(None);
                };
                let len = if size <= WHOLE { size } else { HEAD.min(size) };
                let shown = self.display(key);
                let bytes = self.range(key, &shown, 0, len as usize, "cannot read shard")?;
                let head = Arc::new(Head {
                    size,
                    bytes,
                    window: Mutex::default(),
                });
                self.cache
                    .lock()
                    .expect("cache lock")
                    .put(key, head.clone());
                head
            }
        };
        let size = head.size;
        let shard = RemoteShard {
            remote: self,
            key: key.to_string(),
            shown: self.display(key),
            head,
        };
        Ok(Some((shard, size)))
    }

    /// Exactly `len` bytes of the object at `key` from `offset`.
    fn range(
        &self,
        key: &str,
        shown: &Path,
        offset: u64,
        len: usize,
        what: &str,
    ) -> Result<Vec<u8>, StoreError> {
        let err = |e: &dyn Error| failed(shown, what, e);
        let path = Self::path(key).map_err(|e| err(&e))?;
        let bytes = self
            .runtime
            .block_on(self.objects.get_range(&path, offset..offset + len as u64))
            .map_err(|e| err(&e))?;
        if bytes.len() != len {
            return Err(StoreError::invalid(
                shown,
                format!(
                    "{what}: {} bytes came back, {len} were asked for",
                    bytes.len()
                ),
            ));
        }
        Ok(bytes.to_vec())
    }
}

/// Shards up to this size are fetched whole on first use.
const WHOLE: u64 = 4 << 20;

/// Of a larger shard, this much is fetched first: its index (16 bytes a step, at most 1024
/// steps) and whatever rows follow it.
const HEAD: u64 = 64 << 10;

/// Of a larger shard, rows outside the head are read this much at a time: a replay walks the
/// rows in order (forward, or backward for the adjoint), and one request per row costs a round
/// trip each (43 ms a row against Garage on 127.0.0.1, 27 times the local replay).
const WINDOW: u64 = 4 << 20;

/// Shards kept at most: 16 × (4 MiB + a 4 MiB window) bounds the cache at 128 MiB.
const KEPT: usize = 16;

/// The first bytes of a shard object, its size, and the last window read past them.
#[derive(Debug)]
struct Head {
    size: u64,
    bytes: Vec<u8>,
    /// The window's offset in the shard and its bytes.
    window: Mutex<Option<(u64, Arc<Vec<u8>>)>>,
}

impl Head {
    /// Bytes `offset..offset + len` if the head or the window holds them.
    fn cached(&self, offset: u64, len: usize) -> Option<Vec<u8>> {
        let slice = |bytes: &[u8], from: u64| {
            let start = usize::try_from(offset.checked_sub(from)?).ok()?;
            bytes
                .get(start..start.checked_add(len)?)
                .map(<[u8]>::to_vec)
        };
        slice(&self.bytes, 0).or_else(|| {
            let window = self.window.lock().expect("window lock");
            window
                .as_ref()
                .and_then(|(from, bytes)| slice(bytes, *from))
        })
    }

    /// The window to read for `offset..offset + len`: [`WINDOW`] bytes going on in the
    /// direction the reads go (backward when this row lies before the last window), inside
    /// the shard as its size was when it was first read.
    fn next_window(&self, offset: u64, len: u64) -> (u64, u64) {
        let behind = self
            .window
            .lock()
            .expect("window lock")
            .as_ref()
            .is_some_and(|(from, _)| offset < *from);
        let span = WINDOW.max(len);
        let start = if behind {
            (offset + len).saturating_sub(span)
        } else {
            offset
        };
        (start, (start + span).min(self.size).max(offset + len))
    }
}

/// The last [`KEPT`] shards read, oldest first out.
#[derive(Debug, Default)]
struct ShardCache {
    heads: Vec<(String, Arc<Head>)>,
}

impl ShardCache {
    fn get(&self, key: &str) -> Option<Arc<Head>> {
        self.heads
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, h)| h.clone())
    }

    fn put(&mut self, key: &str, head: Arc<Head>) {
        if self.heads.len() == KEPT {
            self.heads.remove(0);
        }
        self.heads.push((key.to_string(), head));
    }
}

/// A failed request's error with its causes (the HTTP client's reason), on one line.
fn failed(shown: &Path, what: &str, e: &dyn Error) -> StoreError {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        // object_store repeats its causes in its own message; say each once.
        let said = c.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = c.source();
    }
    if text.contains("169.254.169.254") {
        // No keys in the environment: the client asked the EC2 instance metadata service.
        text.push_str(" (no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)");
    }
    StoreError::zarr(shown, what, text)
}

/// zarrs' synchronous calls, run to completion on the store's runtime.
struct BlockOn(Arc<tokio::runtime::Runtime>);

impl AsyncToSyncBlockOn for BlockOn {
    fn block_on<F: core::future::Future>(&self, future: F) -> F::Output {
        self.0.block_on(future)
    }
}

/// One shard object: reads inside its first bytes come from the cache, the rest from ranged
/// GETs.
pub(crate) struct RemoteShard<'a> {
    remote: &'a Remote,
    key: String,
    shown: PathBuf,
    head: Arc<Head>,
}

impl ShardBytes for RemoteShard<'_> {
    fn path(&self) -> &Path {
        &self.shown
    }

    fn read(&self, offset: u64, len: usize, what: &str) -> Result<Vec<u8>, StoreError> {
        if let Some(bytes) = self.head.cached(offset, len) {
            return Ok(bytes);
        }
        let (start, end) = self.head.next_window(offset, len as u64);
        let span = usize::try_from(end - start).unwrap_or(usize::MAX);
        let bytes = Arc::new(
            self.remote
                .range(&self.key, &self.shown, start, span, what)?,
        );
        *self.head.window.lock().expect("window lock") = Some((start, bytes));
        self.head.cached(offset, len).ok_or_else(|| {
            StoreError::invalid(
                &self.shown,
                format!("{what}: the window read misses the row"),
            )
        })
    }
}
