use crate::StoreError;
use std::io::Write;
use std::path::Path;

/// Suffix of the temporary files a metadata write goes through; a reader ignores them and a
/// writer that resumes a store removes them.
pub(crate) const TEMP_SUFFIX: &str = ".epk-tmp";

/// Replaces `path` with `bytes` so that a reader sees either the old or the new file, never a
/// torn one: a kill between steps must leave a store whose metadata parses.
///
/// Without `durable`, no fsync: a rename is atomic against a killed process, which is the
/// failure this guards against, and after an operating system crash the file system's own
/// journal decides what survives. With `durable` the new file's bytes reach the disk before
/// the rename and the rename itself (the folder) after it, so a power loss leaves the old
/// file or the new one ([`StoreOptions::durable`](crate::StoreOptions::durable)).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], durable: bool) -> Result<(), StoreError> {
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
    if durable {
        file.sync_all()
            .map_err(|e| io(e, "cannot flush metadata to disk"))?;
    }
    drop(file);
    std::fs::rename(&tmp, path).map_err(|e| io(e, "cannot commit metadata"))?;
    match path.parent() {
        Some(dir) if durable => sync_dir(dir),
        _ => Ok(()),
    }
}

/// Flushes a folder's entries (files created, renamed or removed in it) to disk.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::io(dir, "cannot flush the folder to disk"))
}

/// Flushes every file and folder under `root`, and `root` itself, to disk.
pub(crate) fn sync_tree(root: &Path) -> Result<(), StoreError> {
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).map_err(StoreError::io(&dir, "cannot list"))? {
            let path = entry.map_err(StoreError::io(&dir, "cannot list"))?.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                std::fs::File::open(&path)
                    .and_then(|f| f.sync_all())
                    .map_err(StoreError::io(&path, "cannot flush to disk"))?;
            }
        }
        sync_dir(&dir)?;
    }
    Ok(())
}
