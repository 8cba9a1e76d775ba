//! The stateful replay's per-step vectors, kept on disk between its forward and backward pass.

use crate::ReplayError;

/// One step's vectors of the stateful optimizer's linear map.
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
pub(super) struct Scratch {
    file: std::fs::File,
    p: usize,
    /// Which of the four vectors each step has.
    present: Vec<[bool; 4]>,
    offsets: Vec<u64>,
    end: u64,
}

impl Scratch {
    pub(super) fn new(p: usize) -> Result<Self, ReplayError> {
        let file = tempfile::tempfile()
            .map_err(|e| ReplayError::Input(format!("cannot create a scratch file: {e}")))?;
        Ok(Scratch {
            file,
            p,
            present: Vec::new(),
            offsets: Vec::new(),
            end: 0,
        })
    }

    pub(super) fn write(&mut self, s: usize, v: StepVectors) -> Result<(), ReplayError> {
        let vectors = [v.clip, v.precondition, v.mask, Some(v.rho)];
        use std::io::{Seek, SeekFrom, Write};
        debug_assert_eq!(s, self.offsets.len());
        let mut bytes = Vec::new();
        let mut present = [false; 4];
        for (i, v) in vectors.iter().enumerate() {
            if let Some(v) = v {
                present[i] = true;
                bytes.extend(v.iter().flat_map(|x| x.to_le_bytes()));
            }
        }
        let io = |e: std::io::Error| ReplayError::Input(format!("scratch file: {e}"));
        self.file.seek(SeekFrom::Start(self.end)).map_err(io)?;
        self.file.write_all(&bytes).map_err(io)?;
        self.offsets.push(self.end);
        self.present.push(present);
        self.end += bytes.len() as u64;
        Ok(())
    }

    pub(super) fn read(&mut self, s: usize) -> Result<StepVectors, ReplayError> {
        use std::io::{Read, Seek, SeekFrom};
        let io = |e: std::io::Error| ReplayError::Input(format!("scratch file: {e}"));
        self.file
            .seek(SeekFrom::Start(self.offsets[s]))
            .map_err(io)?;
        let mut out: [Option<Vec<f64>>; 4] = Default::default();
        let mut buf = vec![0u8; self.p * 8];
        for (i, slot) in out.iter_mut().enumerate() {
            if self.present[s][i] {
                self.file.read_exact(&mut buf).map_err(io)?;
                *slot = Some(
                    buf.chunks_exact(8)
                        .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
                        .collect(),
                );
            }
        }
        let [clip, precondition, mask, rho] = out;
        Ok(StepVectors {
            clip,
            precondition,
            mask,
            rho: rho.unwrap_or_else(|| vec![0.0; self.p]),
        })
    }
}
