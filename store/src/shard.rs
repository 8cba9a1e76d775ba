//! Per-step arrays are sharded along the step axis (Zarr's `sharding_indexed` codec, index at
//! the start of the file): one file holds many steps, and a step is appended to it with two
//! positioned writes. A file per step cost the recorder's thread ~0.4 ms of kernel time per
//! step on ext4 (inode and folder creation), a quarter of a small model's training step.

use crate::StoreError;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Bytes of one index entry: the chunk's offset and length, both little-endian u64.
const ENTRY: u64 = 16;

/// An index entry for a chunk that is not in the shard (the sharding codec's convention).
const ABSENT: u64 = u64::MAX;

/// What one shard file should hold at most, in bytes of rows.
const SHARD_BYTES: u64 = 64 << 20;

/// Most steps in one shard: bounds the index (16 bytes per step) a reader loads.
pub const MAX_STEPS_PER_SHARD: u64 = 1024;

/// Steps per shard for rows of `row_bytes`: a power of two that keeps a shard near 64 MiB,
/// between 1 and [`MAX_STEPS_PER_SHARD`].
pub(crate) fn steps_per_shard(row_bytes: u64) -> u64 {
    let fit = (SHARD_BYTES / row_bytes.max(1)).clamp(1, MAX_STEPS_PER_SHARD);
    1 << fit.ilog2()
}

/// The shard files of one per-step array.
#[derive(Clone, Debug)]
pub(crate) struct ShardFiles {
    /// The array's chunk folder (`ARRAY/c`).
    chunks: PathBuf,
    /// The array's rank: shard keys end in one `0` per trailing dimension.
    rank: usize,
    /// Steps (rows along axis 0) per shard.
    steps: u64,
}

impl ShardFiles {
    pub(crate) fn new(array_dir: &Path, rank: usize, steps: u64) -> Self {
        ShardFiles {
            chunks: array_dir.join("c"),
            rank,
            steps,
        }
    }

    /// Steps (rows) per shard.
    #[cfg(feature = "s3")]
    pub(crate) fn steps(&self) -> u64 {
        self.steps
    }

    /// The array's rank.
    #[cfg(feature = "s3")]
    pub(crate) fn rank(&self) -> usize {
        self.rank
    }

    /// The file of shard `shard` under the default chunk key encoding (`c/j/0/…`).
    pub(crate) fn file(&self, shard: u64) -> PathBuf {
        let mut file = self.chunks.join(shard.to_string());
        for _ in 1..self.rank {
            file.push("0");
        }
        file
    }

    /// The file holding `row`.
    pub(crate) fn file_of(&self, row: u64) -> PathBuf {
        self.file(row / self.steps)
    }

    fn index_bytes(&self) -> u64 {
        ENTRY * self.steps
    }

    /// The encoded bytes of `row` in the local shard files, or `None` when its shard or its
    /// index entry is absent.
    pub(crate) fn read_row(&self, row: u64, max_len: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.file_of(row);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io(&path, "cannot open shard")(e)),
        };
        let size = file
            .metadata()
            .map_err(StoreError::io(&path, "cannot open shard"))?
            .len();
        let shard = LocalShard { file, path };
        self.read_entry(&shard, size, row, max_len)
    }

    /// The encoded bytes of `row` in a shard of `size` bytes, local or remote, or `None` when
    /// its index entry is absent. Entries longer than `max_len` or outside the shard are
    /// damage, reported as errors before anything is allocated.
    pub(crate) fn read_entry(
        &self,
        shard: &dyn ShardBytes,
        size: u64,
        row: u64,
        max_len: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let path = shard.path();
        let index = self.index_bytes();
        if size < index {
            return Err(StoreError::invalid(
                path,
                format!("shard holds {size} bytes, less than its {index}-byte index"),
            ));
        }
        let entry = shard.read(
            (row % self.steps) * ENTRY,
            ENTRY as usize,
            "cannot read shard index",
        )?;
        let offset = u64::from_le_bytes(entry[..8].try_into().expect("8 bytes"));
        let len = u64::from_le_bytes(entry[8..].try_into().expect("8 bytes"));
        if offset == ABSENT && len == ABSENT {
            return Ok(None);
        }
        let inside = offset >= index && offset.checked_add(len).is_some_and(|end| end <= size);
        if !inside || len > max_len {
            return Err(StoreError::invalid(
                path,
                format!(
                    "entry {row} claims bytes {offset}..+{len} of a {size}-byte shard (at most {max_len} bytes, after the {index}-byte index)"
                ),
            ));
        }
        shard
            .read(offset, len as usize, "cannot read shard")
            .map(Some)
    }

    /// Drops every row at or past `keep`: whole shards are removed, and the shard holding
    /// `keep` loses those rows' index entries and the bytes after its last kept row. This is
    /// what a kill can leave past the committed steps.
    pub(crate) fn keep_rows(&self, keep: u64) -> Result<(), StoreError> {
        let Ok(entries) = std::fs::read_dir(&self.chunks) else {
            return Ok(());
        };
        for entry in entries {
            let path = entry
                .map_err(StoreError::io(&self.chunks, "cannot list shards"))?
                .path();
            let Some(shard) = path
                .file_name()
                .and_then(|n| n.to_str()?.parse::<u64>().ok())
            else {
                continue;
            };
            let first = shard * self.steps;
            if first >= keep {
                let removed = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                removed.map_err(StoreError::io(&path, "cannot remove an uncommitted shard"))?;
            } else if first + self.steps > keep {
                self.truncate(shard, keep - first)?;
            }
        }
        Ok(())
    }

    /// Keeps the first `kept` rows of a shard.
    fn truncate(&self, shard: u64, kept: u64) -> Result<(), StoreError> {
        let file = self.file(shard);
        let bytes = std::fs::read(&file).map_err(StoreError::io(&file, "cannot read shard"))?;
        let index_len = self.index_bytes() as usize;
        if bytes.len() < index_len {
            return Err(StoreError::invalid(
                &file,
                format!(
                    "shard holds {} bytes, less than its {index_len}-byte index",
                    bytes.len()
                ),
            ));
        }
        let mut index: Vec<u64> = bytes[..index_len]
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect();
        let mut end = index_len as u64;
        for (row, entry) in index.chunks_exact_mut(2).enumerate() {
            if row as u64 >= kept {
                entry.fill(ABSENT);
            } else if entry[0] != ABSENT {
                end = end.max(entry[0].saturating_add(entry[1]));
            }
        }
        let index: Vec<u8> = index.iter().flat_map(|v| v.to_le_bytes()).collect();
        let handle = std::fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .map_err(StoreError::io(&file, "cannot open shard"))?;
        write_at(&handle, &index, 0)
            .map_err(StoreError::io(&file, "cannot rewrite shard index"))?;
        handle
            .set_len(end.min(bytes.len() as u64))
            .map_err(StoreError::io(&file, "cannot truncate shard"))
    }
}

/// Positioned reads from one shard, wherever it is stored.
pub(crate) trait ShardBytes {
    /// The shard's file or object, for errors.
    fn path(&self) -> &Path;
    /// Exactly `len` bytes at `offset`; `what` says what was being read, for errors.
    fn read(&self, offset: u64, len: usize, what: &str) -> Result<Vec<u8>, StoreError>;
}

/// A shard file on the local disk.
struct LocalShard {
    file: File,
    path: PathBuf,
}

impl ShardBytes for LocalShard {
    fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self, offset: u64, len: usize, what: &str) -> Result<Vec<u8>, StoreError> {
        let mut bytes = vec![0u8; len];
        read_at(&self.file, &mut bytes, offset).map_err(StoreError::io(&self.path, what))?;
        Ok(bytes)
    }
}

/// Appends encoded rows to an array's shards, keeping the current shard file open.
#[derive(Debug)]
pub(crate) struct ShardAppender {
    files: ShardFiles,
    open: Option<OpenShard>,
    /// Flush a shard to disk before leaving it for the next, and keep the folders that gained
    /// a shard for [`ShardAppender::sync`].
    durable: bool,
    /// Folders whose entries changed since the last [`ShardAppender::sync`] (durable only).
    unsynced: Vec<PathBuf>,
}

#[derive(Debug)]
struct OpenShard {
    shard: u64,
    file: File,
    /// Where the next chunk goes.
    end: u64,
}

impl ShardAppender {
    pub(crate) fn new(files: ShardFiles, durable: bool) -> Self {
        ShardAppender {
            files,
            open: None,
            durable,
            unsynced: Vec::new(),
        }
    }

    pub(crate) fn files(&self) -> &ShardFiles {
        &self.files
    }

    /// Writes `chunk` (the encoded row `row`) after the shard's last chunk, then its index
    /// entry: a reader that finds the entry finds the bytes. Committed rows are never touched.
    pub(crate) fn append(&mut self, row: u64, chunk: &[u8]) -> Result<(), StoreError> {
        self.append_parts(row, &[chunk])
    }

    /// [`ShardAppender::append`] of a row given in pieces, written one after another: the
    /// recorder hands each tensor's bytes as the backend returned them, without joining them.
    pub(crate) fn append_parts(&mut self, row: u64, parts: &[&[u8]]) -> Result<(), StoreError> {
        let shard = row / self.files.steps;
        if self.open.as_ref().is_none_or(|o| o.shard != shard) {
            if self.durable {
                self.sync_open()?;
            }
            self.open = None;
            self.open = Some(self.open_shard(shard)?);
        }
        let open = self.open.as_mut().expect("opened above");
        let path = || self.files.file(shard);
        let start = open.end;
        let mut end = start;
        for part in parts {
            write_at(&open.file, part, end)
                .map_err(|e| StoreError::io(&path(), "cannot write chunk")(e))?;
            end += part.len() as u64;
        }
        let mut entry = [0u8; ENTRY as usize];
        entry[..8].copy_from_slice(&start.to_le_bytes());
        entry[8..].copy_from_slice(&(end - start).to_le_bytes());
        let slot = (row % self.files.steps) * ENTRY;
        write_at(&open.file, &entry, slot)
            .map_err(|e| StoreError::io(&path(), "cannot write shard index")(e))?;
        open.end = end;
        Ok(())
    }

    /// Flushes the open shard and the folders that gained a shard since the last call to
    /// disk, so that a commit after it survives a power loss.
    pub(crate) fn sync(&mut self) -> Result<(), StoreError> {
        self.sync_open()?;
        let mut dirs = std::mem::take(&mut self.unsynced);
        dirs.sort();
        dirs.dedup();
        for dir in dirs {
            crate::atomic::sync_dir(&dir)?;
        }
        Ok(())
    }

    fn sync_open(&self) -> Result<(), StoreError> {
        match &self.open {
            Some(open) => open.file.sync_data().map_err(StoreError::io(
                &self.files.file(open.shard),
                "cannot flush shard to disk",
            )),
            None => Ok(()),
        }
    }

    /// Fails if the open shard file was removed: rows appended to it would go nowhere.
    pub(crate) fn check_linked(&self) -> Result<(), StoreError> {
        #[cfg(unix)]
        if let Some(open) = &self.open {
            use std::os::unix::fs::MetadataExt;
            let path = self.files.file(open.shard);
            let meta = open
                .file
                .metadata()
                .map_err(StoreError::io(&path, "cannot check shard"))?;
            if meta.nlink() == 0 {
                return Err(StoreError::gone(
                    path,
                    "the shard file was removed while being written",
                ));
            }
        }
        Ok(())
    }

    /// Opens a shard to append to, creating it with an empty index when it is new.
    fn open_shard(&mut self, shard: u64) -> Result<OpenShard, StoreError> {
        let path = self.files.file(shard);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(StoreError::io(dir, "cannot create shard folder"))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(StoreError::io(&path, "cannot open shard"))?;
        let len = file
            .metadata()
            .map_err(StoreError::io(&path, "cannot open shard"))?
            .len();
        let index = self.files.index_bytes();
        let end = if len == 0 {
            write_at(&file, &vec![0xff; index as usize], 0)
                .map_err(StoreError::io(&path, "cannot write shard index"))?;
            if self.durable {
                // The new file's folder and those above it, up to the array's.
                let top = self.files.chunks.parent().unwrap_or(&self.files.chunks);
                for dir in path.ancestors().skip(1) {
                    self.unsynced.push(dir.to_path_buf());
                    if dir == top {
                        break;
                    }
                }
            }
            index
        } else if len < index {
            return Err(StoreError::invalid(
                &path,
                format!("shard holds {len} bytes, less than its {index}-byte index"),
            ));
        } else {
            len
        };
        Ok(OpenShard { shard, file, end })
    }
}

#[cfg(unix)]
fn write_at(file: &File, bytes: &[u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, bytes, offset)
}

#[cfg(unix)]
fn read_at(file: &File, bytes: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, bytes, offset)
}

#[cfg(not(unix))]
fn read_at(mut file: &File, bytes: &mut [u8], offset: u64) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(bytes)
}

#[cfg(not(unix))]
fn write_at(mut file: &File, bytes: &[u8], offset: u64) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::{ShardAppender, ShardFiles, steps_per_shard};

    #[test]
    fn shard_sizes_are_powers_of_two_near_64_mib() {
        assert_eq!(steps_per_shard(8), 1024);
        assert_eq!(steps_per_shard(53_272), 1024);
        assert_eq!(steps_per_shard(100_000), 512);
        assert_eq!(steps_per_shard(8_464_464), 4);
        assert_eq!(steps_per_shard(1 << 30), 1);
    }

    fn index(bytes: &[u8], steps: usize) -> Vec<(u64, u64)> {
        bytes[..16 * steps]
            .chunks_exact(16)
            .map(|e| {
                (
                    u64::from_le_bytes(e[..8].try_into().unwrap()),
                    u64::from_le_bytes(e[8..].try_into().unwrap()),
                )
            })
            .collect()
    }

    #[test]
    fn appended_rows_are_indexed_and_truncation_drops_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let files = ShardFiles::new(dir.path(), 2, 4);
        let mut shards = ShardAppender::new(files.clone(), false);
        for row in 0..6u64 {
            shards.append(row, &[row as u8; 3]).unwrap();
        }
        drop(shards);
        assert_eq!(files.file(1), dir.path().join("c/1/0"));
        let first = std::fs::read(files.file(0)).unwrap();
        assert_eq!(first.len(), 64 + 12);
        let entries = index(&first, 4);
        assert_eq!(entries, vec![(64, 3), (67, 3), (70, 3), (73, 3)]);
        assert_eq!(&first[67..70], &[1, 1, 1]);
        let second = std::fs::read(files.file(1)).unwrap();
        assert_eq!(index(&second, 4)[..2], [(64, 3), (67, 3)]);
        assert_eq!(index(&second, 4)[2], (u64::MAX, u64::MAX));

        // Keep 2 rows: shard 1 goes, shard 0 loses rows 2 and 3 and their bytes.
        files.keep_rows(2).unwrap();
        assert!(!files.file(1).exists());
        let first = std::fs::read(files.file(0)).unwrap();
        assert_eq!(first.len(), 64 + 6);
        assert_eq!(
            index(&first, 4)[1..],
            [(64 + 3, 3), (u64::MAX, u64::MAX), (u64::MAX, u64::MAX)]
        );
        // Appending resumes after the kept rows.
        let mut shards = ShardAppender::new(files.clone(), false);
        shards.append(2, &[9; 5]).unwrap();
        let first = std::fs::read(files.file(0)).unwrap();
        assert_eq!(index(&first, 4)[2], (70, 5));
        assert_eq!(&first[70..], &[9; 5]);
    }
}
