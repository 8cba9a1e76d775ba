//! Every binary here ends quietly when its standard output closes (`gaussians … | head -1`).

/// A binary built beside this test (in `target/<profile>/examples` or `target/<profile>`).
#[cfg(unix)]
fn built(relative: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<this test> → target/<profile>
    exe.parent().unwrap().parent().unwrap().join(relative)
}

#[cfg(unix)]
#[test]
fn examples_end_quietly_when_stdout_closes() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("toy.zarr");
    let gaussians = built("examples/gaussians");
    assert!(
        gaussians.exists(),
        "{} is built with the tests",
        gaussians.display()
    );
    let mut child = Command::new(&gaussians)
        .arg("--store")
        .arg(&store)
        .args([
            "--per-class",
            "10",
            "--steps",
            "2",
            "--test",
            "2",
            "--dim",
            "4",
        ])
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
