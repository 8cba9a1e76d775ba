use super::WriterLock;
use super::holder::utc;
use crate::StoreError;

#[test]
fn a_second_writer_is_refused_with_the_holder_named_until_the_first_lets_go() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("run.zarr");
    let first = WriterLock::acquire(&store, false).unwrap();
    assert_eq!(first.lock_file(), dir.path().join("run.zarr.lock"));
    assert!(first.took_over().is_none());
    let me = format!("process {}", std::process::id());
    for refused in [
        WriterLock::acquire(&store, false).unwrap_err(),
        WriterLock::ensure_free(&store).unwrap_err(),
    ] {
        assert!(matches!(refused, StoreError::Locked { .. }), "{refused}");
        let text = refused.to_string();
        assert!(
            text.contains(&me) && text.contains("run.zarr.lock"),
            "{text}"
        );
    }
    first.check().unwrap();
    drop(first);
    assert!(!dir.path().join("run.zarr.lock").exists(), "let go, gone");
    WriterLock::ensure_free(&store).unwrap();
    let again = WriterLock::acquire(&store, false).unwrap();
    assert!(again.took_over().is_none());
}

#[test]
fn a_lock_file_left_by_an_ended_process_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("run.zarr");
    let stale = r#"{"host": "elsewhere", "pid": 4194999, "program": "/bin/train",
        "since": 0, "since_utc": "1970-01-01 00:00:00 UTC", "store": "run.zarr"}"#;
    std::fs::write(WriterLock::path_for(&store), stale).unwrap();
    WriterLock::ensure_free(&store).unwrap();
    let lock = WriterLock::acquire(&store, false).unwrap();
    let previous = lock.took_over().unwrap();
    assert!(
        previous.contains("process 4194999 (train) on elsewhere"),
        "{previous}"
    );
    let now = std::fs::read_to_string(lock.lock_file()).unwrap();
    assert!(
        now.contains(&format!("\"pid\": {}", std::process::id())),
        "{now}"
    );
}

#[test]
fn a_removed_or_replaced_lock_file_is_noticed() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("run.zarr");
    let lock = WriterLock::acquire(&store, false).unwrap();
    std::fs::remove_file(lock.lock_file()).unwrap();
    let err = lock.check().unwrap_err().to_string();
    assert!(err.contains("lock file was removed"), "{err}");
    std::fs::write(lock.lock_file(), "").unwrap();
    let err = lock.check().unwrap_err().to_string();
    assert!(err.contains("lock file was replaced"), "{err}");
    drop(lock);
    assert!(
        WriterLock::path_for(&store).exists(),
        "someone else's lock file stays"
    );
}

#[test]
fn times_are_written_in_utc() {
    assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
    assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
    assert_eq!(utc(1_700_000_000), "2023-11-14 22:13:20 UTC");
}
