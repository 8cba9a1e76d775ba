//! Every binary here ends quietly when its standard output closes (`gaussians … | head -1`,
//! `replay info STORE | head -1`): by SIGPIPE, as Unix tools do, not with a panic about a
//! broken pipe.
#![cfg(unix)]

mod common;

use common::built;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// Runs `program args` with a standard output whose reader is gone before the first line, and
/// checks that it ended by SIGPIPE without a panic.
fn ends_quietly(program: &Path, args: &[&str]) {
    let mut child = Command::new(program)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.signal(), Some(13), "{:?}: {stderr}", out.status);
}

#[test]
fn the_example_and_replay_end_quietly_when_stdout_closes() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("toy.zarr");
    let store = store.to_str().unwrap();
    let args: Vec<&str> = ["--store", store]
        .into_iter()
        .chain("--per-class 10 --steps 2 --test 2 --dim 4".split(' '))
        .collect();
    ends_quietly(&built("examples/gaussians"), &args);
    // The example finishes its store before its first line of output: replay can read it.
    ends_quietly(&built("replay"), &["info", store]);
}
