//! Damaged and foreign stores: a one-line error naming the file and the problem, exit code 2,
//! never a panic.

mod common;

use common::{record, replay, text};
use std::path::{Path, PathBuf};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

fn edit_json(file: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(file, serde_json::to_vec(&v).unwrap()).unwrap();
}

type Damage = fn(&Path);

#[test]
fn damaged_stores_give_a_clear_error_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let pristine = dir.path().join("pristine.zarr");
    record(&pristine);
    let cases: Vec<(&str, Damage, &str, &str)> = vec![
        (
            "truncated chunk",
            |p| {
                let f = p.join("weights/c/2/0");
                let bytes = std::fs::read(&f).unwrap();
                std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
            },
            "weights/c/2/0",
            "cannot read chunk",
        ),
        (
            "missing chunk",
            |p| std::fs::remove_file(p.join("dloss/c/1/0/0")).unwrap(),
            "dloss/c/1/0/0",
            "chunk is missing",
        ),
        (
            "empty root metadata",
            |p| std::fs::write(p.join("zarr.json"), b"").unwrap(),
            "zarr.json",
            "not valid JSON",
        ),
        (
            "empty array metadata",
            |p| std::fs::write(p.join("lr/zarr.json"), b"").unwrap(),
            "lr/zarr.json",
            "cannot open array",
        ),
        (
            "wrong dtype",
            |p| {
                edit_json(&p.join("weights/zarr.json"), |v| {
                    v["data_type"] = "float32".into()
                })
            },
            "weights/zarr.json",
            "data type is float32",
        ),
        (
            "wrong shape",
            |p| edit_json(&p.join("dloss/zarr.json"), |v| v["shape"][2] = 7.into()),
            "dloss/zarr.json",
            "shape is",
        ),
        (
            "wrong chunking",
            |p| {
                edit_json(&p.join("weights/zarr.json"), |v| {
                    v["chunk_grid"]["configuration"]["chunk_shape"][0] = 4.into()
                })
            },
            "weights/zarr.json",
            "chunk shape",
        ),
        (
            "unknown format version",
            |p| {
                edit_json(&p.join("zarr.json"), |v| {
                    v["attributes"]["epk"]["version"] = 99.into()
                })
            },
            "zarr.json",
            "version 99 is not supported",
        ),
        (
            "more steps than arrays",
            |p| {
                edit_json(&p.join("zarr.json"), |v| {
                    v["attributes"]["epk"]["steps"] = 50.into()
                })
            },
            "zarr.json",
            "the attributes need",
        ),
        (
            "model config that does not match the weights",
            |p| {
                edit_json(&p.join("zarr.json"), |v| {
                    v["attributes"]["epk"]["model"]["config"]["sizes"] =
                        serde_json::json!([4, 6, 2])
                })
            },
            "",
            "model does not match the store",
        ),
        (
            "unknown model kind",
            |p| {
                edit_json(&p.join("zarr.json"), |v| {
                    v["attributes"]["epk"]["model"]["kind"] = "resnet".into()
                })
            },
            "",
            "not known to this binary",
        ),
        (
            "sample index out of range",
            |p| {
                let f = p.join("batch_index/c/3/0");
                let mut bytes = std::fs::read(&f).unwrap();
                bytes[..8].copy_from_slice(&999i64.to_le_bytes());
                std::fs::write(&f, bytes).unwrap();
            },
            "batch_index",
            "names sample 999",
        ),
        (
            "a store from another tool",
            |p| {
                std::fs::write(
                    p.join("zarr.json"),
                    br#"{"zarr_format":3,"node_type":"group","attributes":{"title":"x"}}"#,
                )
                .unwrap()
            },
            "zarr.json",
            "not an epk store",
        ),
        (
            "not a store at all",
            |p| {
                std::fs::remove_dir_all(p).unwrap();
                std::fs::create_dir(p).unwrap();
                std::fs::write(p.join("notes.txt"), b"hello").unwrap();
            },
            "zarr.json",
            "is this a Zarr v3 store?",
        ),
    ];
    let mut seen = 0;
    for (what, damage, file, problem) in cases {
        let store: PathBuf = dir.path().join(format!("case-{seen}.zarr"));
        seen += 1;
        copy_dir(&pristine, &store);
        damage(&store);
        let out = replay(&["verify", store.to_str().unwrap()]);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{what}: {t}");
        assert!(t.contains(problem), "{what}: {t}");
        assert!(t.contains(file), "{what} should name {file}: {t}");
        assert_eq!(t.trim().lines().count(), 1, "{what}: one line, got {t}");
        assert!(!t.contains("panicked"), "{what}: {t}");
    }
    assert_eq!(seen, 14);
}
