//! The stateful replay's per-step vectors, kept on disk between its forward and backward pass.

use crate::ReplayError;
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};

/// One step's vectors of the stateful optimizer's linear map.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct StepVectors {
    /// Clipping factors c_s (None: all ones).
    pub clip: Option<Vec<f64>>,
    /// Preconditioner D_s (None: all ones).
    pub precondition: Option<Vec<f64>>,
    /// Decoupled-decay mask (None: all ones).
    pub mask: Option<Vec<f64>>,
    /// ρ_s: the recorded step minus what the replayed optimizer produces.
    pub rho: Vec<f64>,
}

/// Per-step vectors of the forward pass, on disk so that memory does not grow with steps.
/// Each step is one bincode record (serde), found by its offset and length.
pub(super) struct Scratch {
    file: std::fs::File,
    records: HashMap<usize, (u64, usize)>,
    end: u64,
}

fn io(e: impl std::fmt::Display) -> ReplayError {
    ReplayError::Input(format!("scratch file: {e}"))
}

impl Scratch {
    pub(super) fn new() -> Result<Self, ReplayError> {
        let file = tempfile::tempfile()
            .map_err(|e| ReplayError::Input(format!("cannot create a scratch file: {e}")))?;
        Ok(Scratch {
            file,
            records: HashMap::new(),
            end: 0,
        })
    }

    pub(super) fn write(&mut self, s: usize, v: &StepVectors) -> Result<(), ReplayError> {
        let bytes = bincode::serde::encode_to_vec(v, bincode::config::standard()).map_err(io)?;
        self.file.seek(SeekFrom::Start(self.end)).map_err(io)?;
        self.file.write_all(&bytes).map_err(io)?;
        self.records.insert(s, (self.end, bytes.len()));
        self.end += bytes.len() as u64;
        Ok(())
    }

    pub(super) fn read(&mut self, s: usize) -> Result<StepVectors, ReplayError> {
        let &(offset, len) = self
            .records
            .get(&s)
            .ok_or_else(|| io(format!("step {s} was not kept")))?;
        self.file.seek(SeekFrom::Start(offset)).map_err(io)?;
        let mut bytes = vec![0u8; len];
        self.file.read_exact(&mut bytes).map_err(io)?;
        let (v, _) =
            bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).map_err(io)?;
        Ok(v)
    }
}
