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

/// Where entry `row` of a shard starts (its index entry's offset).
fn entry_offset(shard: &Path, row: usize) -> usize {
    let bytes = std::fs::read(shard).unwrap();
    u64::from_le_bytes(bytes[16 * row..16 * row + 8].try_into().unwrap()) as usize
}

#[test]
fn damaged_stores_give_a_clear_error_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let pristine = dir.path().join("pristine.zarr");
    record(&pristine);
    let cases: Vec<(&str, Damage, &str, &str)> = vec![
        (
            "truncated shard",
            |p| {
                let f = p.join("weights/c/0/0");
                let cut = entry_offset(&f, 2) + 5;
                let bytes = std::fs::read(&f).unwrap();
                std::fs::write(&f, &bytes[..cut]).unwrap();
            },
            "weights/c/0/0",
            // Replay reads the last weights first (its precision check), so the first entry
            // past the cut that it meets may be any of them.
            "claims bytes",
        ),
        (
            "shard shorter than its index",
            |p| std::fs::write(p.join("lr/c/0"), [0u8; 40]).unwrap(),
            "lr/c/0",
            "less than its",
        ),
        (
            "entry marked absent",
            |p| {
                let f = p.join("dloss/c/0/0/0");
                let mut bytes = std::fs::read(&f).unwrap();
                bytes[16..32].fill(0xff);
                std::fs::write(&f, bytes).unwrap();
            },
            "dloss/c/0/0/0",
            "entry 1 is missing",
        ),
        (
            "missing shard",
            |p| std::fs::remove_file(p.join("batch_size/c/0")).unwrap(),
            "batch_size/c/0",
            "entry 0 is missing",
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
            "wrong shard shape",
            |p| {
                edit_json(&p.join("weights/zarr.json"), |v| {
                    v["chunk_grid"]["configuration"]["chunk_shape"][0] = 4096.into()
                })
            },
            "weights/zarr.json",
            "shard shape is [4096",
        ),
        (
            "index at the end of the shard",
            |p| {
                edit_json(&p.join("dloss/zarr.json"), |v| {
                    v["codecs"][0]["configuration"]["index_location"] = "end".into()
                })
            },
            "dloss/zarr.json",
            "the format needs sharding_indexed",
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
                let f = p.join("batch_index/c/0/0");
                let at = entry_offset(&f, 3);
                let mut bytes = std::fs::read(&f).unwrap();
                bytes[at..at + 8].copy_from_slice(&999i64.to_le_bytes());
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
        eprintln!("{what}: {}", t.trim());
    }
    assert_eq!(seen, 17);
}
