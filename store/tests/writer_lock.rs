//! One writer per store: the lock beside it, overwriting under the lock, a store removed or
//! replaced under its writer, and durable commits.

use epk_store::{
    RunAttributes, Samples, StepRecord, StoreError, StoreOptions, StoreReader, StoreWriter,
    WriterLock,
};
use std::path::Path;

fn create(path: &Path, options: StoreOptions) -> Result<StoreWriter, StoreError> {
    let train = Samples::new(vec![1.0, 2.0, 3.0, 4.0], vec![2], vec![0, 1]).unwrap();
    let attrs = RunAttributes::example(2, 1, 2);
    StoreWriter::create_with(path, attrs, &train, None, &[0.0, 0.0], options)
}

fn step(s: usize) -> StepRecord {
    StepRecord {
        lr: 0.5,
        indices: vec![0, 1],
        dloss: vec![0.25, -0.25],
        weights_after: vec![s as f64, -(s as f64)],
    }
}

fn held_by_me(err: StoreError) {
    let text = err.to_string();
    assert!(matches!(err, StoreError::Locked { .. }), "{text}");
    let me = format!("process {}", std::process::id());
    assert!(
        text.contains(&me) && text.contains("run.zarr.lock"),
        "{text}"
    );
}

#[test]
fn a_store_being_written_is_refused_to_a_second_writer_and_to_an_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.zarr");
    let mut first = create(&path, StoreOptions::default()).unwrap();
    first.append_step(&step(1)).unwrap();
    let overwrite = StoreOptions {
        overwrite: true,
        ..StoreOptions::default()
    };
    held_by_me(create(&path, StoreOptions::default()).err().unwrap());
    held_by_me(create(&path, overwrite).err().unwrap());
    held_by_me(StoreWriter::resume(&path).err().unwrap());
    // The refused overwrite removed nothing: the first writer goes on.
    first.append_step(&step(2)).unwrap();
    first.finish().unwrap();
    drop(first);
    assert_eq!(StoreReader::open(&path).unwrap().steps(), 2);
    assert!(!WriterLock::path_for(&path).exists());

    // Let go, the store can be resumed, and then overwritten.
    let (mut resumed, last) = StoreWriter::resume(&path).unwrap();
    assert_eq!(last, step(2).weights_after);
    resumed.append_step(&step(3)).unwrap();
    drop(resumed);
    assert!(matches!(
        create(&path, StoreOptions::default()),
        Err(StoreError::Exists { .. })
    ));
    let mut fresh = create(&path, overwrite).unwrap();
    fresh.finish().unwrap();
    assert_eq!(StoreReader::open(&path).unwrap().steps(), 0);
}

#[test]
fn an_overwrite_leaves_a_foreign_zarr_store_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.zarr");
    std::fs::create_dir(&path).unwrap();
    std::fs::write(
        path.join("zarr.json"),
        r#"{"zarr_format":3,"node_type":"group"}"#,
    )
    .unwrap();
    let options = StoreOptions {
        overwrite: true,
        ..StoreOptions::default()
    };
    let err = create(&path, options).err().unwrap().to_string();
    assert!(err.contains("refusing to overwrite"), "{err}");
    assert!(path.join("zarr.json").exists());
}

#[test]
fn a_store_removed_or_replaced_under_its_writer_stops_it_at_the_next_step() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.zarr");
    let mut writer = create(&path, StoreOptions::default()).unwrap();
    writer.append_step(&step(1)).unwrap();
    std::fs::remove_dir_all(&path).unwrap();
    let err = writer.append_step(&step(2)).unwrap_err();
    assert!(matches!(err, StoreError::Gone { .. }), "{err}");
    assert!(err.to_string().contains("was removed"), "{err}");
    assert!(writer.finish().is_err(), "no normal finish");
    assert!(!path.exists(), "nothing written after the removal");
    drop(writer);

    let mut writer = create(&path, StoreOptions::default()).unwrap();
    writer.write_step(&step(1)).unwrap();
    std::fs::rename(&path, dir.path().join("old.zarr")).unwrap();
    std::fs::create_dir(&path).unwrap();
    let err = writer.commit().unwrap_err().to_string();
    assert!(err.contains("replaced by another one"), "{err}");
    assert!(std::fs::read_dir(&path).unwrap().next().is_none());
}

#[test]
fn a_shard_removed_under_its_writer_stops_the_next_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.zarr");
    let mut writer = create(&path, StoreOptions::default()).unwrap();
    writer.write_step(&step(1)).unwrap();
    std::fs::remove_dir_all(path.join("weights/c")).unwrap();
    let err = writer.commit().unwrap_err().to_string();
    assert!(
        err.contains("weights/c/0/0: the shard file was removed"),
        "{err}"
    );
}

#[test]
fn durable_stores_read_back_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.zarr");
    let options = StoreOptions {
        durable: true,
        steps_per_shard: Some(2),
        ..StoreOptions::default()
    };
    let mut writer = create(&path, options).unwrap();
    for s in 1..=5 {
        writer.append_step(&step(s)).unwrap();
    }
    writer.finish().unwrap();
    drop(writer);
    let (mut writer, _) = StoreWriter::resume_with(&path, options).unwrap();
    writer.append_step(&step(6)).unwrap();
    writer.finish().unwrap();
    let reader = StoreReader::open(&path).unwrap();
    assert_eq!(reader.steps(), 6);
    for s in 1..=6 {
        assert_eq!(reader.weights(s).unwrap(), step(s).weights_after);
    }
}
