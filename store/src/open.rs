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

/// A store whose metadata matches the format.
pub(crate) struct OpenStore {
    pub(crate) root: PathBuf,
    pub(crate) attrs: RunAttributes,
    store: Arc<FilesystemStore>,
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
    /// Opens the store at `path` and checks that it is an epk store this build can read.
    pub(crate) fn open(path: &Path) -> Result<Self, StoreError> {
        let attrs = read_root(path)?;
        let store = Arc::new(
            FilesystemStore::new(path).map_err(|e| StoreError::zarr(path, "cannot open", e))?,
        );
        let mut open = OpenStore {
            root: path.to_path_buf(),
            attrs,
            store,
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

    /// The array's metadata file, for errors.
    pub(crate) fn metadata_file(&self, name: ArrayName) -> PathBuf {
        name.metadata_file(&self.root)
    }

    /// Opens an array without checking it.
    pub(crate) fn open_array(&self, name: ArrayName) -> Result<Array<FilesystemStore>, StoreError> {
        Array::open(self.store.clone(), &name.zarr_path())
            .map_err(|e| StoreError::zarr(self.metadata_file(name), "cannot open array", e))
    }

    /// The array as the layout describes it for this store.
    pub(crate) fn spec(&self, name: ArrayName) -> ArraySpec {
        name.spec(&self.attrs)
    }

    /// Opens an array and checks its element type, shape and chunking against the layout.
    pub(crate) fn check_array(
        &self,
        name: ArrayName,
    ) -> Result<Array<FilesystemStore>, StoreError> {
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
    fn chunk_shape(
        &self,
        name: ArrayName,
        array: &Array<FilesystemStore>,
    ) -> Result<Vec<u64>, StoreError> {
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
        let bytes = lane.files.read_row(row, max)?.ok_or_else(|| {
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
    let root: serde_json::Value = serde_json::from_slice(&bytes)
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
