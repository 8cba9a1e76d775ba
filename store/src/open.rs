//! Opening an existing store, for the reader and for a writer that resumes one: the root
//! attributes and every array are checked against the layout before anything is read, and
//! the rows of the per-step arrays are read back from their shards.

use crate::codec::{self, FloatType};
use crate::layout::{ArraySpec, Element, ROOT_ATTRIBUTE};
use crate::shard::ShardFiles;
use crate::{ArrayName, FORMAT_NAME, FORMAT_VERSION, RunAttributes, StoreError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zarrs::array::Array;
use zarrs::filesystem::FilesystemStore;
use zarrs::storage::ReadableStorageTraits;

/// zarrs storage as the reader sees it: a local folder or an object store.
pub(crate) type Storage = dyn ReadableStorageTraits;

/// A store whose metadata matches the format.
pub(crate) struct OpenStore {
    pub(crate) root: PathBuf,
    pub(crate) attrs: RunAttributes,
    store: Arc<Storage>,
    /// Where the shards are read from when the store is not local.
    #[cfg(feature = "s3")]
    remote: Option<crate::remote::Remote>,
    /// The per-step arrays, in [`ArrayName::PER_STEP`] order.
    lanes: Vec<Lane>,
}

/// Where a per-step array's rows are and how they are encoded.
struct Lane {
    files: ShardFiles,
    /// Rows pass through blosc after the little-endian bytes.
    blosc: bool,
}

impl OpenStore {
    /// Opens the store at `path` (a folder, or `s3://bucket/path` with the `s3` feature) and
    /// checks that it is an epk store this build can read.
    pub(crate) fn open(path: &Path) -> Result<Self, StoreError> {
        if is_url(path) {
            return Self::open_remote(path);
        }
        let attrs = read_root(path)?;
        let store = Arc::new(
            FilesystemStore::new(path).map_err(|e| StoreError::zarr(path, "cannot open", e))?,
        );
        Self::with_storage(path, attrs, store)
    }

    #[cfg(feature = "s3")]
    fn open_remote(path: &Path) -> Result<Self, StoreError> {
        Self::from_remote(crate::remote::Remote::new(&path.to_string_lossy())?)
    }

    /// Opens the store on object storage at `remote`.
    #[cfg(feature = "s3")]
    pub(crate) fn from_remote(remote: crate::remote::Remote) -> Result<Self, StoreError> {
        let root = PathBuf::from(remote.url());
        let file = root.join("zarr.json");
        let bytes = remote.get("zarr.json")?.ok_or_else(|| StoreError::NotEpk {
            path: file.clone(),
            message: "no root metadata (no store, or its first upload has not committed)".into(),
        })?;
        let attrs = parse_root(&file, &bytes)?;
        let mut open = Self::with_storage(&root, attrs, remote.storage())?;
        open.remote = Some(remote);
        Ok(open)
    }

    #[cfg(not(feature = "s3"))]
    fn open_remote(path: &Path) -> Result<Self, StoreError> {
        Err(StoreError::invalid(
            path,
            "this build reads local stores only; build epk with the `s3` feature for object storage",
        ))
    }

    /// Opens and checks the arrays of a store whose root attributes are `attrs`.
    fn with_storage(
        path: &Path,
        attrs: RunAttributes,
        store: Arc<Storage>,
    ) -> Result<Self, StoreError> {
        let mut open = OpenStore {
            root: path.to_path_buf(),
            attrs,
            store,
            #[cfg(feature = "s3")]
            remote: None,
            lanes: Vec::new(),
        };
        for name in ArrayName::PER_STEP {
            let array = open.check_array(name)?;
            let steps = open.chunk_shape(name, &array)?[0];
            let files = ShardFiles::new(&name.dir(path), array.dimensionality(), steps);
            let metadata = serde_json::to_value(array.metadata()).unwrap_or_default();
            let blosc = codec::sharded_rows_blosc(&metadata)
                .map_err(|m| StoreError::invalid(open.metadata_file(name), m))?;
            open.lanes.push(Lane { files, blosc });
        }
        Ok(open)
    }

    /// Whether the store is on object storage.
    pub(crate) fn is_remote(&self) -> bool {
        #[cfg(feature = "s3")]
        return self.remote.is_some();
        #[cfg(not(feature = "s3"))]
        false
    }

    /// The encoded bytes of `row` in `files`, wherever the store is.
    fn read_row(
        &self,
        files: &ShardFiles,
        row: u64,
        max: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        #[cfg(feature = "s3")]
        if let Some(remote) = &self.remote {
            let file = files.file_of(row);
            let key = file.strip_prefix(&self.root).unwrap_or(&file);
            let key = key.to_string_lossy().replace('\\', "/");
            return match remote.shard(&key)? {
                Some((shard, size)) => files.read_entry(&shard, size, row, max),
                None => Ok(None),
            };
        }
        files.read_row(row, max)
    }

    /// The array's metadata file, for errors.
    pub(crate) fn metadata_file(&self, name: ArrayName) -> PathBuf {
        name.metadata_file(&self.root)
    }

    /// Opens an array without checking it.
    pub(crate) fn open_array(&self, name: ArrayName) -> Result<Array<Storage>, StoreError> {
        Array::open(self.store.clone(), &name.zarr_path())
            .map_err(|e| StoreError::zarr(self.metadata_file(name), "cannot open array", e))
    }

    /// The array as the layout describes it for this store.
    pub(crate) fn spec(&self, name: ArrayName) -> ArraySpec {
        name.spec(&self.attrs)
    }

    /// Opens an array and checks its element type, shape and chunking against the layout.
    pub(crate) fn check_array(&self, name: ArrayName) -> Result<Array<Storage>, StoreError> {
        let spec = self.spec(name);
        let array = self.open_array(name)?;
        let invalid = |m| StoreError::invalid(self.metadata_file(name), m);
        spec.check_type_and_shape(&array.data_type().to_string(), array.shape())
            .map_err(invalid)?;
        let chunk = self.chunk_shape(name, &array)?;
        spec.check_chunk(&chunk).map_err(invalid)?;
        Ok(array)
    }

    /// The shape of the array's first chunk (for a sharded array, its shard).
    fn chunk_shape(&self, name: ArrayName, array: &Array<Storage>) -> Result<Vec<u64>, StoreError> {
        let zero = vec![0u64; array.dimensionality()];
        let chunk = array
            .chunk_shape(&zero)
            .map_err(|e| StoreError::zarr(self.metadata_file(name), "bad chunk grid", e))?;
        Ok(chunk.iter().map(|d| d.get()).collect())
    }

    fn lane(&self, name: ArrayName) -> &Lane {
        let i = ArrayName::PER_STEP
            .iter()
            .position(|&n| n == name)
            .expect("a per-step array");
        &self.lanes[i]
    }

    /// The shard files of a per-step array, as its metadata describes them.
    pub(crate) fn shard_files(&self, name: ArrayName) -> &ShardFiles {
        &self.lane(name).files
    }

    /// The little-endian bytes of entry `row` of a per-step array, which holds `len` values;
    /// an error if the entry is missing from its shard (zarr would fill it) or does not hold
    /// `len` values.
    fn row_bytes(&self, name: ArrayName, row: u64, len: usize) -> Result<Vec<u8>, StoreError> {
        let lane = self.lane(name);
        let file = lane.files.file_of(row);
        let width = self.spec(name).element.width();
        let want = (len * width) as u64;
        let max = codec::max_encoded_len(want, lane.blosc);
        let bytes = self.read_row(&lane.files, row, max)?.ok_or_else(|| {
            StoreError::invalid(&file, format!("entry {row} is missing from its shard"))
        })?;
        let bytes = codec::decode_row(bytes, lane.blosc, want, width)
            .map_err(|e| StoreError::zarr(&file, &format!("cannot decode entry {row}"), e))?;
        if bytes.len() as u64 != want {
            return Err(StoreError::invalid(
                &file,
                format!("entry {row} holds {} bytes, expected {want}", bytes.len()),
            ));
        }
        Ok(bytes)
    }

    /// Entry `row` of a per-step array of integers.
    pub(crate) fn row_i64(
        &self,
        name: ArrayName,
        row: u64,
        len: usize,
    ) -> Result<Vec<i64>, StoreError> {
        Ok(codec::ints(&self.row_bytes(name, row, len)?))
    }

    /// Entry `row` of a per-step array of floats, as f64 (f32 widens exactly).
    pub(crate) fn row_f64(
        &self,
        name: ArrayName,
        row: u64,
        len: usize,
    ) -> Result<Vec<f64>, StoreError> {
        let Element::Float(dtype) = self.spec(name).element else {
            unreachable!("{} holds integers", name.path());
        };
        Ok(FloatType(dtype).values(&self.row_bytes(name, row, len)?))
    }
}

/// Whether `path` names a store on object storage (`s3://…`).
pub(crate) fn is_url(path: &Path) -> bool {
    path.to_str().is_some_and(|p| p.starts_with("s3://"))
}

/// Reads the root metadata and checks that it names an epk store of this build's version.
fn read_root(path: &Path) -> Result<RunAttributes, StoreError> {
    let file = path.join("zarr.json");
    let bytes = std::fs::read(&file).map_err(|source| StoreError::Io {
        path: file.clone(),
        message: if path.exists() {
            "cannot read the root metadata (is this a Zarr v3 store?)".into()
        } else {
            "no such store".into()
        },
        source,
    })?;
    parse_root(&file, &bytes)
}

/// The run attributes in the root metadata `bytes` read from `file`, checked.
pub(crate) fn parse_root(file: &Path, bytes: &[u8]) -> Result<RunAttributes, StoreError> {
    let file = file.to_path_buf();
    let root: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| StoreError::invalid(&file, format!("root metadata is not valid JSON: {e}")))?;
    let not_epk = |message: String| StoreError::NotEpk {
        path: file.clone(),
        message,
    };
    if root.get("zarr_format").and_then(|v| v.as_u64()) != Some(3) {
        return Err(not_epk("zarr_format is not 3".into()));
    }
    let epk = root
        .get("attributes")
        .and_then(|a| a.get(ROOT_ATTRIBUTE))
        .ok_or_else(|| {
            not_epk(format!(
                "the root group has no {ROOT_ATTRIBUTE:?} attribute"
            ))
        })?;
    if epk.get("format").and_then(|f| f.as_str()) != Some(FORMAT_NAME) {
        return Err(not_epk(format!(
            "attribute {ROOT_ATTRIBUTE}.format is not {FORMAT_NAME:?}"
        )));
    }
    let version = epk.get("version").and_then(|v| v.as_u64()).unwrap_or(0);
    if version != u64::from(FORMAT_VERSION) {
        return Err(StoreError::Version {
            path: file,
            found: u32::try_from(version).unwrap_or(u32::MAX),
            supported: FORMAT_VERSION,
        });
    }
    let attrs: RunAttributes = serde_json::from_value(epk.clone())
        .map_err(|e| StoreError::invalid(&file, format!("bad {ROOT_ATTRIBUTE} attributes: {e}")))?;
    attrs.check().map_err(|m| StoreError::invalid(&file, m))?;
    Ok(attrs)
}
