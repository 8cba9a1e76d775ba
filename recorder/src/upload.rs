//! Uploading the store to object storage while training runs (feature `s3`): the writer
//! thread asks for an upload pass after each commit, and the upload runs on a thread of its
//! own, so that training never waits for the network. See [`epk_store::remote`].

use crate::writer::Sink;
use epk_store::remote::{Mirror, Remote, Uploader};
use epk_store::{Fault, StepRecord, StoreError, StoreWriter, TrainDType, WeightRow};
use std::time::Duration;

/// Where to upload and how often: at most one pass per interval.
#[derive(Clone, Debug)]
pub(crate) struct Upload {
    pub url: String,
    pub interval: Duration,
}

/// The store, and the uploader that follows its commits.
pub(crate) struct Uploading {
    store: StoreWriter,
    uploader: Option<Uploader>,
    url: String,
}

impl Uploading {
    /// Starts uploading `store` as [`Upload`] says; a bad URL is refused before training.
    pub(crate) fn start(store: StoreWriter, upload: &Upload) -> Result<Self, StoreError> {
        let remote = Remote::new(&upload.url)?;
        let url = remote.url().to_string();
        let uploader = Uploader::start(Mirror::new(store.path(), remote), upload.interval);
        uploader.committed();
        Ok(Uploading {
            store,
            uploader: Some(uploader),
            url,
        })
    }

    fn committed(&self) {
        if let Some(u) = &self.uploader {
            u.committed();
        }
    }
}

impl Sink for Uploading {
    fn write(&mut self, step: &StepRecord, weights: WeightRow<'_>) -> Result<(), String> {
        Sink::write(&mut self.store, step, weights)
    }

    fn dtype(&self) -> TrainDType {
        Sink::dtype(&self.store)
    }

    fn commit(&mut self) -> Result<(), String> {
        Sink::commit(&mut self.store)?;
        self.committed();
        Ok(())
    }

    fn fault(&mut self, fault: Fault) -> Result<(), String> {
        self.store.fault(fault)?;
        self.committed();
        Ok(())
    }

    /// Finishes the local store, then waits for the last upload pass: a run whose upload
    /// failed is complete on disk, and the error says how to finish the upload.
    fn finish(&mut self) -> Result<(), String> {
        Sink::finish(&mut self.store)?;
        let Some(uploader) = self.uploader.take() else {
            return Ok(());
        };
        uploader.finish().map(|_| ()).map_err(|e| {
            let local = self.store.path().display();
            format!(
                "the store at {local} is complete, but its upload to {} failed: {e}; `replay upload {local} {}` finishes it",
                self.url, self.url
            )
        })
    }
}
