//! A tile's result, and where shards keep it: the store's `partials/` group.
//!
//! `partials/<job>/tile-IIII-of-NNNN.bin` holds one [`Partial`] as a bincode 2 record (serde),
//! written to a temporary name and renamed, so a reader sees a whole tile or none. `partials/`
//! and each job folder carry a Zarr v3 group `zarr.json`, so Zarr readers see plain groups and
//! skip the records (docs/store.md).

use super::{Job, Tile};
use crate::KernelMachine;
use crate::ReplayError;
use crate::machine::boundary::Boundary;
use crate::machine::coefficients::Coefficients;
use std::path::{Path, PathBuf};

/// One tile's replay: the machine of its stretch for its points, and what joining needs.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Partial {
    /// The job it belongs to.
    pub job: Job,
    /// Which tile it is.
    pub tile: Tile,
    /// The stretch's machine for the block's points: `bias` is f at the stretch's first weights
    /// and `network` f at its last.
    pub machine: KernelMachine,
    /// Each sample's dL/df as seen in the stretch (plain gradient descent: Theorem 3.7's
    /// single kernel needs the whole run's).
    pub(crate) coefficients: Option<Coefficients>,
    /// The affine map by which the later steps' adjoint reaches the stretch (optimizers with
    /// state).
    pub boundary: Option<Boundary>,
    /// Wall time of the tile's replay.
    pub seconds: f64,
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

impl Partial {
    /// The bincode record.
    pub fn to_bytes(&self) -> Result<Vec<u8>, ReplayError> {
        bincode::serde::encode_to_vec(self, config())
            .map_err(|e| ReplayError::Input(format!("cannot encode tile {}: {e}", self.tile.index)))
    }

    /// A record written by [`Partial::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Partial, ReplayError> {
        let (p, read) = bincode::serde::decode_from_slice(bytes, config())
            .map_err(|e| ReplayError::Input(format!("not a whole tile record: {e}")))?;
        if read != bytes.len() {
            return Err(ReplayError::Input(format!(
                "a tile record with {} bytes after its end",
                bytes.len() - read
            )));
        }
        Ok(p)
    }
}

/// `partials/<job>` of the store at `store`.
fn job_dir(store: &Path, name: &str) -> Result<PathBuf, ReplayError> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !name.starts_with('.');
    if !ok {
        return Err(ReplayError::Input(format!(
            "job name {name:?}: use letters, digits, '-', '_' and '.'"
        )));
    }
    Ok(store.join("partials").join(name))
}

fn io(path: &Path, e: std::io::Error) -> ReplayError {
    ReplayError::Input(format!("{}: {e}", path.display()))
}

/// A Zarr v3 group's metadata at `dir`, unless one is there.
fn group(dir: &Path, what: &str) -> Result<(), ReplayError> {
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let meta = dir.join("zarr.json");
    if !meta.exists() {
        let json = serde_json::json!({
            "zarr_format": 3,
            "node_type": "group",
            "attributes": { "epk": what },
        });
        std::fs::write(&meta, json.to_string()).map_err(|e| io(&meta, e))?;
    }
    Ok(())
}

/// Keeps `partial` as tile `index` of job `name` in the store at `store`. Tiles of another job
/// under the same name are refused: a name holds one job's tiles.
pub fn write_partial(store: &Path, name: &str, partial: &Partial) -> Result<PathBuf, ReplayError> {
    check_job(store, name, &partial.job)?;
    let dir = job_dir(store, name)?;
    group(
        &store.join("partials"),
        "partial replays (replay shard), joined by replay reduce",
    )?;
    group(
        &dir,
        "one job's tiles: bincode records tile-IIII-of-NNNN.bin",
    )?;
    let count = partial.job.plan.count();
    let path = dir.join(format!("tile-{:04}-of-{count:04}.bin", partial.tile.index));
    let tmp = dir.join(format!(
        ".tile-{}-{}.tmp",
        partial.tile.index,
        std::process::id()
    ));
    // Streamed to the file: a tile's record can be as large as its H (samples × P).
    let file = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
    let mut writer = std::io::BufWriter::new(file);
    bincode::serde::encode_into_std_write(partial, &mut writer, config())
        .map_err(|e| ReplayError::Input(format!("{}: {e}", tmp.display())))?;
    let file = writer.into_inner().map_err(|e| io(&tmp, e.into_error()))?;
    file.sync_all().map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
    Ok(path)
}

/// Refuses `job` when job `name` of the store at `store` already holds tiles of another job,
/// or a record whose job cannot be read: `replay shard` asks before it replays. Only each
/// record's job is read: it comes first, and bincode frames no struct, so a record begins
/// with its job's own encoding (a tile's H can be gigabytes).
pub fn check_job(store: &Path, name: &str, job: &Job) -> Result<(), ReplayError> {
    let dir = job_dir(store, name)?;
    for file in tile_files(&dir)? {
        let open = std::fs::File::open(&file).map_err(|e| io(&file, e))?;
        let theirs: Job =
            bincode::serde::decode_from_std_read(&mut std::io::BufReader::new(open), config())
                .map_err(|e| {
                    ReplayError::Input(format!(
                        "{}: not a whole tile record ({e}); remove it",
                        file.display()
                    ))
                })?;
        if theirs != *job {
            return Err(ReplayError::Input(format!(
                "{} holds tiles of another job ({} steps, {} points, rule {}, {} tiles); give \
                 this one another --job name or remove that folder",
                dir.display(),
                theirs.steps,
                theirs.points,
                theirs.rule,
                theirs.plan.count()
            )));
        }
    }
    Ok(())
}

fn tile_files(dir: &Path) -> Result<Vec<PathBuf>, ReplayError> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("tile-") && n.ends_with(".bin"))
        })
        .collect();
    files.sort();
    Ok(files)
}

fn read_one(path: &Path) -> Result<Partial, ReplayError> {
    let bytes = std::fs::read(path).map_err(|e| io(path, e))?;
    Partial::from_bytes(&bytes).map_err(|e| ReplayError::Input(format!("{}: {e}", path.display())))
}

/// Every tile of job `name` kept in the store at `store`.
pub fn read_partials(store: &Path, name: &str) -> Result<Vec<Partial>, ReplayError> {
    let dir = job_dir(store, name)?;
    let files = tile_files(&dir)?;
    if files.is_empty() {
        return Err(ReplayError::Input(format!(
            "{} holds no tiles: run `replay shard` first",
            dir.display()
        )));
    }
    files.iter().map(|f| read_one(f)).collect()
}
