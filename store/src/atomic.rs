use crate::StoreError;
use std::io::Write;
use std::path::Path;

/// Suffix of the temporary files a metadata write goes through; a reader ignores them and a
/// writer that resumes a store removes them.
pub(crate) const TEMP_SUFFIX: &str = ".epk-tmp";

/// Replaces `path` with `bytes` so that a reader sees either the old or the new file, never a
/// torn one: a kill between steps must leave a store whose metadata parses.
///
/// No fsync: a rename is atomic against a killed process, which is the failure this guards
/// against; an fsync per step would make the writer fall behind training. After an operating
/// system crash the file system's own journal decides what survives.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(TEMP_SUFFIX);
    let tmp = std::path::PathBuf::from(tmp);
    let io = |source: std::io::Error, message: &str| StoreError::Io {
        path: path.to_path_buf(),
        message: message.to_string(),
        source,
    };
    let mut file = std::fs::File::create(&tmp).map_err(|e| io(e, "cannot create metadata"))?;
    file.write_all(bytes)
        .map_err(|e| io(e, "cannot write metadata"))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(|e| io(e, "cannot commit metadata"))
}
