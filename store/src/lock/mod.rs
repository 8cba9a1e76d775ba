//! One writer per store: an advisory lock on `PATH.lock`, a file beside the store.
//!
//! The lock file sits beside the store rather than in it, so that removing the store (an
//! overwrite) cannot remove the lock with it, and so that it also covers the temporary
//! `PATH.epk-tmp` a new store is built in. The operating system's lock (`flock` on Linux,
//! through [`std::fs::File::try_lock`]) decides who writes; the file's content (host, process,
//! program, start time) is for people and for the error a second writer gets. The holder
//! removes the file when it lets go; a file whose lock is free but which still names a holder
//! was left by a process that ended without letting go (the kernel drops its lock), and the
//! next writer takes it over.

mod fs;
mod holder;

use crate::StoreError;
use holder::Holder;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

/// The exclusive right to write one store, held from creation or resumption until the
/// writer is dropped. Readers never take it.
#[derive(Debug)]
pub struct WriterLock {
    file: File,
    /// The lock file.
    path: PathBuf,
    /// The lock file's identity when taken: a writer whose lock file was removed or replaced
    /// no longer excludes anyone.
    id: FileId,
    /// The holder named in a lock file left behind by a process that had ended.
    took_over: Option<String>,
}

impl WriterLock {
    /// The lock file of the store at `store`: `PATH.lock`.
    pub fn path_for(store: &Path) -> PathBuf {
        let mut path = store.as_os_str().to_owned();
        path.push(".lock");
        PathBuf::from(path)
    }

    /// Takes the lock of the store at `store` (which need not exist yet), or fails with
    /// [`StoreError::Locked`] naming the holder. On a network or user-space file system the
    /// lock may not keep out a writer on another machine: that is
    /// [`StoreError::UntrustedLock`] unless `allow_network` accepts it.
    pub fn acquire(store: &Path, allow_network: bool) -> Result<Self, StoreError> {
        let path = Self::path_for(store);
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        std::fs::create_dir_all(dir).map_err(StoreError::io(dir, "cannot create the folder"))?;
        if !allow_network
            && let Some(fs) =
                fs::untrusted(dir).map_err(StoreError::io(dir, "cannot tell its file system"))?
        {
            return Err(StoreError::UntrustedLock {
                path: store.to_path_buf(),
                fs: fs.to_string(),
            });
        }
        // A holder that lets go removes the file after we opened it: then try the new one.
        for _ in 0..100 {
            let file = open(&path, true)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => return Err(locked(store, &path, &file)),
                Err(TryLockError::Error(e)) => {
                    return Err(StoreError::io(&path, "cannot lock")(e));
                }
            }
            let id = FileId::of_file(&file).map_err(StoreError::io(&path, "cannot lock"))?;
            if FileId::of_path(&path).ok() != Some(id) {
                continue;
            }
            let took_over =
                holder::describe(&file).map_err(StoreError::io(&path, "cannot read"))?;
            Holder::me(store)
                .write(&file)
                .map_err(StoreError::io(&path, "cannot write"))?;
            return Ok(WriterLock {
                file,
                path,
                id,
                took_over,
            });
        }
        Err(StoreError::invalid(
            &path,
            "the lock file keeps being replaced; is another program removing it?",
        ))
    }

    /// Fails with [`StoreError::Locked`] if a writer holds the store's lock now. Checking takes
    /// the lock for an instant, so a writer starting at that very instant may be refused.
    pub fn ensure_free(store: &Path) -> Result<(), StoreError> {
        let path = Self::path_for(store);
        let file = match open(&path, false) {
            Err(StoreError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Ok(());
            }
            other => other?,
        };
        match file.try_lock() {
            Ok(()) => Ok(()),
            Err(TryLockError::WouldBlock) => Err(locked(store, &path, &file)),
            Err(TryLockError::Error(e)) => Err(StoreError::io(&path, "cannot lock")(e)),
        }
    }

    /// The lock file.
    pub fn lock_file(&self) -> &Path {
        &self.path
    }

    /// The holder a stale lock file named (a process that ended without letting go), when
    /// this lock took it over.
    pub fn took_over(&self) -> Option<&str> {
        self.took_over.as_deref()
    }

    /// Fails if the lock file was removed or replaced since the lock was taken: another
    /// writer could then take the store.
    pub(crate) fn check(&self) -> Result<(), StoreError> {
        match FileId::of_path(&self.path) {
            Ok(id) if id == self.id => Ok(()),
            Ok(_) => Err(StoreError::gone(
                &self.path,
                "the writer's lock file was replaced",
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StoreError::gone(
                &self.path,
                "the writer's lock file was removed",
            )),
            Err(e) => Err(StoreError::io(&self.path, "cannot check the lock file")(e)),
        }
    }
}

impl Drop for WriterLock {
    fn drop(&mut self) {
        // Remove the file while still holding the lock, and only if it is still ours; closing
        // the file then lets go.
        if FileId::of_path(&self.path).ok() == Some(self.id) {
            let _ = std::fs::remove_file(&self.path);
        }
        let _ = self.file.unlock();
    }
}

/// Opens the lock file for reading and writing, creating it when `create`.
fn open(path: &Path, create: bool) -> Result<File, StoreError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(path)
        .map_err(StoreError::io(path, "cannot open the lock file"))
}

/// The error for a store whose lock `file` another writer holds, naming that writer.
fn locked(store: &Path, path: &Path, file: &File) -> StoreError {
    // The holder writes its name just after taking the lock: give it a moment.
    let mut holder = None;
    for _ in 0..50 {
        holder = holder::describe(file).ok().flatten();
        if holder.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    StoreError::Locked {
        path: store.to_path_buf(),
        lock: path.to_path_buf(),
        holder: holder.unwrap_or_else(|| "another process".to_string()),
    }
}

/// Which file a path or an open file is: device and inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    /// The file at `path` now.
    pub(crate) fn of_path(path: &Path) -> std::io::Result<Self> {
        Ok(Self::of(&std::fs::metadata(path)?))
    }

    /// An open file.
    fn of_file(file: &File) -> std::io::Result<Self> {
        Ok(Self::of(&file.metadata()?))
    }

    #[cfg(unix)]
    fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }

    /// Without inode numbers only removal is noticed, not replacement.
    #[cfg(not(unix))]
    fn of(_: &std::fs::Metadata) -> Self {
        FileId { dev: 0, ino: 0 }
    }
}

#[cfg(test)]
mod tests;
